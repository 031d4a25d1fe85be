"""Each protection against the seed's bug, pinned on its own.

The engine keeps nothing alive per image through three layers, each enough on its own for the usual
model: (a) every forward runs under torch.inference_mode(), (b) every loaded model's parameters are
frozen, (c) outputs are detached, moved to the CPU and copied out of their batch before anything keeps
them. Because any one layer hides the absence of another, each test below is built so that it fails
when exactly its own layer is removed from core/ (docs/development.md, "Protection tests", says how
that was checked).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from batchlens.core.models import load_model
from batchlens.core.models.catalogue import weights_for
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.inference import split_batch, to_cpu_compact
from batchlens.core.run.runner import Runner
from batchlens.core.tasks.image_to_image import ImageToImageAdapter
from tests.core.modelkit import make_photos, random_model, save_scripted, save_state_dict

CPU = torch.device("cpu")


class Recorder(nn.Module):
    """Image-to-image: a learnable 1x1 conv, and a note of the autograd state of every forward.

    Saved whole (a full pickle, loaded with trust) so the engine runs this very class."""

    calls: list[dict] = []  # on the class: the engine runs an unpickled copy of the instance

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        Recorder.calls.append(
            {
                "inference_mode": torch.is_inference_mode_enabled(),
                "grad_enabled": torch.is_grad_enabled(),
            }
        )
        return torch.sigmoid(self.mix(x))


@pytest.fixture
def recorder_file(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "recorder.pth"
    path.parent.mkdir()
    torch.save(Recorder(), path)
    return path


def run(model: str, tmp_path: Path, **options) -> list:
    config = RunConfig(
        model, tmp_path / "in", tmp_path / "out", device="cpu", batch_size=2, model_options=options
    )
    return list(Runner(config).events())


# (a) inference mode ---------------------------------------------------------------------------------


def test_every_forward_of_a_run_is_under_inference_mode(recorder_file: Path, tmp_path: Path):
    make_photos(tmp_path / "in", sizes=[(40, 30)] * 4)
    Recorder.calls.clear()
    events = run(str(recorder_file), tmp_path, task="image_to_image", trust_pickle=True)

    assert sum(isinstance(e, ImageResult) and e.ok for e in events) == 4
    assert Recorder.calls, "the model was never called"
    # Frozen parameters alone would leave grad mode on here; only inference_mode turns these on.
    assert all(call["inference_mode"] for call in Recorder.calls), Recorder.calls
    assert not any(call["grad_enabled"] for call in Recorder.calls), Recorder.calls


# (b) frozen parameters ------------------------------------------------------------------------------


def _catalogue_in_cache(tmp_path: Path, monkeypatch) -> str:
    """mobilenet_v3_small from the torchvision catalogue, its (seeded, random) weights already in an
    empty torch hub cache under torchvision's file name, so nothing is downloaded."""
    arch = "mobilenet_v3_small"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    staged = save_state_dict(random_model(arch), tmp_path / "staged.pth")
    name = f"{arch}-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    staged.rename(hub / name)
    monkeypatch.setattr(weights_for(arch).value, "url", f"http://127.0.0.1:9/{name}")  # never fetched
    return arch


def _exported(tmp_path: Path) -> str:
    module = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid()).eval()
    side = torch.export.Dim("side", min=8)
    program = torch.export.export(module, (torch.rand(1, 3, 32, 32),), dynamic_shapes=({2: side, 3: side},))
    torch.export.save(program, str(tmp_path / "exported.pt2"))
    return str(tmp_path / "exported.pt2")


def _hugging_face_folder(tmp_path: Path) -> str:
    """A tiny ViT classifier saved as a Hugging Face model folder (config, weights, processor)."""
    import transformers

    torch.manual_seed(4)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1},
    )  # fmt: skip
    folder = tmp_path / "vit"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def _timm_checkpoint(tmp_path: Path) -> dict:
    import timm

    torch.manual_seed(5)
    weights = save_state_dict(
        timm.create_model("test_resnet", pretrained=False, num_classes=2), tmp_path / "timm" / "r.safetensors"
    )
    (weights.parent / "labels.txt").write_text("a\nb\n")
    return {"weights": str(weights), "labels": str(weights.parent / "labels.txt")}


def _timm_hub_folder(tmp_path: Path) -> str:
    """A timm model as timm puts it on the hub (config.json + model.safetensors)."""
    import timm

    torch.manual_seed(6)
    folder = tmp_path / "timm-hub"
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    timm.models.save_for_hf(model, folder, safe_serialization=True)
    return str(folder)


