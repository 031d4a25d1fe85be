"""Make the installers' icon files from the application icon in resources/icons.

    python packaging/make_icons.py OUT_DIR

writes OUT_DIR/batchlens.ico (Windows installer), OUT_DIR/batchlens.icns (macOS) and the
freedesktop icon theme for the .deb: OUT_DIR/hicolor/NxN/apps/batchlens.png and, when the icon
exists as SVG, OUT_DIR/hicolor/scalable/apps/batchlens.svg.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from PIL import Image

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
HICOLOR_SIZES = (32, 48, 64, 128, 256, 512)
MASTER_SIZE = 1024  # the largest size any of the formats wants (macOS .icns)


def render_svg(svg: Path, size: int) -> Image.Image:
    """Draw the SVG at size x size with Qt's SVG renderer (PySide6 is a BatchLens dependency)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (QPainter needs one)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icons.py: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_RGBA8888)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    return Image.frombytes("RGBA", (size, size), bytes(image.constBits()))


def master_icon() -> tuple[Image.Image, Path]:
    """The icon as a square RGBA image: from batchlens.svg if there is one, else the largest PNG."""
    svg = ICONS / "batchlens.svg"
    if svg.is_file():
        return render_svg(svg, MASTER_SIZE), svg
    pngs = sorted(ICONS.glob("*.png"), key=lambda p: p.stat().st_size, reverse=True)
    if not pngs:
        raise SystemExit(f"make_icons.py: no batchlens.svg and no PNG icon in {ICONS}")
    image = Image.open(pngs[0]).convert("RGBA")
    side = max(image.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square, pngs[0]


def main(out_dir: Path) -> None:
    icon, source = master_icon()
    out_dir.mkdir(parents=True, exist_ok=True)
    icon.save(out_dir / "batchlens.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    icon.resize((MASTER_SIZE, MASTER_SIZE), Image.LANCZOS).save(out_dir / "batchlens.icns")
    hicolor = out_dir / "hicolor"
    shutil.rmtree(hicolor, ignore_errors=True)
    for size in HICOLOR_SIZES:
        target = hicolor / f"{size}x{size}" / "apps" / "batchlens.png"
        target.parent.mkdir(parents=True)
        icon.resize((size, size), Image.LANCZOS).save(target, optimize=True)
    if source.suffix == ".svg":
        (hicolor / "scalable" / "apps").mkdir(parents=True)
        shutil.copyfile(source, hicolor / "scalable" / "apps" / "batchlens.svg")
    print(f"icons from {source.name} written to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
