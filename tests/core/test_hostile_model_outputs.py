"""Model outputs of any kind (issue 24): a model whose output is on the meta device, sparse, complex,
whole numbers, nested, None or text gets an error line per image naming what it returned, never a
traceback, and the run ends normally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from batchlens.core.run.inference import output_problem
from tests.core.modelkit import make_photos, read_jsonl, run_cli

JIT_LOAD = "ignore:`torch.jit.load` is deprecated:FutureWarning"
pytestmark = pytest.mark.filterwarnings(JIT_LOAD)


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)


class Meta(Body):
    def forward(self, x):
        return torch.empty([x.shape[0], 3, x.shape[2], x.shape[3]], device=torch.device("meta"))


class Sparse(Body):
    def forward(self, x):
        return self.conv(x).to_sparse()


class Complex(Body):
    def forward(self, x):
        y = self.conv(x)
        return torch.complex(y, y)


class Whole(Body):
    def forward(self, x):
        return (self.conv(x) * 10).to(torch.int64)


class Nested(Body):
    def forward(self, x) -> dict[str, list[torch.Tensor]]:
        return {"a": [self.conv(x), self.conv(x)]}


class Nothing(Body):
    def forward(self, x) -> torch.Tensor | None:
        return None


class Text(Body):
    def forward(self, x) -> str:
        return "a picture"


class Scalar(Body):
    def forward(self, x):
        return self.conv(x).sum()


KINDS = {
    "meta": (Meta, "meta device"),
    "sparse": (Sparse, "sparse"),
    "complex": (Complex, "complex"),
    "int": (Whole, None),
    "nested": (Nested, None),
    "none": (Nothing, "None"),
    "text": (Text, "text"),
    "scalar": (Scalar, None),
}


@pytest.mark.parametrize("task", ["classification", "segmentation", "image_to_image"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_any_model_output_is_an_error_line_per_image(tmp_path: Path, capsys, kind: str, task: str):
    make, named = KINDS[kind]
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make().eval()), str(model))
    make_photos(tmp_path / "in", sizes=[(16, 16), (20, 12), (12, 18)])
    extra: list[Any] = ["--labels", _labels(tmp_path)] if task != "image_to_image" else []
    code = run_cli("--model", model, "--task", task, "--input-size", "16", "--batch-size", "2",
                   "--input", tmp_path / "in", "--output", tmp_path / "out", *extra)  # fmt: skip
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert len(lines) == 3 and code in (0, 1), (code, err)
    failed = [line for line in lines if line["status"] == "error"]
    if named:
        assert len(failed) == 3 and all(named in line["error"] for line in failed), lines
    for line in failed:
        assert "\n" not in line["error"] and line["error"], line


def _labels(folder: Path) -> Path:
    path = folder / "labels.txt"
    path.write_text("a\nb\nc\n")
    return path


_GOOD = st.sampled_from([torch.zeros(2, 3), torch.arange(4), torch.ones(1, dtype=torch.bool), torch.zeros(0)])
_BAD = st.sampled_from(
    [
        (torch.empty(2, device="meta"), "meta device"),
        (torch.eye(3).to_sparse(), "sparse"),
        (torch.zeros(2, dtype=torch.complex64), "complex"),
    ]
)


def _nested(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    )


@settings(max_examples=60, deadline=None)
@given(good=_nested(_GOOD), bad=_BAD, depth=st.integers(0, 4))
def test_a_bad_tensor_anywhere_in_an_output_is_named(good, bad, depth: int):
    assert output_problem(good) is None
    tensor, named = bad
    output = tensor
    for level in range(depth):
        output = [good, output] if level % 2 else {"x": good, "y": output}
    assert named in output_problem(output)
