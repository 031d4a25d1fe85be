"""timm:NAME --weights FILE, checked against timm's own resolve_data_config + create_transform + forward
on the same image files (tiny timm test architectures, random seeded weights, nothing downloaded)."""

from __future__ import annotations

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
