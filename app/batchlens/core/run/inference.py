"""The one place a batch meets the model: forward under inference_mode, then everything the caller
keeps is copied to the CPU as compact tensors with no autograd history and no device reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from batchlens.core.errors import BatchLensError

#: --precision choices: the dtype autocast runs the model in (None: plain float32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_HALF = (torch.float16, torch.bfloat16)


def check_precision(precision: str, device: torch.device) -> None:
    """Raise BatchLensError with one sentence if `precision` is unknown or `device` cannot run it.
    "auto" is checked on the run's first batch instead (core/run/precision.py)."""
    if precision == "auto":
        return
    if precision not in PRECISIONS:
        raise BatchLensError(f"Unknown precision {precision!r}: use {', '.join(PRECISIONS)} or auto.")
    if PRECISIONS[precision] is None:
        return
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise BatchLensError(f"Mixed precision ({precision}) is not available on {device.type}; use fp32.")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BatchLensError(f"This GPU ({device}) does not support bf16; use fp16 or fp32.")


def use_channels_last(
    module: nn.Module, device: torch.device, setting: bool | None, batching: bool = False
) -> bool:
    """Convert a conv net to NHWC when asked. None: on CUDA, where cuDNN is faster with it, and on
    the CPU when the run batches (resnet18 at batch 16 on this 2-core CPU, paired rounds: 1.23x
    faster per image, 24 % less CPU; at batch 1 no clear difference, so the exact mode keeps NCHW).
    Returns whether batches should be given in channels_last too."""
    if not wants_channels_last(module, device, setting, batching):
        return False
    try:
        module.to(memory_format=torch.channels_last)
    except Exception:  # TorchScript / exported modules may not support it: keep their layout
        return False
    return True


def wants_channels_last(
    module: nn.Module, device: torch.device, setting: bool | None, batching: bool = False
) -> bool:
    """Whether `use_channels_last` would convert this module (without converting it)."""
    wanted = (device.type == "cuda" or (device.type == "cpu" and batching)) if setting is None else setting
    return bool(wanted) and any(isinstance(m, nn.Conv2d) for m in module.modules())


def describe_error(exc: BaseException) -> str:
    """A model's exception as one line: "ValueError: one image only". TorchScript wraps the model's
    own error in both of its tracebacks; its last line names the original error."""
    if isinstance(exc, UnreadableOutput):  # BatchLens's own words about the output
        return str(exc)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[-1].startswith("builtins."):
        return lines[-1].removeprefix("builtins.")
    return f"{type(exc).__name__}: {' '.join(lines)}"


class UnreadableOutput(ValueError):
    """A model output BatchLens cannot read (see output_problem): the image gets an error line."""


#: The most parts (tensors, entries) one model output may have before it is not read at all.
MAX_OUTPUT_PARTS = 100_000


def output_problem(output) -> str | None:
    """Why a model's output cannot be read, in words ("it returned a tensor on the meta device, which
    holds no values"); None when it is a tensor, or a mapping or list of them, each dense, real or
    whole-numbered, with values (the adapters read such outputs, and say it when the shape is wrong).
    Read without touching a value, so it cannot fail itself."""
    if output is None:
        return "it returned None instead of tensors"
    if isinstance(output, (str, bytes)):
        return "it returned text instead of tensors"
    if not isinstance(output, (torch.Tensor, Mapping, list, tuple)):
        return f"it returned a {type(output).__name__} instead of tensors"
    todo, parts = [output], 0
    while todo:
        value = todo.pop()
        parts += 1
        if parts > MAX_OUTPUT_PARTS:
            return f"it returned more than {MAX_OUTPUT_PARTS:,} parts"
        if isinstance(value, Mapping):
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)
        elif isinstance(value, torch.Tensor):
            if value.device.type == "meta":
                return "it returned a tensor on the meta device, which holds no values"
            if value.is_nested:
                return "it returned a nested tensor; BatchLens reads ordinary (dense) tensors"
            if value.layout != torch.strided:
                return f"it returned a sparse tensor ({value.layout}); BatchLens reads dense tensors"
            if value.is_quantized:
                return "it returned a quantized tensor; BatchLens reads ordinary tensors"
            if value.is_complex():
                return "it returned complex numbers; BatchLens reads real numbers"
    return None


