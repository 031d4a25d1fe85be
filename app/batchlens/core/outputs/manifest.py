"""run.json: what made an output folder, and the rules that keep two runs' results apart.

Every run writes run.json before its first image: the model and a hash of its file, the weights, the
preprocessing, the task, the input folder, the options that change results, and versions. Then:
- a plain run into a folder that holds a run is refused (`refuse_plain_run`);
- `--resume` is refused when the earlier run differs in any of those (`resume_mismatch`);
- `--overwrite` deletes the earlier run's files, and only those it can prove the run wrote
  (`clear_run`): the names its run.json lists and the output files its ok lines name. A folder without
  run.json is not a BatchLens run: --overwrite refuses it unless it is empty;
- a file of one of the run's own names (core/files.py, RESERVED_NAMES) that no run listed is never
  replaced, and one that is a folder or a link is refused (`check_own_names`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchlens import __version__
from batchlens.core.errors import BatchLensError
from batchlens.core.files import (
    RESERVED_NAMES,
    TEMP_NAME,
    OutputFolder,
    legacy_output_rel,
    not_a_file,
    output_rel,
    write_error,
)
from batchlens.core.outputs.records import OUTPUT_FIELDS, record_key
from batchlens.core.outputs.results import (
    PREDICTIONS,
    REJECTED,
    SUMMARY,
    ResultsWriter,
    read_records,
    run_finished,
)

if TYPE_CHECKING:
    pass


MANIFEST = "run.json"
MEMORY_SNAPSHOT = "memory-snapshot.pickle"
LOCK = ".batchlens.lock"  # core/outputs/runlock.py's; checked there
#: Files a run writes at the top of its output folder (tasks' end-of-run files included).
RUN_FILES = (
    PREDICTIONS,
    SUMMARY,
    MANIFEST,
    REJECTED,
    "predictions.csv",
    "detections.coco.json",
    "mask_classes.json",
    MEMORY_SNAPSHOT,
)
#: What must match for a resume: (manifest key, words for the sentence).
IDENTITY = (
    ("model", "model"),
    ("model_sha256", "model file"),
    ("weights_sha256", "weights file"),
    ("task", "task"),
    ("preprocessing", "preprocessing"),
    ("labels_sha256", "labels"),
    ("input", "input folder"),
    ("options", "options"),
)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per file version (size and modification time) in a process."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def model_sha256(path: Path) -> str | None:
    """sha256 of a model file; for a model folder (Hugging Face), of its files' names and hashes."""
    if path.is_file():
        return file_sha256(path)
    if not (path / "config.json").is_file():  # not a Hugging Face model folder
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def preprocessing_settings(model) -> dict | str:
    """How images are prepared for the model, in a form that is equal exactly when the preprocessing is:
    the loader's structured description (its settings, not where they came from), or else the
    transform's repr without memory addresses."""
    described = getattr(model, "preprocessing", None)
    if described is not None and hasattr(described, "to_sidecar"):
        return described.to_sidecar()
    adapter = model.adapter
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{adapter.color_mode}: {adapter.transform!r}")


def preprocessing_words(model) -> str:
    described = getattr(model, "preprocessing", None)
    return described.describe() if described is not None and hasattr(described, "describe") else ""


