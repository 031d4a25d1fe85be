"""Seeded generators of the demo models' images: training sets, held-out test sets, samples,
and synthetic folders for tests and benchmarks."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "cross"]


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(0, 255) for _ in range(3))


def _distinct_colour(rng: random.Random, other: tuple[int, int, int]) -> tuple[int, int, int]:
    while True:
        c = _colour(rng)
        if sum(abs(a - b) for a, b in zip(c, other)) > 180:
            return c


def draw_shape(shape: str, rng: random.Random, size: int = 96) -> Image.Image:
    """One RGB image of `shape`: random colours, size, position, rotation, background and noise."""
    background = _colour(rng)
    image = Image.new("RGB", (size, size), background)
    if rng.random() < 0.5:  # a gradient background now and then
        arr = np.asarray(image, dtype=np.float32)
        ramp = np.linspace(-40, 40, size, dtype=np.float32)
        arr = arr + (ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None])
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    fill = _distinct_colour(rng, background)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.18, 0.38) * size
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    angle = rng.uniform(0, 2 * math.pi)

    def rotated(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.polygon(rotated([(-h, -h), (h, -h), (h, h), (-h, h)]), fill=fill)
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
        draw.polygon(rotated(pts), fill=fill)
    elif shape == "cross":
        w = r * 0.33
        draw.polygon(rotated([(-r, -w), (r, -w), (r, w), (-r, w)]), fill=fill)
        draw.polygon(rotated([(-w, -r), (w, -r), (w, r), (-w, r)]), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    arr = np.asarray(image, dtype=np.float32)
    nprng = np.random.default_rng(rng.randrange(2**32))
    arr = arr + nprng.normal(0, rng.uniform(0, 18), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def shapes_dataset(n: int, seed: int, size: int = 96) -> list[tuple[Image.Image, int]]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        label = i % len(SHAPES)
        items.append((draw_shape(SHAPES[label], rng, size), label))
    return items


def clean_grey(rng: random.Random, size: int = 300) -> np.ndarray:
    """A piecewise-smooth greyscale picture in [0, 1]: a gradient and a few soft-edged shapes."""
    image = Image.new("L", (size, size))
    ramp = np.linspace(rng.uniform(0, 0.5), rng.uniform(0.5, 1), size, dtype=np.float32)
    base = ramp[None, :] if rng.random() < 0.5 else ramp[:, None]
    image = Image.fromarray((np.broadcast_to(base, (size, size)) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.uniform(0, size), rng.uniform(0, size)
        w, h = rng.uniform(size * 0.05, size * 0.5), rng.uniform(size * 0.05, size * 0.5)
        grey = rng.randint(0, 255)
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=grey)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=grey)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return np.asarray(image, dtype=np.float32) / 255.0


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(clean + rng.normal(0, sigma, clean.shape).astype(np.float32), 0, 1)


def denoise_pairs(n: int, seed: int, size: int = 300, sigma: float = 0.1):
    """(noisy, clean) float arrays in [0, 1]; sigma 0.1 is noise of about 25 grey levels."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    return [(add_noise(c, sigma, nprng), c) for c in (clean_grey(rng, size) for _ in range(n))]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def to_grey_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8), mode="L")
