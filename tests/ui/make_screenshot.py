"""Take docs/screenshot.png: the real window, mid-run on a demo model, under a real X server.

    xvfb-run -s "-screen 0 1440x900x24" python tests/ui/make_screenshot.py docs/screenshot.png [--dark]

Shows the window at its default size, lets the memory plot collect a few seconds of history, starts
the demo run, presses Clear cache part-way (so its marker shows), and grabs the screen while images
are still being processed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer


def wait_until(condition, timeout_s: float = 120) -> None:
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: condition() and loop.quit())
    timer.start(20)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--model", default="demo-denoise")
    parser.add_argument("--at", type=int, default=15, help="grab when this many images are done")
    parser.add_argument("--dark", action="store_true", help="ask Qt for its dark colour scheme")
    parser.add_argument("--size", help="window size WxH (default: the window's own default size)")
    parser.add_argument("--maximized", action="store_true", help="fill the screen (with QT_SCALE_FACTOR=2)")
    args = parser.parse_args()

    from batchlens.ui.qt_app import create_app

    app = create_app()
    if args.dark:
        # Xvfb has no desktop theme to follow: say what a dark desktop would.
        from PySide6.QtCore import Qt

        from batchlens.ui.qt_app import apply_color_scheme

        app.setStyle("Fusion")
        apply_color_scheme(Qt.ColorScheme.Dark)
    from batchlens.core.resources import sample_folder
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        window = MainWindow(Settings(Path(tmp) / "settings.ini"))
        window.ask_questions = False
        window.prefill(model=args.model, input_dir=sample_folder(args.model), output_dir=Path(tmp) / "out")
        if args.size:
            width, height = (int(v) for v in args.size.lower().split("x"))
            window.resize(width, height)
        if args.maximized:
            window.showMaximized()
        else:
            window.show()
        wait_until(lambda: False, timeout_s=3)  # a little memory history before the run
        window.previews.output_view.set_split(0.5)
        window.start_run()
        wait_until(lambda: window.controls.progress.value() >= 6)
        window.memory_plot.clear_cache()
        wait_until(lambda: window.controls.progress.value() >= args.at)
        app.processEvents()
        screen = window.screen().grabWindow(0)  # what the X server shows, not a re-render
        frame = window.frameGeometry()
        ratio = screen.devicePixelRatio()  # 2 with QT_SCALE_FACTOR=2: the grab is in device pixels
        x, y, w, h = (round(v * ratio) for v in (frame.x(), frame.y(), frame.width(), frame.height()))
        image = screen.copy(x, y, w, h)
        if not image.save(str(args.output), "PNG"):
            print(f"could not write {args.output}", file=sys.stderr)
            return 1
        done = window.controls.progress.value()
        print(f"saved {args.output} ({image.width()}x{image.height()}) at image {done}")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
