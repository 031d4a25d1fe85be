"""Where models come from. `list_models()` for pickers, `load_model()` for the runner.

Sources: the built-in demos (resources/), and the seams for the torchvision catalogue and model files.
"""

from __future__ import annotations

import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.models.base import LoadedModel, ModelInfo
from batchlens.core.models.builtin import BUILTIN_IDS, list_builtin, load_builtin


def list_models() -> list[ModelInfo]:
    return list_builtin()


def load_model(model: str, device: torch.device, options: dict | None = None) -> LoadedModel:
    """Load `model` (an id from list_models()) onto `device`, or raise BatchLensError."""
    if model in BUILTIN_IDS:
        return load_builtin(model, device, options)
    raise BatchLensError(f"Unknown model {model!r}. Run `batchlens models` to see the models you can use.")


__all__ = ["LoadedModel", "ModelInfo", "list_models", "load_model"]
