"""The built-in demo models do their jobs on fresh images they were never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from batchlens.core.models.demo_data import SHAPES, psnr
from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Runner
from tests.helpers import make_denoise_folder, make_shapes_folder


def test_demo_shapes_accuracy_on_held_out_set(tmp_path: Path):
    labels = make_shapes_folder(tmp_path / "held_out", 200, seed=31337, size=112)
    list(
        Runner(
            RunConfig("demo-shapes", tmp_path / "held_out", tmp_path / "out", device="cpu", batch_size=16)
        ).events()
    )
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    predicted = [line["top"][0]["label"] for line in lines]
    accuracy = np.mean([p == SHAPES[t] for p, t in zip(predicted, labels)])
    print(f"demo-shapes held-out accuracy: {accuracy:.3f} on {len(labels)} images")
    assert accuracy >= 0.95


def test_demo_denoise_improves_psnr_by_3db(tmp_path: Path):
    cleans = make_denoise_folder(tmp_path / "noisy", 8, seed=2024, size=300)
    list(Runner(RunConfig("demo-denoise", tmp_path / "noisy", tmp_path / "out", device="cpu")).events())
    gains = []
    for i, clean in enumerate(cleans):
        with Image.open(tmp_path / "noisy" / f"noisy_{i:04d}.png") as im:
            noisy = np.asarray(im, dtype=np.float32) / 255
        with Image.open(tmp_path / "out" / f"noisy_{i:04d}.png") as im:
            assert im.size == (300, 300)
            denoised = np.asarray(im, dtype=np.float32) / 255
        gains.append(psnr(denoised, clean) - psnr(noisy, clean))
    print(f"demo-denoise PSNR gain: mean {np.mean(gains):.2f} dB, min {np.min(gains):.2f} dB")
    assert min(gains) >= 3.0


def test_sample_folders_ship_with_the_package():
    from batchlens.core.resources import sample_folder

    for model_id in ("demo-shapes", "demo-denoise"):
        files = list(sample_folder(model_id).glob("*.png"))
        assert len(files) >= 24, model_id
