"""Reading weights files safely and fitting a state_dict to an architecture with clear messages."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from batchlens.core.errors import BatchLensError
from batchlens.core.models.audit import checkpoint_risks, summarise
from batchlens.core.models.errors import PickleRefusedError, StateDictMismatchError
from batchlens.core.models.size_audit import refuse_oversized

if TYPE_CHECKING:
    import torch
    from torch import nn


# Checkpoints often wrap the weights: {"state_dict": ...} (Lightning), {"model": ...}, ...
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
SHOWN_KEYS = 6  # keys named per kind in a mismatch message


def _is_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _refusal_reason(exc: Exception) -> str:
    """torch names the global the pickle asked for ("Unsupported global: GLOBAL builtins.exec")."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it calls for the Python object {found.group(1)}" if found else "it stores Python objects"


def torch_load(path: Path, trust_pickle: bool = False):
    """torch.load with weights_only=True; a file that needs full pickle is refused unless trusted.
    Before torch reads it: a zip bomb is refused, and (untrusted) a pickle that imports more than tensor
    types, read statically (torch would refuse it too, but warns about pickle protocols on the way)."""
    import torch

    refuse_oversized(path)
    if not trust_pickle:
        try:
            risks = checkpoint_risks(path)
        except Exception:  # not a torch.save zip (a legacy file): torch's weights-only unpickler guards
            risks = []
        if risks:
            raise PickleRefusedError(path, f"it calls for the Python object {summarise(risks)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise PickleRefusedError(path, _refusal_reason(exc)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise BatchLensError(f"{path}: not a PyTorch weights file ({exc}).") from None
    # Only here when the user said they trust the file (--trust-pickle or the window's dialog).
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BatchLensError(f"{path}: could not be unpickled ({type(exc).__name__}: {exc}).") from None


def read_weights(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A state_dict from a .safetensors/.pth/.pt/.bin/.ckpt file, or (trusted pickles only) a whole module."""
    from torch import nn

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise BatchLensError(f"{path}: not a valid safetensors file ({exc}).") from None
    obj = torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise BatchLensError(
            f"{path}: holds a {type(obj).__name__}, not a state_dict (parameter names mapped to tensors)."
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DistributedDataParallel
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def load_state_dict_checked(module: nn.Module, state_dict: dict, source: str, arch: str) -> None:
    """load_state_dict, with a message naming the missing, unexpected and mis-shaped keys on a mismatch."""
    expected = module.state_dict()
    # BatchNorm's step counter is training state: absent from files saved with frozen BatchNorm.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} (file {list(state_dict[k].shape)}, {arch} {list(expected[k].shape)})"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_listing(wrong)}")
        raise StateDictMismatchError(
            f"{source} does not fit the {arch} architecture; " + "; ".join(parts) + ". Check the "
            'architecture (--arch or the sidecar\'s "arch") and the number of classes (--labels, or '
            '"num_classes" in the sidecar\'s "arch_kwargs").'
        )
    module.load_state_dict(state_dict, strict=False)
