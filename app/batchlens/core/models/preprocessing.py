"""How a model wants its images prepared, as one description every model source produces.

`Preprocessing` says it once, in the words the libraries use: resize (the short side to N, exactly
H x W, or keeping the shape to cover H x W), centre crop, interpolation, scale to 0-1, mean/std, channel
order and colour mode. It is built from a sidecar (`from_sidecar`), torchvision weights
(`from_torchvision`), timm's data config (`from_timm`) or a Hugging Face `preprocessor_config.json`
(`from_hf`); `to_transform()` gives the torchvision pipeline that does it, `describe()` the sentence a
person can check (summary.json records it) and `to_sidecar()` the sidecar keys that say the same (the
window's sidecar dialog writes them).

Old sidecars keep their meaning: `input_size` alone stretches the image to exactly H x W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from PIL import Image

from batchlens.core.errors import BatchLensError
from batchlens.core.formats import DEFAULT_MAX_PIXELS
from batchlens.core.models.preprocess_steps import Multiply, ResizeToCover, ReverseChannels, ToFloat

if TYPE_CHECKING:
    from torchvision.transforms import v2


#: the resampling filters a sidecar may name (torchvision's InterpolationMode, in lower case); a
#: tuple of names, so that reading a sidecar and filling the window's choices need no torch import
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# Hugging Face processor configs name the resampling filter by Pillow's number.
PIL_RESAMPLE = {
    int(Image.Resampling.NEAREST): "nearest",
    int(Image.Resampling.LANCZOS): "lanczos",
    int(Image.Resampling.BILINEAR): "bilinear",
    int(Image.Resampling.BICUBIC): "bicubic",
    int(Image.Resampling.BOX): "box",
    int(Image.Resampling.HAMMING): "hamming",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the sidecar keys this module reads (sidecar.py accepts them next to task, labels, arch...)
SIDECAR_KEYS = (
    "input_size",
    "resize",
    "max_size",
    "keep_ratio",
    "crop",
    "crop_pct",
    "interpolation",
    "antialias",
    "rescale",
    "mean",
    "std",
    "mean_std_units",
    "channel_order",
    "color_mode",
)


@dataclass(frozen=True)
class Preprocessing:
    """The steps, in order: resize, centre crop, to float (pixel / 255), channel order, then either
    normalise with mean/std (given in 0-1 units, the model's channel order) or multiply by `rescale`.

    `resize` is (N,) for "short side to N, keep the aspect ratio" (`max_size` caps the long side) or
    (H, W) for "exactly H x W" (the aspect ratio changes), or with `keep_ratio` "keep the aspect ratio,
    scaled so the image just covers H x W" (timm's ResizeKeepRatio). `rescale` is what a 0-255 pixel
    value is multiplied by when no mean/std are given (1/255: inputs in 0-1; 1: inputs in 0-255)."""

    resize: tuple[int, ...] | None = None
    max_size: int | None = None
    keep_ratio: bool = False
    crop: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    antialias: bool = True
    rescale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"
    color_mode: str = "RGB"  # what images are decoded to: "RGB" or "L" (greyscale)
    source: str = ""  # where the description came from, for describe()

    def __post_init__(self):
        # Whatever the source (a sidecar, a Hugging Face config someone handed over), a std of 0 would fail
        # every image with the same error and a huge resize would only fill memory: one sentence at load.
        where = self.source or "the model's preprocessing"
        if self.std is not None and not all(math.isfinite(x) and x > 0 for x in self.std):
            raise BatchLensError(f"{where}: std must be positive numbers (images are divided by it).")
        if self.mean is not None and not all(math.isfinite(x) for x in self.mean):
            raise BatchLensError(f"{where}: mean must be finite numbers.")
        for name, size in (("resize", self.resize), ("crop", self.crop), ("max_size", (self.max_size,))):
            if size is not None and not all(x is None or _is_size(x) for x in size):
                shown = _shown(size)
                raise BatchLensError(
                    f"{where}: {name} {shown} is not a size (positive whole numbers of pixels)."
                )
        if not (math.isfinite(self.rescale) and self.rescale > 0):
            raise BatchLensError(f"{where}: the rescale factor {self.rescale!r} must be a positive number.")
        if self.keep_ratio and not (self.resize and len(self.resize) == 2):
            raise BatchLensError(f"{where}: keep_ratio needs a resize to [height, width].")
        for name, size in (("resize", self.resize), ("crop", self.crop), ("max_size", (self.max_size,))):
            if size and size[0] and math.prod(size) * (size[0] if len(size) == 1 else 1) > DEFAULT_MAX_PIXELS:
                raise BatchLensError(
                    f"{where}: {name} {'x'.join(map(str, size))} asks for more than the "
                    f"{DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels that images are held to."
                )

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def from_sidecar(cls, data: dict, source: str = "the sidecar") -> Preprocessing:
        """The preprocessing a sidecar's keys state (see SIDECAR_KEYS; others are ignored here).
        Raises BatchLensError naming `source` and the key when a value is wrong or ambiguous."""
        return _SidecarReader(data, source).read()

    @classmethod
    def from_torchvision(cls, weights) -> Preprocessing:
        """What `weights.transforms()` does (torchvision's classification, segmentation and detection
        presets), so the description can be checked against the real thing."""
        from torchvision.transforms import v2

        preset = weights.transforms()
        source = f"torchvision weights {type(weights).__name__}.{weights.name}"
        resize = getattr(preset, "resize_size", None)
        crop = getattr(preset, "crop_size", None)
        mean, std = getattr(preset, "mean", None), getattr(preset, "std", None)
        interpolation = getattr(preset, "interpolation", v2.InterpolationMode.BILINEAR)
        if mean is None and resize is None:  # torchvision's detectors resize and normalise inside
            source += "; the detector resizes and normalises inside the model"
        return cls(
            resize=tuple(resize) if resize else None,
            crop=_pair(crop) if crop else None,
            interpolation=interpolation.value,
            antialias=bool(getattr(preset, "antialias", True)),
            mean=tuple(mean) if mean else None,
            std=tuple(std) if std else None,
            source=source,
        )

    @classmethod
    def from_timm(cls, config: dict, name: str = "") -> Preprocessing:
        """timm's data config (`timm.data.resolve_data_config`): input_size (C, H, W), interpolation,
        mean, std, crop_pct and crop_mode, with timm's own arithmetic: the image is resized to
        floor(size / crop_pct) (the short side for a square size; for a non-square one, keeping the shape
        to cover it, as timm's ResizeKeepRatio), then centre-cropped to size ("squash" resizes to exactly
        that size)."""
        where = f"timm's pretrained config for {name}" if name else "timm's data config"
        size = config.get("input_size")
        if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(_is_size(x) for x in size)):
            raise BatchLensError(
                f"{where}: input_size {size!r} is not [channels, height, width] in positive whole numbers."
            )
        channels, height, width = size
        crop_pct = config.get("crop_pct") or 0.875
        if not (_is_number(crop_pct) and math.isfinite(crop_pct) and 0 < crop_pct <= 4):
            raise BatchLensError(f"{where}: crop_pct {crop_pct!r} must be a fraction such as 0.875.")
        mode = config.get("crop_mode") or "center"
        if mode not in ("center", "squash"):
            raise BatchLensError(f"timm model {name}: crop_mode {mode!r} is not supported (center, squash).")
        scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
        square = mode == "center" and scaled[0] == scaled[1]
        return cls(
            resize=(scaled[0],) if square else scaled,
            keep_ratio=mode == "center" and not square,
            crop=(height, width),
            interpolation=config.get("interpolation") or "bilinear",
            mean=tuple(float(v) for v in config["mean"]),
            std=tuple(float(v) for v in config["std"]),
            color_mode="L" if channels == 1 else "RGB",
            source=f"timm's pretrained config for {name}" if name else "timm's data config",
        )

    @classmethod
    def from_hf(cls, config: dict, source: str = "preprocessor_config.json") -> Preprocessing:
        """A Hugging Face image processor's config (do_resize/size/resample, do_center_crop/crop_size,
        do_rescale/rescale_factor, do_normalize/image_mean/image_std)."""
        check_hf_sizes(config, source)
        resize = max_size = crop = None
        size = config.get("size") if config.get("do_resize", True) else None
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                resize = (int(size["height"]), int(size["width"]))
            elif "shortest_edge" in size:
                resize = (int(size["shortest_edge"]),)
                max_size = size.get("longest_edge")
            elif "longest_edge" in size:
                raise BatchLensError(f"{source}: a size given only as longest_edge is not supported.")
        if config.get("do_center_crop"):
            crop_size = config.get("crop_size")
            crop = (crop_size["height"], crop_size["width"]) if isinstance(crop_size, dict) else None
            crop = crop or (_pair(crop_size) if crop_size else None)
        normalize = config.get("do_normalize", True) and config.get("image_mean") is not None
        rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0
        if normalize and not math.isclose(rescale, 1 / 255):
            raise BatchLensError(f"{source}: a rescale_factor other than 1/255 with mean/std is unsupported.")
        return cls(
            resize=resize,
            max_size=int(max_size) if max_size else None,
            crop=crop,
            interpolation=PIL_RESAMPLE.get(int(config.get("resample", 2)), "bilinear"),
            rescale=rescale,
            mean=tuple(float(v) for v in config["image_mean"]) if normalize else None,
            std=tuple(float(v) for v in config["image_std"]) if normalize else None,
            source=source,
        )

    # -- using -----------------------------------------------------------------------------------------
    def to_transform(self, geometry_on_tensor: bool = False) -> v2.Compose:
        """PIL image -> float tensor (C x H x W). Resizing and cropping happen on the PIL image (as
        torchvision's presets and timm do); with antialias off, or `geometry_on_tensor`, they happen on
        the uint8 tensor (torch's SIMD resize: --fast-decode, core/inputs/fast_preprocess.py)."""
        from torchvision.transforms import v2

        geometry = []
        if self.resize:
            interpolation = v2.InterpolationMode[self.interpolation.upper()]
            if self.keep_ratio:
                geometry.append(ResizeToCover(self.resize, interpolation, self.antialias))
            else:
                geometry.append(
                    v2.Resize(list(self.resize), interpolation, self.max_size, antialias=self.antialias)
                )
        if self.crop:
            geometry.append(v2.CenterCrop(list(self.crop)))
        to_tensor = [v2.ToImage()]
        steps = geometry + to_tensor if self.antialias and not geometry_on_tensor else to_tensor + geometry
        steps.append(ToFloat())
        if self.channel_order == "BGR":
            steps.append(ReverseChannels())
        if self.mean is not None and self.std is not None:
            steps.append(v2.Normalize(list(self.mean), list(self.std)))
        elif not math.isclose(self.rescale, 1 / 255):
            steps.append(Multiply(self.rescale * 255))
        return v2.Compose(steps)

    def describe(self) -> str:
        """One sentence a person can check against the model's documentation."""
        steps = []
        how = f"{self.interpolation}" + ("" if self.antialias else ", no antialiasing")
        if self.resize and len(self.resize) == 1:
            cap = f", the long side at most {self.max_size} px" if self.max_size else ""
            steps.append(f"resize the short side to {self.resize[0]} px, keeping the shape{cap} ({how})")
        elif self.resize and self.keep_ratio:
            size = f"{self.resize[0]}x{self.resize[1]}"
            steps.append(f"resize to cover {size} px (height x width), keeping the shape ({how})")
        elif self.resize:
            steps.append(f"resize to exactly {self.resize[0]}x{self.resize[1]} px (height x width; {how})")
        else:
            steps.append("keep the image size")
        if self.crop:
            steps.append(f"centre-crop {self.crop[0]}x{self.crop[1]} px")
        colour = "greyscale" if self.color_mode == "L" else self.channel_order
        if self.mean is not None and self.std is not None:
            steps.append(
                f"scale pixels to 0-1, subtract mean {_numbers(self.mean)} and divide by std "
                f"{_numbers(self.std)} ({colour})"
            )
        elif math.isclose(self.rescale, 1 / 255):
            steps.append(f"scale pixels to 0-1 ({colour}, no normalisation)")
        else:
            steps.append(f"multiply 0-255 pixels by {self.rescale:g} ({colour}, no normalisation)")
        text = "; ".join(steps)
        return f"{text[0].upper()}{text[1:]}" + (f" (from {self.source})." if self.source else ".")

    def to_sidecar(self) -> dict:
        """The sidecar keys that state exactly this preprocessing (from_sidecar reads them back)."""
        data: dict = {}
        if self.resize:
            data["resize"] = list(self.resize) if len(self.resize) == 2 else self.resize[0]
        if self.max_size:
            data["max_size"] = self.max_size
        if self.keep_ratio:
            data["keep_ratio"] = True
        if self.crop:
            data["crop"] = list(self.crop)
        data["interpolation"] = self.interpolation
        if not self.antialias:
            data["antialias"] = False
        if self.mean is not None and self.std is not None:
            data["mean"], data["std"] = list(self.mean), list(self.std)
        elif not math.isclose(self.rescale, 1 / 255):
            data["rescale"] = self.rescale
        if self.channel_order != "RGB":
            data["channel_order"] = self.channel_order
        data["color_mode"] = self.color_mode
        return data

    def to_json(self) -> dict:
        """For summary.json and run records: the words and the exact settings."""
        return {"description": self.describe(), "settings": self.to_sidecar(), "source": self.source}

    def with_source(self, source: str) -> Preprocessing:
        return replace(self, source=source)


def check_hf_sizes(config: dict, source: str = "preprocessor_config.json") -> None:
    """One sentence at load for an image processor whose sizes no image can be prepared with (zero,
    negative, NaN, not a whole number, or more pixels than images are held to), instead of an
    allocation error for every image: its size, crop_size and pad_size, in any of their shapes."""
    for key in ("size", "crop_size", "pad_size", "max_size"):
        value = config.get(key)
        if value is None:
            continue
        sides = value if isinstance(value, dict) else {key: value}
        for name, side in sides.items():
            if side is None:
                continue
            if not _is_size(side) and not (isinstance(side, float) and side.is_integer() and side > 0):
                raise BatchLensError(
                    f"{source}: {key} {name} is {side!r}, not a size (a positive whole number of pixels)."
                )
        numbers = {k: int(v) for k, v in sides.items() if isinstance(v, (int, float))}
        area = max(
            numbers.get("height", 0) * numbers.get("width", 0),
            numbers.get("shortest_edge", 0) ** 2,
            max(numbers.values(), default=0),
        )
        if area > DEFAULT_MAX_PIXELS:
            raise BatchLensError(
                f"{source}: {key} {_shown(value)} asks for more than the {DEFAULT_MAX_PIXELS / 1e6:.0f} "
                "megapixels that images are held to."
            )


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shown(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v!r}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return repr(value)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = list(value)
    return (int(values[0]), int(values[-1]))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    """A JSON number a float can hold: not NaN or infinity, and not an integer beyond float's range
    (JSON keeps 1 followed by 400 zeros an int, which math.isfinite cannot even convert)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numbers(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


class _SidecarReader:
    """Validates the preprocessing keys of one sidecar: forgiving where the meaning is unambiguous
    (case, a single number for a square, a one-channel mean meaning greyscale), exact elsewhere."""

    def __init__(self, data: dict, source: str):
        self.data, self.source = data, source

    def fail(self, key: str, what: str) -> BatchLensError:
        return BatchLensError(f'{self.source}: "{key}" {what}.')

    def size(self, key: str, allow_single: bool = False) -> tuple[int, ...] | None:
        """[H, W] or a single N (a square; for `resize`: the short side)."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] if allow_single else [value, value]
        ok = isinstance(value, list) and len(value) in ((1, 2) if allow_single else (2,))
        if not (ok and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value)):
            shape = "N (the short side) or [height, width]" if allow_single else "[height, width]"
            raise self.fail(key, f"must be {shape} in pixels")
        if math.prod(value) * (value[0] if len(value) == 1 else 1) > DEFAULT_MAX_PIXELS:
            # a bigger target would only fill memory: images themselves are held to this limit
            limit = f"{DEFAULT_MAX_PIXELS / 1e6:.0f} megapixels"
            raise self.fail(key, f"asks for more than the {limit} that images are held to")
        return tuple(value)

    def choice(self, key: str, choices, default: str, upper: bool = False) -> str:
        value = self.data.get(key, default)
        text = value.strip() if isinstance(value, str) else value
        text = text.upper() if upper and isinstance(text, str) else text
        text = text.lower() if not upper and isinstance(text, str) else text
        if text not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}")
        return text

    def number(self, key: str, positive: bool = True) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value)
        if bad or (positive and value <= 0):
            raise self.fail(key, "must be a positive number")
        return float(value)

    def read(self) -> Preprocessing:
        data = self.data
        input_size = self.size("input_size")
        resize = self.size("resize", allow_single=True)
        crop = self.size("crop")
        crop_pct = self.number("crop_pct")
        if crop_pct is not None and not 1e-6 <= crop_pct <= 1:  # 1e-6: a resize beyond any image anyway
            raise self.fail("crop_pct", "must be a fraction between 0 and 1 (timm's crop_pct, e.g. 0.875)")
        if input_size and (resize or crop):
            raise self.fail(
                "input_size",
                'stretches images to exactly that size, so it cannot go with "resize" or "crop"; for '
                '"short side N, then centre crop" give only "resize": N and "crop": [H, W]',
            )
        keep_ratio = data.get("keep_ratio", False)
        if not isinstance(keep_ratio, bool):
            raise self.fail("keep_ratio", "must be true or false")
        if keep_ratio and not (resize and len(resize) == 2):
            raise self.fail("keep_ratio", 'only applies with "resize": [H, W] (the size to cover)')
        if crop_pct is not None:
            # timm's meaning: crop to input_size (or crop) after resizing to size / crop_pct (from_timm).
            target = crop or input_size
            if target is None or resize:
                raise self.fail("crop_pct", 'needs "crop" (or "input_size") and no "resize"')
            crop = target
            scaled = (math.floor(target[0] / crop_pct), math.floor(target[1] / crop_pct))
            keep_ratio = scaled[0] != scaled[1]
            resize = scaled if keep_ratio else (scaled[0],)
        elif input_size:
            resize = input_size  # what input_size always meant: stretch to exactly H x W
        max_size = self.number("max_size")
        if max_size is not None and not (resize and len(resize) == 1):
            raise self.fail("max_size", 'only applies with "resize": N (the short side)')
        antialias = data.get("antialias", True)
        if not isinstance(antialias, bool):
            raise self.fail("antialias", "must be true or false")
        mean, std = self.stats("mean"), self.stats("std")
        if (mean is None) != (std is None):
            raise self.fail("mean" if mean is None else "std", 'must be given together with "mean" and "std"')
        channels = len(mean) if mean else None
        if mean and std and len(mean) != len(std):
            raise self.fail("std", f"must have as many values as mean ({len(mean)})")
        if "color_mode" in data:
            color_mode = self.choice("color_mode", ("RGB", "L"), "RGB", upper=True)
            if channels and channels != (1 if color_mode == "L" else 3):
                raise self.fail("mean", f"must be a list of {1 if color_mode == 'L' else 3} numbers")
        else:
            color_mode = "L" if channels == 1 else "RGB"  # a one-channel mean can only mean greyscale
        if channels not in (None, 1, 3):
            raise self.fail("mean", "must be a list of 3 numbers (1 for greyscale)")
        units = self.choice("mean_std_units", ("0-1", "0-255"), "0-1")
        if mean and units == "0-1" and (max(mean) > 1 or max(std) > 1):
            raise self.fail(
                "mean", 'has values above 1: if they are 0-255 units, say so with "mean_std_units": "0-255"'
            )
        if mean and units == "0-255":
            mean, std = tuple(v / 255 for v in mean), tuple(v / 255 for v in std)
        rescale = self.number("rescale")
        return Preprocessing(
            resize=resize,
            max_size=int(max_size) if max_size else None,
            keep_ratio=keep_ratio,
            crop=crop,
            interpolation=self.choice("interpolation", tuple(INTERPOLATIONS), "bilinear"),
            antialias=antialias,
            rescale=1 / 255 if rescale is None else rescale,
            mean=mean,
            std=std,
            channel_order=self.choice("channel_order", ("RGB", "BGR"), "RGB", upper=True),
            color_mode=color_mode,
            source=self.source,
        )

    def stats(self, key: str) -> tuple[float, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not (isinstance(value, list) and value and all(_is_number(x) and _finite(x) for x in value)):
            raise self.fail(key, "must be a list of numbers (one per channel)")
        if key == "std" and any(x <= 0 for x in value):
            raise self.fail(key, "must be positive numbers")
        return tuple(float(x) for x in value)
