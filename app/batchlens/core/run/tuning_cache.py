"""What earlier runs learnt, so the next run starts there: the batch size that ran fastest for a model
on a device at an input size. One small JSON file in the user's cache folder (the folder
platformdirs' `user_cache_dir("batchlens")` names; `BATCHLENS_CACHE_DIR` overrides it). Losing it
costs a few seconds of measuring; a damaged or unreadable file is ignored and rewritten."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from batchlens.core.files import atomic_write_text, read_json_object

log = logging.getLogger(__name__)

FILE_NAME = "batch-sizes.json"
MAX_ENTRIES = 200  # the oldest entries go first


def cache_dir() -> Path:
    override = os.environ.get("BATCHLENS_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "batchlens" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "batchlens"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "batchlens"


def remembered_batch_size(key: str) -> int | None:
    entry = read_json_object(cache_dir() / FILE_NAME).get(key)
    size = entry.get("batch_size") if isinstance(entry, dict) else None
    return size if isinstance(size, int) and size >= 1 else None


def remember_batch_size(key: str, size: int, images_per_second: float | None) -> None:
    path = cache_dir() / FILE_NAME
    data = read_json_object(path)
    data.pop(key, None)
    data[key] = {"batch_size": size, "images_per_second": images_per_second, "when": round(time.time())}
    for old in list(data)[:-MAX_ENTRIES]:
        del data[old]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError as exc:  # a read-only home: the next run measures again
        log.info("Could not remember the batch size in %s: %s", path, exc)
