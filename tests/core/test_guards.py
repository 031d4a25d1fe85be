"""Each guard that keeps a bad result, a bad file or a hostile pickle out of a run, pinned on its own.

Several guards stand behind one another (the model output's NaN check, then the result's, then the
writer's; the opener's check of the file type, then its non-blocking open, then its check of what it
opened), so removing one of them leaves the others protecting and a test through the whole run stays
green. Each test below is built so that it fails when exactly its own guard is removed;
`scripts/check_protection_tests.sh` removes each in a scratch copy of app/ and shows its test failing
(docs/development.md, "Protection tests").
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from batchlens.core.inputs import images
from batchlens.core.inputs.images import ImageError, open_input
from batchlens.core.models.errors import PickleRefusedError
from batchlens.core.models.state_dict import read_weights
from batchlens.core.outputs.results import ResultsWriter
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.pipeline import NOT_FINITE
from batchlens.core.run.runner import Runner
from batchlens.core.tasks.image_to_image import ImageToImageAdapter
from tests.core.hostile import Marker, within
from tests.core.modelkit import make_photos, save_scripted

fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")


def strict_lines(out: Path) -> list[dict]:
    """predictions.jsonl as a strict reader sees it (NaN and infinity refused)."""

    def refuse(name):
        raise AssertionError(f"{name} in predictions.jsonl")

    return [
        json.loads(line, parse_constant=refuse)
        for line in (out / "predictions.jsonl").read_text().splitlines()
    ]


def run_model(model: Path, tmp_path: Path, count: int = 2) -> tuple[list[ImageResult], Path]:
    """A real run of `model` over `count` small photos: its image events and its output folder."""
    make_photos(tmp_path / "in", sizes=[(40, 30)] * count)
    out = tmp_path / "out"
    config = RunConfig(str(model), tmp_path / "in", out, device="cpu", batch_size=2)
    return [e for e in Runner(config).events() if isinstance(e, ImageResult)], out


def written_files(out: Path) -> list[str]:
    """Files a run wrote beside its own bookkeeping (outputs, masks)."""
    own = {"predictions.jsonl", "summary.json", "run.json", "mask_classes.json", "detections.coco.json"}
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name not in own)


# -- the model output's NaN check (pipeline.all_finite), on every task path that does not read a batch
# at once (classification's postprocess_batch has its own row check: test_results_integrity.py) -------


class NanImage(torch.nn.Module):
    def forward(self, x):
        return x * float("nan")


class Halve(torch.nn.Module):
    def forward(self, x):
        return x * 0.5


class NanLogits(torch.nn.Module):
    """Segmentation: three classes of NaN logits (argmax still names a class, so the mask looks fine)."""

    def forward(self, x):
        return torch.cat([x[:, :1], x[:, :1], x[:, :1]], 1) * float("nan")


class NanDetector(torch.nn.Module):
    """Detection: one box whose score and corners are NaN. The score threshold drops it, so without
    the check the image would get an ok line saying "nothing found"."""

    def forward(
        self, images: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        results: list[dict[str, torch.Tensor]] = []
        for image in images:
            nan = image.mean() * float("nan")
            results.append(
                {
                    "boxes": torch.stack([nan, nan, nan, nan]).reshape(1, 4),
                    "labels": torch.tensor([1]),
                    "scores": nan.reshape(1),
                }
            )
        return {}, results


@pytest.mark.parametrize(
    ("module", "sidecar"),
    [
        (NanImage(), {"task": "image_to_image", "input_size": [16, 16]}),
        (NanLogits(), {"task": "segmentation", "input_size": [16, 16]}),
        (NanDetector(), {"task": "detection", "input_size": [16, 16], "labels": ["bg", "thing"]}),
    ],
    ids=["image_to_image", "segmentation", "detection"],
)
def test_a_model_output_holding_nan_gives_error_lines_and_no_files(module, sidecar, tmp_path: Path):
    model = save_scripted(module, tmp_path / "models" / "nan.pt", sidecar)
    events, out = run_model(model, tmp_path)
    assert [e.status for e in events] == ["error", "error"]
    assert all(NOT_FINITE in e.error for e in events), [e.error for e in events]
    lines = strict_lines(out)
    assert [line["status"] for line in lines] == ["error", "error"]
    assert all(NOT_FINITE in line["error"] for line in lines)
    assert written_files(out) == [], "no output image or mask made of NaN"


# -- the result's NaN check (BatchPipeline._keep): a finite model output whose postprocessing makes NaN


def test_a_result_holding_nan_is_an_error_in_the_events_and_the_file(tmp_path: Path, monkeypatch):
    """The writer would still keep the file strict JSON, but the event (what the window and the command
    line show) must say error too, and no output file may be written for a result nobody can trust."""
    original = ImageToImageAdapter.postprocess

    def nan_scale(self, output, meta):
        result = original(self, output, meta)
        result.fields["scale"] = float("nan")  # as a division by zero in postprocessing would give
        return result

    monkeypatch.setattr(ImageToImageAdapter, "postprocess", nan_scale)
    model = save_scripted(
        Halve(), tmp_path / "models" / "halve.pt", {"task": "image_to_image", "input_size": [16, 16]}
    )
    events, out = run_model(model, tmp_path)
    assert [e.status for e in events] == ["error", "error"]
    assert all("its result holds NaN or infinity (scale)" in e.error for e in events), [
        e.error for e in events
    ]
    lines = strict_lines(out)
    assert all("its result holds NaN or infinity (scale)" in line["error"] for line in lines)
    assert written_files(out) == []


# -- the writer's own NaN fallback (ResultsWriter.write): a line nobody checked before ------------------


def test_the_writer_turns_a_nan_it_is_handed_into_an_error_line(tmp_path: Path):
    writer = ResultsWriter(tmp_path)
    writer.write(
        {"image": "a.png", "status": "ok", "error": None, "seconds": 0.5, "top": [{"score": float("nan")}]}
    )
    writer.write({"image": "b.png", "status": "ok", "error": None, "seconds": 0.5, "top": [{"score": 0.25}]})
    writer.close()
    first, second = strict_lines(tmp_path)
    assert first == {
        "image": "a.png",
        "status": "error",
        "error": "a.png: the model produced NaN or infinity (top[0].score)",
        "seconds": 0.5,
    }
    assert second["status"] == "ok" and second["top"] == [{"score": 0.25}]


# -- summary.json replaced whole (ResultsWriter.write_summary) -----------------------------------------


def test_summary_json_is_replaced_whole_never_rewritten_in_place(tmp_path: Path):
    """A reader that opened the previous summary.json (the results browser, a script polling it) goes
    on reading the whole previous file, and the new one appears whole: it is written beside it and
    renamed over it. Written in place, the open file would be truncated under the reader."""
    writer = ResultsWriter(tmp_path)
    old = {"counts": {"ok": 1}, "note": "x" * 10_000}
    writer.write_summary(old)
    with open(tmp_path / "summary.json", encoding="utf-8") as reader:
        writer.write_summary({"counts": {"ok": 2}})
        assert json.loads(reader.read()) == old
    writer.close()
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == {"counts": {"ok": 2}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "summary.json"]


# -- the guarded opener (images.open_input): three layers, each with its test ---------------------------


@fifo_only
def test_a_named_pipe_is_refused_before_it_is_opened(tmp_path: Path, monkeypatch):
    """The file-type check comes first: a special file is never opened at all (opening a device can
    act: a tape rewinds, a pipe's writer sees a reader arrive)."""
    pipe = tmp_path / "scan.png"
    os.mkfifo(pipe)
    opened = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        if Path(path) == pipe:  # (other threads of the test process may open their own files)
            opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images.os, "open", spy)
    with pytest.raises(ImageError, match="not a regular file"):
        within(10, open_input, pipe)
    assert opened == []


