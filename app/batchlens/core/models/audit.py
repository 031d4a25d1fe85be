"""What a model file would do when it is loaded, read before it is loaded.

A model file can carry code: a pickle imports and calls whatever its author named, a torch.export
archive (.pt2) unpickles weights marked "use_pickle" (and any legacy or sample-input pickle torch
cannot read safely) with `weights_only=False`, may carry compiled native code (AOTInductor), its graph
may name Python modules to import, and its size expressions and shape guards are evaluated as Python;
a TorchScript archive cannot import Python, but its code can call operators that read and write files
(`torch.save`, `torch.from_file`, torchvision's `image::read_file`). `checkpoint_risks`, `pt2_risks`
and `torchscript_risks` list all of that without unpickling anything, and every operator a graph calls
must be on the allowlist in graph_ops.py (`scripted_graph_risks` reads a loaded TorchScript module's
graphs too), so that loaders refuse such a file unless the user trusts it (files.pickle_risk picks the
one for a file). Archive members are read through a bounded stream (`read_member`).

How much memory a file or a folder would claim: size_audit.py.
"""

from __future__ import annotations

import functools
import json
import pickletools
import re
import zipfile
from _compat_pickle import IMPORT_MAPPING
from pathlib import Path

from batchlens.core.machine.memory import format_bytes
from batchlens.core.models.graph_ops import (
    export_target_allowed,
    export_target_name,
    operator_allowed,
)


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
# The most any one archive member is inflated to while it is read (a pickle, a graph, code): a
# deflate bomb stops here instead of filling memory.
MEMBER_LIMIT = 128 * 2**20
# TorchScript code, as torch.jit.save prints it: `ops.NS.NAME(...)` for operators outside aten,
# `torch.NAME(...)` for aten's, a few prim nodes as Python syntax, and custom C++ classes by type.
_TS_STRINGS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_TS_NAMESPACED = re.compile(r"(?<![\w.])ops\s*\.\s*(\w+)\s*\.\s*(\w+)")
_TS_ATEN = re.compile(r"(?<![\w.])torch\s*\.\s*(\w+)\s*\(")
_TS_SYNTAX = {"print": "Print", "fork": "fork", "wait": "wait", "rpc_async": "rpc_async",
              "rpc_sync": "rpc_sync", "rpc_remote": "rpc_remote", "awaitable": "awaitable",
              "awaitable_wait": "awaitable_wait", "awaitable_nowait": "awaitable_nowait"}  # fmt: skip
_TS_PRIM_CALL = re.compile(r"(?<![\w.])(" + "|".join(_TS_SYNTAX) + r")\s*\(")
_TS_CUSTOM_CLASS = re.compile(r"__torch__\s*\.\s*torch\s*\.\s*classes\s*\.\s*(\w+)\s*\.\s*(\w+)")
# A .pt2 symbolic-size expression (sympy parses it with eval) or shape guard (compiled as Python):
# numbers, operators, size symbols (s0, u3) and sympy's arithmetic functions, nothing else.
_SIZE_NAMES = frozenset(
    {"FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
     "CeilDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
     "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural", "IntTrueDiv", "FloatTrueDiv",
     "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo",
     "and", "or", "not", "Integer", "Rational", "Float", "Symbol", "Add", "Mul", "Pow", "GreaterThan",
     "LessThan", "StrictGreaterThan", "StrictLessThan", "Equality", "Unequality", "floor", "ceiling",
     "precision", "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
     "nonzero", "even", "odd", "L", "size", "stride", "storage_offset", "trunc", "ceil", "sqrt",
     "sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt"}
)  # fmt: skip
_SIZE_SYMBOL = re.compile(r"[a-z]{1,3}\d+")
# What a guard or a sympy srepr spells with a dot or a quote, and may: math.trunc, torch.sym_float,
# L['x'].size(), Symbol('s3'), Float('0.5').
_SIZE_DOTTED = re.compile(
    r"\b(?:math\.(?:trunc|floor|ceil|sqrt)|torch\.sym_\w+)\b|\.(?:size|stride|storage_offset)\(\)"
)
_SIZE_QUOTED = re.compile(r"'([a-z]{1,3}\d+|[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)'")
_GUARD_INDEX = re.compile(r"L(?:\[(?:'\w+'|\d+)\])+")


