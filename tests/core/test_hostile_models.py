"""Hostile model files, sidecars and labels (issue 12, points 1, 3, 5 and 17). Each test builds its
hostile input itself and asserts: the exception or exit code, one sentence naming the file without a
traceback, no code executed (the marker file never appears without trust), bounded time and memory."""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.models import PickleRefusedError, file_to_trust, load_model
from batchlens.core.models.audit import (
    MemberTooLarge,
    pickle_globals,
    read_member,
)
from batchlens.core.models.files import pickle_risk
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.size_audit import config_parameter_floor, size_problem
from batchlens.core.models.state_dict import read_weights
from tests.core.hostile import (
    Marker,
    assert_one_sentence,
    checkpoint_zip,
    declaring_pickle,
    deflate_bomb,
    pickled_weight_pt2,
    rewrite_zip,
    within,
)
from tests.core.modelkit import make_photos, read_jsonl, run_cli
from tests.helpers import assert_no_traceback

CPU = torch.device("cpu")
JIT_LOAD = "ignore:`torch.jit.load` is deprecated:FutureWarning"


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Saver(nn.Module):
    """TorchScript that writes a file by name when it runs (torch.save is a TorchScript builtin)."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x):
        torch.save(x, self.target)
        return x.mean((2, 3))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A real torch.export program (16x16 inputs), saved as .pt2."""
    path = tmp_path_factory.mktemp("export") / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 3, 16, 16),)), path)
    return path


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny().eval()), str(path))
    return path


def _sample_inputs_pickle(good: Path, evil: Path, marker: Path) -> None:
    """torch.export.load reads the sample inputs weights-only, then falls back to a full unpickle."""
    payload = __import__("io").BytesIO()
    torch.save(Marker(marker), payload)
    rewrite_zip(good, evil, lambda name, data: payload.getvalue() if "sample_inputs/" in name else data)


def _native_code(good: Path, evil: Path, marker: Path) -> None:
    with zipfile.ZipFile(good) as archive:
        top = archive.namelist()[0].split("/")[0]
    rewrite_zip(good, evil, lambda name, data: data)
    with zipfile.ZipFile(evil, "a") as archive:
        archive.writestr(f"{top}/data/aotinductor/model/model.so", b"\x7fELF native code")


# -- 1. model files never run code unasked ----------------------------------------------------------------
def test_pt2_with_a_pickled_weight_is_refused_until_trusted(exported: Path, tmp_path: Path, capsys):
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pt2"
    fqn = pickled_weight_pt2(exported, evil, marker)
    assert pickle_risk(exported) == [], "a clean program needs no trust"

    options = {"task": "classification"}
    started = time.perf_counter()
    with pytest.raises(PickleRefusedError) as refused:
        load_model(str(evil), CPU, options)
    assert time.perf_counter() - started < 30
    assert_one_sentence(str(refused.value), evil)
    assert (
        fqn in str(refused.value)
        and "use_pickle" in str(refused.value)
        and "--trust-pickle" in str(refused.value)
    )
    assert not marker.exists(), "the payload ran without trust"

    # The window asks before loading: file_to_trust names what the file would run.
    path, risks = file_to_trust(str(evil), options)
    assert path == evil and any("use_pickle" in r for r in risks) and any("eval" in r for r in risks)

    make_photos(tmp_path / "in", sizes=[(16, 16)])
    out = tmp_path / "out"
    assert (
        run_cli("--model", evil, "--task", "classification", "--input", tmp_path / "in", "--output", out) == 2
    )
    err = capsys.readouterr().err
    assert_one_sentence(err.removeprefix("batchlens: "), evil)
    assert not marker.exists() and not (out / "predictions.jsonl").exists()

    # Trusted, it loads and runs; the marker shows the payload was real all along.
    code = run_cli(
        "--model",
        evil,
        "--task",
        "classification",
        "--trust-pickle",
        "--input",
        tmp_path / "in",
        "--output",
        out,
    )
    assert code == 0 and marker.exists() and read_jsonl(out / "predictions.jsonl")[0]["status"] == "ok"


@pytest.mark.parametrize("make", [_sample_inputs_pickle, _native_code], ids=["sample-inputs", "aoti"])
def test_pt2_other_code_paths_are_refused(exported: Path, tmp_path: Path, make):
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pt2"
    make(exported, evil, marker)
    with pytest.raises(PickleRefusedError) as refused:
        load_model(str(evil), CPU, {"task": "classification"})
    assert_one_sentence(str(refused.value), evil)
    assert not marker.exists()


