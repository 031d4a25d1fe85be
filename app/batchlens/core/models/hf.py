"""Hugging Face model folders (what `save_pretrained` or `hf download --local-dir` leaves: config.json,
model.safetensors, preprocessor_config.json), run through `transformers` (the optional extra `hf`).

The task comes from config.json's `architectures` (…ForImageClassification, …ForObjectDetection,
…ForSemanticSegmentation, …ForImageSuperResolution); images are prepared by the folder's own image
processor and detections and masks come from its own post-processing, so the numbers are the
library's. Remote code is never run: a config that asks for it (`auto_map`) or names a model type
this transformers does not know is refused. `hf:ORG/NAME` loads from the Hugging Face cache, or
downloads where the network allows; hf_cache.py lists what the cache holds. A timm model as timm puts
it on the hub (timm/NAME: config.json naming one "architecture", model.safetensors) is loaded by
timm_models.py instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.models.base import LoadedModel, ModelInfo, prepare
from batchlens.core.models.hf_cache import HF_PREFIX, is_timm_config, read_hf_config, snapshot_for
from batchlens.core.models.info import is_hf_model  # noqa: F401  (re-exported)
from batchlens.core.models.preprocessing import Preprocessing, check_hf_sizes
from batchlens.core.models.size_audit import refuse_config_arithmetic, refuse_config_beyond_weights
from batchlens.core.tasks.base import ImageMeta, TaskResult
from batchlens.core.tasks.classification import ClassificationAdapter
from batchlens.core.tasks.detection import DetectionAdapter
from batchlens.core.tasks.image_to_image import ImageToImageAdapter
from batchlens.core.tasks.segmentation import SegmentationAdapter

log = logging.getLogger(__name__)

# The model output each task reads (transformers' output field names).
OUTPUTS = {
    "classification": ("logits",),
    "detection": ("logits", "pred_boxes"),
    "segmentation": ("logits",),
    "image_to_image": ("reconstruction",),
}
AUTO_CLASSES = {
    "classification": "AutoModelForImageClassification",
    "detection": "AutoModelForObjectDetection",
    "segmentation": "AutoModelForSemanticSegmentation",
    "image_to_image": "AutoModelForImageToImage",
}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise BatchLensError(
            "Hugging Face models need the transformers library: pip install 'batchlens[hf]' "
            "(the installers include it)."
        ) from None
    return transformers


class HFInputs:
    """PIL image -> the pixel_values the folder's image processor makes (C x H x W, CPU)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"HFInputs({type(self.processor).__name__})"


class HFForward(nn.Module):
    """pixel_values -> the output tensors the task reads (a tensor, or a dict the engine splits)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, pixel_values: torch.Tensor):
        out = self.model(pixel_values=pixel_values)
        if len(self.outputs) == 1:
            return out[self.outputs[0]]
        return {key: out[key] for key in self.outputs}


class HFMultiLabelAdapter(ClassificationAdapter):
    """Multi-label classifiers (and one-logit ones) score each label on its own, with a sigmoid, as
    transformers' image-classification pipeline does for them."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


@dataclass
class HFDetectionAdapter(DetectionAdapter):
    """Boxes from the processor's post_process_object_detection, at the original image's size."""

    processor: object = None

    def postprocess(self, output: dict, meta: ImageMeta) -> TaskResult:
        width, height = meta.original_size
        batch = SimpleNamespace(**{key: value.unsqueeze(0) for key, value in output.items()})
        found = self.processor.post_process_object_detection(
            batch, threshold=self.min_score, target_sizes=[(height, width)]
        )[0]
        same_size = ImageMeta(meta.rel, meta.original_size, meta.original_size)  # boxes are in original px
        return super().postprocess(found, same_size)


@dataclass
class HFSegmentationAdapter(SegmentationAdapter):
    """Masks from the processor's post_process_semantic_segmentation: logits resized to the original
    size, then the best class per pixel (not a nearest resize of a small mask)."""

    processor: object = None

    def postprocess(self, output: torch.Tensor, meta: ImageMeta) -> TaskResult:
        width, height = meta.original_size
        batch = SimpleNamespace(logits=output.unsqueeze(0))
        mask = self.processor.post_process_semantic_segmentation(batch, target_sizes=[(height, width)])[0]
        return super().postprocess(mask, meta)