def fixed_batch_size(module: nn.Module) -> int | None:
    """The batch size a model was exported with when it takes no other (a torch.export program made
    from one example keeps that example's batch as a shape guard); None when it takes any, or when
    the model does not say (eager and TorchScript modules)."""
    graph = getattr(module, "graph", None)
    if not isinstance(module, torch.fx.GraphModule) or graph is None:
        return None
    for node in graph.nodes:
        if node.op == "placeholder":
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape and isinstance(shape[0], int):  # a symbolic (dynamic) batch is a SymInt
                return shape[0]
            return None
    return None


def compile_module(module: nn.Module, mode: str | None = None) -> nn.Module:
    """--compile: torch.compile the model (lazily: the first forward compiles), in `mode` (None:
    torch's default; "reduce-overhead" adds CUDA graphs on a GPU). TorchScript modules are already
    compiled their own way and run as they are."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    return torch.compile(module, mode=mode) if mode else torch.compile(module)


def to_cpu_compact(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy that owns exactly its own storage (never a view into a batch or a device buffer).

    Half-precision outputs (autocast) are widened to float32 so adapters see ordinary floats."""
    tensor = tensor.detach()
    dtype = torch.float32 if tensor.dtype in _HALF else tensor.dtype
    if tensor.device.type == "cpu":
        return tensor.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    return tensor.to("cpu", dtype=dtype).contiguous()


def split_batch(output, n: int) -> list:
    """Split a model's batched output into `n` per-image outputs, each moved to the CPU.

    Handles a tensor with the batch first, a mapping of such tensors (segmentation's {"out": ...}),
    and a list with one entry per image (detection's list of dicts).
    """
    return split_on_cpu(batch_to_host(output), n)


def batch_to_host(output):
    """The whole batch's output on the CPU with one synchronisation: every CUDA tensor is copied into
    pinned memory without blocking, then the stream is waited on once (instead of one blocking copy
    and sync per image). Other devices and CPU outputs are returned as they are."""
    copies = []

    def start_copy(value):
        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value.detach(), non_blocking=True)
            copies.append(value.device)
            return host
        return value

    host = _map_tensors(output, start_copy)
    if copies:
        torch.cuda.current_stream(copies[0]).synchronize()
    return host


def _map_tensors(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, Mapping):
        return {key: _map_tensors(v, fn) for key, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def split_on_cpu(output, n: int) -> list:
    """A batch's output already on the CPU (`batch_to_host`) -> `n` compact per-image outputs."""
    if isinstance(output, torch.Tensor):
        return [to_cpu_compact(item) for item in output.unbind(0)]
    if isinstance(output, Mapping):
        per_key = {key: split_on_cpu(value, n) for key, value in output.items()}
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


def infer(
    module: nn.Module,
    batch: torch.Tensor | list[torch.Tensor],
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    whole: bool = False,
):
    """Run one batch (a stacked tensor, or a list of images for models that take lists) and return
    per-image CPU outputs (`whole`: the batch's output on the CPU as the model gave it, not split).
    Nothing on the device is referenced once this returns.

    `precision` "fp16"/"bf16" runs the forward under autocast; `channels_last` hands a 4-D batch to
    the model in NHWC layout (pair it with a model converted by `to(memory_format=channels_last)`).
    A pinned CPU batch is copied without blocking, so the copy overlaps the previous batch's work."""
    n = batch.shape[0] if isinstance(batch, torch.Tensor) else len(batch)
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        if isinstance(batch, torch.Tensor):
            inputs = batch.to(device, non_blocking=True)
            if channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
        else:
            inputs = [item.to(device, non_blocking=True) for item in batch]
        output = module(inputs)
        del inputs
        problem = output_problem(output)
        if problem:
            raise UnreadableOutput(problem)
        return batch_to_host(output) if whole else split_batch(output, n)
