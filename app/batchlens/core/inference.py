"""The one place a batch meets the model: forward under inference_mode, then everything the caller
keeps is copied to the CPU as compact tensors with no autograd history and no device reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


def to_cpu_compact(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy that owns exactly its own storage (never a view into a batch or a device buffer)."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return tensor.clone(memory_format=torch.contiguous_format)
    return tensor.to("cpu").contiguous()


def split_batch(output, n: int) -> list:
    """Split a model's batched output into `n` per-image outputs, each moved to the CPU.

    Handles a tensor with the batch first, a mapping of such tensors (segmentation's {"out": ...}),
    and a list with one entry per image (detection's list of dicts).
    """
    if isinstance(output, torch.Tensor):
        return [to_cpu_compact(item) for item in output.unbind(0)]
    if isinstance(output, Mapping):
        per_key = {key: split_batch(value, n) for key, value in output.items()}
        return [{key: values[i] for key, values in per_key.items()} for i in range(n)]
    if isinstance(output, Sequence) and not isinstance(output, str) and len(output) == n:
        return [_to_cpu_tree(item) for item in output]
    raise TypeError(f"cannot split a model output of type {type(output).__name__} into {n} images")


def _to_cpu_tree(value):
    if isinstance(value, torch.Tensor):
        return to_cpu_compact(value)
    if isinstance(value, Mapping):
        return {key: _to_cpu_tree(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu_tree(v) for v in value)
    return value


def infer(module: nn.Module, batch: torch.Tensor | list[torch.Tensor], device: torch.device) -> list:
    """Run one batch (a stacked tensor, or a list of images for models that take lists) and return
    per-image CPU outputs. Nothing on the device is referenced once this returns."""
    n = batch.shape[0] if isinstance(batch, torch.Tensor) else len(batch)
    with torch.inference_mode():
        if isinstance(batch, torch.Tensor):
            inputs = batch.to(device, non_blocking=True)
        else:
            inputs = [item.to(device, non_blocking=True) for item in batch]
        output = module(inputs)
        del inputs
        return split_batch(output, n)
