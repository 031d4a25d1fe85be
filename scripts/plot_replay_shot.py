"""Screenshots of the real window's memory plot replaying a recorded GPU run (no GPU needed).

    xvfb-run -s "-screen 0 1920x1080x24" python scripts/plot_replay_shot.py \
        docs/gpu-proof/gpu-window-memory.csv --out docs/screenshots --name plot-replay-h200

Opens the main window with a probe that hands the plot the CSV's samples one per plot tick (the
recording's own 10 per second), puts each marker in at its place in the recording, and grabs the
window mid-way and at the end at 1280x720 and 1920x1040, then once more at the end with Whole GPU
ticked. The plot says that it is a replay (the line above it), and so do the file names:
NAME-{mid,end}-WxH.png and NAME-end-whole-gpu-1280x720.png. The window itself runs nothing. The
time axis is the replay's: one recorded sample a tick, so a recording whose samples came a little
slower than 10 a second (a busy machine) replays a little faster.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

SIZES = ((1280, 720), (1920, 1040))


def read_recording(path: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, str, str]]]:
    """The samples (bytes), and each marker as (the number of samples before it, kind, text)."""
    samples: list[tuple[int, ...]] = []
    markers: list[tuple[int, str, str]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["marker"]:
                markers.append((len(samples), row["marker"], row["marker_text"]))
            else:
                names = ("allocated", "reserved", "peak", "device_used", "device_total")
                samples.append(tuple(int(row[f"{n}_bytes"]) for n in names))
    return samples, markers


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", type=Path, help="a plot history written by Export CSV…")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="plot-replay", help="file name prefix (say what is replayed)")
    parser.add_argument("--mid", type=float, default=0.7, help="share of the samples at the mid shots")
    args = parser.parse_args()
    samples, markers = read_recording(args.csv)

    from PySide6.QtWidgets import QApplication

    from batchlens.core.machine.memory import ClearResult, MemoryProbe, MemorySample
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.qt_app import create_app
    from batchlens.ui.settings import Settings

    class ReplayProbe(MemoryProbe):
        kind = "cuda"
        description = f"A replay of {args.csv.name}, not this machine's memory."

        def __init__(self):
            self.next = 0

        def sample(self) -> MemorySample:
            values = samples[min(self.next, len(samples) - 1)]
            self.next += 1
            return MemorySample(time.monotonic(), *values)

        def clear_cache(self) -> ClearResult:
            return ClearResult(0, 0)

    app = create_app()
    probe = ReplayProbe()

    def run_until(condition) -> None:
        while not condition():
            app.processEvents()
            time.sleep(0.01)

    def grab(stage: str, sizes=SIZES) -> None:
        window.memory_plot.timer.stop()  # the recording waits while the window is resized and grabbed
        for width, height in sizes:
            window.resize(width, height)
            end = time.monotonic() + 0.4
            run_until(lambda end=end: time.monotonic() > end)  # layout and a plot tick at this size
            image = window.grab().toImage()
            path = args.out / f"{args.name}-{stage}-{width}x{height}.png"
            if not image.save(str(path), "PNG"):
                print(f"could not write {path}", file=sys.stderr)
                raise SystemExit(1)
            print(f"saved {path} ({image.width()}x{image.height()}) after {probe.next} samples")
        window.resize(*SIZES[0])
        window.memory_plot.timer.start()

    with tempfile.TemporaryDirectory() as tmp:
        window = MainWindow(Settings(Path(tmp) / "settings.ini"), probe_factory=lambda _name: probe)
        window.ask_questions = False
        window.resize(*SIZES[0])
        window.show()
        plot = window.memory_plot
        plot.set_where(
            f"<b>Replay</b> of the samples recorded in {args.csv.name} (not a run on this machine)"
        )
        probe.next = 0  # the window may have sampled while it opened: start the recording afresh
        plot.history.clear()
        plot._t0 = time.monotonic()  # its time axis starts with the recording, as the recording's did
        mid = int(len(samples) * args.mid)
        events = sorted([(index, kind, text) for index, kind, text in markers] + [(mid, "", "mid shots")])
        for index, kind, text in events:
            run_until(lambda index=index: probe.next >= index)
            if kind:
                plot.add_marker(kind, text)
            else:
                grab("mid")
        run_until(lambda: probe.next >= len(samples) + 3)
        grab("end")
        plot.whole_device.setChecked(True)
        grab("end-whole-gpu", SIZES[:1])
        print(f"plot readout: {plot.readout.text()}")
        print(f"plot y range: {plot.plot_item.viewRange()[1]} {plot.plot_item.getAxis('left').labelUnits}")
        window.close()
    QApplication.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