class MemberTooLarge(Exception):
    """An archive member that inflates beyond what BatchLens reads of it (MEMBER_LIMIT)."""


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo | str, limit: int = MEMBER_LIMIT) -> bytes:
    """A member's bytes, read through a bounded stream: at most `limit` bytes are ever inflated, so a
    deflate bomb costs `limit` of memory and the time to inflate it, then raises MemberTooLarge."""
    info = archive.getinfo(info) if isinstance(info, str) else info
    if info.file_size > limit:
        raise MemberTooLarge(info.filename)
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise MemberTooLarge(info.filename)
    return data


def _too_large(name: str) -> str:
    return f"{_relative(name)} unpacks to more than {format_bytes(MEMBER_LIMIT)}"


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
    try:
        return _pickle_risks(read_member(archive, info), where)
    except MemberTooLarge:
        return [f"a pickle BatchLens cannot check: {_too_large(info.filename)}"]


def _zip_pickle_risks(archive: zipfile.ZipFile, where: str | None) -> list[str]:
    """Every pickle in a torch.save or TorchScript zip (data.pkl, constants.pkl...), all checked:
    by entry, not by name, so that a duplicate name cannot hide one."""
    risks = []
    for info in archive.infolist():
        if info.filename.endswith(".pkl"):
            named = None if where is None else f"{where}:{info.filename}"
            try:
                risks += _pickle_risks(read_member(archive, info), named)
            except MemberTooLarge:
                risks.append(f"a pickle BatchLens cannot check: {_too_large(info.filename)}")
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
                config = json.loads(read_member(archive, info))["config"]
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
                try:
                    risks += _graph_risks(read_member(archive, info).decode("utf-8", "replace"), rel)
                except MemberTooLarge:
                    risks.append(f"a graph BatchLens cannot check: {_too_large(info.filename)}")
            else:
                risks += _member_risks(archive, info, rel)
    return list(dict.fromkeys(risks))


def _graph_risks(text: str, where: str) -> list[str]:
    """An exported graph (JSON) that makes torch import a module by name, calls an operator that is not
    a pure tensor operation (graph_ops.py), or holds size expressions or guards that are not plain
    arithmetic (torch evaluates them as Python while loading and running it)."""
    risks = [
        f"a Python module imported by name: {m.group(1) or 'an enum'} ({where})"
        for m in _PT2_IMPORTS.finditer(text)
    ]
    try:
        graph = json.loads(text)
    except (ValueError, RecursionError):
        return [*risks, f"a graph BatchLens cannot read ({where})"]
    todo = [graph]
    while todo:  # (a stack, not recursion: nesting cannot exhaust Python's)
        value = todo.pop()
        if isinstance(value, list):
            todo.extend(reversed(value))
            continue
        if not isinstance(value, dict):
            continue
        target = value.get("target")
        if isinstance(target, str) and "inputs" in value and not export_target_allowed(target):
            risks.append(f"the operator {export_target_name(target)} in {where}")
        operator = value.get("as_operator")
        if isinstance(operator, str) and not export_target_allowed(operator):
            risks.append(f"the operator {export_target_name(operator)} in {where}")
        expression = value.get("expr_str")
        if isinstance(expression, str) and not _is_size_arithmetic(expression):
            risks.append(f"a size expression that is not arithmetic: {expression[:60]!r} ({where})")
        todo.extend(reversed(list(value.values())))
    ranges = graph.get("range_constraints") if isinstance(graph, dict) else None
    for key in ranges if isinstance(ranges, dict) else []:
        if not _is_size_arithmetic(str(key)):
            risks.append(f"a size expression that is not arithmetic: {str(key)[:60]!r} ({where})")
    guards = graph.get("guards_code") if isinstance(graph, dict) else None
    for guard in guards if isinstance(guards, list) else [guards] if guards else []:
        if not (isinstance(guard, str) and _is_size_arithmetic(_GUARD_INDEX.sub(" L", guard))):
            risks.append(f"a shape guard that is not arithmetic: {str(guard)[:60]!r} ({where})")
    return list(dict.fromkeys(risks))


