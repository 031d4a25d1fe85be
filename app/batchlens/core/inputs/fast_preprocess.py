"""--fast-decode's preprocessing: the model's own resize and centre crop, done on the decoded uint8
tensor by torch's SIMD kernel instead of on the Pillow image.

torch's antialiased bilinear resize on uint8 (AVX2/AVX-512) is several times Pillow's: 640x480
photos to resnet18's input took 1.1 against 2.4 ms, 1600x1200 3.2 against 8.2 (pixels to tensor
included; 1 thread, 2026-11-27). Its pixels are not Pillow's: one grey level apart on some of them,
so it belongs with the fast settings (which already trade a reduced-scale JPEG decode for speed),
never with the defaults, whose results match the model library's preprocessing to float rounding.

It is used only where it is the same preprocessing: a classifier whose preprocessing BatchLens knows
(`LoadedModel.preprocessing`) with an antialiased bilinear resize (the filter torch's uint8 kernel
has), and only when, on a seeded test picture, its input to the model is within `TOLERANCE_LEVELS`
grey levels of the model's own preprocessing everywhere (same size, same crop, same normalisation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from batchlens.core.inputs.images import Candidate, decodes_reduced
from batchlens.core.models import LoadedModel
from batchlens.core.models.preprocessing import Preprocessing

#: the largest difference allowed against the model's own preprocessing, in grey levels (0-255)
TOLERANCE_LEVELS = 2.5
_TEST_SIZE = (400, 300)  # (width, height) of the seeded test picture: larger than most models' inputs


@functools.cache
def _test_picture() -> Image.Image:
    """A photo-like picture (smooth colour fields, fine noise), the same on every run; made with torch
    in ~1 ms (Pillow's filters took 17)."""
    generator = torch.Generator().manual_seed(0)
    width, height = _TEST_SIZE
    coarse = torch.rand((1, 3, height // 16, width // 16), generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    noise = torch.randint(-8, 9, smooth.shape, generator=generator)
    pixels = (smooth + noise).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pixels.numpy()))


def _one_grey_level(pre: Preprocessing) -> float:
    """How much one grey level (1/255) moves a model input value, in the preprocessing's units."""
    if pre.mean is not None and pre.std is not None:
        return 1 / 255 / min(pre.std)
    return abs(pre.rescale)


def fast_preprocess_for(model: LoadedModel) -> tuple[Callable | None, bool | str]:
    """The uint8-tensor preprocessing for `model`, and what summary.json says (True, or why not).
    Checked once per preprocessing and transform (the run's start note and its pipeline both ask)."""
    adapter = model.adapter
    key = (model.preprocessing, adapter.transform, adapter.position_free, adapter.color_mode)
    try:
        return _checked_once(*key)
    except TypeError:  # a transform that cannot be a dict key: checked each time
        return _checked(*key)


def _checked(pre, transform, position_free: bool, color_mode: str) -> tuple[Callable | None, bool | str]:
    if not position_free:
        return None, "only classifiers (their scores refer to no pixel position)"
    if pre is None or not pre.resize:
        return None, "the model's preprocessing is not known to BatchLens, or has no resize"
    if pre.interpolation != "bilinear" or not pre.antialias:
        return None, f"torch's uint8 kernel is antialiased bilinear; this model resizes {pre.interpolation}"
    fast = pre.to_transform(geometry_on_tensor=True)
    picture = _test_picture().convert(color_mode)
    try:
        own, ours = transform(picture), fast(picture)
    except Exception as exc:  # noqa: BLE001 - whatever fails here, the run keeps the model's own
        return None, f"the tensor preprocessing failed on a test picture ({type(exc).__name__})"
    if own.shape != ours.shape or own.dtype != ours.dtype:
        return None, "the tensor preprocessing gave another shape than the model's own"
    levels = float((own - ours).abs().max()) / _one_grey_level(pre)
    if levels > TOLERANCE_LEVELS:
        return None, f"the tensor preprocessing differed from the model's own by {levels:.1f} grey levels"
    return fast, True


_checked_once = functools.lru_cache(maxsize=8)(_checked)


def fast_decode_helps(model: LoadedModel, candidates: list[Candidate]) -> bool:
    """Whether --fast-decode changes anything for `model`: a reduced-scale decode of one of these
    JPEGs, or its resize done on the uint8 tensor (`fast_preprocess_for`)."""
    if fast_preprocess_for(model)[1] is True:
        return True
    return any(decodes_reduced(c.path, model.adapter.decode_size) for c in candidates)
