"""--precision auto: reduced precision only where the model's outputs stay within tolerance of float32,
checked on the first batch and recorded in summary.json. On the CPU the check runs in bf16 (the
candidate CUDA tries, fp16, is what AUTO_CANDIDATE names there; here it is patched to bf16 on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from batchlens.core.run import precision
from batchlens.core.run.config import RunConfig
from batchlens.core.run.precision import compare_outputs, decide_precision
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder


def _run(tmp_path: Path, name: str, model: str = "demo-shapes", **settings) -> dict:
    folder = tmp_path / "in"
    if not folder.exists():
        make_shapes_folder(folder, 6)
    out = tmp_path / name
    for _ in Runner(RunConfig(model, folder, out, device="cpu", batch_size=3, **settings)).events():
        pass
    return json.loads((out / "summary.json").read_text())


def test_classification_check_keeps_the_candidate_when_top1_and_probabilities_agree():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    same = compare_outputs(logits, logits + 1e-4, "classification", "bf16")
    assert same.chosen == "bf16" and same.top1_agreement == (2, 2) and same.checked_max_diff < 1e-3
    flipped = logits.clone()
    flipped[1] = torch.tensor([3.1, 3.0, 1.0])  # the second image's top-1 moves
    moved = compare_outputs(logits, flipped, "classification", "bf16")
    assert moved.chosen == "fp32" and moved.top1_agreement == (1, 2)
    assert "top-1 on 1 of 2" in moved.reason


def test_other_tasks_compare_the_relative_difference_and_the_shapes():
    out = {"out": torch.linspace(-4, 4, 100).reshape(1, 1, 10, 10)}
    close = compare_outputs(out, {"out": out["out"] * 1.001}, "segmentation", "fp16")
    far = compare_outputs(out, {"out": out["out"] * 1.1}, "segmentation", "fp16")
    assert close.chosen == "fp16" and far.chosen == "fp32"
    assert far.checked_max_diff == pytest.approx(0.1, rel=1e-3)
    boxes = compare_outputs([torch.ones(3, 4)], [torch.ones(2, 4)], "detection", "fp16")
    assert boxes.chosen == "fp32" and "another shape" in boxes.reason
    inf = compare_outputs(torch.ones(1, 3), torch.tensor([[1.0, float("inf"), 1.0]]), "x", "fp16")
    assert inf.chosen == "fp32" and "overflow" in inf.reason


def test_auto_on_the_cpu_stays_float32_without_a_check(tmp_path: Path):
    summary = _run(tmp_path, "auto", precision="auto")
    check = summary["precision_check"]
    assert summary["precision"] == "fp32" and check["asked"] == "auto"
    assert check["candidate"] is None and "not tried on cpu" in check["reason"]
    assert summary["counts"]["ok"] == 6


def test_auto_runs_the_first_batch_in_both_and_records_the_difference(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(precision.AUTO_CANDIDATE, "cpu", "bf16")
    summary = _run(tmp_path, "auto", precision="auto")
    check = summary["precision_check"]
    assert check["candidate"] == "bf16" and summary["precision"] == check["chosen"]
    assert check["checked_max_diff"] is not None and check["checked_max_diff"] > 0  # bf16 rounds
    assert check["top1_agreement"] == [3, 3]  # the first batch: 3 images
    within = check["checked_max_diff"] <= precision.CLASSIFICATION_MAX_PROB_DIFF
    assert check["chosen"] == ("bf16" if within else "fp32") and "tolerance" in check["reason"]


def test_auto_falls_back_to_float32_outside_the_tolerance(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(precision.AUTO_CANDIDATE, "cpu", "bf16")
    monkeypatch.setattr(precision, "CLASSIFICATION_MAX_PROB_DIFF", 0.0)  # bf16 cannot be exact
    summary = _run(tmp_path, "strict", precision="auto")
    assert summary["precision"] == "fp32" and summary["precision_check"]["chosen"] == "fp32"
    assert summary["precision_check"]["checked_max_diff"] > 0
    # fp32 results: exactly those of a plain fp32 run
    plain = tmp_path / "plain"
    for _ in Runner(RunConfig("demo-shapes", tmp_path / "in", plain, device="cpu", batch_size=3)).events():
        pass
    records = [
        json.loads(line) for line in (tmp_path / "strict" / "predictions.jsonl").read_text().splitlines()
    ]
    plain_records = [json.loads(line) for line in (plain / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 6 and [r.get("top") for r in records] == [r.get("top") for r in plain_records]


def test_explicit_precision_is_recorded_as_asked(tmp_path: Path):
    summary = _run(tmp_path, "fp32")
    assert summary["precision"] == "fp32"
    assert summary["precision_check"] == {
        "asked": "fp32",
        "chosen": "fp32",
        "candidate": None,
        "checked_max_diff": None,
        "top1_agreement": None,
        "reason": "set by --precision",
    }


def test_image_to_image_model_is_checked_by_relative_difference(tmp_path: Path, monkeypatch):
    from batchlens.core.models import load_model

    model = load_model("demo-denoise", torch.device("cpu"))
    batch = torch.rand(2, 1, 32, 32)  # grey images
    decision = decide_precision(
        model.module, batch, torch.device("cpu"), model.adapter.task, candidate="bf16"
    )
    assert decision.candidate == "bf16" and decision.top1_agreement is None
    assert decision.checked_max_diff is not None and "relative difference" in decision.reason
