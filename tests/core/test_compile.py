"""--compile: the model runs through torch.compile, the first batch's time is reported, results equal
the uncompiled run, and a model torch.compile cannot build runs as loaded with one warning.

The tests use torch.compile's "eager" backend (Dynamo traces the model for real; no C++ code is
generated), because inductor's code generation takes minutes on a 2-core CI machine."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import RunFinished, RunNote
from batchlens.core.run.runner import Runner

REAL_COMPILE = torch.compile


def run(folder: Path, out: Path, **settings) -> tuple[dict, list[str], dict]:
    notes, summary = [], None
    for event in Runner(RunConfig("demo-shapes", folder, out, device="cpu", **settings)).events():
        if isinstance(event, RunNote):
            notes.append(event.message)
        elif isinstance(event, RunFinished):
            summary = event.summary
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return summary, notes, {r["image"]: r["top"] for r in lines}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_run_reports_its_first_batch_and_equals_the_plain_run(tmp_path, shapes_folder, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(REAL_COMPILE, backend="eager"))
    plain_summary, _, plain = run(shapes_folder, tmp_path / "plain", batch_size=4)
    summary, notes, compiled = run(shapes_folder, tmp_path / "compiled", batch_size=4, compile=True)
    assert summary["compile"]["failed"] is None and summary["compile"]["first_forward_seconds"] > 0
    assert plain_summary.get("compile") is None
    assert any(n.startswith("torch.compile: the first batch took") for n in notes)
    assert compiled.keys() == plain.keys()
    for image, top in plain.items():
        assert [t["index"] for t in top] == [t["index"] for t in compiled[image]]
        assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(top, compiled[image]))


def test_a_model_compile_cannot_build_runs_as_loaded(tmp_path, shapes_folder, monkeypatch):
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(torch, "compile", functools.partial(REAL_COMPILE, backend=no_compiler))
    summary, notes, results = run(shapes_folder, tmp_path / "out", batch_size=4, compile=True)
    assert summary["counts"]["ok"] == 12 and summary["counts"]["error"] == 0
    assert "no working C++ compiler found" in summary["compile"]["failed"]
    assert any(
        "could not compile this model here" in n and "goes on with the model as loaded" in n for n in notes
    )


def test_reduce_overhead_mode_that_cannot_build_runs_as_loaded(tmp_path, shapes_folder, monkeypatch):
    """The long bench's measured switch (Fastest with CUDA graphs): a failure to build falls back the same."""
    modes = []

    def no_graphs(module, mode=None, **kwargs):
        modes.append(mode)

        def fails(graph, example_inputs):
            raise RuntimeError("CUDA graphs are not supported here")

        return REAL_COMPILE(module, backend=fails)

    monkeypatch.setattr(torch, "compile", no_graphs)
    summary, notes, results = run(shapes_folder, tmp_path / "out", batch_size=4, compile="reduce-overhead")
    assert modes == ["reduce-overhead"]
    assert summary["counts"]["ok"] == 12 and summary["compile"]["mode"] == "reduce-overhead"
    assert "CUDA graphs are not supported here" in summary["compile"]["failed"]
    assert sum("could not compile this model here" in n for n in notes) == 1
