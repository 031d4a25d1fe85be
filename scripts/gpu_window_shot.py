"""Screenshots of the real BatchLens window during a GPU run (issue 16, point 4), for docs/gpu.md.

    QT_QPA_PLATFORM=offscreen python scripts/gpu_window_shot.py --out DIR [--device cuda]

On the GPU machine (no PySide6 there) `bash scripts/gpu_window_proof.sh` sets Qt up and runs this.
It writes a ResNet-50 with random weights (seeded: the trained model's speed and memory) as a
safetensors file with a sidecar, opened like any model file, and a folder of generated photos; opens
the main window at 1280x720 on the chosen device; presses Run; presses Clear cache at ~20 % of the
images; grabs the window at ~50 % at 1280x720 and 1920x1040; waits for the end (cancels the run at
the deadline); grabs again; writes the plot's history as CSV and prints the figures the plot showed.
Exits non-zero, saying why, when the window cannot show a run on that device.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20
SIZES = ((1280, 720), (1920, 1040))


class ShotError(Exception):
    pass


def make_model(folder: Path) -> Path:
    """resnet50.safetensors + sidecar: what a user's own model file looks like to the window."""
    import json

    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = folder / "resnet50-random-weights.safetensors"  # the name says so in the screenshot
    save_file(torchvision.models.resnet50().state_dict(), str(path))
    sidecar = {"task": "classification", "arch": "resnet50", "description": "ResNet-50, random weights"}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def make_photos(folder: Path, n: int, size: tuple[int, int], distinct: int = 32) -> Path:
    """`n` photo-like JPEGs: `distinct` generated, the rest hard links (same decode work each)."""
    from batchlens.core.run.bench import make_synthetic_folder

    sources = sorted(make_synthetic_folder(folder.parent / "sources", min(n, distinct), size).glob("*.jpg"))
    folder.mkdir()
    for i in range(n):
        try:
            os.link(sources[i % len(sources)], folder / f"img_{i:05d}.jpg")
        except OSError:  # a file system without hard links
            shutil.copyfile(sources[i % len(sources)], folder / f"img_{i:05d}.jpg")
    return folder


def wait_until(app, condition, timeout_s: float) -> bool:
    """Run the event loop until `condition()` holds or the time is up; True if it held."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def grab(app, window, out: Path, stage: str) -> list[Path]:
    """The window as it draws itself, at each size in SIZES (then back to the first)."""
    saved = []
    for width, height in SIZES:
        window.resize(width, height)
        wait_until(app, lambda: False, 0.4)  # layout, one plot tick and the preview timer
        image = window.grab().toImage()
        path = out / f"gpu-window-{stage}-{width}x{height}.png"
        if image.width() != width or image.height() != height:
            raise ShotError(f"the window grabbed at {image.width()}x{image.height()}, not {width}x{height}")
        if not image.save(str(path), "PNG"):
            raise ShotError(f"could not write {path}")
        saved.append(path)
        print(f"saved {path} ({width}x{height})")
    window.resize(*SIZES[0])
    return saved


def plot_figures(plot) -> str:
    """What the memory plot showed: its readout, and each line's range over the history."""
    history = plot.history.array()
    from batchlens.ui.memory_history import COLUMNS

    lines = [f"plot readout: {plot.readout.text()}", f"plot samples: {len(history)}"]
    for name in ("allocated", "reserved", "peak", "device_used", "device_total"):
        column = history[:, COLUMNS.index(name)]
        column = column[column == column]  # NaN where the probe has no such figure
        if len(column):
            lines.append(
                f"  {name:12s} min {column.min() / MiB:10.1f} MiB  max {column.max() / MiB:10.1f} MiB  "
                f"last {column[-1] / MiB:10.1f} MiB"
            )
    lines += [f"  marker at {m.time_s:7.2f} s: {m.kind}: {m.text}" for m in plot.markers]
    return "\n".join(lines)


