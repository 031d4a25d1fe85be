"""The seed's lesson, proved: the naive loop keeps autograd state and outputs alive per image;
the engine keeps nothing. Each tracker is shown failing on the naive loop first."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from batchlens.core.models import load_model
from batchlens.core.models.demo_nets import DenoiseNet
from batchlens.core.run.config import EXACT_SETTINGS, RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.inference import infer
from batchlens.core.run.runner import Runner
from tests.helpers import make_denoise_folder

CPU = torch.device("cpu")


class LiveTensorTracker(TorchDispatchMode):
    """Remembers a weak reference to every tensor any op produces; `live()` counts the survivors."""

    def __init__(self):
        super().__init__()
        self.refs: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.refs.append(weakref.ref(leaf))
        return out

    def live(self) -> int:
        """Distinct tensors still alive (an op may hand back a tensor it was given: count it once)."""
        gc.collect()
        self.refs = [r for r in self.refs if r() is not None]
        return len({id(r()) for r in self.refs})


def naive_loop(model: torch.nn.Module, images: list[torch.Tensor], after_each) -> list:
    """The origin story: no no_grad, every result kept (on the device, with its graph)."""
    results = []
    for x in images:
        results.append(model(x.unsqueeze(0)))
        after_each()
    return results


def _noisy_tensors(n: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.rand(1, 48, 48) for _ in range(n)]


def test_saved_tensor_counter_grows_on_naive_loop_and_stays_zero_in_engine(tmp_path: Path):
    saved = {"n": 0}

    def pack(t):
        saved["n"] += 1
        return t

    per_image: list[int] = []
    naive_model = DenoiseNet()  # parameters require grad, as a model fresh from training does
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_loop(naive_model, _noisy_tensors(6), lambda: per_image.append(saved["n"]))
    assert per_image[0] > 0
    assert all(b > a for a, b in zip(per_image, per_image[1:])), "the naive loop saves tensors"

    make_denoise_folder(tmp_path / "in", 6, size=48)
    saved["n"] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        events = list(
            Runner(RunConfig("demo-denoise", tmp_path / "in", tmp_path / "out", device="cpu")).events()
        )
    assert sum(isinstance(e, ImageResult) and e.ok for e in events) == 6
    assert saved["n"] == 0, "the engine never records anything for backward"


def test_live_tensors_grow_on_naive_loop_and_stay_flat_in_engine(tmp_path: Path):
    naive_model = DenoiseNet()
    tracker = LiveTensorTracker()
    counts: list[int] = []
    with tracker:
        kept = naive_loop(naive_model, _noisy_tensors(8), lambda: counts.append(tracker.live()))
    assert counts[-1] - counts[1] >= 6, f"naive loop keeps outputs alive: {counts}"
    del kept

    make_denoise_folder(tmp_path / "in", 30, size=48)
    tracker = LiveTensorTracker()
    counts = []
    with tracker:
        for event in Runner(  # one image a batch: the count after each image is the engine's floor
            RunConfig("demo-denoise", tmp_path / "in", tmp_path / "out", device="cpu", **EXACT_SETTINGS)
        ).events():
            if isinstance(event, ImageResult):
                assert event.ok, event.error
                counts.append(tracker.live())
    # After the model is loaded, the number of live tensors never grows with the images done.
    assert max(counts[2:]) <= counts[2], f"engine keeps tensors alive: {counts}"


def test_engine_outputs_are_detached_compact_cpu_tensors():
    model = load_model("demo-denoise", CPU)
    batch = torch.rand(3, 1, 40, 40)
    outputs = infer(model.module, batch, CPU)
    assert len(outputs) == 3
    for out in outputs:
        assert out.device.type == "cpu"
        assert not out.requires_grad and out.grad_fn is None
        assert out.untyped_storage().nbytes() == out.numel() * out.element_size(), "a view"

    # Counter-example: what a naive loop hands back holds a graph and a view into the batch.
    naive = DenoiseNet()(batch)[0]
    assert naive.grad_fn is not None
    assert naive.untyped_storage().nbytes() > naive.numel() * naive.element_size()
