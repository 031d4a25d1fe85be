"""timm:NAME --weights FILE, checked against timm's own resolve_data_config + create_transform + forward
on the same image files (tiny timm test architectures, random seeded weights, nothing downloaded)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from batchlens.core.models.preprocessing import Preprocessing
from tests.core.modelkit import read_jsonl, run_cli

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("timm") / "in"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for name, (w, h) in (("a.jpg", (230, 170)), ("b.png", (150, 210)), ("c.jpg", (160, 160))):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x * y) % 255], axis=-1)
        pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=93)
    return folder


def _reference(name: str, model: torch.nn.Module, folder, labels):
    """timm's way: its data config, its transform, the model; top-5 (label, score) per image."""
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    out = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            x = transform(image.convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            scores = model.eval()(x).softmax(-1)[0]
        values, indices = scores.topk(5)
        out[path.name] = [(labels[i], v) for v, i in zip(values.tolist(), indices.tolist())]
    return config, transform, out


@pytest.mark.parametrize(
    ("name", "num_classes", "suffix"),
    [("test_vit", 1000, ".safetensors"), ("test_resnet", 5, ".pth")],
)
def test_timm_checkpoint_matches_timm(photos, tmp_path, name, num_classes, suffix):
    torch.manual_seed(7)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    with torch.no_grad():  # some spread in the classifier, so the top labels differ between images
        model.get_classifier().weight.normal_(0, 0.5)
    weights = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights) if suffix == ".safetensors" else torch.save(state, weights)
    flags = ["--weights", weights]
    if num_classes == 1000:
        labels = timm.data.ImageNetInfo().label_descriptions()
    else:
        labels = [f"kind {i}" for i in range(num_classes)]
        (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
        flags += ["--labels", tmp_path / "labels.txt"]
    out = tmp_path / "out"
    assert run_cli("--model", f"timm:{name}", *flags, "--input", photos, "--output", out) == 0
    config, transform, expected = _reference(name, model, photos, labels)
    ours = Preprocessing.from_timm(config, name).to_transform()
    for path in sorted(photos.iterdir()):
        with Image.open(path) as image:
            image = image.convert("RGB")
            assert torch.equal(ours(image), transform(image)), path.name
    worst = 0.0
    for record in read_jsonl(out / "predictions.jsonl"):
        want = expected[record["image"]]
        assert [t["label"] for t in record["top"]] == [label for label, _ in want]
        worst = max(worst, *(abs(t["score"] - s) for t, (_, s) in zip(record["top"], want)))
    assert worst < 1e-5
    print(f"timm {name}: max |score diff| {worst:.1e}; {Preprocessing.from_timm(config, name).describe()}")


def test_timm_needs_weights_and_a_real_name(photos, tmp_path, capsys):
    assert run_cli("--model", "timm:test_vit", "--input", photos, "--output", tmp_path / "a") == 2
    assert "--weights FILE" in capsys.readouterr().err
    assert run_cli("--model", "timm:no_such_net", "--input", photos, "--output", tmp_path / "b") == 2
    assert "timm has no model called 'no_such_net'" in capsys.readouterr().err


def test_timm_weights_of_another_architecture_are_one_sentence(photos, tmp_path, capsys):
    weights = tmp_path / "resnet.safetensors"
    model = timm.create_model("test_resnet", pretrained=False, num_classes=4)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    out = tmp_path / "out"
    assert run_cli("--model", "timm:test_vit", "--weights", weights, "--input", photos, "--output", out) == 2
    err = capsys.readouterr().err
    assert "does not fit the test_vit architecture" in err and "Traceback" not in err


def _hub_repo(folder, classes: int, **config_changes):
    """A timm model as timm puts it on the hub (save_for_hf: config.json + model.safetensors + a pickled
    pytorch_model.bin), seeded, with config.json's pretrained_cfg changed as given."""
    torch.manual_seed(5)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=classes)
    if classes:
        with torch.no_grad():
            model.get_classifier().weight.normal_(0, 0.5)
    timm.models.save_for_hf(model, folder, safe_serialization="both")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_timm_model_from_the_hub_runs_as_timm_runs_it(photos, tmp_path, fake_hub, capsys):
    """hf:timm/NAME (downloaded from a hub on this machine) and the folder `hf download` leaves: timm
    builds it from its own config.json, whose preprocessing differs from test_resnet's default here, and
    the results equal timm's own hf-hub: path (create_model, resolve_data_config, create_transform)."""
    from batchlens.cli import main as cli_main

    names = ["alpha", "beta", "gamma", "delta", "epsilon"]
    repo = _hub_repo(
        tmp_path / "repo", 5, crop_pct=0.8, interpolation="bicubic", mean=[0.4] * 3, std=[0.3] * 3
    )
    config = json.loads((repo / "config.json").read_text())
    config["label_names"] = names
    (repo / "config.json").write_text(json.dumps(config))
    fake_hub.add_folder("timm/test_resnet.custom", repo)

    out = tmp_path / "by-name"
    assert run_cli("--model", "hf:timm/test_resnet.custom", "--input", photos, "--output", out) == 0
    fetched = sorted(
        r.rsplit("/", 1)[1] for r in fake_hub.requests if "/resolve/" in r and r.startswith("GET")
    )
    assert fetched == ["config.json", "model.safetensors"], "never the pickled pytorch_model.bin"
    reference = timm.create_model("hf-hub:timm/test_resnet.custom", pretrained=True)  # timm's own way
    _, transform, expected = _reference("test_resnet", reference, photos, names)
    assert transform.transforms[0].interpolation.value == "bicubic"  # not test_resnet's default bilinear
    by_path = tmp_path / "by-path"
    (tmp_path / "local").mkdir()
    for name in ("config.json", "model.safetensors"):  # what `hf download --local-dir` leaves
        (tmp_path / "local" / name).write_bytes((repo / name).read_bytes())
    assert run_cli("--model", tmp_path / "local", "--input", photos, "--output", by_path) == 0
    worst = 0.0
    for folder in (out, by_path):
        for record in read_jsonl(folder / "predictions.jsonl"):
            want = expected[record["image"]]
            assert [t["label"] for t in record["top"]] == [label for label, _ in want]
            worst = max(worst, *(abs(t["score"] - v) for t, (_, v) in zip(record["top"], want)))
    assert worst < 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert "bicubic" in summary["preprocessing"]["description"]
    capsys.readouterr()
    assert cli_main(["models", "test_resnet"]) == 0
    listed = capsys.readouterr().out
    assert "hf:timm/test_resnet.custom" in listed and "timm test_resnet" in listed
    print(f"hf:timm/test_resnet.custom: labels equal timm's hf-hub: path, max |score diff| {worst:.1e}")


