"""`batchlens --self-test`: open the real window, run the demo models over their bundled samples into a
temporary folder, check what was written, and exit 0 (or non-zero with a message).

Installers run it to prove a build works end to end: Qt platform plugin, torch, the bundled resources,
the worker thread, previews and the memory plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer, qInstallMessageHandler

from batchlens.core.inputs.images import scan_images
from batchlens.core.resources import sample_folder

DEMOS = ("demo-shapes", "demo-denoise")
RUN_TIMEOUT_S = 300


class SelfTestFailure(Exception):
    pass


def _wait_for_run(window, timeout_s: float) -> dict | None:
    loop = QEventLoop()
    result: dict = {}

    def done(summary) -> None:
        result["summary"] = summary
        loop.quit()

    window.run_finished.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    window.run_finished.disconnect(done)
    if "summary" not in result:
        raise SelfTestFailure(f"the run did not finish within {timeout_s:.0f} s")
    return result["summary"]


def _check_run(window, model: str, output: Path) -> str:
    samples = sample_folder(model)
    expected = sorted(c.rel for c in scan_images(samples))
    if not expected:
        raise SelfTestFailure(f"no bundled sample images in {samples}")
    window.prefill(model=model, input_dir=samples, output_dir=output, device="cpu")
    if window.model_picker.current_model_id() != model:
        raise SelfTestFailure(f"the model picker does not offer {model}")
    t0 = time.perf_counter()
    if not window.start_run():
        raise SelfTestFailure(f"the run of {model} did not start: {window.controls.message.text()}")
    summary = _wait_for_run(window, RUN_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if summary is None:
        raise SelfTestFailure(f"the run of {model} failed: {window.last_error}")
    lines = [json.loads(line) for line in (output / "predictions.jsonl").read_text("utf-8").splitlines()]
    images = sorted(line["image"] for line in lines)
    if images != expected:
        raise SelfTestFailure(f"{model}: predictions.jsonl has {len(lines)} lines for {len(expected)} images")
    failed = [line for line in lines if line["status"] != "ok"]
    if failed:
        raise SelfTestFailure(f"{model}: {len(failed)} sample image(s) failed, e.g. {failed[0]['error']}")
    if not (output / "summary.json").is_file():
        raise SelfTestFailure(f"{model}: summary.json was not written")
    if window.controls.progress.value() != window.controls.progress.maximum():
        raise SelfTestFailure(f"{model}: the progress bar stopped at {window.controls.progress.value()}")
    shown = window.previews.shown
    if shown is None or shown.image != lines[-1]["image"] or not window.previews.input_view.has_image():
        raise SelfTestFailure(f"{model}: the preview does not show the last image")
    return f"{model}: {len(lines)} images ok in {seconds:.1f} s"


def _quiet_offscreen_notices(mode, context, message: str) -> None:
    # The offscreen platform says "does not support propagateSizeHints()" for every window: noise in
    # an installer's log. Every other Qt message still goes to stderr.
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


def run_self_test(args: argparse.Namespace) -> int:
    from batchlens.ui.qt_app import needs_offscreen

    if needs_offscreen():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    previous_handler = qInstallMessageHandler(_quiet_offscreen_notices)
    try:
        return _self_test()
    finally:
        qInstallMessageHandler(previous_handler)


def _self_test() -> int:
    from batchlens.ui.qt_app import create_app, leave_a_core_for_the_window

    app = create_app()
    leave_a_core_for_the_window()
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    with tempfile.TemporaryDirectory(prefix="batchlens-self-test-") as tmp:
        tmp_path = Path(tmp)
        # Own settings file: the self-test must not change what the user's window remembers.
        window = MainWindow(Settings(tmp_path / "settings.ini"))
        window.ask_questions = False
        window.show()
        app.processEvents()
        try:
            reports = [_check_run(window, model, tmp_path / model) for model in DEMOS]
            samples = len(window.memory_plot.history)
            if samples == 0:
                raise SelfTestFailure("the memory plot took no samples")
            plot = window.memory_plot
            cleared = plot.clear_cache()
            reports.append(f"memory plot: {samples} samples ({plot.probe.kind}); {cleared.message()}")
        except SelfTestFailure as exc:
            print(f"batchlens self-test FAILED: {exc}", file=sys.stderr)
            window.close()
            return 1
        except Exception as exc:  # anything else is a failure too, with its reason
            print(f"batchlens self-test FAILED: unexpected {exc!r}", file=sys.stderr)
            window.close()
            return 1
        window.close()
        if window.thread is not None and window.thread.isRunning():
            print("batchlens self-test FAILED: the run thread was still running after close", file=sys.stderr)
            return 1
    print(f"batchlens self-test passed (Qt platform: {app.platformName()}):")
    for line in reports:
        print(f"  {line}")
    return 0