@pytest.mark.filterwarnings(JIT_LOAD)
def test_torchscript_that_writes_files_needs_trust(scripted: Path, tmp_path: Path):
    target = tmp_path / "written-by-the-model"
    saver = tmp_path / "saver.pt"
    torch.jit.save(torch.jit.script(Saver(str(target))), str(saver))
    options = {"task": "classification"}
    with pytest.raises(PickleRefusedError, match="aten::save") as refused:
        load_model(str(saver), CPU, options)
    assert_one_sentence(str(refused.value), saver)
    assert file_to_trust(str(saver), options) is not None and pickle_risk(scripted) == []

    model = load_model(str(saver), CPU, {**options, "trust_pickle": True})
    model.module(torch.zeros(1, 3, 8, 8))
    assert target.exists(), "the op is real: trusted, the model wrote its file"


@pytest.mark.filterwarnings(JIT_LOAD)
def test_torchscript_pickles_cannot_import_python(scripted: Path, tmp_path: Path):
    """The documented conclusion: torch.jit.load's own C++ unpickler resolves only TorchScript and
    torch types, so a data.pkl that imports os.system fails to load instead of running."""
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pt"

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    rewrite_zip(
        scripted, evil, lambda name, data: pickle.dumps(System(), 2) if name.endswith("/data.pkl") else data
    )
    with pytest.raises(RuntimeError, match="system"):
        torch.jit.load(str(evil))
    assert not marker.exists()


def test_any_pickle_protocol_is_read_statically(tmp_path: Path):
    """torch's own static check reads only GLOBAL; a protocol-4 payload (STACK_GLOBAL, memoized names)
    is read too, and a checkpoint made of it is refused without running."""
    marker = tmp_path / "MARKER"

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for protocol in range(6):
        found = pickle_globals(pickle.dumps([System(), {"again": System()}], protocol))
        assert found == {f"{os.system.__module__}.system"}, protocol
    evil = checkpoint_zip(tmp_path / "evil.pth", pickle.dumps(System(), 4))
    assert pickle_risk(evil) == [f"{os.system.__module__}.system"]
    with pytest.raises(PickleRefusedError) as refused:
        load_model("resnet18", CPU, {"weights": str(evil)})
    assert_one_sentence(str(refused.value), evil)
    assert not marker.exists()