@fifo_only
def test_a_file_swapped_for_a_named_pipe_after_the_check_does_not_hang(tmp_path: Path, monkeypatch):
    """Between the check and the open, the regular file becomes a named pipe with no writer (a race
    anyone with write access to the folder can win). The open must not wait for a writer (O_NONBLOCK),
    and what it opened must be refused (the check after opening)."""
    path = tmp_path / "swapped.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    real_stat = os.stat

    def stat_then_swap(target, *args, **kwargs):
        result = real_stat(target, *args, **kwargs)
        if Path(target) == path and stat.S_ISREG(result.st_mode):
            path.unlink()
            os.mkfifo(path)
        return result

    monkeypatch.setattr(images.os, "stat", stat_then_swap)
    try:
        with pytest.raises(ImageError, match="not a regular file"):
            within(5, open_input, path)
    finally:
        monkeypatch.undo()
        if stat.S_ISFIFO(os.stat(path).st_mode):  # a reader stuck in open() (the guard removed): free it
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


# -- untrusted pickles load with weights_only=True (state_dict.torch_load) ------------------------------


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy format", "zip format"])
def test_a_legacy_pickle_checkpoint_cannot_run_code(tmp_path: Path, monkeypatch, legacy: bool):
    """torch's weights-only unpickler is a layer of its own: with the static pickle check blinded (as a
    pickle it cannot read, or a trick it misses, would blind it), the payload still does not run."""
    from batchlens.core.models import state_dict

    monkeypatch.setattr(state_dict, "checkpoint_risks", lambda path: [])  # the other layer, taken away
    marker, evil = tmp_path / "MARKER", tmp_path / "legacy.pth"
    torch.save({"weight": Marker(marker)}, evil, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(PickleRefusedError) as refused:
        read_weights(evil)
    assert not marker.exists(), "the payload ran"
    assert str(evil) in str(refused.value) and "\n" not in str(refused.value)
