"""Model files made in the test (TorchScript, torch.export, safetensors, .pth) run end to end through
`batchlens run` and equal a hand-written reference; bad sidecars, labels and weights get clear
messages; a malicious pickle is refused and its payload never runs without --trust-pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import get_model_weights
from torchvision.transforms.v2 import functional as F

from batchlens.core.errors import BatchLensError
from batchlens.core.models import PickleRefusedError, StateDictMismatchError, load_model
from tests.core.modelkit import load_rgb, make_photos, random_model, read_jsonl, run_cli, save_state_dict

CPU = torch.device("cpu")
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


class TinyClassifier(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Brighten(nn.Module):
    """Image-to-image: a fixed 3x3 blur plus an offset, any image size."""

    def __init__(self):
        super().__init__()
        self.blur = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        nn.init.constant_(self.blur.weight, 1 / 9)

    def forward(self, x):
        return self.blur(x) + 0.1


def assert_same_top(line: dict, logits: torch.Tensor, labels: list[str]) -> None:
    """The engine's `top` equals softmax -> top 5 of the reference logits."""
    values, indices = torch.softmax(logits.reshape(-1), 0).topk(min(5, len(labels)))
    assert [t["label"] for t in line["top"]] == [labels[i] for i in indices.tolist()]
    np.testing.assert_allclose([t["score"] for t in line["top"]], values.numpy(), atol=2e-6)


def by_hand(photo: Path, size: list[int]) -> torch.Tensor:
    """The sidecar's preprocessing written out: resize, scale to [0, 1], normalise."""
    x = F.to_image(F.resize(load_rgb(photo), size, antialias=True))
    return F.normalize(F.to_dtype(x, torch.float32, scale=True), MEAN, STD).unsqueeze(0)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return make_photos(tmp_path / "in")


