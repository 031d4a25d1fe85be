"""The operators a model graph may call without the user's trust: pure tensor operations, as data.

A TorchScript (.pt/.ts) or torch.export (.pt2) file carries a graph of operators that runs when the model
runs. Untrusted (no --trust-pickle), such a file loads only when every operator in it, through every
submodule, method and function it calls, is allowed here (audit.py reads the graphs). Allowed:

* `aten::*`, PyTorch's tensor library, except the few that reach outside the process (files, printing);
* the `prim::` nodes of control flow and data structures that TorchScript compiles Python into, by name;
* `torchvision::*`: nms, roi_align, roi_pool, deform_conv2d... (detection models need them);
* in a torch.export graph, Python's arithmetic on sizes (`_operator.add`, `math.ceil`, `torch.sym_*`)
  and the control-flow operators (`higher_order.cond`, `while_loop`, `map_impl`, `scan`).

Everything else is refused, among it `image::read_file`/`write_file` (torchvision.io), `aten::save`
(torch.save), `aten::from_file`, `prim::Print`, the profiler's and the distributed namespaces, custom
C++ classes (`torch.classes.*`), Python ops, and any namespace a library registers later. The list was
derived from the graphs of the demo models and of torchvision's classification, detection (Faster
R-CNN, RetinaNet, Mask and Keypoint R-CNN) and segmentation (LR-ASPP, DeepLabV3) models, scripted and
exported (tests/core/test_hostile_model_graphs.py keeps them loading).
"""

from __future__ import annotations

# aten operators that are not pure tensor operations: they read or write files or print.
DENIED_ATEN = frozenset({"save", "from_file", "_print", "_set_print_options"})

# Namespaces whose every operator is a pure tensor operation.
WHOLE_NAMESPACES = frozenset({"aten", "torchvision"})

# TorchScript's structural nodes and pure prim operators (printed in serialised code as ops.prim.X).
ALLOWED_PRIM = frozenset(
    {
        # control flow, values, calls (called methods and functions are read too)
        "Constant", "If", "Loop", "Return", "GetAttr", "SetAttr", "CallMethod", "CallFunction",
        "CreateObject", "Enter", "Exit", "RaiseException", "Uninitialized", "unchecked_cast",
        "unchecked_unwrap_optional", "isinstance", "type", "Param",
        # containers
        "ListConstruct", "ListUnpack", "TupleConstruct", "TupleUnpack", "TupleIndex", "TupleSlice",
        "DictConstruct", "DictIndex", "ModuleContainerIndex", "StringIndex", "EnumName", "EnumValue",
        # numbers and tensor properties
        "NumToTensor", "ImplicitTensorToNum", "min", "max", "abs", "tolist", "rangelist", "index",
        "device", "dtype", "layout", "data", "requires_grad", "grad", "name", "itemsize", "nbytes",
        "is_cpu", "is_cuda", "is_meta", "is_mkldnn", "is_mps", "is_nested", "is_quantized", "is_sparse",
        "is_sparse_csr", "is_vulkan", "is_xla", "is_xpu", "is_ipu", "is_maia", "is_mtia",
        "BroadcastSizes", "ConstantChunk", "AutogradZero", "AutogradAdd",
    }
)  # fmt: skip

# torch.export graphs: call targets that are not torch.ops (Python arithmetic on symbolic sizes).
ALLOWED_PYTHON_TARGETS = frozenset(
    {f"_operator.{name}" for name in (
        "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos", "abs",
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_", "invert", "lshift", "rshift",
    )}
    | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")}
    | {f"torch.{name}" for name in (
        "sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "_sym_sqrt",
        "sym_sum",
    )}
)  # fmt: skip

# torch.export's higher-order operators that only run graphs (whose nodes are checked as well).
ALLOWED_HIGHER_ORDER = frozenset(
    {"cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)


def operator_allowed(kind: str) -> bool:
    """Whether a TorchScript node kind or operator name ("aten::add", "prim::If") is allowed."""
    namespace, _, name = kind.partition("::")
    if namespace == "aten":
        return name not in DENIED_ATEN
    if namespace == "prim":
        return name in ALLOWED_PRIM
    return namespace in WHOLE_NAMESPACES and bool(name)


def export_target_allowed(target: str) -> bool:
    """Whether a torch.export graph node's target ("torch.ops.aten.conv2d.default",
    "_operator.getitem", "torch.ops.higher_order.cond") is allowed."""
    if target in ALLOWED_PYTHON_TARGETS:
        return True
    parts = target.split(".")
    if len(parts) < 4 or parts[:2] != ["torch", "ops"]:
        return False
    namespace, name = parts[2], parts[3]
    if namespace == "higher_order":
        return name in ALLOWED_HIGHER_ORDER
    return operator_allowed(f"{namespace}::{name}")


def export_target_name(target: str) -> str:
    """A torch.export target as an operator name ("torch.ops.image.read_file.default": image::read_file)."""
    parts = target.split(".")
    if len(parts) >= 4 and parts[:2] == ["torch", "ops"]:
        return f"{parts[2]}::{parts[3]}"
    return target
