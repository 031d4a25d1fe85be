"""Models that take one image at a time, or that fail: every batch setting ends with a line per image,
one note, and summary.json saying why the run went at batch 1 (issue 12 point 13, issue 14 point 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from batchlens.cli import main as cli_main
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunNote
from batchlens.core.run.inference import fixed_batch_size
from batchlens.core.run.runner import Runner
from tests.core.modelkit import make_photos, read_jsonl

SIDECAR = {"task": "classification", "labels": ["a", "b", "c"], "input_size": [32, 32]}
SIZES = [(96, 64), (70, 90), (50, 50), (40, 60), (80, 80)]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class OneAtATime(Tiny):
    def forward(self, x):
        if x.size(0) != 1:
            raise ValueError("one image only")
        return self.fc(self.conv(x).mean((2, 3)))


class Broken(torch.nn.Module):
    def forward(self, x):
        raise ValueError("always broken")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Model files made here: torch.export'ed from one example (batch fixed at 1) and with a dynamic
    batch, and TorchScript models that refuse batches or fail on everything."""
    folder = tmp_path_factory.mktemp("models")
    make_photos(folder / "in", SIZES)
    torch.manual_seed(0)
    tiny = Tiny().eval()
    example = (torch.rand(1, 3, 32, 32),)
    torch.export.save(torch.export.export(tiny, example), str(folder / "fixed.pt2"))
    batch = ({0: torch.export.Dim("n")},)
    dynamic = torch.export.export(tiny, (torch.rand(2, 3, 32, 32),), dynamic_shapes=batch)
    torch.export.save(dynamic, str(folder / "dynamic.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save is deprecated (torch 2.10+)
        torch.jit.save(torch.jit.script(OneAtATime().eval()), str(folder / "one.pt"))
        torch.jit.save(torch.jit.script(Broken()), str(folder / "broken.pt"))
    for name in ("fixed", "dynamic", "one", "broken"):
        (folder / f"{name}.json").write_text(json.dumps(SIDECAR))
    return folder


def run(files: Path, tmp_path: Path, model: str, batch_size) -> tuple[list, dict, list[dict]]:
    out = tmp_path / f"out-{model}-{batch_size}"
    config = RunConfig(str(files / model), files / "in", out, device="cpu", batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
        events = list(Runner(config).events())
    summary = next(e.summary for e in events if isinstance(e, RunFinished))
    return events, summary, read_jsonl(out / "predictions.jsonl")


def batch_notes(events: list) -> list[str]:
    return [e.message for e in events if isinstance(e, RunNote) and "one image at a time" in e.message]


def test_the_exported_batch_is_read_from_the_program(files: Path):
    assert fixed_batch_size(torch.export.load(str(files / "fixed.pt2")).module()) == 1
    assert fixed_batch_size(torch.export.load(str(files / "dynamic.pt2")).module()) is None
    assert fixed_batch_size(Tiny()) is None  # an eager model does not say


@pytest.mark.parametrize("batch_size", ["auto", 4])
def test_exported_for_one_image_runs_at_batch_1_with_one_note(files: Path, tmp_path: Path, batch_size):
    events, summary, lines = run(files, tmp_path, "fixed.pt2", batch_size)
    assert [line["status"] for line in lines] == ["ok"] * len(SIZES)
    notes = batch_notes(events)
    assert len(notes) == 1 and "exported for a batch of exactly 1" in notes[0]
    assert summary["batch_size"] == 1
    assert "exported for a batch of exactly 1" in summary["batch_note"]


def test_a_dynamic_export_still_batches(files: Path, tmp_path: Path):
    events, summary, lines = run(files, tmp_path, "dynamic.pt2", 4)
    assert [line["status"] for line in lines] == ["ok"] * len(SIZES)
    assert batch_notes(events) == [] and summary["batch_note"] is None and summary["batch_size"] == 4


@pytest.mark.parametrize("batch_size", ["auto", 4])
def test_a_model_that_refuses_batches_is_found_out_once(files: Path, tmp_path: Path, batch_size):
    events, summary, lines = run(files, tmp_path, "one.pt", batch_size)
    assert [line["status"] for line in lines] == ["ok"] * len(SIZES)
    notes = batch_notes(events)
    assert len(notes) == 1 and "ValueError: one image only" in notes[0]
    assert "Traceback" not in notes[0]  # TorchScript's two tracebacks boil down to the model's error
    assert summary["batch_size"] == 1 and "one image only" in summary["batch_note"]
    # The same answers as one image at a time.
    _, _, plain = run(files, tmp_path, "one.pt", 1)
    assert [line["top"] for line in lines] == [line["top"] for line in plain]


@pytest.mark.parametrize("batch_size", ["auto", 4])
def test_a_model_that_always_fails_gives_an_error_line_per_image(files: Path, tmp_path: Path, batch_size):
    events, summary, lines = run(files, tmp_path, "broken.pt", batch_size)
    assert len(lines) == len(SIZES)
    assert all(line["status"] == "error" and "ValueError: always broken" in line["error"] for line in lines)
    assert sum(isinstance(e, ImageResult) for e in events) == len(SIZES)
    assert batch_notes(events) == []  # the model fails on single images too: nothing about batches
    assert summary["counts"]["error"] == len(SIZES)


def test_torchscript_deprecation_warning_only_with_verbose(files: Path, tmp_path: Path):
    def warned(*flags) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = tmp_path / f"cli{len(flags)}"
            args = ["run", "--model", str(files / "one.pt"), "--input", str(files / "in")]
            assert cli_main([*flags, *args, "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
        return [str(w.message) for w in caught if "deprecated" in str(w.message)]

    assert warned() == []
    assert any("torch.jit.load" in message for message in warned("-v"))