def test_a_timm_hub_folder_that_cannot_be_run_is_one_sentence(photos, tmp_path, capsys):
    """No safetensors, no classifier, an architecture this timm does not have: one sentence each."""
    pickled_only = _hub_repo(tmp_path / "pickled", 5)
    (pickled_only / "model.safetensors").unlink()
    assert run_cli("--model", pickled_only, "--input", photos, "--output", tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "no model.safetensors" in err and "pickle" in err and len(err.strip().splitlines()) == 1
    assert "timm.models.save_for_hf(model, folder, safe_serialization=True)" in err
    backbone = _hub_repo(tmp_path / "backbone", 0)
    assert run_cli("--model", backbone, "--input", photos, "--output", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "timm test_resnet without a classifier (num_classes 0) is not a model BatchLens runs" in err
    unknown = _hub_repo(tmp_path / "unknown", 5)
    config = json.loads((unknown / "config.json").read_text())
    config["architecture"] = "resnet_from_the_future"
    (unknown / "config.json").write_text(json.dumps(config))
    assert run_cli("--model", unknown, "--input", photos, "--output", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert f"timm {timm.__version__} could not build this model" in err and "resnet_from_the_future" in err
    assert len(err.strip().splitlines()) == 1


LAND = ("land.jpg", "land2.jpg")  # two JPEGs of one size: --gpu-decode preprocesses them in one call


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Real files of several shapes: landscape and portrait (each side can be the one that must cover
    its target), square, a panorama, and one smaller than every target (timm enlarges it)."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(5)
    sizes = {"land.jpg": (400, 300), "land2.jpg": (400, 300), "port.png": (240, 360)}
    sizes.update({"square.jpg": (256, 256), "pano.jpg": (600, 150), "small.jpg": (60, 45)})
    for name, (w, h) in sizes.items():
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + 2 * y) % 255], axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=92)
    return folder


