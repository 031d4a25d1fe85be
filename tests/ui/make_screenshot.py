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
from PySide6.QtGui import QColor, QPalette


def wait_until(condition, timeout_s: float = 120) -> None:
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: condition() and loop.quit())
    timer.start(20)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()


def dark_palette() -> QPalette:
    palette = QPalette()
    colors = {
        QPalette.ColorRole.Window: "#2b2b2b",
        QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#1e1e1e",
        QPalette.ColorRole.AlternateBase: "#262626",
        QPalette.ColorRole.Text: "#e6e6e6",
        QPalette.ColorRole.Button: "#353535",
        QPalette.ColorRole.ButtonText: "#e6e6e6",
        QPalette.ColorRole.Highlight: "#3d8bfd",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: "#353535",
        QPalette.ColorRole.ToolTipText: "#e6e6e6",
        QPalette.ColorRole.PlaceholderText: "#9a9a9a",
    }
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#8a8a8a"))
    return palette


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("--model", default="demo-denoise")
    parser.add_argument("--at", type=int, default=15, help="grab when this many images are done")
    parser.add_argument("--dark", action="store_true", help="ask Qt for its dark colour scheme")
    args = parser.parse_args()

    from batchlens.ui.qt_app import create_app

    app = create_app()
    if args.dark:
        # Xvfb has no desktop theme to follow: give Fusion the palette a dark desktop would.
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
    from batchlens.core.resources import sample_folder
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        window = MainWindow(Settings(Path(tmp) / "settings.ini"))
        window.ask_questions = False
        window.prefill(model=args.model, input_dir=sample_folder(args.model), output_dir=Path(tmp) / "out")
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
        image = screen.copy(frame.x(), frame.y(), frame.width(), frame.height())
        if not image.save(str(args.output), "PNG"):
            print(f"could not write {args.output}", file=sys.stderr)
            return 1
        done = window.controls.progress.value()
        print(f"saved {args.output} ({image.width()}x{image.height()}) at image {done}")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
