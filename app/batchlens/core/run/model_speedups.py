"""What a batching run changes in the model once its first results are out, each exact up to float
rounding: BatchNorm folded into the convolution before it (on the CPU), and the NHWC layout (conv nets
on CUDA, and on the CPU when the run batches).

The first batch runs on the model as loaded, so the first result comes as soon as a plain loop's;
`--exact` gets neither change, so it stays exactly a plain loop. The folded model is a copy: the model
as loaded comes back when the run ends (the window's next run and the bench's loops get it as loaded).

Folding traces the model with torch.fx, which replaces `nn.Module.__call__` and `__getattr__` for the
whole process while it traces: a decoding thread that runs the model's preprocessing (nn.Modules, such
as torchvision's transforms) in that moment goes through the tracer and fails ("module is not installed
as a submodule"), and a good image is reported as failed. So `apply` traces only once the prefetcher
has settled (no decoding thread runs), and one trace at a time.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from batchlens.core.models import LoadedModel
from batchlens.core.run.inference import infer, use_channels_last, wants_channels_last

_CONV_BN = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
)
#: outputs of the folded model may differ from the loaded one's by this much of their largest value
FOLD_TOLERANCE = 1e-4
#: torch.fx patches nn.Module for the whole process while it traces: two traces at once would undo
#: each other's patches
_TRACING = threading.Lock()


def fold_batch_norms(module: nn.Module) -> nn.Module | None:
    """`module` with every BatchNorm that only follows a convolution folded into that convolution's
    weights (the arithmetic is torch's `fuse_conv_bn_eval`): one operation instead of two per pair,
    ~18 % less CPU per image for resnet18. The other layers are shared with `module`, not copied.
    None when there is nothing to fold, or when torch.fx cannot trace the model (control flow on
    tensor values, TorchScript, an exported program)."""
    if module.training or isinstance(module, (torch.jit.ScriptModule, fx.GraphModule)):
        return None
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return None
    try:
        with _TRACING:
            return _fold(module)
    except Exception:  # noqa: BLE001 - a model fx cannot trace (or fold) runs as it is
        return None


def _fold(module: nn.Module) -> nn.Module | None:
    traced = fx.symbolic_trace(module)
    modules = dict(traced.named_modules())
    graph = traced.graph
    owners = {}  # what the folded graph calls, by name: the loaded model's layers, or folded copies
    folded = 0
    for node in list(graph.nodes):
        source = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue
        conv, bn = modules[source.target], modules[node.target]
        if not any(type(conv) is c and type(bn) is b for c, b in _CONV_BN) or not bn.track_running_stats:
            continue
        owners[source.target] = fuse_conv_bn_eval(conv, bn)  # a copy of the conv, the BN in its weights
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        folded += 1
    if not folded:
        return None
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr") and node.target not in owners:
            owners[node.target] = functools.reduce(getattr, node.target.split("."), traced)
    return fx.GraphModule(owners, graph, class_name=f"Folded{type(module).__name__}")


def same_outputs(a, b) -> bool:
    """Whether two model outputs (tensors, or lists/tuples/dicts of them) agree within float rounding."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        scale = a.abs().max().item() if a.numel() else 0.0
        return bool(torch.allclose(a, b, rtol=0, atol=FOLD_TOLERANCE * max(scale, 1e-3)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_outputs(x, y) for x, y in zip(a, b))
    return a == b


class ModelSpeedups:
    """The changes one run makes to `model` after its first batch (`apply`) and undoes at its end
    (`restore`). `folded` for summary.json: True, False (not tried), or why it was not done."""

    def __init__(self, model: LoadedModel, device: torch.device, cfg) -> None:
        self.model, self.device = model, device
        batching = cfg.batch_size != 1
        self.channels_last = wants_channels_last(model.module, device, cfg.channels_last, batching)
        # Measured on the CPU only (GPU: not yet measured); fp32 only (mixed precision rounds anyway);
        # a model that takes a list of images (detection) has no single input shape to check it on.
        self._fold = (
            device.type == "cpu"
            and batching
            and cfg.precision == "fp32"
            and not cfg.compile
            and not model.takes_list
        )
        self.folded: bool | str = False
        self._loaded: nn.Module | None = None
        self._applied = False

    def apply(
        self, pipeline, shape: tuple[int, ...] | None, settle: Callable[[], None] = lambda: None
    ) -> None:
        """Once, after the first batch's results: fold (checked on one random input of the first
        image's `shape` against the loaded model), then convert the layout. A batch whose images all
        failed has no shape: the next one with a picture decides, while batches are prepared ahead.
        `settle()` waits until no other thread runs the model's preprocessing (the prefetcher's
        `settle`): it is called before the model is traced or changed."""
        if self._applied or (shape is None and self._fold):
            return
        self._applied = True
        if self._fold or self.channels_last:
            settle()
        if self._fold:
            self.folded = self._try_fold(shape)
        if self.channels_last:
            self.channels_last = pipeline.channels_last = use_channels_last(
                self.model.module, self.device, True
            )

    def _try_fold(self, shape: tuple[int, ...]) -> bool | str:
        loaded = self.model.module
        folded = fold_batch_norms(loaded)
        if folded is None:
            return "nothing to fold, or the model cannot be traced"
        sample = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
        try:
            same = same_outputs(
                infer(loaded, sample, self.device, whole=True), infer(folded, sample, self.device, whole=True)
            )
        except Exception:  # noqa: BLE001 - the folded model failed where the loaded one ran: keep it
            same = False
        if not same:
            return "the folded model's outputs differed from the model's; the model runs as loaded"
        self._loaded, self.model.module = loaded, folded
        return True

    def restore(self) -> None:
        """Give `model` back as it was loaded (the folded copy is dropped)."""
        if self._loaded is not None:
            self.model.module, self._loaded = self._loaded, None
