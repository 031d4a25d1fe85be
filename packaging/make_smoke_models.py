"""Make the models the smoke test runs through a built bundle's Hugging Face and timm support, with
what their own libraries answer for each image:

    python packaging/make_smoke_models.py FOLDER

FOLDER gets `in/` (three photos), `hf-vit/` (a tiny seeded ViT saved with save_pretrained, and its
image processor), `test_resnet.pth` + `labels.txt` (timm's tiny test architecture, seeded weights),
`timm-hub/` (the same architecture as timm puts it on the hub, its preprocessing changed from the
default) and `expected.json`: per model, per image, the top labels and scores from transformers' own
pipeline and from timm's own data config, transform and forward. Nothing is downloaded. Needs torch,
transformers and timm (the packaging extra installs them); exits 3 when one is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import numpy as np
    import timm
    import torch
    import transformers
    from PIL import Image
except ImportError as exc:
    print(f"make_smoke_models.py: {exc.name} is not installed here", file=sys.stderr)
    sys.exit(3)

TOP = 3


def photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for name, (w, h) in (("a.jpg", (230, 170)), ("b.png", (150, 210)), ("c.jpg", (64, 64))):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x * y) % 255], axis=-1)
        pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=93)
        paths.append(folder / name)
    return paths


def spread(module: torch.nn.Module, seed: int) -> None:
    """Some spread in a head, so labels and scores differ from image to image."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def hf_vit(folder: Path, images: list[Path]) -> dict:
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "fox"}
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = transformers.ViTForImageClassification(config)
    spread(model.classifier, 1)
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    pipe = transformers.pipeline("image-classification", model=str(folder), device="cpu")
    return {p.name: [[t["label"], t["score"]] for t in pipe(rgb(p), top_k=TOP)] for p in images}


def timm_top(model, labels: list[str], images: list[Path]) -> dict:
    """timm's way: its data config, its transform, the model; the top labels and scores per image."""
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    expected = {}
    for path in images:
        with torch.no_grad():
            scores = model(transform(rgb(path)).unsqueeze(0)).softmax(-1)[0]
        values, indices = scores.topk(TOP)
        expected[path.name] = [[labels[i], v] for v, i in zip(values.tolist(), indices.tolist())]
    return expected


def timm_resnet(weights: Path, labels_file: Path, images: list[Path]) -> dict:
    torch.manual_seed(7)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    spread(model.get_classifier(), 2)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    labels = [f"kind {i}" for i in range(5)]
    labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return timm_top(model, labels, images)


def timm_hub_folder(folder: Path, images: list[Path]) -> dict:
    torch.manual_seed(9)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=4).eval()
    spread(model.get_classifier(), 3)
    timm.models.save_for_hf(model, folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["label_names"] = ["north", "east", "south", "west"]
    config["pretrained_cfg"].update(interpolation="bicubic", crop_pct=0.8)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm's own loading
    return timm_top(reference, reference.pretrained_cfg["label_names"], images)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1])
    images = photos(root / "in")
    expected = {
        "hf-vit": hf_vit(root / "hf-vit", images),
        "timm:test_resnet": timm_resnet(root / "test_resnet.pth", root / "labels.txt", images),
        "timm-hub": timm_hub_folder(root / "timm-hub", images),
    }
    (root / "expected.json").write_text(json.dumps(expected, indent=1), encoding="utf-8")
    print(f"made {root}: transformers {transformers.__version__}, timm {timm.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