def _sources(tmp_path: Path, monkeypatch) -> dict[str, tuple[str, dict]]:
    """Every way the engine gets a model: model id and the options of its loader request."""
    arch = "mobilenet_v3_small"
    state_dict = save_state_dict(random_model(arch), tmp_path / "m" / "net.pth")
    safetensors = save_state_dict(random_model(arch), tmp_path / "s" / "net.safetensors")
    (safetensors.parent / "net.json").write_text(json.dumps({"arch": arch}))
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    sidecar = {"task": "classification", "labels": ["a", "b"], "input_size": [32, 32]}
    scripted = save_scripted(tiny, tmp_path / "t" / "tiny.pt", sidecar)
    pickled = tmp_path / "p" / "recorder.pth"
    pickled.parent.mkdir()
    torch.save(Recorder(), pickled)
    return {
        "demo": ("demo-shapes", {}),
        "torchvision catalogue": (_catalogue_in_cache(tmp_path, monkeypatch), {}),
        "catalogue arch + state_dict": (arch, {"weights": str(state_dict)}),
        "safetensors + sidecar": (str(safetensors), {}),
        "TorchScript": (str(scripted), {}),
        "torch.export": (_exported(tmp_path), {"task": "image_to_image"}),
        "whole pickled module": (str(pickled), {"task": "image_to_image", "trust_pickle": True}),
    }


def _extra_sources(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    """The sources that need an extra (hf, timm): their test skips, with its reason, without them."""
    pytest.importorskip("transformers", reason='needs the hf extra: pip install -e ".[hf]"')
    pytest.importorskip("timm", reason='needs the timm extra: pip install -e ".[timm]"')
    return {
        "Hugging Face folder": (_hugging_face_folder(tmp_path), {}),
        "timm checkpoint": ("timm:test_resnet", _timm_checkpoint(tmp_path)),
        "timm hub folder": (_timm_hub_folder(tmp_path), {}),
    }


def test_the_extras_model_sources_load_with_frozen_parameters(tmp_path: Path):
    sources = _extra_sources(tmp_path)
    modules = {source: load_model(model, CPU, options).module for source, (model, options) in sources.items()}
    assert all(list(module.parameters()) for module in modules.values()), "a model without parameters"
    thawed = {source: sum(p.requires_grad for p in module.parameters()) for source, module in modules.items()}
    assert all(count == 0 for count in thawed.values()), f"parameters still requiring grad: {thawed}"


def test_every_model_source_loads_with_frozen_parameters(tmp_path: Path, monkeypatch):
    sources = _sources(tmp_path, monkeypatch)
    modules = {source: load_model(model, CPU, options).module for source, (model, options) in sources.items()}
    assert all(list(module.parameters()) for module in modules.values()), "a model without parameters"
    thawed = {source: sum(p.requires_grad for p in module.parameters()) for source, module in modules.items()}
    assert all(count == 0 for count in thawed.values()), f"parameters still requiring grad: {thawed}"

    # So even a forward outside inference mode (a hook, a custom task calling the module) builds no graph.
    for source in ("torchvision catalogue", "catalogue arch + state_dict", "whole pickled module"):
        output = modules[source](torch.rand(1, 3, 40, 40))
        assert output.grad_fn is None, f"{source}: a forward outside inference mode built a graph"


# (c) outputs detached, on the CPU, out of their batch -------------------------------------------------


def _graph_carrying_batch() -> torch.Tensor:
    """What a model hands back when it leaves inference mode inside its forward (some do, to train a
    head at test time): a batch with an autograd graph behind it."""
    weight = torch.ones(3, requires_grad=True)
    return torch.rand(2, 3, 8, 8) * weight[None, :, None, None]


def test_split_outputs_are_detached_compact_copies_even_of_a_graph():
    batch = _graph_carrying_batch()
    assert batch.grad_fn is not None
    for output in [
        *split_batch(batch, 2),
        *(item["out"] for item in split_batch({"out": batch}, 2)),
        *(item["boxes"] for item in split_batch([{"boxes": batch[0]}, {"boxes": batch[1]}], 2)),
        to_cpu_compact(batch.half()),
    ]:
        assert output.grad_fn is None and not output.requires_grad, "an output keeps its graph"
        assert output.device.type == "cpu"
        assert output.untyped_storage().nbytes() == output.numel() * output.element_size(), "a view"
        assert output.dtype == torch.float32


def test_what_the_task_keeps_is_plain_cpu_data(recorder_file: Path, tmp_path: Path, monkeypatch):
    """Through a real run: the tensors the task adapter receives (and may keep until the batch is
    written) are CPU copies of their own, never views that hold the whole batch output; the events
    carry no tensor at all."""
    seen: list[torch.Tensor] = []
    postprocess = ImageToImageAdapter.postprocess

    def spy(self, output, meta):
        seen.append(output)
        return postprocess(self, output, meta)

    monkeypatch.setattr(ImageToImageAdapter, "postprocess", spy)
    make_photos(tmp_path / "in", sizes=[(40, 30)] * 4)
    events = run(str(recorder_file), tmp_path, task="image_to_image", trust_pickle=True)

    assert len(seen) == 4
    for output in seen:
        assert output.device.type == "cpu" and output.grad_fn is None
        assert output._base is None, "a view into the batch output"
        assert output.untyped_storage().nbytes() == output.numel() * output.element_size()
    assert isinstance(events[-1], RunFinished)
    for event in events:
        assert not list(_tensors_in(vars(event))), f"{type(event).__name__} carries a tensor"


def _tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)
    elif hasattr(value, "__dataclass_fields__"):
        yield from _tensors_in(vars(value))
    elif isinstance(value, np.ndarray) and value.dtype == object:
        yield from _tensors_in(list(value.flat))
