"""Sorting a run's images into folders by what they show: `batchlens sort RUN --into DIR` and the
window's "Sort into folders…".

Classification: `DIR/LABEL/<path under the input>`; a top-1 score below the minimum goes to
`DIR/unsure/`, a failed image to `DIR/failed/`. Detection: into `DIR/LABEL/` for every label with a box
at or above the minimum, `DIR/empty/` when none. A reviewed label (or reviewed boxes) overrides the
model. `plan_sort` says where each file goes and the counts per folder before anything is done;
`do_sort` refuses the whole sort when one destination exists (never overwrites), copies by default
(or links, or moves), and logs every placement to `DIR/sort-log.jsonl` as it happens, so `undo_sort`
can reverse even a sort that was stopped half way. Only `move` touches the input folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.records import record_key
from batchlens.core.outputs.reviews import now_iso
from batchlens.core.outputs.run_facts import RunFacts, boxes_of, label_of, load_run, top_label

SORT_LOG = "sort-log.jsonl"
MODES = ("copy", "link", "move")
UNSURE, FAILED, EMPTY = "unsure", "failed", "empty"
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def folder_name(label: str) -> str:
    """A label as one folder name on any system: no separators or reserved characters."""
    name = _UNSAFE.sub("_", label).strip().rstrip(".")
    return name if name and name not in (".", "..") else "_"


@dataclass
class SortPlan:
    run: Path
    into: Path
    mode: str
    moves: list[tuple[str, str]] = field(default_factory=list)  # (source file, destination under DIR)
    counts: Counter = field(default_factory=Counter)  # folder -> images going there
    missing: list[str] = field(default_factory=list)  # images whose input file is not there
    not_files: list[str] = field(default_factory=list)  # a FIFO, a folder, a device: never read


def _destinations(facts: RunFacts, image: str, min_score: float) -> list[str]:
    line = facts.lines[image]
    review = facts.reviews.get(image)
    if line.get("status") != "ok" and review is None:
        return [FAILED]
    if facts.task == "detection":
        reviewed = review is not None and review.boxes is not None
        labels = []
        for box in boxes_of(facts, image):
            score = box.get("score")
            if reviewed or score is None or score >= min_score:
                name = folder_name(str(box.get("label")))
                if name not in labels:
                    labels.append(name)
        return labels or [EMPTY]
    label = label_of(facts, image)
    if label is None:
        return [FAILED]
    if review is None or review.label is None:
        score = top_label(line)[1]
        if score is not None and score < min_score:
            return [UNSURE]
    return [folder_name(label)]


def plan_sort(
    run_dir: Path | str,
    into: Path | str,
    min_score: float = 0.0,
    mode: str = "copy",
    input_dir: Path | None = None,
) -> SortPlan:
    """Where every image goes; raises BatchLensError (one sentence) when the sort cannot be done.
    `input_dir`: where the input images are now, when not where the run recorded them."""
    if mode not in MODES:
        raise ValueError(mode)
    facts = load_run(run_dir, input_dir)
    into = Path(into).expanduser().absolute()
    if facts.task not in ("classification", "detection"):
        raise BatchLensError(
            f"The run in {facts.path} is {facts.task or 'of no known task'}; only classification and "
            "detection runs can be sorted into folders."
        )
    if facts.input_dir is None:
        where = (
            f"The input folder {facts.recorded_input} is not on this computer"
            if facts.recorded_input
            else ("The run does not say where its input images are")
        )
        raise BatchLensError(f"{where}; give the folder where they are now (--input DIR).")
    input_dir = facts.input_dir.absolute()
    if into == input_dir or input_dir in into.parents:
        raise BatchLensError(
            f"{into} is inside the input folder {input_dir}; sort into a folder outside it, so the input "
            "stays as it is."
        )
    if (into / SORT_LOG).exists():
        raise BatchLensError(
            f"{into} already holds a sort ({SORT_LOG}); undo it with `batchlens sort --undo {into}` or "
            "choose another folder."
        )
    plan = SortPlan(facts.path, into, mode)
    look = os.lstat if mode == "move" else os.stat
    base = os.path.join(input_dir, "")
    for image, line in facts.lines.items():
        rel = record_key(line)
        source = base + rel  # strings here: 20,000 Path objects cost more than the stat calls
        try:
            st = look(source)
        except OSError:
            plan.missing.append(image)
            continue
        if not stat.S_ISREG(st.st_mode) and not (mode == "move" and stat.S_ISLNK(st.st_mode)):
            plan.not_files.append(image)
            continue
        for folder in _destinations(facts, image, min_score):
            plan.moves.append((source, f"{folder}/{rel}"))
            plan.counts[folder] += 1
    for folder in plan.counts:
        target = into / folder
        if target == input_dir or target in input_dir.parents:
            raise BatchLensError(
                f"Sorting into {into} would put images into {target}, which holds the input folder "
                f"{input_dir}; choose another folder to sort into."
            )
    return plan


def first_clash(plan: SortPlan) -> str | None:
    """The first destination that already exists (or that two images would share), or None."""
    seen = set()
    for _, dest in plan.moves:
        if dest in seen or os.path.lexists(plan.into / dest):
            return dest
        seen.add(dest)
    return None


def _copy_exclusive(source: str | Path, dest: Path) -> None:
    """Copy `source` to `dest`, which must not exist (O_EXCL: no race can make this overwrite)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    shutil.copystat(source, dest)


