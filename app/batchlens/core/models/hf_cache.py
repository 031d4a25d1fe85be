"""The Hugging Face cache on this computer: the vision models it holds, found by reading files only
(no transformers import, no network), and the folder of `hf:ORG/NAME` (downloaded if needed).

The hub lays the cache out as HUB/models--ORG--NAME/snapshots/REVISION/config.json, with
refs/main naming the revision `main` points at. HUB is $HF_HUB_CACHE, else $HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (huggingface_hub's own order; it
also reads the older HUGGINGFACE_HUB_CACHE).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.models.errors import DownloadCancelled
from batchlens.core.models.info import HF_PREFIX, ModelInfo
from batchlens.core.models.sidecar import read_json_file

log = logging.getLogger(__name__)

# The end of a transformers class name in config.json's "architectures" -> BatchLens task.
ARCHITECTURE_TASKS = {
    "ForImageClassification": "classification",
    "ForObjectDetection": "detection",
    "ForSemanticSegmentation": "segmentation",
    "ForImageSuperResolution": "image_to_image",
}
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt"]
# A hub repository name as the hub allows it: ORG/NAME, letters, digits, "-", "_", ".", 96 at most each.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
_HUB_ADDRESSES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/")


def is_timm_config(config: dict) -> bool:
    """A timm model as timm saves it for the hub (save_for_hf / push_to_hf_hub, e.g. timm/resnet50.a1_in1k):
    config.json names one "architecture", where transformers names a list of "architectures"."""
    return isinstance(config.get("architecture"), str) and "architectures" not in config


def architecture_name(config: dict) -> str:
    if is_timm_config(config):
        return f"timm {config['architecture']}"
    return str((config.get("architectures") or ["no architecture"])[0])


def hf_task(config: dict) -> str | None:
    """The task of a transformers config (from its architectures), or of a timm one (a classifier
    unless it has no classes), None when BatchLens runs none."""
    if is_timm_config(config):
        pretrained = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
        classes = config.get("num_classes", pretrained.get("num_classes", 1000))
        return "classification" if classes else None  # 0: a backbone without a classifier
    for name in config.get("architectures") or []:
        for ending, task in ARCHITECTURE_TASKS.items():
            if isinstance(name, str) and name.endswith(ending):
                return task
    return None


def hub_cache_dir() -> Path:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # (the second: its older name)
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "huggingface" / "hub"


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot refs/main points at, else the newest one holding a config.json."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        folder = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if (folder / "config.json").is_file():
            return folder
    snapshots = [s for s in (repo_dir / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snapshots, key=lambda s: s.stat().st_mtime, default=None)


def _repo_dir(repo_id: str) -> Path:
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def list_hf_cache() -> list[ModelInfo]:
    """The cached models BatchLens can run, as `hf:ORG/NAME`, with their task; unreadable or
    non-vision entries are passed over."""
    root = hub_cache_dir()
    infos = (_cached_info(repo_dir) for repo_dir in sorted(root.glob("models--*")) if root.is_dir())
    return [info for info in infos if info is not None]


def _cached_info(repo_dir: Path) -> ModelInfo | None:
    """One cache entry as a model BatchLens can run, or None (no snapshot, unreadable, not vision)."""
    snapshot = _snapshot(repo_dir) if repo_dir.is_dir() else None
    if snapshot is None:
        return None
    try:
        config = read_json_file(snapshot / "config.json", "model config")
    except BatchLensError as exc:
        log.info("%s", exc)
        return None
    task = hf_task(config) if isinstance(config, dict) else None
    if task is None:
        return None
    repo_id = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
    weights = _weights(snapshot)
    size = sum(f.stat().st_size for f in weights) or None
    return ModelInfo(HF_PREFIX + repo_id, task, "huggingface", architecture_name(config), size, bool(weights))


def hub_model_info(text: str) -> ModelInfo:
    """The model a person typed or pasted as a Hugging Face hub name: ORG/NAME, hf:ORG/NAME or the
    model page's address. Its task when the cache holds it; else it is downloaded when a run starts.
    One sentence when the text is not a model name."""
    name = text.strip().removeprefix(HF_PREFIX)
    for address in _HUB_ADDRESSES:
        name = name.removeprefix(address)
    name = "/".join(name.split("?")[0].split("#")[0].strip("/").split("/")[:2])  # (a page inside it)
    if not _REPO_ID.fullmatch(name) or ".." in name:
        raise BatchLensError(
            f"{text.strip()!r} is not a Hugging Face model name: ORG/NAME, as in google/vit-base-patch16-224 "
            "or timm/resnet50.a1_in1k (the model page's address works too)."
        )
    cached = _cached_info(_repo_dir(name))  # this entry only, not every model in the cache
    return cached or ModelInfo(HF_PREFIX + name, "from the hub", "huggingface", "downloaded on first use")


def _weights(snapshot: Path) -> list[Path]:
    """The safetensors of a snapshot that are there (a cache's files are links that can dangle)."""
    return [f for f in snapshot.glob("*.safetensors") if f.exists()]


def _complete(snapshot: Path | None) -> bool:
    """A snapshot holds config.json and weights BatchLens loads: a download cancelled or cut off after
    config.json (small, it comes first) is not a model yet."""
    return snapshot is not None and bool(_weights(snapshot))


def is_cached(model: str) -> bool:
    """True when `hf:ORG/NAME` has a whole snapshot (config.json and safetensors) in the cache."""
    repo_dir = _repo_dir(model.removeprefix(HF_PREFIX))
    return repo_dir.is_dir() and _complete(_snapshot(repo_dir))


def _reporting_bar(progress):
    """A tqdm class for huggingface_hub that hands the bytes of the download to `progress(done,
    total)` (the window's download dialog) and prints nothing; cancelling raises DownloadCancelled."""
    import io

    from tqdm import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            super().update(n)
            # the byte count written to the cache; "Downloading bytes" counts the same bytes again
            if self.unit == "B" and not str(self.desc).startswith("Downloading bytes"):
                if progress(int(self.n), int(self.total) if self.total else None) is False:
                    raise DownloadCancelled("Download cancelled.")

    return Reporting


def _download_elsewhere(repo_id: str) -> str:
    # `hf` is huggingface_hub's command since 0.34 (its older `huggingface-cli` is gone from 1.0 on);
    # --local-dir leaves a plain folder to copy, not the cache's nested snapshot.
    folder = repo_id.split("/")[1]
    return (
        f"Download it on a computer with a network (`hf download {repo_id} --local-dir {folder}`), copy "
        f"the folder {folder} here and give its path as the model."
    )


def _download_failure(model: str, repo_id: str, exc: Exception, where: str) -> str:
    """One sentence for a failed hub download that says what to do: a name the hub does not have is
    not a network problem, and a gated model needs its conditions accepted, not a download elsewhere."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    page = f"{constants.ENDPOINT}/{repo_id}"
    if isinstance(exc, GatedRepoError):
        return (
            f"{model}: its owners ask you to accept their conditions before downloading it: open {page}, "
            "log in and accept them, then log in on this computer too (`hf auth login`) and run again."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"{model}: the Hugging Face hub has no model named {repo_id} (check the name on the model's "
            f"page, {page}; a private model needs you logged in on this computer: `hf auth login`)."
        )
    first_line = (str(exc).splitlines() or [""])[0]
    names = " ".join(t.__name__ for t in type(exc).__mro__)
    if isinstance(exc, LocalEntryNotFoundError) or "Connect" in names or "Timeout" in names:
        # "Got: ConnectError: [Errno 111] Connection refused" -> "[Errno 111] Connection refused"
        reason = re.sub(r"^(Got: )?(\w+(Error|Exception): )?", "", first_line)
        return (
            f"{model}: could not download it from the Hugging Face hub (no connection: {reason}). {where}. "
            f"Is this computer offline? {_download_elsewhere(repo_id)}"
        )
    reason = f"{type(exc).__name__}: {first_line}"
    return f"{model}: could not download it from the Hugging Face hub ({reason}). {where}."


def snapshot_for(model: str, progress=None) -> Path:
    """The local folder of `hf:ORG/NAME`: the cached snapshot, else downloaded into the cache (with
    huggingface_hub's progress bars, or `progress(done, total)`) where the network allows; one
    sentence when it cannot be had."""
    repo_id = model.removeprefix(HF_PREFIX)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise BatchLensError(
            f"{model}: a Hugging Face model is named hf:ORG/NAME (e.g. hf:google/vit-base-patch16-224)."
        )
    cached = _snapshot(_repo_dir(repo_id)) if _repo_dir(repo_id).is_dir() else None
    if _complete(cached):
        return cached
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    where = f"It is not in the Hugging Face cache ({hub_cache_dir()})"
    if cached is not None:  # downloaded in part: the download below fetches only what is missing
        where = f"Only part of it is in the Hugging Face cache ({cached}: no weights yet)"
    if offline:
        raise BatchLensError(
            f"{model}: {where.lower()[0]}{where[1:]} and HF_HUB_OFFLINE is set, so it cannot be downloaded. "
            f"{_download_elsewhere(repo_id)}"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BatchLensError(
            "Hugging Face models need the transformers library: pip install 'batchlens[hf]'."
        ) from None
    try:
        bar = _reporting_bar(progress) if progress is not None else None
        folder = snapshot_download(
            repo_id, cache_dir=hub_cache_dir(), allow_patterns=DOWNLOAD_PATTERNS, tqdm_class=bar
        )
    except DownloadCancelled:
        raise
    except Exception as exc:  # offline, unknown repo, gated repo, server error: all one sentence
        raise BatchLensError(_download_failure(model, repo_id, exc, where)) from None
    return Path(folder)


def read_hf_config(folder: Path) -> tuple[dict, str]:
    """(config.json's contents, task) of a Hugging Face model folder, read only; BatchLensError with one
    sentence when it is not a model folder, needs remote code (auto_map), or does no task BatchLens runs."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BatchLensError(f"{folder}: not a Hugging Face model folder (it has no config.json).")
    config = read_json_file(config_file, "model config")
    if not isinstance(config, dict):
        raise BatchLensError(f"{config_file}: a model config must be a JSON object.")
    processor_file = folder / "preprocessor_config.json"
    processor = read_json_file(processor_file, "processor config") if processor_file.is_file() else {}
    if "auto_map" in config or (isinstance(processor, dict) and "auto_map" in processor):
        raise BatchLensError(
            f"{folder}: this model needs its own Python code from the hub (auto_map), and BatchLens never "
            "runs downloaded code (trust_remote_code), so it was not loaded."
        )
    task = hf_task(config)
    if task is None:
        names = ", ".join(str(n) for n in config.get("architectures") or [architecture_name(config)])
        if is_timm_config(config):
            names += " without a classifier (num_classes 0)"
        raise BatchLensError(
            f"{folder}: {names} is not a model BatchLens runs (image classification, object detection, "
            "semantic segmentation or super-resolution)."
        )
    return config, task


def hf_folder_info(folder: Path) -> ModelInfo:
    """What the picker shows for a Hugging Face model folder before it loads (its path is its id)."""
    folder = Path(folder)
    config, task = read_hf_config(folder)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) or None
    return ModelInfo(str(folder), task, "huggingface", f"{architecture_name(config)} ({folder.name})", size)