@pytest.mark.parametrize(
    ("height", "width", "crop_pct", "interpolation"),
    [
        (224, 288, 0.875, "bilinear"),
        (224, 288, 0.95, "bicubic"),
        (320, 256, 0.875, "bicubic"),
        (320, 256, 0.95, "bilinear"),
    ],
)
def test_non_square_centre_crop_equals_timm_exactly(shapes, height, width, crop_pct, interpolation):
    """timm resizes a non-square target with ResizeKeepRatio (the shape kept, covering size / crop_pct,
    each side rounded), then centre-crops: BatchLens's model input is identical (torch.equal)."""
    from batchlens.core.inputs.images import load_image

    config = {
        "input_size": (3, height, width),
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "mean": timm.data.IMAGENET_DEFAULT_MEAN,
        "std": timm.data.IMAGENET_DEFAULT_STD,
        "crop_mode": "center",
    }
    pre = Preprocessing.from_timm(config, "net")
    ours = pre.to_transform()
    theirs = timm.data.transforms_factory.transforms_imagenet_eval(
        img_size=(height, width), crop_pct=crop_pct, crop_mode="center", interpolation=interpolation
    )
    assert "ResizeKeepRatio" in repr(theirs), "the path under test"
    # the short side to floor(size / crop_pct), the square case's rule, is not it for every shape
    short_side = Preprocessing(**{**pre.__dict__, "keep_ratio": False, "resize": (min(pre.resize),)})
    differs = []
    for path in sorted(shapes.iterdir()):
        image = load_image(path, "RGB").image  # as a run decodes it
        x = ours(image)
        assert x.shape == (3, height, width) and torch.equal(x, theirs(image)), path.name
        differs.append(not torch.equal(short_side.to_transform()(image), x))
    assert any(differs)
    # a stack of uint8 pictures (--gpu-decode's batched call) gives what one picture at a time gives
    pictures = [torch.from_numpy(np.array(load_image(shapes / n).image)).permute(2, 0, 1) for n in LAND]
    for one, in_stack in zip(pictures, ours(torch.stack(pictures))):
        assert torch.allclose(in_stack, ours(one), atol=1e-5)
    assert "cover" in pre.describe() and pre.to_sidecar()["keep_ratio"] is True


def test_a_timm_model_with_a_non_square_pretrained_config_runs_as_timm(shapes, tmp_path, monkeypatch):
    """test_resnet given a non-square pretrained config (timm 1.0.31 registers none with a centre crop;
    its registry entry is replaced for this test): a run's top-5 equals timm's, and --gpu-decode's
    batched tensor preprocessing takes the same transform."""
    from timm.models import _registry

    from batchlens.core.inputs.images import scan_images
    from batchlens.core.models import load_model
    from batchlens.core.run.pipeline import BatchPipeline

    cfg = _registry._model_pretrained_cfgs["test_resnet"]
    patched = dataclasses.replace(cfg, input_size=(3, 96, 128), crop_pct=0.9, interpolation="bicubic")
    monkeypatch.setitem(_registry._model_pretrained_cfgs, "test_resnet", patched)
    torch.manual_seed(3)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=6)
    assert model.pretrained_cfg["input_size"] == (3, 96, 128)
    with torch.no_grad():
        model.get_classifier().weight.normal_(0, 0.5)
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    labels = [f"kind {i}" for i in range(6)]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    flags = ["--weights", weights, "--labels", tmp_path / "labels.txt"]
    out = tmp_path / "out"
    assert run_cli("--model", "timm:test_resnet", *flags, "--input", shapes, "--output", out) == 0
    _, _, expected = _reference("test_resnet", model, shapes, labels)
    records = read_jsonl(out / "predictions.jsonl")
    assert len(records) == 6
    for record in records:
        want = expected[record["image"]]
        assert [t["label"] for t in record["top"]] == [label for label, _ in want], record["image"]
        assert max(abs(t["score"] - s) for t, (_, s) in zip(record["top"], want)) < 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preprocessing"]["settings"]["keep_ratio"] is True
    assert "cover 106x142" in summary["preprocessing"]["description"]

    loaded = load_model("timm:test_resnet", torch.device("cpu"), {"weights": str(weights)})
    candidates = list(scan_images(shapes))
    pillow = BatchPipeline(loaded, tmp_path / "o1", None).prepare(candidates)
    device = BatchPipeline(loaded, tmp_path / "o2", None, gpu_decode=True)
    on_device = device.prepare(candidates)
    assert device.batched_preprocess is True  # the two landscape JPEGs went through in one call
    for a, b in zip(pillow.items, on_device.items):
        assert b.error is None and b.tensor.shape == a.tensor.shape == (3, 96, 128)
        diff = (a.tensor - b.tensor).abs()  # tensor vs Pillow resampling: rounding only
        assert diff.mean() < 0.02, (a.candidate.rel, diff.mean())


def test_a_timm_hub_folder_named_by_imagenet_synsets_reads_imagenet_words(photos, tmp_path):
    """timm's ImageNet repositories name their classes by synset (n01440764): results say the words
    timm's own ImageNetInfo gives them ("tench, Tinca tinca"), not the synset codes."""
    repo = _hub_repo(tmp_path / "in1k", 1000)
    imagenet = timm.data.ImageNetInfo("imagenet-1k")
    config = json.loads((repo / "config.json").read_text())
    config["label_names"] = imagenet.label_names()
    (repo / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert run_cli("--model", repo, "--input", photos, "--output", out) == 0
    words = set(imagenet.label_descriptions())
    labels = [t["label"] for r in read_jsonl(out / "predictions.jsonl") for t in r["top"]]
    assert labels and all(label in words for label in labels), labels[:5]
