"""The preprocessing description: a sidecar that says "short side 256, centre crop 224" gives exactly
what torchvision's own presets give on real image files; every source describes itself in words."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image
from torchvision.transforms._presets import ImageClassification
from torchvision.transforms.v2 import InterpolationMode

from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import load_image
from batchlens.core.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from batchlens.core.models.sidecar import parse_sidecar


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real files: landscape JPEG, portrait PNG, small square JPEG (smooth gradients + noise, so
    resampling filters differ visibly)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    paths = []
    for name, (w, h) in (("wide.jpg", (403, 301)), ("tall.png", (260, 390)), ("small.jpg", (200, 200))):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        path = folder / name
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def decoded(path, mode="RGB"):
    return load_image(path, mode).image


def sidecar_pre(data: dict) -> Preprocessing:
    return parse_sidecar({"task": "classification", **data}, "test.json").preprocess()


@pytest.mark.parametrize(
    ("interpolation", "preset"),
    [
        ("bilinear", tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()),
        ("bicubic", tvm.EfficientNet_B0_Weights.IMAGENET1K_V1.transforms()),  # 256 -> 224, bicubic
        (
            "bicubic",
            ImageClassification(crop_size=224, resize_size=256, interpolation=InterpolationMode.BICUBIC),
        ),
    ],
)
def test_sidecar_resize_crop_equals_torchvision_preset_exactly(photos, interpolation, preset):
    pre = sidecar_pre(
        {
            "resize": 256,
            "crop": 224,
            "interpolation": interpolation,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }
    )
    transform = pre.to_transform()
    for path in photos:
        ours, theirs = transform(decoded(path)), preset(decoded(path))
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert torch.equal(ours, theirs), f"{path.name}: max |diff| {(ours - theirs).abs().max()}"
    # and the other filter really is different (the test can tell bilinear from bicubic)
    other = Preprocessing(
        **{**pre.__dict__, "interpolation": "bicubic" if interpolation == "bilinear" else "bilinear"}
    ).to_transform()
    assert not torch.equal(other(decoded(photos[0])), preset(decoded(photos[0])))


@pytest.mark.parametrize(
    "weights",
    [
        tvm.ResNet18_Weights.IMAGENET1K_V1,
        tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
        tvm.ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1,  # 384, bicubic
        tvm.segmentation.DeepLabV3_ResNet50_Weights.DEFAULT,  # short side 520, no crop
        tvm.detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT,  # only to 0-1
    ],
)
def test_from_torchvision_describes_what_the_weights_do(photos, weights):
    pre = Preprocessing.from_torchvision(weights)
    for path in photos[:2]:
        ours, theirs = pre.to_transform()(decoded(path)), weights.transforms()(decoded(path))
        assert torch.equal(ours, theirs)
    assert weights.name in pre.describe()


def test_describe_in_words():
    pre = sidecar_pre(
        {
            "resize": 256,
            "crop": [224, 224],
            "interpolation": "Bicubic",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }
    )
    text = pre.describe()
    assert "short side to 256 px" in text and "centre-crop 224x224" in text and "bicubic" in text
    assert "mean 0.485, 0.456, 0.406" in text
    assert "exactly 64x96" in sidecar_pre({"input_size": [64, 96]}).describe()
    # to_sidecar reads back to the same description
    assert sidecar_pre(pre.to_sidecar()).to_sidecar() == pre.to_sidecar()


def test_old_input_size_still_stretches(photos):
    pre = sidecar_pre({"input_size": [64, 96], "mean": [0.5] * 3, "std": [0.25] * 3})
    out = pre.to_transform()(decoded(photos[0]))
    assert out.shape == (3, 64, 96)
    expected = torch.from_numpy(np.array(decoded(photos[0]).resize((96, 64), Image.Resampling.BILINEAR)))
    expected = (expected.permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(out, expected, atol=1e-6)


def test_units_channels_and_forgiveness(photos):
    image = decoded(photos[2])
    plain = sidecar_pre({"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}).to_transform()(image)
    in_255 = sidecar_pre(
        {"mean": [127.5, 102.0, 76.5], "std": [51.0, 51.0, 51.0], "mean_std_units": "0-255"}
    ).to_transform()(image)
    assert torch.allclose(plain, in_255, atol=1e-5)
    bgr = sidecar_pre({"mean": [0.3, 0.4, 0.5], "std": [0.2] * 3, "channel_order": "bgr"}).to_transform()(
        image
    )
    assert torch.allclose(bgr, plain.flip(0), atol=1e-6)
    raw = sidecar_pre({"rescale": 1}).to_transform()(image)
    assert torch.equal(raw, torch.from_numpy(np.array(image)).permute(2, 0, 1).float())
    grey = parse_sidecar({"task": "Image-to-Image", "mean": [0.5], "std": [0.5]}, "x.json")
    assert grey.task == "image_to_image" and grey.color_mode == "L"
    assert grey.preprocess().to_transform()(decoded(photos[2], "L")).shape == (1, 200, 200)
    timm_style = sidecar_pre({"input_size": 224, "crop_pct": 0.875})
    assert timm_style.resize == (256,) and timm_style.crop == (224, 224)
    # a non-square crop_pct means what timm does with it (keep the shape, cover 256x329, then crop)
    stats = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "interpolation": "bicubic"}
    wide = sidecar_pre({"crop": [224, 288], "crop_pct": 0.875, **stats})
    timm_config = {"input_size": (3, 224, 288), "crop_pct": 0.875, **stats}
    assert wide.to_sidecar() == Preprocessing.from_timm(timm_config).to_sidecar()
    assert wide.resize == (256, 329) and wide.keep_ratio and wide.crop == (224, 288)
    assert sidecar_pre(wide.to_sidecar()).to_sidecar() == wide.to_sidecar()  # reads back the same


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"input_size": [224, 224], "crop": 200}, '"input_size" stretches'),
        ({"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}, '"mean_std_units": "0-255"'),
        ({"mean": [0.5], "std": [0.5], "color_mode": "RGB"}, "list of 3 numbers"),
        ({"mean": [0.5, 0.5, 0.5]}, 'together with "mean" and "std"'),
        ({"interpolation": "smooth"}, "nearest, bilinear, bicubic"),
        ({"resize": [0, 3]}, "in pixels"),
        ({"resize": 100000}, "megapixels"),
        ({"crop_pct": 1.5, "crop": 224}, "between 0 and 1"),
        ({"max_size": 1333}, '"resize": N'),
        ({"resize": 256, "keep_ratio": True}, '"resize": [H, W]'),
        ({"resize": [224, 288], "keep_ratio": "yes"}, "true or false"),
        ({"mean": [float("nan")] * 3, "std": [1, 1, 1]}, "list of numbers"),
    ],
)
def test_exact_where_it_is_ambiguous(data, words):
    with pytest.raises(BatchLensError) as info:
        sidecar_pre(data)
    assert words in str(info.value) and str(info.value).startswith("test.json:")


def test_two_sidecars_the_specific_one_is_used_and_said(tmp_path, monkeypatch):
    from batchlens.core.models.files import sidecar_note, sidecar_path_for

    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    model = tmp_path / "net.pt2"
    model.write_bytes(b"")
    assert sidecar_path_for(model) is None and sidecar_note(model) is None
    (tmp_path / "net.json").write_text(json.dumps({"task": "classification"}))
    assert sidecar_path_for(model) == tmp_path / "net.json" and sidecar_note(model) is None
    (tmp_path / "net.pt2.json").write_text(json.dumps({"task": "segmentation"}))
    assert sidecar_path_for(model) == tmp_path / "net.pt2.json"
    note = sidecar_note(model)
    assert "used " + str(tmp_path / "net.pt2.json") in note and str(tmp_path / "net.json") in note


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # torch 2.14; issue 14.5
def test_command_line_states_it_too_and_replaces_the_sidecar_size(photos, tmp_path):
    from batchlens.cli import args as cli
    from batchlens.core.models.preprocessing import INTERPOLATIONS
    from tests.core.modelkit import run_cli
    from tests.core.test_models_files import TinyClassifier

    assert cli.INTERPOLATION_NAMES == list(INTERPOLATIONS)
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(TinyClassifier().eval()), str(model))
    model.with_suffix(".json").write_text(json.dumps({"task": "classification", "input_size": [64, 64]}))
    (tmp_path / "in").mkdir()
    for path in photos:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    flags = ["--resize", "256", "--crop", "224", "--interpolation", "bicubic"]
    assert run_cli("--model", model, *flags, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["preprocessing"]["settings"]["resize"] == 256
    assert summary["preprocessing"]["settings"]["crop"] == [224, 224]
    assert "bicubic" in summary["preprocessing"]["description"]
    assert "exactly" not in summary["preprocessing"]["description"], "the sidecar's input_size was replaced"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # torch 2.14; issue 14.5
def test_a_run_says_which_sidecar_it_used(photos, tmp_path, monkeypatch, capsys):
    from tests.core.modelkit import run_cli
    from tests.core.test_models_files import TinyClassifier

    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    model = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(TinyClassifier().eval()), str(model))
    (tmp_path / "net.json").write_text(json.dumps({"task": "classification", "input_size": 64}))
    (tmp_path / "net.pt.json").write_text(json.dumps({"task": "classification", "input_size": 32}))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / photos[0].name).write_bytes(photos[0].read_bytes())
    assert run_cli("--model", model, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0
    assert f"used {tmp_path / 'net.pt.json'}, not {tmp_path / 'net.json'}" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "exactly 32x32" in summary["preprocessing"]["description"]