def test_torchscript_with_sidecar(photos, tmp_path: Path):
    model = TinyClassifier().eval()
    path = tmp_path / "models" / "tiny.pt"
    path.parent.mkdir()
    torch.jit.save(torch.jit.script(model), str(path))
    sidecar = {"task": "classification", "labels": ["ant", "bee", "cat"], "input_size": [40, 48]}
    (path.parent / "tiny.json").write_text(json.dumps({**sidecar, "mean": MEAN, "std": STD}))
    assert run_cli("--model", path, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0

    for line, photo in zip(read_jsonl(tmp_path / "out" / "predictions.jsonl"), photos):
        with torch.inference_mode():
            assert_same_top(line, model(by_hand(photo, [40, 48])), ["ant", "bee", "cat"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["counts"]["ok"] == 2


def test_torch_export_program_image_to_image(photos, tmp_path: Path):
    model = Brighten().eval()
    height, width = torch.export.Dim("height", min=8), torch.export.Dim("width", min=8)
    program = torch.export.export(
        model, (torch.rand(1, 3, 64, 96),), dynamic_shapes={"x": {2: height, 3: width}}
    )
    path = tmp_path / "brighten.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "out"
    assert (
        run_cli("--model", path, "--task", "image_to_image", "--input", tmp_path / "in", "--output", out) == 0
    )

    for line, photo in zip(read_jsonl(out / "predictions.jsonl"), photos):
        x = torch.from_numpy(np.array(load_rgb(photo))).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            y = model(x.unsqueeze(0))[0]
        expected = (y.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
        with Image.open(out / line["output"]) as written:
            # eager and exported graphs may round differently in the last float bit: 1 level at most
            np.testing.assert_allclose(np.asarray(written), expected, atol=1)
            assert (np.asarray(written) == expected).mean() > 0.98


def test_safetensors_state_dict_with_arch_and_labels_file(photos, tmp_path: Path):
    model = random_model("mobilenet_v3_small")
    model.classifier[3] = nn.Linear(model.classifier[3].in_features, 4)  # fine-tuned for 4 classes
    torch.manual_seed(2)
    nn.init.normal_(model.classifier[3].weight, 0, 0.5)
    model.eval()
    path = save_state_dict(model, tmp_path / "m" / "birds.safetensors")
    (path.parent / "birds.txt").write_text("wren\nrobin\njay\nowl\n")
    (path.parent / "birds.json").write_text(json.dumps({"arch": "mobilenet_v3_small", "labels": "birds.txt"}))
    assert run_cli("--model", path, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0

    preprocess = get_model_weights("mobilenet_v3_small").DEFAULT.transforms()  # no size given: the arch's
    for line, photo in zip(read_jsonl(tmp_path / "out" / "predictions.jsonl"), photos):
        with torch.inference_mode():
            logits = model(preprocess(load_rgb(photo)).unsqueeze(0))
        assert_same_top(line, logits, ["wren", "robin", "jay", "owl"])


def test_pth_state_dict_with_flags_and_trusted_pickle(photos, tmp_path: Path):
    model = TinyClassifier(classes=2).eval()
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["day", "night"]))
    flags = ("--labels", labels, "--input-size", "32", "--mean", ",".join(map(str, MEAN)),
             "--std", ",".join(map(str, STD)), "--task", "classification")  # fmt: skip
    # A whole pickled model (not a state_dict): refused without trust, runs with it.
    whole = tmp_path / "whole.pth"
    torch.save(model, whole)
    with pytest.raises(PickleRefusedError, match="--trust-pickle"):
        load_model(str(whole), CPU, {"task": "classification"})
    out = tmp_path / "out"
    assert (
        run_cli("--model", whole, "--trust-pickle", *flags, "--input", tmp_path / "in", "--output", out) == 0
    )
    for line, photo in zip(read_jsonl(out / "predictions.jsonl"), photos):
        with torch.inference_mode():
            assert_same_top(line, model(by_hand(photo, [32, 32])), ["day", "night"])


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"with open({str(self.marker)!r}, 'w') as f: f.write('pwned')",))


def test_malicious_pickle_is_not_executed_without_trust(tmp_path: Path, capsys):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": Payload(marker)}, evil)
    folder = tmp_path / "in"
    make_photos(folder, sizes=[(32, 32)])

    with pytest.raises(PickleRefusedError) as refused:
        load_model(str(evil), CPU, {"arch": "resnet18"})
    assert not marker.exists(), "the payload ran"
    message = str(refused.value)
    assert str(evil) in message and "Python object builtins.exec" in message and "--trust-pickle" in message
    assert (
        run_cli("--model", evil, "--arch", "resnet18", "--input", folder, "--output", tmp_path / "out") == 2
    )
    assert "--trust-pickle" in capsys.readouterr().err
    assert not marker.exists(), "the payload ran"

    # The payload is real: trusting the file runs it (then the file is no state_dict anyway).
    with pytest.raises(BatchLensError, match="not a state_dict"):
        load_model(str(evil), CPU, {"arch": "resnet18", "trust_pickle": True})
    assert marker.read_text() == "pwned"


@pytest.fixture
def resnet_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = TinyClassifier(classes=3)
    return save_state_dict(model, folder / "tiny.pth")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_clear_errors_for_wrong_sidecars_labels_and_weights(tmp_path: Path, resnet_weights: Path, capsys):
    scripted = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(TinyClassifier()), str(scripted))

    def error(model: Path, **options) -> str:
        with pytest.raises(BatchLensError) as caught:
            load_model(str(model), CPU, options)
        return str(caught.value)

    # no sidecar, no --task
    message = error(scripted)
    assert str(scripted) in message and "--task" in message and "net.json" in message
    # unknown sidecar key, bad JSON, unknown task, bad mean
    sidecar = tmp_path / "net.json"
    write(sidecar, json.dumps({"task": "classification", "lables": ["a"]}))
    assert str(sidecar) in (m := error(scripted)) and "lables" in m
    write(sidecar, '{"task": "classification",')
    assert str(sidecar) in (m := error(scripted)) and "not valid JSON" in m
    write(sidecar, json.dumps({"task": "colouring"}))
    assert str(sidecar) in (m := error(scripted)) and "colouring" in m
    write(sidecar, json.dumps({"task": "classification", "mean": [0.5]}))
    assert str(sidecar) in (m := error(scripted)) and '"mean"' in m
    # a labels file that is not there, named by the sidecar or by --labels
    write(sidecar, json.dumps({"task": "classification", "labels": "classes.txt"}))
    assert str(tmp_path / "classes.txt") in (m := error(scripted)) and "not found" in m
    sidecar.unlink()
    missing = tmp_path / "nowhere.txt"
    assert str(missing) in error(scripted, task="classification", labels=str(missing))

    # a state_dict: no architecture given; the wrong architecture; the wrong number of classes
    assert "--arch" in (m := error(resnet_weights)) and str(resnet_weights) in m
    message = error(resnet_weights, arch="resnet18")
    assert str(resnet_weights) in message and "resnet18" in message
    assert "missing keys: conv1.weight" in message and "unexpected keys: conv.weight, conv.bias" in message
    big = save_state_dict(TinyClassifier(classes=5), tmp_path / "five.pth")
    labels = write(tmp_path / "three.txt", "a\nb\nc\n")
    # The file's head has 5 classes, the labels say 3: the demo architecture cannot tell, torchvision's can.
    resnet5 = random_model("resnet18")
    resnet5.fc = torch.nn.Linear(512, 5)
    five = save_state_dict(resnet5, tmp_path / "resnet5.pth")
    with pytest.raises(StateDictMismatchError) as caught:
        load_model(str(five), CPU, {"arch": "resnet18", "labels": str(labels)})
    assert "wrong shapes: fc.weight (file [5, 512], resnet18 [3, 512]), fc.bias" in str(caught.value)
    assert "unknown architecture" in error(big, arch="resnet9000").lower()

    # the same through the CLI: one sentence on stderr, exit code 2, no traceback
    folder = tmp_path / "in"
    make_photos(folder, sizes=[(32, 32)])
    args = ("--input", folder, "--output", tmp_path / "o")
    assert run_cli("--model", resnet_weights, "--arch", "resnet18", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlens: ") and "missing keys" in err and "Traceback" not in err
    assert run_cli("--model", tmp_path / "absent.pt", *args) == 2
    assert "does not exist" in capsys.readouterr().err