def test_a_legacy_format_checkpoint_with_a_pickle_payload_is_refused_unrun(tmp_path: Path):
    """torch.save's legacy (non-zip) format, pickles one after another (issue 26): read statically too,
    so that the payload is named (and the window asks) before torch reads the file."""
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pth"
    torch.save({"weight": Marker(marker)}, evil, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(evil)
    assert pickle_risk(evil) == ["builtins.eval"]
    for options in ({"weights": str(evil)}, {"weights": str(evil), "task": "classification"}):
        with pytest.raises(PickleRefusedError) as refused:
            load_model("resnet18", CPU, options)
        assert_one_sentence(str(refused.value), evil)
        assert "builtins.eval" in str(refused.value)
    assert not marker.exists()

    honest = tmp_path / "honest.pth"
    torch.save(Tiny().state_dict(), honest, _use_new_zipfile_serialization=False)
    assert pickle_risk(honest) == [] and set(read_weights(honest)) == set(Tiny().state_dict())
    read_weights(evil, trust_pickle=True)  # trusted, the payload is real: it runs
    assert marker.exists()


# -- 5. zip bombs ---------------------------------------------------------------------------------------
def test_declared_sizes_beyond_the_file_are_refused(scripted: Path, tmp_path: Path):
    lying = checkpoint_zip(tmp_path / "lying.pth", declaring_pickle(2**31), {"0": bytes(2**20)})
    with pytest.raises(BatchLensError) as refused:
        load_model("resnet18", CPU, {"weights": str(lying)})
    assert_one_sentence(str(refused.value), lying)
    assert "8.0 GiB" in str(refused.value) and "zip bomb" in str(refused.value)
    with pytest.raises(BatchLensError, match="zip bomb"):  # every state_dict source reads with it (timm too)
        read_weights(lying, trust_pickle=True)

    honest = checkpoint_zip(tmp_path / "honest.pth", declaring_pickle(256), {"0": bytes(1024)})
    assert size_problem(honest) is None
    assert size_problem(scripted) is None, "TorchScript deflates its code: that is no bomb"
    assert "more than the 10 B of memory free" in size_problem(honest, available=10)


def test_deflate_bomb_is_refused_before_torch_allocates(tmp_path: Path, monkeypatch):
    """8 GiB declared in an 8 MB file: the real command line refuses it quickly, under an address-space
    limit that an 8 GiB allocation would break, and its peak memory stays far below the declared size."""
    bomb = deflate_bomb(tmp_path / "bomb.pth", 8, monkeypatch)
    assert bomb.stat().st_size < 16 * 2**20
    make_photos(tmp_path / "in", sizes=[(16, 16)])
    limit = 6 * 2**30  # torch, imported, maps about 3 GiB of address space; the bomb would need 8 more

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "batchlens", "run", "--model", "resnet18", "--weights", str(bomb), "--device",
         "cpu", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=180, preexec_fn=cap,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert_no_traceback(done)
    assert done.returncode == 2, done.stderr
    assert_one_sentence(done.stderr.strip().removeprefix("batchlens: "), bomb)
    assert "zip bomb" in done.stderr and "8.0 GiB" in done.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak < 4 * 2**30, f"a child peaked at {peak / 2**30:.1f} GiB"
    assert seconds < 180


def test_a_deflate_bomb_in_data_pkl_is_one_sentence_in_bounded_memory(tmp_path: Path, monkeypatch):
    """The pickle itself is the bomb (8 GiB of zeros in 8 MB): it used to be inflated whole by the size
    check (a MemoryError traceback after 28 s); now the zip directory refuses it, and any member is read
    through a bounded stream (read_member) that stops at its limit."""
    import tracemalloc

    bomb = deflate_bomb(tmp_path / "bomb.pth", 8, monkeypatch, member="archive/data.pkl")
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(BatchLensError) as refused:
            within(20, load_model, "resnet18", CPU, {"weights": str(bomb)})
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        with zipfile.ZipFile(bomb) as archive, pytest.raises(MemberTooLarge):
            read_member(archive, "archive/data.pkl", limit=2**20)
        assert pickle_risk(bomb) == [
            "a pickle BatchLens cannot check: data.pkl unpacks to more than 128.0 MiB"
        ]
    finally:
        tracemalloc.stop()
    assert_one_sentence(str(refused.value), bomb)
    assert "zip bomb" in str(refused.value) and "8.0 GiB" in str(refused.value)
    assert seconds < 5 and peak < 64 * 2**20, (seconds, peak)


def test_a_member_whose_directory_entry_lies_is_read_only_up_to_the_limit(tmp_path: Path, monkeypatch):
    """A member declared small in the directory is inflated no further than the bound either."""
    bomb = deflate_bomb(tmp_path / "bomb.pth", 1, monkeypatch, member="archive/data.pkl")
    with zipfile.ZipFile(bomb) as archive:
        info = archive.getinfo("archive/data.pkl")
        info.file_size = 2**20  # (the lie: 1 MiB declared, 1 GiB inside)
        started = time.perf_counter()
        try:
            data = read_member(archive, info, limit=4 * 2**20)
        except zipfile.BadZipFile:  # the CRC of what was read does not match: refused, never inflated
            data = b""
        assert len(data) <= 2**20 and time.perf_counter() - started < 2


# -- 3. sidecars and labels files ---------------------------------------------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


SIDECARS = {
    "nested 200,000 deep": (lambda d: "[" * 200_000 + "]" * 200_000, "nests"),
    "Latin-1 bytes": (lambda d: '{"task": "classification", "name": "caf\xe9"}'.encode("latin-1"), "UTF-8"),
    "task as a list": (lambda d: json.dumps({"task": ["classification"]}), '"task" must be a string'),
    "arch as a number": (
        lambda d: json.dumps({"task": "classification", "arch": 5}),
        '"arch" must be a string',
    ),
    "arch as a list": (lambda d: json.dumps({"arch": ["resnet18"]}), '"arch" must be a string'),
    "labels /dev/zero": (lambda d: json.dumps({"task": "classification", "labels": "/dev/zero"}), "outside"),
    "labels elsewhere": (
        lambda d: json.dumps({"task": "classification", "labels": "../../etc/passwd"}),
        "outside",
    ),
    "labels a fifo": (
        lambda d: (_fifo(d / "labels.txt"), json.dumps({"task": "classification", "labels": "labels.txt"}))[
            1
        ],
        "not a regular file",
    ),
    "labels too large": (
        lambda d: (
            (d / "big.txt").write_bytes(b"a\n" * (6 * 2**20)),
            '{"task": "classification", "labels": "big.txt"}',
        )[1],
        "larger than 10 MB",
    ),
    "sidecar too large": (lambda d: '{"task": "classification"}' + " " * (11 * 2**20), "larger than 10 MB"),
    "sidecar a fifo": (None, "not a regular file"),
    "std 0": (lambda d: json.dumps({"task": "classification", "mean": [0, 0, 0], "std": [1, 0, 1]}), "std"),
    "input_size too large": (
        lambda d: json.dumps({"task": "classification", "input_size": 100_000}),
        "megapixels",
    ),
}


@pytest.mark.filterwarnings(JIT_LOAD)
@pytest.mark.parametrize("case", list(SIDECARS))
def test_hostile_sidecars_are_one_sentence(scripted: Path, tmp_path: Path, case: str):
    model = tmp_path / "model.pt"
    model.write_bytes(scripted.read_bytes())
    sidecar = tmp_path / "model.json"
    make, expected = SIDECARS[case]
    if make is None:
        _fifo(sidecar)
    else:
        content = make(tmp_path)
        sidecar.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BatchLensError) as refused:
        within(30, load_model, str(model), CPU)
    message = str(refused.value)
    assert_one_sentence(message, tmp_path)
    assert expected in message


