"""Makers of hostile files for the tests (each builds its input itself) and the checks every hostile
case shares: one sentence, no traceback, bounded time."""

from __future__ import annotations

import collections
import io
import json
import pickle
import re
import threading
import zipfile
import zlib
from pathlib import Path

import torch


class Marker:
    """Unpickles into a weight of `shape`, after creating the file `path`: a real payload, proof that
    code ran when the file appears."""

    def __init__(self, path: Path, shape: tuple[int, ...] = (1,)):
        self.path, self.shape = str(path), tuple(shape)

    def __reduce__(self):
        torch_ = "__import__('torch')"
        code = f"(open({self.path!r}, 'w').close(), {torch_}.nn.Parameter({torch_}.zeros({self.shape!r})))[1]"
        return (eval, (code,))


def assert_one_sentence(message: str, names: str | Path) -> None:
    """One line, one sentence (no full stop followed by another sentence), no traceback, naming `names`."""
    message = message.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert message.endswith("."), message
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message}"
    assert str(names) in message, f"{names} not named in: {message}"


def within(seconds: float, call, *args, **kwargs):
    """call(*args, **kwargs) on a thread; its result, or a test failure when it has not returned in
    `seconds` (a hang). The exception it raised, if any, is raised here."""
    box: dict = {}

    def run():
        try:
            box["result"] = call(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), (
        f"{getattr(call, '__name__', call)} still running after {seconds} s: it hangs"
    )
    if "error" in box:
        raise box["error"]
    return box.get("result")


def rewrite_zip(source: Path, target: Path, change) -> None:
    """Copy a zip, member by member, through change(name, data) -> new data (None: leave it out)."""
    with zipfile.ZipFile(source) as src:
        members = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(target, "w") as dst:
        for name, data in members:
            data = change(name, data)
            if data is not None:
                dst.writestr(name, data)


def pickled_weight_pt2(good: Path, evil: Path, marker: Path) -> str:
    """A copy of a real torch.export archive whose first weight is marked "use_pickle" and stored as a
    pickle that creates `marker` (and then returns a weight of the right shape, so the file loads)."""
    with zipfile.ZipFile(good) as archive:
        config_name = next(
            n for n in archive.namelist() if n.endswith("data/weights/model_weights_config.json")
        )
        config = json.loads(archive.read(config_name))
    fqn, meta = next(iter(config["config"].items()))
    meta["use_pickle"] = True
    shape = tuple(size["as_int"] for size in meta["tensor_meta"]["sizes"])
    payload = io.BytesIO()
    torch.save(Marker(marker, shape), payload)
    weight_name = config_name.rsplit("/", 1)[0] + "/" + meta["path_name"]
    replaced = {config_name: json.dumps(config).encode(), weight_name: payload.getvalue()}
    rewrite_zip(good, evil, lambda name, data: replaced.get(name, data))
    return fqn


def checkpoint_zip(path: Path, pickled: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as torch.save lays it out, around a data.pkl written by the test."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


class _Storage:
    """Stands for a storage in a hand-written data.pkl; the pickler's persistent_id names it."""


class _Tensor:
    def __init__(self, storage: _Storage, numel: int):
        self.storage, self.numel = storage, numel

    def __reduce__(self):
        args = (self.storage, 0, (self.numel,), (1,), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def declaring_pickle(numel: int) -> bytes:
    """A torch.save data.pkl holding one float tensor of `numel` elements in storage record 0."""
    storage, buffer = _Storage(), io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: (
        ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is storage else None
    )
    pickler.dump({"weight": _Tensor(storage, numel)})
    return buffer.getvalue()


def deflate_bomb(path: Path, gib: int, monkeypatch, member: str = "archive/data/0") -> Path:
    """A torch.save zip whose tensor is `gib` GiB of zeros, deflated to ~1 MB per GiB on disk: torch
    inflates the whole record in memory (`member` "archive/data.pkl": the pickle is the bomb). Written
    in about a second: the compressed 16 MiB block of zeros is computed once and repeated (zipfile's
    compressor and CRC are stood in for while writing; BatchLens refuses the file from its zip
    directory, before any CRC is checked)."""
    chunk = bytes(2**24)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)

    class Repeat:
        def compress(self, data):
            return block

        def flush(self):
            return tail

    with zipfile.ZipFile(path, "w") as archive:
        if member != "archive/data.pkl":
            archive.writestr("archive/data.pkl", declaring_pickle(gib * 2**30 // 4))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        original = zipfile._get_compressor
        with monkeypatch.context() as patch:
            patch.setattr(
                zipfile,
                "_get_compressor",
                lambda kind, *a, **k: Repeat() if kind == zipfile.ZIP_DEFLATED else original(kind, *a, **k),
            )
            patch.setattr(zipfile, "crc32", lambda data, crc=0: 0)
            with archive.open(info, "w", force_zip64=True) as record:
                for _ in range(gib * 2**30 // len(chunk)):
                    record.write(chunk)
    return path
