"""One line of predictions.jsonl: how it is made, written as strict JSON, read back and checked.

Two things need care to keep every line valid JSON that any strict reader accepts:
- File names that are not valid UTF-8 (`caf\\xe9.png` from an old zip) reach Python as str with
  surrogate escapes (os.fsdecode). They are written as the escaped text `caf\\xe9.png` (each byte
  that is not UTF-8 as a backslash-x escape) and, losslessly, as `image_bytes_b64`: the raw bytes
  of the path relative to the input folder, base64. Resume matches images by those bytes.
- NaN and infinity are not JSON. The pipeline turns a result holding them into an error line
  (`non_finite`), and every write uses `allow_nan=False` so nothing else can slip one through.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from pathlib import PurePosixPath

#: Fields of a line that name a file the run wrote, relative to the output folder.
OUTPUT_FIELDS = ("output", "mask")
#: Top-level text fields that are file paths: written with a lossless `<field>_bytes_b64` twin when
#: the name is not valid UTF-8.
PATH_FIELDS = ("image", *OUTPUT_FIELDS)
STATUSES = ("ok", "error")


def record_line(image: str, status: str, error: str | None, seconds: float, fields: dict) -> dict:
    """One line of predictions.jsonl (the output contract)."""
    return {"image": image, "status": status, "error": error, "seconds": seconds, **fields}


def has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def escape_name(text: str) -> str:
    """The documented printable form of a name: bytes that are not UTF-8 become `\\xNN`."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if has_surrogates(text) else text


def _plain(value):
    """Any str with surrogate escapes (an undecodable name inside a message) in its escaped form."""
    if isinstance(value, str):
        return escape_name(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def json_ready(record: dict) -> dict:
    """The record as written: undecodable path names escaped, with their raw bytes beside them."""
    out = {}
    for key, value in record.items():
        if key in PATH_FIELDS and isinstance(value, str) and has_surrogates(value):
            out[key] = escape_name(value)
            out[f"{key}_bytes_b64"] = base64.b64encode(os.fsencode(value)).decode("ascii")
        else:
            out[key] = _plain(value)
    return out


def all_finite_values(value) -> bool:
    """Whether no float in `value` (dicts, lists, tuples) is NaN or infinity: the per-image check,
    without building the place names that `non_finite` gives for the rare line that has one."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return True
    for item in value:  # a plain loop: this runs for every image, generators cost twice as much
        if not all_finite_values(item):
            return False
    return True


def non_finite(value, where: str = "") -> str | None:
    """The first place in `value` holding NaN or infinity (e.g. "top[0].score"), or None."""
    if not where and all_finite_values(value):  # the common case: nothing to find
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, item in items:
        found = non_finite(item, path)
        if found:
            return found
    return None


def record_key(record: dict, field: str = "image") -> str:
    """The name as the scan sees it (os.fsdecode form): from the raw bytes when the line has them."""
    raw = record.get(f"{field}_bytes_b64")
    if isinstance(raw, str):
        return os.fsdecode(base64.b64decode(raw, validate=True))
    return record[field]


def _safe_relative(text) -> bool:
    """A relative path inside its folder: no root, no `..`, no empty name."""
    if not isinstance(text, str) or not text or "\x00" in text:
        return False
    path = PurePosixPath(text)
    return not path.is_absolute() and ".." not in path.parts


def check_line(record) -> str | None:
    """Why a line read back from predictions.jsonl breaks the output contract, or None if it keeps it.
    (The task's own fields are checked by its adapter, `TaskAdapter.check_fields`.)"""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    for key in ("image", "status", "error", "seconds"):
        if key not in record:
            return f"no {key!r} field"
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is neither ok nor error"
    if record["error"] is not None and not isinstance(record["error"], str):
        return "'error' is neither text nor null"
    if record["status"] == "ok" and record["error"] is not None:
        return "an ok line with an error"
    seconds = record["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        return "'seconds' is not a time"
    for field in PATH_FIELDS:
        if field not in record:
            continue
        try:
            name = record_key(record, field)
        except (binascii.Error, ValueError, TypeError):
            return f"'{field}_bytes_b64' is not base64"
        if not _safe_relative(name) or escape_name(name) != record[field]:
            return f"{field!r} is not a relative path of this folder"
    if non_finite(record):
        return "it holds NaN or infinity"
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "it holds text that is not valid Unicode"
    return None