@pytest.mark.filterwarnings(JIT_LOAD)
def test_labels_option_is_guarded_too(scripted: Path, tmp_path: Path):
    for labels in (Path("/dev/zero"), _fifo(tmp_path / "labels.txt")):
        with pytest.raises(BatchLensError) as refused:
            within(30, load_model, str(scripted), CPU, {"task": "classification", "labels": str(labels)})
        assert_one_sentence(str(refused.value), labels)


def test_std_zero_is_refused_at_load_for_every_source(tmp_path: Path, capsys):
    config = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5, 0.0, 0.5]}
    with pytest.raises(BatchLensError, match="std must be positive"):
        Preprocessing.from_hf(config, str(tmp_path / "preprocessor_config.json"))
    with pytest.raises(BatchLensError, match="megapixels"):
        Preprocessing.from_hf({**config, "image_std": [0.5] * 3, "size": {"height": 20_000, "width": 20_000}})
    # The command line: one run-level sentence and exit 2, not an error line per image.
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(Tiny().eval()), str(model))
    make_photos(tmp_path / "in")
    # (a std of 0 is refused as the command line reads it: cli/args.py, tests/core/test_cli_ranges.py)
    with pytest.raises(SystemExit) as refused:
        run_cli("--model", model, "--task", "classification", "--mean", "0,0,0", "--std", "1,0,1",
                "--input", tmp_path / "in", "--output", tmp_path / "out")  # fmt: skip
    assert refused.value.code == 2 and not (tmp_path / "out" / "predictions.jsonl").exists()
    assert "argument --std: '1,0,1' is not a list of 1 to 4 numbers above 0" in capsys.readouterr().err


# -- a model folder whose config.json does not fit its weights ----------------------------------------
def test_a_timm_folder_whose_config_claims_gigabytes_is_refused_before_allocating(tmp_path: Path):
    """A timm hub folder of 2 MB whose config.json asks for 20 million classes (7.7 GB of parameters):
    the real command line refuses it from shapes built on the meta device, under an address-space limit
    that building it would break, and its peak memory stays far below it."""
    timm = pytest.importorskip("timm")
    folder = tmp_path / "timm-bomb"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=5), folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = config["model_args"]["num_classes"] = 20_000_000
    (folder / "config.json").write_text(json.dumps(config))
    make_photos(tmp_path / "in", sizes=[(16, 16)])
    limit = 6 * 2**30  # torch, imported, maps about 3 GiB of address space; the classifier needs 7.7 more

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "batchlens", "run", "--model", str(folder), "--device", "cpu",
         "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=180, preexec_fn=cap,
    )  # fmt: skip
    assert_no_traceback(done)
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().removeprefix("batchlens: ")
    assert_one_sentence(message, folder)
    assert "describes a model of at least 20.0 M parameters (num_classes 20,000,000)" in message
    assert "so it was not built" in message
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak < 4 * 2**30, f"a child peaked at {peak / 2**30:.1f} GiB"


