"""Sidecars for model files that sit in a folder BatchLens may not write (a read-only share, a system
folder): the window's sidecar dialog writes them into the app's data folder instead, and the loader
finds them there. The folder is Qt's AppDataLocation for BatchLens, computed here without Qt so the
command line finds the same files; BATCHLENS_DATA_DIR overrides it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from batchlens.core.data_dir import APP_NAME, user_data_dir  # noqa: F401 - where they were first


def stored_sidecar_path(model_path: Path) -> Path:
    """The data-folder sidecar of one model file: keyed by the file's absolute path (two models called
    model.pt in different folders get different sidecars), named after it so a person can tell."""
    resolved = str(Path(model_path).expanduser().resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
    return user_data_dir() / "sidecars" / f"{Path(model_path).name}.{digest}.json"


def folder_is_writable(folder: Path) -> bool:
    """True when a file can be created in `folder` (tried, not guessed from permission bits)."""
    probe = Path(folder) / f".batchlens-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def sidecar_target(model_path: Path, current: Path | None = None) -> Path:
    """Where a sidecar for `model_path` is written: over `current` (the one in use) or NAME.EXT.json
    beside the model, when that folder can be written; else the data-folder copy."""
    model_path = Path(model_path)
    target = Path(current) if current else model_path.with_name(model_path.name + ".json")
    return target if folder_is_writable(target.parent) else stored_sidecar_path(model_path)


def save_sidecar(model_path: Path, data: dict, current: Path | None = None) -> Path:
    """Write a sidecar for `model_path` (checked first with the loader's own parser) where
    sidecar_target says. Returns where."""
    from batchlens.core.models.sidecar import parse_sidecar  # (sidecar.py needs nothing from here)

    model_path = Path(model_path)
    # (a labels file named by the sidecar is read, and checked, when the model loads)
    checked = {**data, "labels": None} if isinstance(data.get("labels"), str) else data
    parse_sidecar(checked, f"the sidecar for {model_path.name}")
    target = sidecar_target(model_path, current)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
