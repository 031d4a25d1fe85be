"""Model graphs are an allowlist (issue 24, defence 2): an untrusted TorchScript or torch.export file
loads only when every operator in its graphs is a pure tensor operation (core/models/graph_ops.py).

Each hostile model is built here, programmatically, and calls one operator family that is not allowed,
directly or nested in a submodule, a called method, a called function, a branch, a .pt2 subgraph. Each
must be refused with one sentence naming the file and the operator, without running (the file it would
write never appears); the same models load with --trust-pickle. The allowlist must accept every demo
model and torchvision's classification, detection (torchvision::nms, roi_align) and segmentation
models."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from batchlens.core.models import PickleRefusedError, file_to_trust, load_model
from batchlens.core.models.audit import (
    _is_size_arithmetic,
    pt2_risks,
    scripted_graph_risks,
    torchscript_risks,
)
from batchlens.core.models.demo_nets import ARCHITECTURES
from batchlens.core.models.graph_ops import export_target_allowed, operator_allowed
from tests.core.hostile import assert_one_sentence, rewrite_zip, within
from tests.core.modelkit import make_photos, run_cli

CPU = torch.device("cpu")
JIT_LOAD = "ignore:`torch.jit.load` is deprecated:FutureWarning"
pytestmark = pytest.mark.filterwarnings(JIT_LOAD)


class Head(nn.Module):
    """A small classifier body, so that every hostile model computes something real."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class Reads(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.head, self.path = Head(), path

    def forward(self, x):
        data = torchvision.io.read_file(self.path)  # image::read_file
        return self.head(x) + data.float().sum() * 0