def test_a_hugging_face_folder_whose_config_does_not_fit_its_weights_is_refused(tmp_path: Path):
    """A ViT folder whose config.json was changed to 16,384 px images (2.1 G position-embedding numbers
    for a file of a few thousand): refused from meta-device shapes, nothing allocated."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "vit-bomb"
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, num_labels=2,
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    described = json.loads((folder / "config.json").read_text())
    described["image_size"] = 65_536  # (65536 / 8)² patches × 32
    (folder / "config.json").write_text(json.dumps(described))
    with pytest.raises(BatchLensError) as refused:
        within(60, load_model, str(folder), CPU)
    assert_one_sentence(str(refused.value), folder)
    assert "describes a model of 2,147." in str(refused.value)


def _tiny_vit(folder: Path, **changes) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, num_labels=2,
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    described = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**described, **changes}))
    return folder


@pytest.mark.parametrize("layers", [10_000, 100_000])
def test_a_config_claiming_many_layers_is_refused_from_its_numbers(tmp_path: Path, layers: int):
    """10,000 layers took 28 s of CPU to be refused from a meta-device build and 100,000 ran past a
    minute; their numbers alone refuse them now, before transformers builds anything."""
    folder = _tiny_vit(tmp_path / "vit", num_hidden_layers=layers)
    started = time.perf_counter()
    with pytest.raises(BatchLensError) as refused:
        within(30, load_model, str(folder), CPU)
    assert time.perf_counter() - started < 1
    assert_one_sentence(str(refused.value), folder)
    assert f"num_hidden_layers {layers:,} of width 32" in str(refused.value)


def test_a_timm_config_claiming_a_deep_model_is_refused_from_its_numbers(tmp_path: Path):
    timm = pytest.importorskip("timm")
    folder = tmp_path / "timm-deep"
    timm.models.save_for_hf(timm.create_model("test_vit", num_classes=5), folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("model_args", {}).update(depth=100_000)
    (folder / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    with pytest.raises(BatchLensError) as refused:
        within(30, load_model, str(folder), CPU)
    assert time.perf_counter() - started < 1
    assert_one_sentence(str(refused.value), folder)
    assert "depth 100,000" in str(refused.value)


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(1, 10**15), width=st.integers(1, 10**6), classes=st.integers(1, 10**12))
def test_the_parameter_floor_is_arithmetic_whatever_the_numbers(depth: int, width: int, classes: int):
    config = {"num_hidden_layers": depth, "hidden_size": width, "vision_config": {"num_labels": classes}}
    started = time.perf_counter()
    floor, reason = config_parameter_floor(config)
    assert time.perf_counter() - started < 0.05
    assert floor == max(depth * width * width, classes)
    assert reason


@pytest.mark.parametrize(
    "size",
    [{"height": 100_000, "width": 100_000}, {"shortest_edge": 100_000}, {"height": -5, "width": 32},
     {"height": 0, "width": 32}, {"height": float("nan"), "width": 32}, {"height": 1.5, "width": 32},
     {"height": "big", "width": 32}],
    ids=["100000", "shortest-100000", "negative", "zero", "nan", "fraction", "text"],
)  # fmt: skip
def test_a_preprocessor_size_no_image_can_take_is_one_sentence_at_load(tmp_path: Path, size: dict):
    """A Hugging Face preprocessor_config.json with such a size gave an allocation error (or a
    traceback) for every image; it is one sentence when the model loads."""
    folder = _tiny_vit(tmp_path / "vit")
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**processor, "size": size}))
    with pytest.raises(BatchLensError) as refused:
        within(30, load_model, str(folder), CPU)
    assert_one_sentence(str(refused.value), folder)


def test_a_preprocessor_size_of_100000_stops_the_command_line_once(tmp_path: Path, capsys):
    folder = _tiny_vit(tmp_path / "vit")
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(
        json.dumps({**processor, "size": {"shortest_edge": 100_000}})
    )
    make_photos(tmp_path / "in", sizes=[(16, 16), (20, 20)])
    code = run_cli("--model", folder, "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out" / "predictions.jsonl").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "megapixels" in err[0], err


@pytest.mark.parametrize(
    "change",
    [{"input_size": [3, -1, -1]}, {"input_size": [3, 100_000, 100_000]}, {"crop_pct": float("nan")},
     {"input_size": [3, 0, 32]}],
    ids=["negative", "100000", "nan-crop", "zero"],
)  # fmt: skip
def test_a_timm_preprocessing_no_image_can_take_is_one_sentence_at_load(tmp_path: Path, change: dict):
    timm = pytest.importorskip("timm")
    folder = tmp_path / "timm"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=5), folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BatchLensError) as refused:
        within(60, load_model, str(folder), CPU)
    assert_one_sentence(str(refused.value), "timm")


@pytest.mark.parametrize(
    "geometry", [{"resize": (0,)}, {"crop": (-3, 4)}, {"max_size": 0}, {"rescale": float("nan")}]
)
def test_preprocessing_of_any_source_refuses_sizes_no_image_can_take(geometry: dict):
    with pytest.raises(BatchLensError, match="the model's preprocessing"):
        Preprocessing(**geometry)