def build_manifest(cfg, model, input_dir: Path) -> dict:
    """run.json for a run of `cfg` with the loaded `model`."""
    import torch
    import torchvision

    options = cfg.model_options or {}
    model_file = Path(cfg.model).expanduser()
    weights = options.get("weights")
    labels = model.adapter.labels
    digest = model_sha256(model_file)  # a model file's or folder's; None for a catalogue or built-in id
    result_options = {
        "precision": cfg.precision,
        "fast_decode": cfg.fast_decode,
        "gpu_decode": getattr(cfg, "gpu_decode", False),
        **model.adapter.result_options(),
    }
    files = [PREDICTIONS, SUMMARY, MANIFEST, REJECTED, *getattr(model.adapter, "end_files", ())]
    if getattr(cfg, "memory_snapshot", False) not in (False, None, "off"):  # ("off": the default)
        files.append(MEMORY_SNAPSHOT)
    return {
        "batchlens_run": 1,
        # the run's own files at the top of the folder: all --overwrite may delete besides the output
        # files its ok lines in predictions.jsonl name
        "files": files,
        "model": model.info.id,
        "model_file": str(model_file.resolve()) if digest else None,
        "model_sha256": digest,
        "weights": str(Path(weights).expanduser().resolve()) if weights else None,
        "weights_sha256": file_sha256(Path(weights).expanduser()) if weights else None,
        "task": model.info.task,
        "preprocessing": preprocessing_settings(model),
        "preprocessing_words": preprocessing_words(model),
        "labels_sha256": hashlib.sha256(json.dumps(labels).encode()).hexdigest() if labels else None,
        "input": os.fsdecode(Path(input_dir).resolve()),
        "recursive": cfg.recursive,
        "max_pixels": cfg.max_pixels,
        "options": result_options,
        "versions": {
            "batchlens": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_manifest(output_dir: Path | OutputFolder, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    OutputFolder.at(output_dir).write_text(MANIFEST, text.encode("utf-8", "backslashreplace").decode() + "\n")


def listed_files(manifest: dict | None) -> set[str]:
    """The run's own files a run.json lists (only names a run writes: a forged list deletes nothing
    else); a run.json of an older BatchLens lists none: every name a run may write."""
    if manifest is None:
        return set()
    files = manifest.get("files")
    if not isinstance(files, list):
        return set(RUN_FILES)
    return {name for name in files if isinstance(name, str) and name in RUN_FILES}


def check_own_names(output_dir: Path) -> None:
    """Refuse (one sentence) an output folder where one of the run's own names is a folder, a link or
    another non-file: BatchLens never writes through a link it did not make, nor over a folder."""
    for name in RESERVED_NAMES:
        if name == LOCK:
            continue
        path = Path(output_dir) / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise BatchLensError(not_a_file(path))


def check_not_replacing(output_dir: Path, manifest: dict, earlier_files: set[str]) -> None:
    """Refuse a run that would replace a file of one of its own names that no earlier run of the
    folder listed (a user's own summary.json or predictions.csv)."""
    for name in manifest.get("files", []):
        if name not in earlier_files and (Path(output_dir) / name).exists():
            raise BatchLensError(
                f"{Path(output_dir) / name} was not written by a BatchLens run, and this run would "
                "replace it: move it out of the output folder or choose another output folder."
            )


def read_manifest(output_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(output_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ExistingRun:
    """What an output folder already holds, in words for the refusal and the window's dialog."""

    model: str
    images: int  # lines in predictions.jsonl
    ok: int
    failed: int
    date: str
    input: str | None
    finished: bool
    manifest: dict | None

    def words(self) -> str:
        """e.g. `demo-shapes (12 images, 2026-11-27 10:40 UTC)`."""
        return f"{self.model} ({self.images} image(s), {self.date})"


def _date(text: str | None, fallback: Path) -> str:
    try:
        when = datetime.fromisoformat(text) if text else datetime.fromtimestamp(fallback.stat().st_mtime, UTC)
    except (OSError, ValueError):
        return "an unknown date"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def existing_run(output_dir: Path) -> ExistingRun | None:
    """None when `output_dir` holds no BatchLens run; else what it holds (finished or not)."""
    output_dir = Path(output_dir)
    if not any((output_dir / name).is_file() for name in (MANIFEST, PREDICTIONS, SUMMARY)):
        return None
    manifest = read_manifest(output_dir)
    try:
        summary = json.loads((output_dir / SUMMARY).read_text(encoding="utf-8"))
        summary = summary if isinstance(summary, dict) else {}
    except (OSError, ValueError):
        summary = {}
    records = read_records(output_dir / PREDICTIONS)
    ok = sum(r["status"] == "ok" for r in records)
    about = manifest or summary
    model = about.get("model") if isinstance(about.get("model"), str) else "an unknown model"
    when = about.get("created_at") or summary.get("started_at")
    return ExistingRun(
        model=model,
        images=len(records),
        ok=ok,
        failed=len(records) - ok,
        date=_date(when if isinstance(when, str) else None, output_dir / PREDICTIONS),
        input=about.get("input") if isinstance(about.get("input"), str) else None,
        finished=run_finished(output_dir),
        manifest=manifest,
    )


def refuse_plain_run(output_dir: Path) -> None:
    """A run that neither resumes nor overwrites may not start in a folder that holds a run, nor where
    a file of one of its own names already is."""
    check_own_names(output_dir)
    earlier = existing_run(output_dir)
    if earlier is not None:
        raise BatchLensError(
            f"{output_dir} already holds a run of {earlier.words()}: use --resume to continue it, "
            "--overwrite to replace it, or another folder."
        )
    check_not_replacing(output_dir, {"files": RUN_FILES}, set())


def refuse_before_load(output_dir: Path, input_dir: Path, resume: bool, overwrite: bool) -> None:
    """What refuses a run before its model loads: a run's own name that is a folder or a link; for
    --overwrite, a folder that is not a BatchLens run; for a plain run, a folder that holds one."""
    check_own_names(output_dir)
    if overwrite:
        refuse_overwrite(output_dir, input_dir)
    elif not resume:
        refuse_plain_run(output_dir)


def refuse_overwrite(output_dir: Path, input_dir: Path | None = None) -> None:
    """--overwrite deletes only a BatchLens run's files: a folder that holds anything but no run.json
    is not a run, and is refused (an empty or new folder is fine)."""
    check_own_names(output_dir)
    if read_manifest(output_dir) is not None:
        return
    skip = Path(input_dir).resolve() if input_dir is not None else None
    try:
        entries = [
            entry
            for entry in Path(output_dir).iterdir()
            if entry.name != LOCK and not TEMP_NAME.fullmatch(entry.name) and entry.resolve() != skip
        ]
    except OSError:
        entries = []
    if entries:
        raise BatchLensError(
            f"{output_dir} holds no run.json, so it is not a BatchLens run and --overwrite deletes "
            "nothing in it: choose another output folder, or an empty one."
        )


def resume_mismatch(output_dir: Path, manifest: dict, only: tuple[str, ...] | None = None) -> str | None:
    """The sentence refusing a resume whose run differs from the folder's earlier run, or None.
    `only`: compare just these keys (what is known before the model loads)."""
    earlier = existing_run(output_dir)
    if earlier is None:
        return None
    old = earlier.manifest
    if old is None:  # an older BatchLens: only summary.json says what made it
        old = {k: v for k, v in (("model", earlier.model), ("input", earlier.input)) if v is not None}
        if earlier.model == "an unknown model":
            return None  # nothing recorded to compare: the lines themselves are checked on resume
    for key, words in IDENTITY:
        if only is not None and key not in only:
            continue
        if key == "model" and old.get("model_sha256") and manifest.get("model_sha256"):
            continue  # a model file: its hash says it all, whatever path it was given by
        if key in old and old.get(key) != manifest.get(key):
            return (
                f"{output_dir} holds a run of {earlier.words()} whose {words} differs from this run's "
                f"({_show(key, old.get(key))} there, {_show(key, manifest.get(key))} now): resuming would "
                "mix two runs' results; use --overwrite to replace it, or another folder."
            )
    return None


def resume_refusal_before_load(output_dir: Path, model: str, input_dir: Path) -> str | None:
    """For the window's question, before any model loads: would a resume be refused? Compares the
    input folder, a model file's hash, and a built-in model's id (other ids name their weights only
    once loaded: the runner checks them, and everything else, after the load)."""
    from batchlens.core.models.builtin import BUILTIN_IDS

    path = Path(model).expanduser()
    known: dict = {"input": os.fsdecode(Path(input_dir).expanduser().resolve())}
    if path.exists():
        known["model_sha256"] = model_sha256(path)
    elif model in BUILTIN_IDS:
        known["model"] = model
    return resume_mismatch(output_dir, known, only=tuple(known))


def existing_run_question(earlier: ExistingRun, output_dir: Path, refusal: str | None, free: Path) -> str:
    """The window's question about a folder that holds a run (its answers: Resume, Overwrite, or
    another folder, the default), in the same words as the command line's refusal."""
    state = "finished" if earlier.finished else "not finished"
    where = f" over {earlier.input}" if earlier.input else ""
    text = (
        f"The output folder {output_dir} already holds a run of {earlier.model}{where}, started "
        f"{earlier.date}: {earlier.ok} image(s) done, {earlier.failed} failed, {state}.\n\n"
        f"Another folder leaves it as it is and writes the results to {free}. Resume keeps its finished "
        "images and does the rest. Overwrite deletes that run's files (only those) and starts again."
    )
    if earlier.manifest is None:  # --overwrite deletes only what a run.json lists
        text += (
            f"\n\nOverwrite is not possible: {output_dir} holds no run.json, so BatchLens cannot tell "
            "which of its files a run wrote."
        )
    return text + (f"\n\nResume is not possible: {refusal}" if refusal else "")


def free_folder_beside(folder: Path) -> Path:
    """`NAME-2`, `NAME-3`, ...: the first that does not exist yet."""
    folder = Path(folder)
    for n in range(2, 10_000):
        candidate = folder.with_name(f"{folder.name}-{n}")
        if not candidate.exists():
            return candidate
    raise BatchLensError(f"Could not find a free folder name beside {folder}.")


def _show(key: str, value) -> str:
    if value is None:
        return "none"
    if key.endswith("sha256"):
        return f"sha256 {value[:12]}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def clear_run(output_dir: Path, keep_out: list[Path]) -> int:
    """Delete the run in `output_dir` for --overwrite; return how many files went. Only what the run
    provably wrote: the file names at the top its run.json lists (none without run.json), each ok
    line's output file when it is exactly the file BatchLens writes for that line's image, and
    BatchLens's temporary files; never anything inside a folder of `keep_out` (the input folders),
    never a link. Emptied mirror folders go too."""
    output_dir = Path(output_dir)
    root = output_dir.resolve()
    guarded = [Path(p).resolve() for p in keep_out if p]
    listed = listed_files(read_manifest(output_dir))
    if not listed:
        return 0
    targets = [output_dir / name for name in RUN_FILES if name in listed]
    for record in read_records(output_dir / PREDICTIONS) if PREDICTIONS in listed else []:
        if record["status"] != "ok":
            continue
        image = record_key(record)
        for name in OUTPUT_FIELDS:
            if name in record:
                written = record_key(record, name)
                if written in (output_rel(image), legacy_output_rel(image)):
                    targets.append(output_dir / written)
    for folder, dirs, files in os.walk(output_dir):
        dirs[:] = [d for d in dirs if Path(folder, d).resolve() not in guarded]
        targets += [Path(folder, name) for name in files if TEMP_NAME.fullmatch(name)]
    removed, parents = 0, set()
    for path in targets:
        if path.is_symlink() or not path.is_file():
            continue
        real = path.resolve()
        if not real.is_relative_to(root) or any(real.is_relative_to(g) for g in guarded):
            continue
        path.unlink()
        removed += 1
        parents.add(path.parent)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while folder.resolve() != root and folder.resolve().is_relative_to(root):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            folder = folder.parent
    return removed


def open_output(cfg, model, input_dir: Path, output_dir: Path | OutputFolder) -> ResultsWriter:
    """The results writer of a run (local or cluster), once the folder's earlier run allows it: a plain
    run only into a folder without a run, a resume only of the same model, input and settings, an
    overwrite after the earlier run's files are gone. Writes run.json. Hold the folder's RunLock.
    `output_dir`: the run's OutputFolder (or its path), which every write goes through."""
    if cfg.resume and cfg.overwrite:
        raise BatchLensError("Choose --resume or --overwrite, not both.")
    folder, output_dir = output_dir, OutputFolder.at(output_dir).path
    manifest = build_manifest(cfg, model, input_dir)
    check_own_names(output_dir)
    earlier = existing_run(output_dir)
    old_manifest = read_manifest(output_dir)
    earlier_files = listed_files(old_manifest) or (set(RUN_FILES) if cfg.resume and earlier else set())
    if cfg.resume:
        refusal = resume_mismatch(output_dir, manifest)
        if refusal:
            raise BatchLensError(refusal)
        if earlier is not None and earlier.manifest:  # keep when the run began; note each resume
            manifest["created_at"] = earlier.manifest.get("created_at", manifest["created_at"])
            resumed = earlier.manifest.get("resumed_at")
            manifest["resumed_at"] = [*(resumed if isinstance(resumed, list) else []), _now()]
    elif cfg.overwrite:
        refuse_overwrite(output_dir, input_dir)
        check_not_replacing(output_dir, manifest, earlier_files)
        old_input = earlier.input if earlier is not None else None
        clear_run(output_dir, [input_dir, Path(old_input) if old_input else None])
    else:
        refuse_plain_run(output_dir)
    if cfg.resume:
        check_not_replacing(output_dir, manifest, earlier_files)
    try:
        writer = ResultsWriter(folder, cfg.resume, model.adapter.check_fields, input_dir)
        write_manifest(folder, manifest)
    except OSError as exc:
        raise BatchLensError(write_error(exc, output_dir)) from None
    return writer


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