class HFImageToImageAdapter(ImageToImageAdapter):
    """Super-resolution: the processor pads the image on the right and bottom (Swin2SR: to a multiple of
    its window), so the output is cropped back to the original size times the scale; 0-1 values
    become 8-bit as transformers' image-to-image pipeline made them, round(x * 255)."""

    def postprocess(self, output: torch.Tensor, meta: ImageMeta) -> TaskResult:
        scale = output.shape[-1] / meta.input_size[0] if meta.input_size[0] else 1.0
        width, height = (round(v * scale) for v in meta.original_size)
        output = output[..., :height, :width]
        array = (output.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        image = Image.fromarray(
            np.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3])
        )
        return TaskResult({"size": list(image.size), "scale": round(scale, 4)}, image=image)


ADAPTERS = {
    "classification": ClassificationAdapter,
    "detection": HFDetectionAdapter,
    "segmentation": HFSegmentationAdapter,
    "image_to_image": HFImageToImageAdapter,
}


def check_folder(folder: Path) -> tuple[dict, str]:
    """(config.json's contents, task), or BatchLensError with one sentence (see read_hf_config; and
    weights only from safetensors)."""
    config, task = read_hf_config(folder)
    if not is_timm_config(config) and not (folder / "preprocessor_config.json").is_file():
        raise BatchLensError(
            f"{folder}: no preprocessor_config.json, which says how this model's images are prepared; "
            "save the model's image processor with it (processor.save_pretrained(folder))."
        )
    if not any(folder.glob("*.safetensors")):
        save = (
            "timm.models.save_for_hf(model, folder, safe_serialization=True)"
            if is_timm_config(config)
            else "save_pretrained(..., safe_serialization=True)"
        )
        raise BatchLensError(
            f"{folder}: no model.safetensors; BatchLens loads Hugging Face weights only from safetensors "
            f"(a pytorch_model.bin is a pickle). Save the model with {save} or download its safetensors "
            "files."
        )
    return config, task


def load_hf(model: str, device: torch.device, options: dict | None = None) -> LoadedModel:
    """A Hugging Face model folder or `hf:ORG/NAME` (see the module docstring)."""
    options = dict(options or {})
    folder = snapshot_for(model) if model.startswith(HF_PREFIX) else Path(model).expanduser()
    config_data, task = check_folder(folder)
    # Its numbers first, in no time: a config claiming 100,000 layers is refused before any build.
    refuse_config_arithmetic(config_data, sorted(folder.glob("*.safetensors")), str(folder))
    if is_timm_config(config_data):
        from batchlens.core.models.timm_models import load_timm_folder

        return load_timm_folder(model, folder, device, options)
    transformers = _transformers()
    model_type = config_data.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise BatchLensError(
            f"{folder}: model type {model_type!r} is unknown to transformers {transformers.__version__} "
            "(BatchLens never runs remote code); a newer transformers may know it."
        )
    auto = getattr(transformers, AUTO_CLASSES[task])
    transformers.utils.logging.disable_progress_bar()  # a bar for reading local files is noise
    try:
        described = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        build = lambda: auto.from_config(described, trust_remote_code=False)  # noqa: E731
        refuse_config_beyond_weights(build, sorted(folder.glob("*.safetensors")), str(folder))
        processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        check_hf_sizes(processor.to_dict(), str(folder / "preprocessor_config.json"))
        network = auto.from_pretrained(
            folder, config=described, trust_remote_code=False, use_safetensors=True
        )
    except BatchLensError:
        raise
    except Exception as exc:  # damaged weights, shapes that do not fit the config...: one sentence
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BatchLensError(
            f"{folder}: transformers could not load this model ({type(exc).__name__}: {first})."
        ) from None
    config = network.config
    labels = None
    if getattr(config, "id2label", None) and task in ("classification", "detection", "segmentation"):
        labels = [str(config.id2label.get(i, i)) for i in range(len(config.id2label))]
    extra = {"processor": processor} if task in ("detection", "segmentation") else {}
    adapter_class = ADAPTERS[task]
    if task == "classification" and (
        getattr(config, "problem_type", None) == "multi_label_classification" or config.num_labels == 1
    ):
        adapter_class = HFMultiLabelAdapter
    adapter = adapter_class(transform=HFInputs(processor), labels=labels, options=options, **extra)
    processor_file = folder / "preprocessor_config.json"
    preprocessing = None
    try:
        preprocessing = Preprocessing.from_hf(
            processor.to_dict(), f"{type(processor).__name__} in {processor_file}"
        )
    except BatchLensError as exc:  # only the description: the processor itself prepares images
        log.info("%s", exc)
    name = model if model.startswith(HF_PREFIX) else folder.name
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    description = f"{type(network).__name__} ({model_type}), Hugging Face"
    info = ModelInfo(model, task, "huggingface", description, size)
    log.info("loaded %s from %s", name, folder)
    return LoadedModel(
        info,
        prepare(HFForward(network, OUTPUTS[task]), device),
        adapter,
        device,
        preprocessing=preprocessing,
    )