def _place(source: str | Path, dest: Path, action: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if action == "copy":
        _copy_exclusive(source, dest)
    elif action == "link":
        os.symlink(os.path.abspath(source), dest)  # fails when dest exists
    else:
        try:
            os.link(source, dest, follow_symlinks=False)  # same disk: fails when dest exists
        except OSError:
            if os.path.islink(source):
                os.symlink(os.readlink(source), dest)
            else:
                _copy_exclusive(source, dest)
        os.unlink(source)


def do_sort(plan: SortPlan, progress=None) -> Counter:
    """Carry out the plan; returns the counts done per folder. Refuses before acting when a
    destination exists. `progress(done, total)` is called now and then."""
    clash = first_clash(plan)
    if clash is not None:
        raise BatchLensError(
            f"Nothing was sorted: {plan.into / clash} already exists, and sorting never overwrites; "
            "choose an empty folder or move that file away."
        )
    plan.into.mkdir(parents=True, exist_ok=True)
    done: Counter = Counter()
    header = {"sorted_at": now_iso(), "run": str(plan.run), "into": str(plan.into), "mode": plan.mode}
    with open(plan.into / SORT_LOG, "x", encoding="utf-8") as log:
        log.write(json.dumps(header) + "\n")
        log.flush()
        # A moved file placed in several folders (detection) is moved once, into the last, and copied first.
        last = {source: i for i, (source, _) in enumerate(plan.moves)}
        for i, (source, rel) in enumerate(plan.moves):
            action = plan.mode
            if action == "move" and last[source] != i:
                action = "copy"
            # The line first, then the file: a sort stopped between the two leaves a line whose file
            # is not there (undo skips it), never a placed file that undo does not know of.
            entry = {"action": action, "source": os.fsdecode(source), "dest": rel}
            log.write(json.dumps(entry) + "\n")  # ASCII: a name that is not UTF-8 survives as \\udcNN
            log.flush()
            try:
                _place(source, plan.into / rel, action)
            except OSError as exc:
                raise BatchLensError(
                    f"The sort stopped at {source}: {exc.strerror or exc}; what it placed so far is in "
                    f"{plan.into / SORT_LOG}, and `batchlens sort --undo {plan.into}` takes it back."
                ) from None
            done[rel.split("/", 1)[0]] += 1
            if progress is not None and (i % 200 == 0 or i + 1 == len(plan.moves)):
                progress(i + 1, len(plan.moves))
    return done


@dataclass
class UndoResult:
    removed: int = 0
    moved_back: int = 0
    kept: list[str] = field(default_factory=list)  # files left where they are, with the reason


def undo_sort(into: Path | str) -> UndoResult:
    """Reverse the sort logged in `into`/sort-log.jsonl: copies and links are removed, moved files go
    back (never over a file that has since appeared), emptied folders are removed, and the log is
    renamed sort-log.undone.jsonl."""
    into = Path(into).expanduser().absolute()
    log_path = into / SORT_LOG
    try:
        lines = log_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BatchLensError(f"{into} holds no {SORT_LOG}, so there is no sort to undo there.") from None
    result = UndoResult()
    entries = []
    for text in lines[1:]:
        try:
            entry = json.loads(text)
        except ValueError:
            continue  # a line cut by a crash: its file was never placed (the line comes first)
        if isinstance(entry, dict) and entry.get("action") in MODES:
            entries.append(entry)
    folders = set()
    for entry in reversed(entries):
        dest = into / entry["dest"]
        source = Path(entry["source"])
        folders.update(p for p in dest.parents if into in p.parents)
        if not os.path.lexists(dest):
            continue
        if entry["action"] == "move":
            if os.path.lexists(source):
                result.kept.append(f"{dest} (a file is back at {source})")
                continue
            source.parent.mkdir(parents=True, exist_ok=True)
            _place(dest, source, "move")
            result.moved_back += 1
        else:
            dest.unlink()
            result.removed += 1
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only when empty: a file someone added stays
        except OSError:
            pass
    os.replace(log_path, into / "sort-log.undone.jsonl")
    return result


def plan_text(plan: SortPlan) -> str:
    """The counts per folder, a line each, biggest first (what the CLI prints and the window shows)."""
    verb = {"copy": "copied", "link": "linked", "move": "moved"}[plan.mode]
    rows = [
        f"  {folder}/: {count:,}"
        for folder, count in sorted(plan.counts.items(), key=lambda x: (-x[1], x[0]))
    ]
    notes = []
    if plan.missing:
        notes.append(f"{len(plan.missing):,} image(s) are no longer in the input folder and are left out.")
    if plan.not_files:
        notes.append(
            f"{len(plan.not_files):,} entry(ies) are not plain files (a pipe, a folder) and are left out."
        )
    return "\n".join([f"{sum(plan.counts.values()):,} file(s) to be {verb} into {plan.into}:", *rows, *notes])


__all__ = [
    "SORT_LOG",
    "SortPlan",
    "do_sort",
    "first_clash",
    "plan_sort",
    "plan_text",
    "undo_sort",
    "load_run",
]
