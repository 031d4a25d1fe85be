"""The engine on a Ray cluster (core/cluster/), in this process: joined with `auto` to the real
two-node, token-protected cluster of conftest.py (`ray start`), real demo models, real image folders;
every cluster run is compared line for line with the local engine's. How a user joins from a shell,
each way and with tokens on and off, is test_joining.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from batchlens.cli import main
from batchlens.core.cluster import ClusterConfig, ClusterRunner, WorkerPlan, plan_workers
from batchlens.core.cluster import connect as cluster_connect
from batchlens.core.errors import BatchLensError
from batchlens.core.models import load_model
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunNote, RunStarted
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder

RAISES = "shape_0002.png"  # the faulty worker below raises on this image
KILLS = "shape_0005.png"  # ... and its process dies on this one, every time
KILLED_ONCE = "shape_0003.png"  # ... and is killed (SIGKILL, as by the OOM killer) on this one, once


def read_lines(path: Path) -> list[dict]:
    """predictions.jsonl without what a line measures (time; a local run's memory peak, which a
    cluster's lines leave out): the only fields allowed to differ between runs."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        assert line.pop("seconds") >= 0
        line.pop("peak_memory_bytes", None)
    return lines


def local_run(model: str, folder: Path, out: Path, batch_size: int = 1) -> list:
    return list(Runner(RunConfig(model, folder, out, device="cpu", batch_size=batch_size)).events())


def faulty_loader_for(marks: Path):
    """The demo model, with a worker that raises on one image, dies on another every time, and is
    killed on a third the first time it meets it (`marks` remembers that, across worker processes)."""

    def faulty_loader(model_id, device, options):
        model = load_model(model_id, device, options)
        write = model.adapter.write

        def write_or_fail(result, meta, output_dir):
            if meta.rel == RAISES:
                raise RuntimeError("a bug in the worker")
            if meta.rel == KILLS:
                os._exit(1)  # the whole worker process goes, as on a segfault
            if meta.rel == KILLED_ONCE and not (marks / KILLED_ONCE).exists():
                (marks / KILLED_ONCE).touch()
                os.kill(os.getpid(), signal.SIGKILL)  # mid-run, from outside, as the OOM killer does
            write(result, meta, output_dir)

        model.adapter.write = write_or_fail
        return model

    return faulty_loader


@pytest.mark.cluster
def test_demo_models_give_the_local_engines_lines_and_files(ray_cluster, clusters, tmp_path: Path):
    shapes = tmp_path / "shapes"
    make_shapes_folder(shapes, 10)
    (shapes / "notes.png").write_text("not an image")  # an error line, on the cluster too
    local_run("demo-shapes", shapes, tmp_path / "local-shapes", batch_size=2)
    config = RunConfig("demo-shapes", shapes, tmp_path / "ray-shapes", device="cpu", batch_size=2)
    events = list(ClusterRunner(config, ClusterConfig(workers=2)).events())

    assert read_lines(tmp_path / "ray-shapes/predictions.jsonl") == read_lines(
        tmp_path / "local-shapes/predictions.jsonl"
    )
    assert (tmp_path / "ray-shapes/predictions.csv").read_bytes() == (
        tmp_path / "local-shapes/predictions.csv"
    ).read_bytes()
    started, finished = events[0], events[-1]
    assert isinstance(started, RunStarted) and started.total == 11 and "2 worker(s)" in started.device
    images = [e for e in events if isinstance(e, ImageResult)]
    assert [e.index for e in images] == list(range(1, 12))
    assert sorted(e.image for e in images) == sorted(p.name for p in shapes.iterdir())
    assert all(e.memory.peak > 0 for e in images)  # each worker's own probe, after its free
    bad = next(e for e in images if e.image == "notes.png")
    assert not bad.ok and bad.error.startswith("notes.png: ")
    assert isinstance(finished, RunFinished) and not finished.cancelled
    summary = json.loads((tmp_path / "ray-shapes/summary.json").read_text())
    local_summary = json.loads((tmp_path / "local-shapes/summary.json").read_text())
    for key in ("model", "task", "memory_kind", "recursive", "batch_size", "precision", "channels_last"):
        assert summary[key] == local_summary[key], key  # the same summary, plus where it ran
    for key in ("seconds", "images_per_second", "peak_memory_bytes", "started_at", "finished_at"):
        assert summary[key], key
    assert summary["counts"] == local_summary["counts"] == {**summary["counts"], "ok": 10, "error": 1}
    assert summary["files"] == [str(tmp_path / "ray-shapes/predictions.csv")]
    joined = summary["cluster"]  # the cluster actually joined, not "auto"
    assert joined["requested"] == "auto" and joined["address"] == clusters.token.address
    assert joined["node_count"] == 2 and not joined["started_here"]
    assert joined["workers"] == 2 and joined["worker_device"] == "cpu"
    assert summary["retries"] == {"batches_retried": 0, "worker_restarts": 0}
    notes = [e.message for e in events if isinstance(e, RunNote)]
    assert f"Joined the Ray cluster at {clusters.token.address} (2 node(s))." in notes


@pytest.mark.cluster
def test_worker_failures_become_error_lines_and_the_run_completes(ray_cluster, tmp_path: Path):
    # Workers unpickle this module's loader by value: they need not import the tests package.
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    shapes = tmp_path / "shapes"
    make_shapes_folder(shapes, 7)
    local_run("demo-shapes", shapes, tmp_path / "local")
    config = RunConfig("demo-shapes", shapes, tmp_path / "ray", device="cpu", batch_size=1)
    (tmp_path / "marks").mkdir()
    loader = faulty_loader_for(tmp_path / "marks")
    events = list(ClusterRunner(config, ClusterConfig(workers=1), loader=loader).events())

    lines = read_lines(tmp_path / "ray/predictions.jsonl")
    expected = read_lines(tmp_path / "local/predictions.jsonl")
    assert [line["image"] for line in lines] == [line["image"] for line in expected]
    for line, reference in zip(lines, expected):
        if line["image"] == RAISES:
            assert line == {
                "image": RAISES,
                "status": "error",
                "error": f"{RAISES}: the worker failed on this image (RuntimeError: a bug in the worker)",
            }
        elif line["image"] == KILLS:
            assert line["status"] == "error"
            assert line["error"].startswith(f"{KILLS}: the worker process died 2 times")
        else:
            assert line == reference
    summary = json.loads((tmp_path / "ray/summary.json").read_text())
    assert summary["counts"]["ok"] == 5 and summary["counts"]["error"] == 2
    # Killed once on KILLED_ONCE (whose line above is the local one: retried, written once) and twice
    # on KILLS: Ray restarted the worker three times and retried those batches.
    assert (tmp_path / "marks" / KILLED_ONCE).exists()
    assert summary["retries"]["worker_restarts"] == 3
    assert summary["retries"]["batches_retried"] >= 3
    assert isinstance(events[-1], RunFinished) and not events[-1].cancelled


@pytest.mark.cluster
def test_the_window_runs_on_the_cluster_and_says_so(ray_cluster, clusters, qtbot, tmp_path: Path):
    from PySide6.QtCore import QSettings

    from batchlens.ui.main_window import CLUSTER, MainWindow
    from batchlens.ui.settings import Settings

    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # never the user's settings
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    shapes = tmp_path / "shapes"
    make_shapes_folder(shapes, 4)
    local_run("demo-shapes", shapes, tmp_path / "local")
    window = MainWindow(Settings(tmp_path / "settings.ini"))
    window.ask_questions = False
    qtbot.addWidget(window)
    window.show()
    window.prefill(model="demo-shapes", input_dir=shapes, output_dir=tmp_path / "out", device=CLUSTER)
    assert window.form.cluster_edit.isVisible() and window.form.cluster_edit.text() == "auto"
    window.form.cluster_edit.setText("local")
    window.form.cluster_edit.setText("auto")  # joins the cluster this test started
    where = window.memory_plot.where_label
    assert where.isVisible() and "Ray cluster (auto)" in where.text() and "this window" in where.text()
    created = []
    window.worker_created.connect(created.append)
    with qtbot.waitSignal(window.run_finished, timeout=300_000) as finished:
        assert window.start_run()
    assert isinstance(created[0].runner, ClusterRunner) and created[0].runner.cluster.address == "auto"
    summary = finished.args[0]
    assert summary["counts"]["ok"] == 4 and summary["cluster"]["workers"] == 2
    assert summary["cluster"]["address"] == clusters.token.address
    assert read_lines(tmp_path / "out/predictions.jsonl") == read_lines(tmp_path / "local/predictions.jsonl")
    # The newest result is shown, its previews made on the workers. (Which image that is depends on
    # which worker finished last: the cluster's events come as rows arrive, the file is in scan order.)
    assert window.previews.shown is window._latest
    assert window.previews.shown.image in {f"shape_{i:04d}.png" for i in range(4)}
    assert window.previews.input_view.has_image()
    assert "Latest worker report" in where.text()
    window.set_device("cpu")  # back on this machine: the plot needs no caveat
    assert not where.isVisible() and not window.form.cluster_edit.isVisible()
    window.close()


def test_the_pool_is_sized_to_the_cluster():
    assert plan_workers({"CPU": 16.0, "GPU": 4.0}, "auto", None) == WorkerPlan(4, "cuda", 1.0)
    assert plan_workers({"CPU": 16.0, "GPU": 4.0}, "cuda:1", 2) == WorkerPlan(2, "cuda", 1.0)
    assert plan_workers({"CPU": 16.0, "GPU": 4.0}, "cpu", 3) == WorkerPlan(3, "cpu", 0.0)
    assert plan_workers({"CPU": 2.0}, "auto", None) == WorkerPlan(2, "cpu", 0.0)
    with pytest.raises(BatchLensError, match="has no GPUs"):
        plan_workers({"CPU": 2.0}, "cuda", None)
    with pytest.raises(BatchLensError, match="room for 2"):
        plan_workers({"CPU": 2.0}, "cpu", 3)
    with pytest.raises(BatchLensError, match="auto, cpu or cuda"):
        plan_workers({"CPU": 2.0}, "mps", None)


def test_without_ray_the_cli_says_how_to_install_it(monkeypatch, capsys, shapes_folder, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where it is not installed
    args = ["run", "--model", "demo-shapes", "--input", str(shapes_folder), "--output", str(tmp_path / "o")]
    assert main([*args, "--cluster", "auto"]) == 2
    assert 'pip install "batchlens[cluster]"' in capsys.readouterr().err
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


def test_auto_joins_only_a_cluster_that_answers(monkeypatch, tmp_path: Path):
    # running_cluster() reads Ray's own address rules
    pytest.importorskip("ray", reason='Ray is not installed (the cluster extra: pip install -e ".[cluster]")')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # Ray's rule: `ray start` notes its address here
    (tmp_path / "ray").mkdir()
    remembered = tmp_path / "ray" / "ray_current_cluster"
    assert cluster_connect.running_cluster() is None  # nothing started here: auto starts a local cluster
    with socket.create_server(("127.0.0.1", 0)) as server:
        remembered.write_text(f"127.0.0.1:{server.getsockname()[1]}\n")
        assert cluster_connect.running_cluster() == f"127.0.0.1:{server.getsockname()[1]}"
    assert cluster_connect.running_cluster() is None  # that cluster is gone: do not wait minutes for it
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert cluster_connect.running_cluster() == "head:6379"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # Ray's rule: RAY_ADDRESS stands for auto
    assert ClusterConfig("auto").remote_driver and not ClusterConfig("head:6379").remote_driver


@pytest.mark.cluster
def test_the_window_says_in_one_sentence_why_it_cannot_join(no_ray_connection, qtbot, tmp_path: Path):
    from PySide6.QtCore import QSettings

    from batchlens.ui.main_window import CLUSTER, MainWindow
    from batchlens.ui.settings import Settings

    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # never the user's settings
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))

    with socket.create_server(("127.0.0.1", 0)) as server:  # a port that was free, and is again
        port = server.getsockname()[1]
    shapes = tmp_path / "shapes"
    make_shapes_folder(shapes, 2)
    window = MainWindow(Settings(tmp_path / "settings.ini"))
    window.ask_questions = False
    qtbot.addWidget(window)
    window.prefill(model="demo-shapes", input_dir=shapes, output_dir=tmp_path / "out", device=CLUSTER)
    window.form.cluster_edit.setText(f"127.0.0.1:{port}")
    assert window.start_run()
    qtbot.waitUntil(lambda: window.thread is None or window.thread.isFinished(), timeout=60_000)
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=10_000)
    assert window.last_error == (
        f"No Ray cluster answers at 127.0.0.1:{port}: start one with `ray start --head`, or check the host "
        "and the port (the head node's GCS port, 6379 by default)."
    )
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    window.close()