class Writes(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.head, self.path = Head(), path

    def forward(self, x):
        torchvision.io.write_file(self.path, torch.zeros(3, dtype=torch.uint8))  # image::write_file
        return self.head(x)


@torch.jit.script
def _dump(x: torch.Tensor, path: str) -> torch.Tensor:
    torch.save(x, path)  # aten::save
    return x


class SavesDeep(nn.Module):
    """torch.save in a function, called by a method of a submodule of a submodule."""

    class Inner(nn.Module):
        def __init__(self, path: str):
            super().__init__()
            self.path = path

        def keep(self, x: torch.Tensor) -> torch.Tensor:
            return _dump(x, self.path)

        def forward(self, x):
            return self.keep(x)

    def __init__(self, path: str):
        super().__init__()
        self.head, self.inner = Head(), nn.Sequential(self.Inner(path))

    def forward(self, x):
        return self.head(self.inner(x))


class FromFile(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.head, self.path = Head(), path

    def forward(self, x):
        data = torch.from_file(self.path, size=1, dtype=torch.uint8)  # aten::from_file
        if bool(data.sum() > 1000):
            return self.head(x) * 2
        return self.head(x)


class Prints(nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.head = Head()

    def forward(self, x):
        y = self.head(x)
        if bool(y.sum() > -1e9):
            print("the model talks", y.shape)  # prim::Print
        return y


class Profiles(nn.Module):
    """The profiler's ops run in a class's __enter__ (prim::Enter): not in forward's own graph."""

    def __init__(self, path: str):
        super().__init__()
        self.head = Head()

    def forward(self, x):
        with torch.autograd.profiler.record_function("hostile"):
            y = self.head(x)
        return y


class SavesWhileLoading(nn.Module):
    """A __setstate__ runs while torch.jit.load reads the file, before any graph can be looked at."""

    def __init__(self, path: str):
        super().__init__()
        self.head, self.path = Head(), path

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        torch.save(torch.zeros(1), state[0])
        self.path, self.training = state

    def forward(self, x):
        return self.head(x)


class CustomClass(nn.Module):
    """A custom C++ class (torch.classes.*) held as an attribute."""

    def __init__(self, path: str):
        super().__init__()
        self.head = Head()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (quantized tensors are deprecated, with a warning)
            weight = torch.quantize_per_tensor(torch.randn(3, 3), 0.1, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(weight, None)

    def forward(self, x):
        return self.head(x)


HOSTILE = {
    "image-read_file": (Reads, "image::read_file", False),
    "image-write_file": (Writes, "image::write_file", True),
    "save-in-a-nested-function": (SavesDeep, "aten::save", True),
    "from_file": (FromFile, "aten::from_file", False),
    "print": (Prints, "prim::Print", False),
    "profiler-in-__enter__": (Profiles, "profiler::_record_function_enter_new", False),
    "save-in-__setstate__": (SavesWhileLoading, "aten::save", True),
    "custom-class": (CustomClass, "torch.classes.quantized.LinearPackedParamsBase", False),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_scripted_model_calling_a_non_tensor_operator_is_refused_unrun(tmp_path: Path, case: str):
    make, operator, writes = HOSTILE[case]
    private = tmp_path / "private.txt"
    private.write_text("secret")
    target = tmp_path / "written-by-the-model"
    model = tmp_path / f"{case}.pt"
    torch.jit.save(torch.jit.script(make(str(target if writes else private))), str(model))

    options = {"task": "classification"}
    with pytest.raises(PickleRefusedError) as refused:
        within(30, load_model, str(model), CPU, options)
    message = str(refused.value)
    assert_one_sentence(message, model)
    assert operator in message, message
    assert "--trust-pickle" in message
    assert file_to_trust(str(model), options) is not None, "the window asks before loading it"
    assert not target.exists(), "the model ran"


@pytest.mark.parametrize("case", ["image-read_file", "image-write_file", "save-in-a-nested-function",
                                  "from_file", "print"])  # fmt: skip
def test_the_loaded_graphs_are_checked_too(tmp_path: Path, case: str):
    """The second net: the graphs torch compiled (methods and functions inlined, branches included) name
    the same operator as the code's text."""
    make, operator, _ = HOSTILE[case]
    module = torch.jit.script(make(str(tmp_path / "x")))
    risks = scripted_graph_risks(module)
    assert risks and operator in risks[0], risks
    assert scripted_graph_risks(torch.jit.script(Head())) == []


def test_trusted_the_same_model_runs_its_operator(tmp_path: Path):
    """The refusal is not a broken file: with --trust-pickle the model loads, runs and writes."""
    target, model = tmp_path / "written-by-the-model", tmp_path / "saves.pt"
    torch.jit.save(torch.jit.script(SavesDeep(str(target))), str(model))
    loaded = load_model(str(model), CPU, {"task": "classification", "trust_pickle": True})
    loaded.module(torch.zeros(1, 3, 8, 8))
    assert target.exists()


def test_the_command_line_refuses_it_with_exit_2_and_writes_nothing(tmp_path: Path, capsys):
    target, model = tmp_path / "written-by-the-model", tmp_path / "saves.pt"
    torch.jit.save(torch.jit.script(SavesDeep(str(target))), str(model))
    make_photos(tmp_path / "in", sizes=[(16, 16)])
    code = run_cli("--model", model, "--task", "classification", "--input", tmp_path / "in",
                   "--output", tmp_path / "out")  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "out" / "predictions.jsonl").exists() and not target.exists()
    assert_one_sentence(err.removeprefix("batchlens: "), model)
    assert "aten::save" in err


# -- torch.export (.pt2) ------------------------------------------------------------------------------------
class Branches(nn.Module):
    """A graph with a subgraph per branch (higher_order.cond): sin in one, cos in the other."""

    def __init__(self):
        super().__init__()
        self.head = Head()

    def forward(self, x):
        y = self.head(x)
        return torch.cond(y.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (y,))


@pytest.fixture(scope="module")
def branches(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "branches.pt2"
    torch.export.save(_export(Branches().eval(), torch.randn(1, 3, 16, 16)), path)
    return path


def _export(module: nn.Module, *inputs):
    with warnings.catch_warnings():  # (torch.export's tracing of cond warns about its own internals)
        warnings.simplefilter("ignore")
        return torch.export.export(module, inputs)


def _graph_rewritten(good: Path, evil: Path, change) -> Path:
    """A copy of a .pt2 whose graph (models/model.json) went through change(graph) -> graph."""

    def rewrite(name: str, data: bytes) -> bytes:
        return json.dumps(change(json.loads(data))).encode() if name.endswith("models/model.json") else data

    rewrite_zip(good, evil, rewrite)
    return evil


def _retarget(old: str, new: str):
    def change(graph: dict) -> dict:
        return json.loads(json.dumps(graph).replace(f'"{old}"', f'"{new}"'))

    return change


PT2_CASES = {
    "image::write_file": ("torch.ops.aten.relu.default", "torch.ops.image.write_file.default"),
    "torch.save": ("torch.ops.aten.relu.default", "torch.save"),
    "profiler::_record_function_enter_new": (
        "torch.ops.aten.relu.default", "torch.ops.profiler._record_function_enter_new.default"),
    "aten::from_file": ("torch.ops.aten.sin.default", "torch.ops.aten.from_file.default"),  # in a subgraph
    "prims::": ("torch.ops.aten.cos.default", "torch.ops.prims.cos.default"),  # not on the list: refused
}  # fmt: skip


@pytest.mark.parametrize("operator", list(PT2_CASES))
def test_an_exported_graph_calling_a_non_tensor_operator_is_refused(branches: Path, tmp_path: Path, operator):
    old, new = PT2_CASES[operator]
    assert old in zipfile.ZipFile(branches).read("branches/models/model.json").decode()
    evil = _graph_rewritten(branches, tmp_path / "evil.pt2", _retarget(old, new))
    with pytest.raises(PickleRefusedError) as refused:
        load_model(str(evil), CPU, {"task": "classification"})
    assert_one_sentence(str(refused.value), evil)
    assert operator in str(refused.value)
    assert pt2_risks(branches) == []


def test_an_exported_shape_guard_that_is_python_is_refused(branches: Path, tmp_path: Path):
    """torch compiles a .pt2's guards_code into Python that runs on every call: proven here by torch
    itself creating the marker, while BatchLens refuses the file and the marker never appears."""
    marker = tmp_path / "MARKER"
    guard = f"__import__('pathlib').Path({str(marker)!r}).touch() is None"
    evil = _graph_rewritten(
        branches, tmp_path / "guarded.pt2", lambda graph: {**graph, "guards_code": [guard]}
    )
    with pytest.raises(PickleRefusedError) as refused:
        load_model(str(evil), CPU, {"task": "classification"})
    assert_one_sentence(str(refused.value), evil)
    assert "shape guard" in str(refused.value) and not marker.exists()

    torch.export.load(str(evil)).module()(torch.randn(1, 3, 16, 16))  # what trusting it means
    assert marker.exists()


def test_real_size_expressions_and_guards_are_arithmetic():
    for text in [
        "Add(Mul(Integer(2), Pow(Symbol('s39', positive=True, integer=True), Integer(2))), Integer(-2))",
        "Max(Integer(1), TruncToInt(Mul(Float('0.5', precision=53), ToFloat(Symbol('s3', integer=True)))))",
        "GreaterThan(Symbol('u0', integer=True), Integer(2))",
        "(4 % (4*math.trunc(0.5*torch.sym_float((-2) + L['x'].size()[3])))) != 0",
    ]:
        assert _is_size_arithmetic(text.replace("L['x']", "L")), text


_ARITHMETIC = st.lists(
    st.sampled_from(["s0", "u12", "Integer(3)", "+", "*", "(", ")", "Max", "FloorDiv", "1.5", ",", "<="]),
    max_size=30,
).map(" ".join)
_CODE = st.sampled_from(
    ["__import__('os')", "open('f')", "s0.__class__", "lambda: 0", "preview(s0)", "exec(chr(1))",
     "Symbol('x').func", "getattr", "eval", "'text'", "s0.real"]
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(before=_ARITHMETIC, code=_CODE, after=_ARITHMETIC)
def test_any_code_in_a_size_expression_is_refused(before: str, code: str, after: str):
    assert _is_size_arithmetic(f"{before} {after}")
    assert not _is_size_arithmetic(f"{before} {code} {after}")


@given(
    namespace=st.from_regex(r"[a-z_]{1,12}", fullmatch=True), name=st.from_regex(r"\w{1,20}", fullmatch=True)
)
def test_only_the_listed_namespaces_are_allowed(namespace: str, name: str):
    allowed = operator_allowed(f"{namespace}::{name}")
    if namespace not in ("aten", "prim", "torchvision"):
        assert not allowed and not export_target_allowed(f"torch.ops.{namespace}.{name}.default")
    if namespace == "aten":
        assert allowed == (name not in ("save", "from_file", "_print", "_set_print_options"))


# -- what must keep loading ---------------------------------------------------------------------------------
def test_the_demo_models_load_scripted_and_exported(tmp_path: Path):
    for model_id in ("demo-shapes", "demo-denoise"):
        load_model(model_id, CPU)
    for name, make in ARCHITECTURES.items():
        module = make().eval()
        scripted = tmp_path / f"{name}.pt"
        torch.jit.save(torch.jit.script(module), str(scripted))
        load_model(str(scripted), CPU, {"task": "classification"})
        channels = 1 if name == "DenoiseNet" else 3
        exported = tmp_path / f"{name}.pt2"
        torch.export.save(torch.export.export(module, (torch.randn(1, channels, 16, 16),)), exported)
        assert pt2_risks(exported) == [], name


def _tv(name: str) -> nn.Module:
    models = torchvision.models
    return {
        "resnet18": lambda: models.resnet18(weights=None),
        "frcnn": lambda: models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None
        ),
        "lraspp": lambda: models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None),
    }[name]().eval()


def test_a_scripted_detector_passes_both_checks(tmp_path: Path):
    """Faster R-CNN calls torchvision::nms and roi_align, builds objects, loops and branches: its code
    and its graphs are all allowed (the whole load is the slow test below)."""
    scripted = torch.jit.script(_tv("frcnn"))
    path = tmp_path / "frcnn.pt"
    torch.jit.save(scripted, str(path))
    assert torchscript_risks(path) == []
    assert scripted_graph_risks(scripted) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, task", [("frcnn", "detection"), ("resnet18", "classification"), ("lraspp", "segmentation")]
)
def test_scripted_torchvision_models_load(tmp_path: Path, name: str, task: str):
    path = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.script(_tv(name)), str(path))
    assert within(60, load_model, str(path), CPU, {"task": task}).info.task == task


def test_an_exported_graph_with_torchvision_nms_in_a_branch_loads(tmp_path: Path):
    class Nms(nn.Module):
        def forward(self, boxes, scores):
            keep = torchvision.ops.nms(boxes, scores, 0.5)
            return torch.cond(scores.sum() > 0, lambda k: k + 1, lambda k: k - 1, (keep,))

    exported = tmp_path / "nms.pt2"
    boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5], [10, 10, 12, 12]])
    torch.export.save(_export(Nms(), boxes, torch.tensor([0.9, 0.8, 0.7])), exported)
    text = zipfile.ZipFile(exported).read("nms/models/model.json").decode()
    assert "torch.ops.torchvision.nms.default" in text and "higher_order.cond" in text
    assert "expr_str" in text, "a data-dependent size (u0) is written as a sympy expression"
    assert pt2_risks(exported) == []


@pytest.mark.slow
@pytest.mark.parametrize("name, task", [("resnet18", "classification"), ("lraspp", "segmentation")])
def test_exported_torchvision_models_load(tmp_path: Path, name: str, task: str):
    path = tmp_path / f"{name}.pt2"
    torch.export.save(_export(_tv(name), torch.randn(1, 3, 64, 64)), path)
    assert load_model(str(path), CPU, {"task": task}).info.task == task
