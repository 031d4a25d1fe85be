"""How much memory a model would claim, read before it is loaded.

`size_problem` reads how many bytes a model file's tensors would need, so that a small file declaring
gigabytes (a zip bomb) is refused before torch allocates them. `refuse_config_arithmetic` and
`refuse_config_beyond_weights` do the same for a model folder, whose config.json (not its weights) sets
the architecture's size: first from its numbers alone, then from a build on the meta device.
What a file would run when loaded: audit.py.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from pathlib import Path

import psutil

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import format_bytes
from batchlens.core.models.audit import _TENSOR_RECORD, MemberTooLarge, _too_large, read_member, read_pickle


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
            if unpacked > 20 * on_disk + 2**24:  # (from the zip directory, before anything is inflated)
                return _bomb(unpacked, on_disk)
            pickles = [i for i in infos if re.fullmatch(r"(?:[^/]+/)?data\.pkl", i.filename)]
            read = read_pickle(read_member(archive, pickles[0])) if len(pickles) == 1 else None
    except MemberTooLarge as exc:
        return f"its {_too_large(str(exc))} (a zip bomb, or a damaged file)"
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
        return None
    declared: dict[str, int] = {}
    for pid in read[1] if read else []:
        if len(pid) == 5 and pid[0] == "storage" and isinstance(pid[4], int):
            declared[str(pid[2])] = pid[4] * _element_size(pid[1])
    needed = max(tensors, sum(declared.values()))
    if needed > 2 * on_disk + 2**20:
        return _bomb(max(needed, unpacked), on_disk)
    available = psutil.virtual_memory().available if available is None else available
    if needed > available:
        return (
            f"its tensors need {format_bytes(needed)}, more than the {format_bytes(available)} of memory free"
        )
    return None


def _bomb(size: int, on_disk: int) -> str:
    return (
        f"it unpacks to {format_bytes(size)} but is only {format_bytes(on_disk)} on disk, while torch "
        "stores tensors uncompressed (a zip bomb, or a damaged file)"
    )


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


# Numbers a Hugging Face or timm config.json sizes its layers with, here and in nested configs
# (text_config, vision_config, backbone_config, timm's model_args).
_WIDTHS = ("hidden_size", "d_model", "embed_dim", "n_embd", "hidden_dim", "num_features", "width")
_DEPTHS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "depth", "encoder_layers",
           "decoder_layers", "num_encoder_layers", "num_decoder_layers")  # fmt: skip
_STAGE_WIDTHS = ("hidden_sizes", "embed_dims", "dims", "embed_dim", "widths")
_STAGE_DEPTHS = ("depths", "depth", "layers", "num_blocks")
_CLASSES = ("num_labels", "num_classes")


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def config_parameter_floor(config: dict) -> tuple[int, str]:
    """(the fewest parameters the model a config.json describes can have, the numbers that say so),
    computed from its numbers alone, in time that does not depend on them: a layer of width w holds
    at least a w x w matrix (a transformer layer holds 4 or more, a conv stage's block w²/16 or more),
    a classifier one number per class."""
    best, reason = 0, ""
    todo: list[tuple[dict, int | None]] = [(config, None)]
    seen = 0
    while todo and seen < 1000:  # (nested configs; a bounded walk)
        current, inherited = todo.pop()
        seen += 1
        widths = [_count(current.get(k)) for k in _WIDTHS if _count(current.get(k))]
        # The narrowest when a config names several; a nested one (timm's model_args) may take its
        # width from the config around it.
        width = min(widths) if widths else inherited
        todo += [(v, width) for v in current.values() if isinstance(v, dict)]
        depths = [(k, _count(current.get(k))) for k in _DEPTHS if _count(current.get(k))]
        candidates = [
            (depth * width * width, f"{k} {depth:,} of width {width:,}") for k, depth in depths if width
        ]
        for key in _STAGE_DEPTHS:
            stages = current.get(key)
            if not (isinstance(stages, list) and stages and all(_count(d) for d in stages)):
                continue
            for wkey in _STAGE_WIDTHS:
                sizes = current.get(wkey)
                if isinstance(sizes, list) and len(sizes) == len(stages) and all(_count(w) for w in sizes):
                    floor = sum(d * w * w for d, w in zip(stages, sizes, strict=True)) // 16
                    candidates.append((floor, f"{key} {sum(stages):,} of widths up to {max(sizes):,}"))
            if width:
                candidates.append(
                    (sum(stages) * width * width // 16, f"{key} {sum(stages):,} of width {width:,}")
                )
        for key in _CLASSES:
            classes = _count(current.get(key))
            if classes:
                candidates.append((classes, f"{key} {classes:,}"))
        for floor, why in candidates:
            if floor > best:
                best, reason = floor, why
    return best, reason


def _amount(count: int) -> str:
    return f"{count / 1e6:,.1f} M" if count >= 100_000 else f"{count:,}"


def refuse_config_arithmetic(config: dict, weights: list[Path], where: str) -> None:
    """Refuse a config.json whose own numbers (layers, widths, classes) describe more parameters than
    the folder's safetensors hold, before anything is built, even on the meta device (building 100,000
    layers takes minutes): config_parameter_floor, against the safetensors headers."""
    floor, reason = config_parameter_floor(config)
    if floor <= 2**20:
        return
    held = safetensors_numbers(weights)
    if floor > held * 1.01 + 2**20:
        raise BatchLensError(
            f"{where}: its config.json describes a model of at least {_amount(floor)} parameters "
            f"({reason}), but its weights hold {_amount(held)} numbers, so it was not built (a config "
            "that does not fit its weights could claim any amount of memory)."
        )


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


def _element_size(storage_type) -> int:
    """Bytes per element of a pickled storage type (torch.FloatStorage: 4; UntypedStorage: 1)."""
    import torch

    name = str(storage_type).rsplit(".", 1)[-1]
    try:
        return torch.storage._get_dtype_from_pickle_storage_type(name).itemsize
    except (KeyError, AttributeError):  # UntypedStorage counts bytes
        return 1