def _is_size_arithmetic(text: str) -> bool:
    """Numbers, operators and the names sizes are written with (see _SIZE_NAMES), nothing else: no
    string, attribute, lambda or name that Python or sympy would resolve to another function."""
    if len(text) > 100_000 or "__" in text:
        return False
    text = _SIZE_QUOTED.sub(r"\1", _SIZE_DOTTED.sub(lambda m: " " + m.group(0).split(".")[-1], text))
    if not re.fullmatch(r"[\w\s+\-*/%()<>=!,.&|~^\[\]]*", text):
        return False  # (a quote, a colon, a backslash...)
    text = re.sub(r"\b\d+(?:\.\d*)?(?:e[+-]?\d+)?", "0", text)  # numbers, so that a dot is a decimal point
    if "." in text:
        return False  # attribute access
    names = re.findall(r"[A-Za-z_]\w*", text)
    return all(name in _SIZE_NAMES or _SIZE_SYMBOL.fullmatch(name) for name in names)


def torchscript_code_risks(path: Path) -> list[str]:
    """What a TorchScript archive's code calls, read from the code itself before torch loads it (a
    module's __setstate__ runs while it loads, and prim::Enter runs a class's __enter__, which the
    graph of forward does not show): every operator it names must be allowed (graph_ops.py), and no
    custom C++ class may appear. Its pickles (data.pkl, constants.pkl) are read by TorchScript's own
    C++ unpickler, which resolves only TorchScript and torch types, never a Python global."""
    risks = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not ("/code/" in f"/{info.filename}" and info.filename.endswith(".py")):
                continue
            where = _relative(info.filename)
            try:
                code = read_member(archive, info).decode("utf-8", "replace")
            except MemberTooLarge:
                risks.append(f"code BatchLens cannot check: {_too_large(info.filename)}")
                continue
            code = _TS_STRINGS.sub('""', code)  # (a message that mentions print( calls nothing)
            found = [(m.start(), f"{m.group(1)}::{m.group(2)}") for m in _TS_NAMESPACED.finditer(code)]
            found += [(m.start(), f"aten::{m.group(1)}") for m in _TS_ATEN.finditer(code)]
            found += [(m.start(), f"prim::{_TS_SYNTAX[m.group(1)]}") for m in _TS_PRIM_CALL.finditer(code)]
            for _, name in sorted(found):
                if not operator_allowed(name):
                    risks.append(f"the operator {name} in {where}")
            risks += [
                f"the custom class torch.classes.{m.group(1)}.{m.group(2)} in {where}"
                for m in _TS_CUSTOM_CLASS.finditer(code)
            ]
    return list(dict.fromkeys(risks))


def torchscript_risks(path: Path) -> list[str]:
    """What a TorchScript archive could do beyond computing, read before it is loaded (see
    torchscript_code_risks); scripted_graph_risks reads the loaded graphs as well."""
    return torchscript_code_risks(path)


def scripted_graph_risks(module) -> list[str]:
    """Every operator in a loaded TorchScript module's graphs that is not allowed (graph_ops.py): each
    method of each submodule (once per type), each function they call (once), the blocks of their
    branches and loops, their subgraphs. A method that calls a TorchScript class's method (not a
    module's) is read once more with its calls inlined, which reaches that method's body."""
    import torch

    risks: list[str] = []
    types = {m._c._type().qualified_name() for m in module.modules()}
    seen: set = set()
    for current in module.modules():
        kind = current._c._type().qualified_name()
        for name in current._c._method_names():
            if (kind, name) in seen:
                continue
            seen.add((kind, name))
            graph = current._c._get_method(name).graph
            where = f"{current.original_name}.{name}"
            if _visit_script_graph(graph, where, risks, seen, types):
                inlined = graph.copy()
                torch._C._jit_pass_inline(inlined)
                _visit_script_graph(inlined, where, risks, seen, types)
    return list(dict.fromkeys(risks))