def shoot(args, tmp: Path) -> None:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ShotError(f"--device {args.device}, but torch {torch.__version__} sees no CUDA device")
    from PySide6.QtGui import QGuiApplication

    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.qt_app import create_app
    from batchlens.ui.settings import Settings

    app = create_app()
    print(f"Qt platform: {QGuiApplication.platformName()}; torch {torch.__version__}")
    started = time.monotonic()
    model = make_model(tmp)
    photos = make_photos(tmp / "photos", args.images, args.size)
    print(
        f"model and {args.images} photos ({args.size[0]}x{args.size[1]}) ready in "
        f"{time.monotonic() - started:.1f} s"
    )

    window = MainWindow(Settings(tmp / "settings.ini"))
    window.ask_questions = False  # no dialog can be answered here
    window.resize(*SIZES[0])
    window.show()
    window.prefill(model=str(model), input_dir=photos, output_dir=tmp / "out", device=args.device)
    try:
        run_window(app, window, args)
    except Exception:
        image = window.grab().toImage()  # what the window said when it went wrong
        image.save(str(args.out / "gpu-window-failed.png"), "PNG")
        print(f"the window as it was: {args.out / 'gpu-window-failed.png'}")
        raise
    finally:
        window.close()  # stops a run still going (closeEvent) before its folder is deleted


def run_window(app, window, args) -> None:
    import torch

    speed = window.form.speed_combo.findData(args.speed)
    if speed < 0:
        raise ShotError(f"no speed {args.speed!r} in the window")
    window.form.speed_combo.setCurrentIndex(speed)
    if not window.set_device(args.device):  # "cuda" is the list's "cuda:0"
        raise ShotError(f"the window offers no device {args.device!r}; it chose {window.device_name()!r}")
    probe = window.memory_plot.probe
    if probe is None or probe.kind != torch.device(window.device_name()).type:
        raise ShotError(f"the memory plot does not show {window.device_name()} memory (probe: {probe})")
    controls = window.controls
    if not wait_until(app, controls.run_button.isEnabled, 20):
        raise ShotError(f"Run stays off: {controls.blocked_reason.text() or controls.message.text()}")
    wait_until(app, lambda: False, 2)  # a little memory history before the run

    finished = []
    window.run_finished.connect(finished.append)
    cleared = []
    window.memory_plot.cache_cleared.connect(cleared.append)
    controls.run_button.click()
    if not window.is_running():
        raise ShotError(f"Run did not start: {controls.message.text()}")
    print(f"Run pressed: {window.form.model_id()} on {window.device_name()}, speed {args.speed}")
    run_start = time.monotonic()
    deadline = run_start + args.deadline

    def done_share() -> float:
        return controls.progress.value() / max(controls.progress.maximum(), 1)

    def wait_for(share: float) -> None:
        wait_until(app, lambda: finished or done_share() >= share, deadline - time.monotonic())

    wait_for(0.2)
    controls_text = controls.progress.text()
    window.memory_plot.clear_button.click()
    if cleared:
        print(f"Clear cache pressed at {controls_text}: {cleared[-1].message()}")
    wait_for(0.5)
    if window.last_error:
        raise ShotError(f"the run stopped: {window.last_error}")
    mid_text = controls.progress.text()
    if finished:
        print(
            "the run ended before half of its images were shown: the 'mid' shots show its end; "
            "ask for more --images"
        )
    grab(app, window, args.out, "mid")
    print(f"mid-run shots at {mid_text}, {time.monotonic() - run_start:.1f} s into the run")
    print(plot_figures(window.memory_plot))

    if not wait_until(app, lambda: bool(finished), deadline - time.monotonic()):
        print(f"deadline ({args.deadline:.0f} s) reached at {controls.progress.text()}: cancelling")
        window.cancel_run()
        if not wait_until(app, lambda: bool(finished), 30):
            raise ShotError("the run did not stop within 30 s of Cancel")
    wait_until(app, lambda: not window.is_running(), 10)
    summary = finished[0]
    if summary is None:
        raise ShotError(f"the run stopped: {window.last_error or controls.message.text()}")
    grab(app, window, args.out, "end")
    window.memory_plot.export_csv(args.out / "gpu-window-memory.csv")
    print(f"end: {controls.progress.text()}; {controls.message.text()}")
    print(plot_figures(window.memory_plot))
    counts = summary["counts"]
    print(
        f"summary: {counts}, {summary.get('images_per_second') or 0:.1f} images/s, "
        f"{summary['seconds']:.1f} s, cancelled: {summary['cancelled']}"
    )
    if not counts.get("ok"):
        raise ShotError("no image was processed")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-window"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    parser.add_argument("--speed", default="standard", choices=("exact", "standard", "fastest"))
    parser.add_argument("--deadline", type=float, default=45, help="seconds the run may take; then Cancel")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines as they happen, also through tee
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchlens-shot-") as tmp:
        try:
            shoot(args, Path(tmp))
        except ShotError as exc:
            print(f"gpu_window_shot: FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"gpu_window_shot: done in {time.monotonic() - start:.0f} s; PNGs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
