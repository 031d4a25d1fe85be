"""What a model file would do when it is loaded, read before it is loaded.

A model file can carry code: a pickle imports and calls whatever its author named, a torch.export
archive (.pt2) unpickles weights marked "use_pickle" (and any legacy or sample-input pickle torch
cannot read safely) with `weights_only=False`, may carry compiled native code (AOTInductor), and its
graph may name Python modules to import; a TorchScript archive cannot import Python, but its code can
call the ops that read and write files by name (`torch.save`, `torch.from_file`). `checkpoint_risks`,
`pt2_risks` and `torchscript_risks` list all of that without unpickling anything, so that loaders refuse
such a file unless the user trusts it (files.pickle_risk picks the one for a file).

`size_problem` reads how many bytes a model file's tensors would need, so that a small file declaring
gigabytes (a zip bomb) is refused before torch allocates them. `refuse_config_beyond_weights` does the
same for a model folder, whose config.json (not its weights) sets the architecture's size.
"""

from __future__ import annotations

import functools
import json
import math
import pickletools
import re
import zipfile
from _compat_pickle import IMPORT_MAPPING
from pathlib import Path

import psutil

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import format_bytes


@functools.cache
def safe_globals() -> frozenset[str]:
    """Globals torch's weights-only unpickler allows (tensors, storages, dtypes, OrderedDict...). A
    pickle that imports only these cannot run code, even under torch.load(weights_only=False)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # torch moved it: nothing counts as safe, every pickle is refused
        return frozenset()


_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_UNKNOWN = object()  # a stack value the static reading does not follow
# Tensor records: data/N in torch.save and TorchScript zips, data/weights|constants/* in a .pt2.
_TENSOR_RECORD = re.compile(r"(?:[^/]+/)?data/(?:\d+|weights/[^/]+|constants/[^/]+)")
# .pt2 members torch reads as text, never unpickles.
_PT2_TEXT = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
# In a .pt2 graph (JSON): treespec contexts that make torch import a module by name.
_PT2_IMPORTS = re.compile(r'default_factory_module\\*"\s*:\s*\\*"([^"\\]*)|__enum__')
# Ops that reach the file system by name, as TorchScript code or an exported graph spells them.
_FILE_OPS = re.compile(r"\b(?:torch|aten)\s*\.\s*(save|from_file)\b")


class _Global(str):
    """A global the pickle imported, as "module.name"."""


def read_pickle(data: bytes) -> tuple[set[str], list[tuple]] | None:
    """(the "module.name" of every global the pickle imports, the persistent ids it refers to), read
    statically with pickletools (nothing is imported or called); None when it cannot be read that way
    (malformed, or a global whose name is computed while unpickling)."""
    found: set[str] = set()
    persistent: list[tuple] = []
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "STOP":
                break
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):  # the top of the stack stays there
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if name == "MARK":
                marks.append(len(stack))
                continue
            # Take what the opcode consumes (down to the mark, when it uses one), then push its result.
            if pickletools.markobject in op.stack_before:
                start = marks.pop()
                taken, stack = stack[start:], stack[:start]
            else:
                count = len(op.stack_before)
                if count > len(stack):
                    return None
                taken = stack[len(stack) - count :] if count else []
                del stack[len(stack) - count :]
            if name in ("GLOBAL", "INST"):
                module, _, attr = arg.partition(" ")
                module = IMPORT_MAPPING.get(module, module)  # Python 2 names, as pickle maps them
                found.add(f"{module}.{attr}")
                result = _Global(f"{module}.{attr}")
            elif name == "STACK_GLOBAL":
                if not all(isinstance(x, str) and not isinstance(x, _Global) for x in taken):
                    return None
                result = _Global(f"{taken[0]}.{taken[1]}")
                found.add(result)
            elif name.startswith("EXT"):  # copyreg's extension registry: a global given by number
                return None
            elif name in (
                "STRING",
                "BINSTRING",
                "SHORT_BINSTRING",
                "UNICODE",
                "BINUNICODE",
                "SHORT_BINUNICODE",
                "BINUNICODE8",
            ):
                result = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            elif name in _INT_OPS:
                result = arg
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                result = memo[arg]
            elif name.startswith("TUPLE") or name == "EMPTY_TUPLE":
                result = tuple(taken)
            elif name == "BINPERSID" or name == "PERSID":
                persistent.append(taken[0] if name == "BINPERSID" else (arg,))
                result = _UNKNOWN
            else:
                result = _UNKNOWN
            stack.extend([result] * len(op.stack_after))
    except Exception:  # pickletools raises ValueError and others on malformed input
        return None
    return found, persistent


def pickle_globals(data: bytes) -> set[str] | None:
    """The globals a pickle imports (see read_pickle); None when that cannot be read statically."""
    read = read_pickle(data)
    return None if read is None else read[0]


def _pickle_risks(data: bytes, where: str | None) -> list[str]:
    """The unsafe globals of one pickle, each followed by `where` it is (None: the bare names)."""
    names = pickle_globals(data)
    if names is None:
        return [f"a pickle BatchLens cannot check ({where or 'data.pkl'})"]
    return [f"{name} ({where})" if where else name for name in sorted(names - safe_globals())]


def _member_risks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> list[str]:
    """Risks of one archive member that torch may unpickle: a raw pickle, or a torch.save zip."""
    with archive.open(info) as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        with archive.open(info) as f, zipfile.ZipFile(f) as inner:
            return _zip_pickle_risks(inner, where)
    return _pickle_risks(archive.read(info), where)


def _zip_pickle_risks(archive: zipfile.ZipFile, where: str | None) -> list[str]:
    """Every pickle in a torch.save or TorchScript zip (data.pkl, constants.pkl...), all checked:
    by entry, not by name, so that a duplicate name cannot hide one."""
    risks = []
    for info in archive.infolist():
        if info.filename.endswith(".pkl"):
            risks += _pickle_risks(archive.read(info), None if where is None else f"{where}:{info.filename}")
    return list(dict.fromkeys(risks))


def _relative(name: str) -> str:
    """A member's name inside the archive's top folder (torch names that folder after the file)."""
    return name.split("/", 1)[1] if "/" in name else name


def pt2_risks(path: Path) -> list[str]:
    """What loading this torch.export archive with torch.export.load would run or unpickle in full."""
    risks: list[str] = []
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        flat: set[str] = set()  # raw tensor bytes torch reads without unpickling
        configs: set[str] = set()
        for info in infos:
            rel = _relative(info.filename)
            if not re.fullmatch(r"data/(weights|constants)/[^/]+_config\.json", rel):
                continue
            configs.add(info.filename)
            folder = info.filename.rsplit("/", 1)[0] + "/"
            try:
                config = json.loads(archive.read(info))["config"]
                entries = [(str(fqn), dict(meta)) for fqn, meta in config.items()]
            except Exception:
                risks.append(f"{rel}: a weights table BatchLens cannot read")
                continue
            for fqn, meta in entries:
                path_name = str(meta.get("path_name", ""))
                if meta.get("use_pickle"):
                    risks.append(f"{fqn} stored as a full Python pickle (use_pickle)")
                elif rel.startswith("data/weights/") or path_name.startswith("tensor_"):
                    flat.add(folder + path_name)  # (constants named custom_obj_/opaque_obj_ are pickles)
        for info in infos:
            rel = _relative(info.filename)
            skip = info.filename in flat or info.filename in configs or rel in _PT2_TEXT
            if info.is_dir() or skip or rel.startswith("extra/"):
                continue
            if rel.startswith("data/aotinductor/"):
                risks.append(f"compiled native code ({rel})")
            elif re.fullmatch(r"models/[^/]+\.json", rel):
                risks += _graph_risks(archive.read(info).decode("utf-8", "replace"), rel)
            else:
                risks += _member_risks(archive, info, rel)
    return list(dict.fromkeys(risks))


def _graph_risks(text: str, where: str) -> list[str]:
    """An exported graph (JSON) that makes torch import a module by name, or calls a file operation."""
    risks = [
        f"a Python module imported by name: {m.group(1) or 'an enum'} ({where})"
        for m in _PT2_IMPORTS.finditer(text)
    ]
    ops = sorted(set(_FILE_OPS.findall(text.replace("aten::", "aten."))))
    return risks + [f"the file operation aten.{op} ({where})" for op in ops]


def torchscript_risks(path: Path) -> list[str]:
    """What a TorchScript archive could do beyond computing: its pickles (data.pkl, constants.pkl) are
    read by TorchScript's own C++ unpickler, which resolves only TorchScript and torch types, never a
    Python global, so they are not checked here; but its code can read and write any file by name."""
    risks = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/code/" in f"/{info.filename}" and info.filename.endswith(".py"):
                text = archive.read(info).decode("utf-8", "replace")
                ops = sorted(set(_FILE_OPS.findall(text)))
                risks += [f"the file operation torch.{op} ({_relative(info.filename)})" for op in ops]
    return risks


def checkpoint_risks(path: Path) -> list[str]:
    """The globals beyond plain weights that a torch.save zip (.pth/.pt/.bin/.ckpt) imports."""
    with zipfile.ZipFile(path) as archive:
        return _zip_pickle_risks(archive, None)


def size_problem(path: Path, available: int | None = None) -> str | None:
    """Why a zip model file (torch.save, TorchScript, .pt2) must not be loaded for its size, read from the
    zip directory and data.pkl without loading a tensor; None when nothing is wrong (or it is no zip).

    torch stores tensors uncompressed (and weights hardly compress), so tensors declared beyond twice the
    file's size on disk make a zip bomb (torch would allocate or inflate them all in memory); other members
    (TorchScript code) are deflated, but text shrinks a few times, never a thousand. Tensors that need more
    than the memory available would only end in an error."""
    path = Path(path)
    try:
        on_disk = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            tensors = sum(info.file_size for info in infos if _TENSOR_RECORD.fullmatch(info.filename))
            unpacked = sum(info.file_size for info in infos)
            pickles = [i for i in infos if re.fullmatch(r"(?:[^/]+/)?data\.pkl", i.filename)]
            read = read_pickle(archive.read(pickles[0])) if len(pickles) == 1 else None
    except (zipfile.BadZipFile, OSError, EOFError):
        return None
    declared: dict[str, int] = {}
    for pid in read[1] if read else []:
        if len(pid) == 5 and pid[0] == "storage" and isinstance(pid[4], int):
            declared[str(pid[2])] = pid[4] * _element_size(pid[1])
    needed = max(tensors, sum(declared.values()))
    if needed > 2 * on_disk + 2**20 or unpacked > 20 * on_disk + 2**24:
        size = format_bytes(max(needed, unpacked))
        return (
            f"it unpacks to {size} but is only {format_bytes(on_disk)} on disk, while torch stores tensors "
            "uncompressed (a zip bomb, or a damaged file)"
        )
    available = psutil.virtual_memory().available if available is None else available
    if needed > available:
        return (
            f"its tensors need {format_bytes(needed)}, more than the {format_bytes(available)} of memory free"
        )
    return None


def refuse_oversized(path: Path) -> None:
    """Raise BatchLensError (one sentence) when size_problem finds one: before torch reads the file."""
    problem = size_problem(path)
    if problem:
        raise BatchLensError(f"{path}: {problem}, so it was not loaded.")


def safetensors_numbers(files: list[Path]) -> int:
    """How many numbers the tensors in these safetensors files hold, from their headers only."""
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(str(path), "pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total


def refuse_config_beyond_weights(build, weights: list[Path], where: str) -> None:
    """Build the architecture a folder's config.json describes on the meta device (shapes, no memory)
    and refuse it, before anything is allocated, when its parameters need more numbers than the
    folder's safetensors hold: a config that does not fit its weights could claim any amount of memory
    (parameters the weights do not fill are initialised, in full, by the library that builds them)."""
    import torch

    with torch.device("meta"):
        module = build()
    needed = sum(p.numel() for p in module.parameters())
    held = safetensors_numbers(weights)
    if needed > held * 1.01 + 2**20:  # (room for a few tied or dropped parameters)
        raise BatchLensError(
            f"{where}: its config.json describes a model of {needed / 1e6:,.1f} M parameters, but its "
            f"weights hold {held / 1e6:,.1f} M numbers, so it was not built (a config that does not fit "
            "its weights could claim any amount of memory)."
        )


def summarise(risks: list[str], shown: int = 3) -> str:
    """The first few risks, for a sentence."""
    return "; ".join(risks[:shown]) + (f" and {len(risks) - shown} more" if len(risks) > shown else "")


def _element_size(storage_type) -> int:
    """Bytes per element of a pickled storage type (torch.FloatStorage: 4; UntypedStorage: 1)."""
    import torch

    name = str(storage_type).rsplit(".", 1)[-1]
    try:
        return torch.storage._get_dtype_from_pickle_storage_type(name).itemsize
    except (KeyError, AttributeError):  # UntypedStorage counts bytes
        return 1


__all__ = [
    "checkpoint_risks",
    "pickle_globals",
    "pt2_risks",
    "read_pickle",
    "refuse_oversized",
    "size_problem",
    "summarise",
    "torchscript_risks",
]
