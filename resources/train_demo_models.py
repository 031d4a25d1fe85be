"""Train the two built-in demo models and write their sample folders. Seeded: anyone can rebuild them.

    python resources/train_demo_models.py          # about 3-4 minutes on a laptop CPU

Writes resources/models/demo-shapes.{safetensors,json}, demo-denoise.{safetensors,json}
and resources/samples/demo-shapes/, resources/samples/demo-denoise/.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from batchlens.core.models.base import sidecar_transform
from batchlens.core.models.demo_data import SHAPES, denoise_pairs, draw_shape, to_grey_image
from batchlens.core.models.demo_nets import DenoiseNet, ShapesNet
from batchlens.core.models.sidecar import parse_sidecar

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
SAMPLES = HERE / "samples"
TRAIN_SEED = 1234
SAMPLE_SEED = 777

SHAPES_SIDECAR = {
    "name": "Demo: shapes",
    "task": "classification",
    "arch": "ShapesNet",
    "arch_kwargs": {"num_classes": len(SHAPES)},
    "labels": SHAPES,
    "input_size": [64, 64],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "color_mode": "RGB",
    "description": "Tells circles, squares, triangles and crosses apart (trained by BatchLens)",
}
DENOISE_SIDECAR = {
    "name": "Demo: denoise",
    "task": "image_to_image",
    "arch": "DenoiseNet",
    "arch_kwargs": {"channels": 1, "width": 32, "depth": 6},
    "color_mode": "L",
    "description": "Removes noise from greyscale images of any size (trained by BatchLens)",
}


def train_shapes() -> None:
    torch.manual_seed(TRAIN_SEED)
    rng = random.Random(TRAIN_SEED)
    transform = sidecar_transform(parse_sidecar(SHAPES_SIDECAR, "demo-shapes"))
    n = 12000
    print(f"shapes: generating {n} training images...")
    xs = torch.stack(
        [transform(draw_shape(SHAPES[i % 4], rng, rng.choice([64, 96, 128, 160]))) for i in range(n)]
    )
    ys = torch.tensor([i % 4 for i in range(n)])
    model = ShapesNet(len(SHAPES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    epochs = 8
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * (n // 64))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n)
        correct = 0
        for b in range(n // 64):
            idx = perm[b * 64 : (b + 1) * 64]
            x = xs[idx]
            if torch.rand(()) < 0.5:
                x = x.flip(3)
            logits = model(x)
            loss = loss_fn(logits, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == ys[idx]).sum().item()
        print(f"shapes: epoch {epoch + 1}/{epochs} train accuracy {correct / (n // 64 * 64):.3f}")
    model.eval()
    save_file(model.state_dict(), str(MODELS / "demo-shapes.safetensors"))
    (MODELS / "demo-shapes.json").write_text(json.dumps(SHAPES_SIDECAR, indent=2) + "\n")


def train_denoise() -> None:
    torch.manual_seed(TRAIN_SEED)
    print("denoise: generating clean images...")
    clean = [c for _, c in denoise_pairs(300, TRAIN_SEED, size=300)]
    clean_t = torch.from_numpy(np.stack(clean)).unsqueeze(1)  # N,1,300,300
    model = DenoiseNet(**DENOISE_SIDECAR["arch_kwargs"])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps, batch, patch = 1200, 16, 64
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        idx = torch.randint(0, len(clean), (batch,))
        i, j = torch.randint(0, 300 - patch, (2,))
        target = clean_t[idx, :, i : i + patch, j : j + patch]
        sigma = torch.empty(batch, 1, 1, 1).uniform_(0.04, 0.16)
        noisy = (target + torch.randn_like(target) * sigma).clamp(0, 1)
        loss = nn.functional.mse_loss(model(noisy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0:
            print(f"denoise: step {step + 1}/{steps} mse {loss.item():.5f}")
    model.eval()
    save_file(model.state_dict(), str(MODELS / "demo-denoise.safetensors"))
    (MODELS / "demo-denoise.json").write_text(json.dumps(DENOISE_SIDECAR, indent=2) + "\n")


def write_samples() -> None:
    rng = random.Random(SAMPLE_SEED)
    folder = SAMPLES / "demo-shapes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(32):
        draw_shape(SHAPES[rng.randrange(4)], rng, 128).save(folder / f"shape_{i + 1:02d}.png")
    folder = SAMPLES / "demo-denoise"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, (noisy, _) in enumerate(denoise_pairs(24, SAMPLE_SEED, size=300)):
        to_grey_image(noisy).save(folder / f"noisy_{i + 1:02d}.png")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    MODELS.mkdir(exist_ok=True)
    t = time.perf_counter()
    train_shapes()
    train_denoise()
    write_samples()
    print(f"done in {time.perf_counter() - t:.0f} s")
