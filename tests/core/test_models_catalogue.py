"""The torchvision catalogue: listing, the weights download (from a local HTTP server standing in for
download.pytorch.org: the real download is never exercised in tests), the offline message, safe loading,
and the classification oracle through `batchlens run`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from batchlens.cli import main as cli_main
from batchlens.core.errors import BatchLensError
from batchlens.core.models import (
    DownloadCancelled,
    StateDictMismatchError,
    WeightsDownloadError,
    list_models,
    load_model,
    needs_download,
)
from batchlens.core.models.catalogue import download_file, weights_for, weights_path
from tests.core.modelkit import load_rgb, make_photos, random_model, read_jsonl, run_cli, save_state_dict

CPU = torch.device("cpu")
ARCH = "mobilenet_v3_small"


def test_list_models_has_demos_and_the_catalogue():
    models = list_models()
    assert [m.id for m in models[:2]] == ["demo-shapes", "demo-denoise"]
    assert len({m.id for m in models}) == len(models)
    by_id = {m.id: m for m in models}
    tv = torchvision.models
    for task, module in (
        ("classification", tv),
        ("detection", tv.detection),
        ("segmentation", tv.segmentation),
    ):
        for name in tv.list_models(module=module):
            info = by_id[name]
            assert info.task == task and info.source == "torchvision"
            assert info.size_bytes > 100_000 and "params" in info.description
    assert by_id["resnet18"].description.startswith("ImageNet-1K: acc@1 69.758")
    assert {m.task for m in list_models("detection")} == {"detection"}


def test_models_command_groups_and_filters(capsys):
    assert cli_main(["models", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "torchvision segmentation:" in out and "lraspp_mobilenet_v3_large" in out
    assert "resnet18" not in out and "Built-in demos" not in out
    assert cli_main(["models", "demo"]) == 0
    out = capsys.readouterr().out
    assert "Built-in demos:" in out and "demo-shapes" in out and "torchvision" not in out.split("\n\n")[0]


def test_weights_variants():
    assert weights_for("resnet50").name == "IMAGENET1K_V2"  # DEFAULT
    assert weights_for("resnet50:IMAGENET1K_V1").name == "IMAGENET1K_V1"
    with pytest.raises(BatchLensError, match="has no weights 'V9'; it has IMAGENET1K_V1, IMAGENET1K_V2"):
        weights_for("resnet50:V9")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty torch hub cache for this test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


class QuietServer(http.server.ThreadingHTTPServer):
    """A download the client cancels (the tests do) resets the connection: expected, so no traceback on
    stderr (the suite fails a test that prints one, tests/conftest.py); any other error still prints."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@pytest.fixture
def server(tmp_path: Path):
    """A local HTTP server over tmp_path/served, standing in for download.pytorch.org."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url(name: str) -> str:
    """A URL on this machine where nothing listens: the connection is refused, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def serve_weights(model: torch.nn.Module, root: Path, url: str, monkeypatch, corrupt: bool = False) -> Path:
    """Save `model`'s state_dict under torch hub's naming (NAME-<sha256 prefix>.pth) and point the
    catalogue's DEFAULT weights at it."""
    staged = save_state_dict(model, root / "staged.pth")
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()[:8]
    name = f"{ARCH}-{'0badf00d' if corrupt else digest}.pth"
    staged.rename(root / name)
    monkeypatch.setattr(weights_for(ARCH).value, "url", f"{url}/{name}")
    return root / name


def test_download_with_progress_then_safe_load_and_oracle(hub: Path, server, monkeypatch, tmp_path: Path):
    root, url = server
    model = random_model(ARCH)
    served = serve_weights(model, root, url, monkeypatch)
    assert needs_download(ARCH) and not needs_download(ARCH, {"weights": "x.pth"})

    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    seen = []
    loaded = load_model(ARCH, CPU, progress=lambda done, total: seen.append((done, total)))
    assert (hub / served.name).read_bytes() == served.read_bytes()
    assert seen[0] == (0, served.stat().st_size) and seen[-1] == (served.stat().st_size,) * 2
    assert loads and all(flag is True for flag in loads), f"torch.load calls: {loads}"
    assert not needs_download(ARCH)
    assert loaded.info.source == "torchvision" and loaded.info.task == "classification"
    assert loaded.adapter.labels == weights_for(ARCH).meta["categories"]

    # Now cached: `batchlens run` needs no network; its top 5 equal the reference pipeline's.
    photos = make_photos(tmp_path / "in")
    served.unlink()
    assert run_cli("--model", ARCH, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0
    weights = weights_for(ARCH)
    preprocess, categories = weights.transforms(), weights.meta["categories"]
    for line, photo in zip(read_jsonl(tmp_path / "out" / "predictions.jsonl"), photos):
        with torch.inference_mode():
            probs = torch.softmax(model(preprocess(load_rgb(photo)).unsqueeze(0))[0], 0)
        values, indices = probs.topk(5)
        assert [t["label"] for t in line["top"]] == [categories[i] for i in indices.tolist()]
        np.testing.assert_allclose([t["score"] for t in line["top"]], values.numpy(), atol=2e-6)
    csv_lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert csv_lines[0] == "image,label,score" and len(csv_lines) == 3


def test_offline_gives_a_clear_message(hub: Path, monkeypatch, tmp_path: Path, capsys):
    with pytest.raises(WeightsDownloadError) as caught:
        download_file(closed_port_url("x-abcdef12.pth"), tmp_path / "x-abcdef12.pth")
    message = str(caught.value)
    assert "offline" in message and "--weights FILE" in message and str(tmp_path) in message
    assert not list(tmp_path.glob("*x-abcdef12*")), "no partial file left behind"

    monkeypatch.setattr(weights_for(ARCH).value, "url", closed_port_url(f"{ARCH}-12345678.pth"))
    make_photos(tmp_path / "in", sizes=[(32, 32)])
    assert run_cli("--model", ARCH, "--input", tmp_path / "in", "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlens: Could not download") and "offline" in err and str(hub) in err
    assert not weights_path(weights_for(ARCH)).exists()


def test_cancelled_and_corrupt_downloads_leave_nothing(hub: Path, server, monkeypatch):
    root, url = server
    serve_weights(random_model(ARCH), root, url, monkeypatch)
    with pytest.raises(DownloadCancelled):
        load_model(ARCH, CPU, progress=lambda done, total: done == 0)  # cancel after the first chunk
    assert not hub.exists() or not any(hub.iterdir())

    serve_weights(random_model(ARCH), root, url, monkeypatch, corrupt=True)
    with pytest.raises(WeightsDownloadError, match="corrupt"):
        load_model(ARCH, CPU)
    assert not any(hub.iterdir())


def test_weights_file_for_catalogue_arch(tmp_path: Path, hub: Path):
    mismatched = save_state_dict(random_model("squeezenet1_1"), tmp_path / "squeeze.pth")
    with pytest.raises(StateDictMismatchError) as caught:
        load_model(ARCH, CPU, {"weights": str(mismatched)})
    message = str(caught.value)
    assert str(mismatched) in message and "missing keys: features.0.0.weight" in message
    assert "unexpected keys: features.0.weight" in message
    loaded = load_model(ARCH, CPU, {"weights": str(save_state_dict(random_model(ARCH), tmp_path / "m.pth"))})
    assert loaded.info.id == f"{ARCH} (m.pth)" and not hub.exists(), "a weights file needs no download"
