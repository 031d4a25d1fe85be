"""BatchNorm folded into the convolutions for a batching CPU run (core/run/model_speedups.py): real
torchvision and hand-built models, real image files, the real engine."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from batchlens.core.run import model_speedups
from batchlens.core.run.bench_loops import load_bench_model, make_synthetic_folder
from batchlens.core.run.config import EXACT_SETTINGS, RunConfig
from batchlens.core.run.events import RunFinished
from batchlens.core.run.model_speedups import FOLD_TOLERANCE, fold_batch_norms, same_outputs
from batchlens.core.run.runner import Runner


def seeded_resnet18():
    model, _ = load_bench_model("resnet18", torch.device("cpu"))
    return model


class SkipNet(nn.Module):
    """conv1 -> bn1 folds; conv2's output also feeds the skip, so bn2 must stay as it is."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.conv2(y)
        return self.head((self.bn2(z) + z).mean((2, 3)))


class BranchesOnValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor's value: torch.fx cannot trace it
            return self.bn(self.conv(x))
        return x


def randomised(module: nn.Module) -> nn.Module:
    """Give every BatchNorm running statistics and an affine part that are not the identity."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return module.eval()


def test_resnet18_folds_every_batch_norm_and_gives_the_same_outputs():
    module = randomised(seeded_resnet18().module)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    folded = fold_batch_norms(module)
    assert folded is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.fc is module.fc  # the layers not folded are shared, not copied
    x = torch.randn(4, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = module(x), folded(x)
    assert same_outputs(expected, got)
    assert (got - expected).abs().max() <= FOLD_TOLERANCE * expected.abs().max()
    assert torch.equal(expected.argmax(1), got.argmax(1))
    after = module.state_dict()  # the model as loaded is left exactly as it was
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_batch_norm_whose_input_is_used_twice_stays():
    module = randomised(SkipNet())
    folded = fold_batch_norms(module)
    assert folded is not None
    kinds = [type(m) for m in folded.modules()]
    assert kinds.count(nn.BatchNorm2d) == 1  # bn2 stays: conv2's output is also the skip
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert same_outputs(module(x), folded(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(),  # nothing to fold
        lambda: randomised(BranchesOnValues()),  # cannot be traced
        lambda: torch.jit.script(randomised(SkipNet())),  # TorchScript
        lambda: randomised(SkipNet()).train(),  # training mode: BatchNorm uses the batch's statistics
    ],
    ids=["no-batch-norm", "untraceable", "torchscript", "training"],
)
def test_models_that_cannot_be_folded_are_left_alone(make):
    assert fold_batch_norms(make()) is None


def test_same_outputs_tells_rounding_from_a_difference():
    a = {"logits": torch.tensor([[3.0, -1.0, 0.5]]), "ids": torch.tensor([2])}
    rounding = {"logits": a["logits"] + 1e-6, "ids": torch.tensor([2])}
    assert same_outputs(a, rounding)
    assert not same_outputs(a, {"logits": a["logits"] + 0.01, "ids": torch.tensor([2])})
    assert not same_outputs(a, {"logits": a["logits"], "ids": torch.tensor([1])})
    assert not same_outputs([a["logits"]], [a["logits"], a["logits"]])


def run(model, folder, out, **settings) -> tuple[dict, list[dict]]:
    summary = None
    config = RunConfig(model.info.id, folder, out, device="cpu", **settings)
    for event in Runner(config, model=model).events():
        if isinstance(event, RunFinished):
            summary = event.summary
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return summary, lines


@pytest.fixture
def photos(tmp_path):
    return make_synthetic_folder(tmp_path / "photos", 6, (160, 120))


def test_a_batching_cpu_run_folds_and_gives_the_exact_runs_results(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLENS_CACHE_DIR", str(tmp_path / "cache"))
    model = seeded_resnet18()
    randomised(model.module)
    loaded = model.module
    exact, exact_lines = run(model, photos, tmp_path / "exact", **EXACT_SETTINGS)
    assert exact["folded_batch_norm"] is False
    fast, fast_lines = run(model, photos, tmp_path / "fast", batch_size=2)
    assert fast["folded_batch_norm"] is True
    assert model.module is loaded  # the model as loaded comes back at the end of the run
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.module.modules())
    assert [line["image"] for line in fast_lines] == [line["image"] for line in exact_lines]
    for a, b in zip(exact_lines, fast_lines):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a["top"], b["top"])) <= 1e-5


def test_a_fold_that_changes_the_outputs_is_not_used(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLENS_CACHE_DIR", str(tmp_path / "cache"))
    real_fuse = model_speedups.fuse_conv_bn_eval

    def off_by_a_little(conv, bn):  # a folding bug: every folded weight 1 % too large
        fused = real_fuse(conv, bn)
        fused.weight.data.mul_(1.01)
        return fused

    monkeypatch.setattr(model_speedups, "fuse_conv_bn_eval", off_by_a_little)
    model = seeded_resnet18()
    randomised(model.module)
    exact, exact_lines = run(model, photos, tmp_path / "exact", **EXACT_SETTINGS)
    fast, fast_lines = run(model, photos, tmp_path / "fast", batch_size=2)
    assert "differed" in fast["folded_batch_norm"]
    for a, b in zip(exact_lines, fast_lines):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a["top"], b["top"])) <= 1e-5


def test_a_first_image_that_fails_does_not_keep_the_run_from_folding(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLENS_CACHE_DIR", str(tmp_path / "cache"))
    (photos / "img_00000.jpg").write_bytes(b"not a jpeg")  # the first image of the run fails
    model = seeded_resnet18()
    summary, lines = run(model, photos, tmp_path / "fast")  # auto: the first batch is that image alone
    assert lines[0]["status"] == "error" and all(line["status"] == "ok" for line in lines[1:])
    assert summary["folded_batch_norm"] is True
