"""Makers for the model tests: seeded random torchvision weights, small image folders, and the
hand-written reference pipelines the engine's outputs are compared with (never downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw

from batchlens.cli import main as cli_main
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.runner import Runner
from tests.core.test_proof import LiveTensorTracker

# Images of different sizes on purpose: preprocessing, batching and the way back to original pixels
# must all cope with that.
SIZES = [(96, 64), (70, 90)]


def make_photos(folder: Path, sizes=SIZES, seed: int = 0) -> list[Path]:
    """Small RGB images with some structure (a gradient, a bright block, noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate(sizes):
        x = np.linspace(0, 255, w)[None, :, None]
        y = np.linspace(0, 255, h)[:, None, None]
        pixels = (0.5 * x + 0.3 * y + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        ImageDraw.Draw(image).rectangle([w // 4, h // 4, w // 2, h // 2], fill=(250, 240, 30))
        path = folder / f"photo_{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def random_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """An untrained torchvision architecture with seeded weights, tuned so its outputs are not trivial."""
    torch.manual_seed(seed)
    kwargs = (
        {}
        if arch in torchvision.models.list_models(module=torchvision.models)
        else {"weights_backbone": None}
    )
    model = torchvision.models.get_model(arch, weights=None, **kwargs).eval()
    with torch.no_grad():
        if arch.startswith("fasterrcnn"):
            # Untrained, every box scores ~1/91: make two classes confident, with varied scores.
            model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.3)
            model.roi_heads.box_predictor.cls_score.bias[1] = 6.0
            model.roi_heads.box_predictor.cls_score.bias[3] = 5.5
        if arch.startswith("lraspp"):
            model.classifier.low_classifier.weight.normal_(0, 5)  # several classes per image, not one
    return model


def save_state_dict(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


def save_scripted(module: torch.nn.Module, path: Path, sidecar: dict) -> Path:
    """A TorchScript model file made from `module`, with its sidecar NAME.json next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(path))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def run_cli(*args) -> int:
    return cli_main(["run", "--device", "cpu", "--no-progress", *[str(a) for a in args]])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def assert_flat_live_tensors(config: RunConfig) -> None:
    """The foundation's proof, for any model: after the first image, the number of distinct live tensors
    made during the run never grows with the images done. (Distinct: an op that hands back a tensor it
    was given, like `.to()` on the right device, records it once more without making a new one.)"""
    tracker = LiveTensorTracker()
    counts = []
    with tracker:
        for event in Runner(config).events():
            if isinstance(event, ImageResult):
                assert event.ok, event.error
                tracker.live()
                counts.append(len({id(ref()) for ref in tracker.refs if ref() is not None}))
    assert len(counts) >= 4
    assert max(counts[1:]) <= counts[1], f"live tensors grow with the images done: {counts}"