def _visit_script_graph(graph, where: str, risks: list[str], seen: set, module_types: set) -> bool:
    """Adds the disallowed operators and custom classes of a graph, and of the functions it calls, to
    `risks`; True when it calls a method of a class that is not a module (read it inlined)."""
    inline = False
    todo = [(graph, where)]
    while todo:
        block, at = todo.pop()
        for node in block.nodes():
            kind = node.kind()
            if not operator_allowed(kind):
                risks.append(f"the operator {kind} in {at}")
            if kind in ("prim::GetAttr", "prim::CallMethod", "prim::CreateObject"):
                for value in [*node.outputs(), *node.inputs()][:2]:
                    typename = str(value.type())
                    if "__torch__.torch.classes." in typename:
                        risks.append(f"the custom class {typename.removeprefix('__torch__.')} in {at}")
            if kind == "prim::CallMethod":
                callee = node.inputsAt(0).type()
                interface = getattr(callee, "is_interface_type", lambda: False)()
                inline = inline or not (interface or str(callee) in module_types)
            elif kind == "prim::CallFunction":
                try:
                    function = node.inputsAt(0).toIValue()
                    name = function.qualified_name
                except Exception:  # a function value BatchLens cannot name: read the caller inlined
                    inline = True
                else:
                    if ("function", name) not in seen:
                        seen.add(("function", name))
                        todo.append((function.graph, name))
            todo.extend((inner, at) for inner in node.blocks())
            todo.extend((node.g(a), at) for a in node.attributeNames() if node.kindOf(a) == "g")
    return inline


def checkpoint_risks(path: Path) -> list[str]:
    """The globals beyond plain weights that a torch.save file (.pth/.pt/.bin/.ckpt) imports: a zip, or
    the legacy format (torch.save(..., _use_new_zipfile_serialization=False): pickles one after another,
    then the raw storages). Raises zipfile.BadZipFile for a file that is neither."""
    if not zipfile.is_zipfile(path):
        return legacy_checkpoint_risks(path)
    with zipfile.ZipFile(path) as archive:
        return _zip_pickle_risks(archive, None)


# The legacy format: the magic number, the protocol version, sys_info, the object, its storage keys.
_LEGACY_PICKLES = 5


def legacy_checkpoint_risks(path: Path) -> list[str]:
    """The unsafe globals of a legacy torch.save file's pickles, each read statically and bounded (the
    storages that follow them are never read)."""
    risks: list[str] = []
    with open(path, "rb") as stream:
        if stream.read(1) != b"\x80":  # every pickle torch writes starts with PROTO
            raise zipfile.BadZipFile(f"{path} is neither a zip nor a legacy torch.save file")
        stream.seek(0)
        for _ in range(_LEGACY_PICKLES):
            start = stream.tell()
            try:
                for op, _arg, pos in pickletools.genops(stream):
                    if pos - start > MEMBER_LIMIT:
                        return [
                            *risks,
                            f"a pickle BatchLens cannot check: more than {format_bytes(MEMBER_LIMIT)}",
                        ]
                    if op.name == "STOP":
                        break
            except Exception:  # malformed, or the file ends: what was read so far is judged below
                return [*risks, "a pickle BatchLens cannot check (legacy format)"]
            end = stream.tell()
            stream.seek(start)
            risks += _pickle_risks(stream.read(end - start), None)
            stream.seek(end)
    return list(dict.fromkeys(risks))


def summarise(risks: list[str], shown: int = 3) -> str:
    """The first few risks, for a sentence."""
    return "; ".join(risks[:shown]) + (f" and {len(risks) - shown} more" if len(risks) > shown else "")


__all__ = [
    "checkpoint_risks",
    "legacy_checkpoint_risks",
    "pickle_globals",
    "pt2_risks",
    "read_pickle",
    "read_member",
    "scripted_graph_risks",
    "summarise",
    "torchscript_code_risks",
    "torchscript_risks",
]
