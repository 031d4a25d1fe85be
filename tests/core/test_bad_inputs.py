"""A generated folder of everything real folders contain: broken files, odd formats, odd names, links,
junk. Every candidate image gets exactly one JSONL line (ok, or an error naming the file and the
problem); junk is skipped and counted; the run goes on."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batchlens.core.inputs.images import ImageError, load_image, scan_images
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunNote
from batchlens.core.run.runner import Runner

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads files whatever their permissions


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, followed by one tiny compressed row.

    Decoding it would need width*height bytes; a safe decoder refuses it from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    return (x * 0.6 + y * 0.4).astype(np.uint8)


def _rgb(width: int = 48, height: int = 40) -> Image.Image:
    g = _gradient(width, height)
    return Image.fromarray(np.stack([g, 255 - g, np.full_like(g, 90)], axis=-1), "RGB")


# What each candidate must get: "ok" (optionally with a note / a check) or an error containing words.
EXPECTED_OK = {
    "cmyk.jpg",
    "gray.png",
    "gray_alpha.png",
    "palette.png",
    "rgba.png",
    "deep16.png",
    "deep16.tif",
    "float32.tif",
    "one_pixel.png",
    "strip_1x3000.png",
    "animated.gif",
    "multipage.tif",
    "photo.webp",
    "photo.bmp",
    "exif_rotated.jpg",
    "UPPER CASE.JPG",
    "PHOTO.PNG",
    "name with spaces é ü 日本.png",
    "nested/deeper/inner.png",
    "folder.jpg/inside.png",
    "link_to_good.png",
    "loop/inner.png",
}
EXPECTED_ERRORS = {
    "truncated.jpg": "truncated",
    "zero_bytes.png": "empty (0 bytes)",
    "text.jpg": "text file, not an image",
    "saved_page.png": "HTML",
    "archive.jpg": "gzip archive",
    "bomb.png": "30000×30000",
    "broken_link.png": "broken symbolic link",
    "self_loop.png": "loops back on itself",
    "pipe.png": "not a regular file",
    "random_bytes.tif": "not an image",
}
if not IS_ROOT:
    EXPECTED_ERRORS["unreadable.png"] = "permission denied"
JUNK = [
    "._photo.jpg",
    "Thumbs.db",
    ".DS_Store",
    ".hidden.png",
    "desktop.ini",
    "nested/.DS_Store",
]
NOT_IMAGES = ["readme.txt"]  # no image extension: skipped and counted like junk


def make_corpus(root: Path) -> Path:
    """Write the corpus into root/corpus and return that folder."""
    folder = root / "corpus"
    (folder / "nested" / "deeper").mkdir(parents=True)
    good = io.BytesIO()
    _rgb().save(good, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "text.jpg").write_text("shopping list: milk, eggs\n")
    (folder / "saved_page.png").write_text("<!DOCTYPE html><html><body>not a picture</body></html>")
    (folder / "archive.jpg").write_bytes(gzip.compress(b"photos inside, honest"))
    (folder / "random_bytes.tif").write_bytes(bytes(range(7, 250)) * 3)

    _rgb().convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    Image.fromarray(_gradient(40, 30), "L").save(folder / "gray.png")
    Image.fromarray(_gradient(40, 30), "L").convert("LA").save(folder / "gray_alpha.png")
    _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    rgba = _rgb().convert("RGBA")
    rgba.putalpha(Image.fromarray(_gradient(48, 40), "L"))
    rgba.save(folder / "rgba.png")
    deep = (_gradient(40, 30).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    Image.fromarray(deep).save(folder / "deep16.tif")
    Image.fromarray(_gradient(40, 30).astype(np.float32) / 255.0, "F").save(folder / "float32.tif")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    Image.fromarray(_gradient(1, 3000), "L").save(folder / "strip_1x3000.png")
    frames = [Image.new("L", (32, 24), i * 60) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pages = [Image.new("L", (32, 24), i * 100) for i in range(2)]
    pages[0].save(folder / "multipage.tif", save_all=True, append_images=pages[1:])
    _rgb().save(folder / "photo.webp", "WEBP")
    _rgb().save(folder / "photo.bmp", "BMP")
    # Stored 40 wide x 20 high, red on the left; EXIF orientation 6 says "rotate 90° clockwise to show".
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "exif_rotated.jpg", "JPEG", exif=exif, quality=95)
    _rgb().save(folder / "UPPER CASE.JPG", "JPEG")
    _rgb().save(folder / "PHOTO.PNG")
    _rgb().save(folder / "name with spaces é ü 日本.png")
    _rgb().save(folder / "nested" / "deeper" / "inner.png")
    (folder / "folder.jpg").mkdir()  # a folder named like an image
    _rgb().save(folder / "folder.jpg" / "inside.png")
    (folder / "bomb.png").write_bytes(_png_header_only(30000, 30000))

    (folder / "broken_link.png").symlink_to(folder / "does_not_exist.png")
    (folder / "self_loop.png").symlink_to(folder / "self_loop.png")
    (folder / "link_to_good.png").symlink_to(folder / "PHOTO.PNG")
    (folder / "loop").mkdir()
    _rgb().save(folder / "loop" / "inner.png")
    (folder / "loop" / "back_up").symlink_to(folder, target_is_directory=True)  # loop: back to the top
    os.mkfifo(folder / "pipe.png")  # opening it naively would block forever
    unreadable = folder / "unreadable.png"
    _rgb().save(unreadable)
    unreadable.chmod(0)
    locked = folder / "locked_folder"
    locked.mkdir()
    _rgb().save(locked / "hidden_by_permissions.png")
    locked.chmod(0)

    _rgb().save(folder / "._photo.jpg")  # AppleDouble companion of a (missing) photo.jpg
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 60)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 40)
    (folder / "nested" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 40)
    _rgb().save(folder / ".hidden.png")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "readme.txt").write_text("these are my photos\n")
    return folder


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> tuple[Path, Path, list]:
    root = tmp_path_factory.mktemp("bad_inputs")
    folder = make_corpus(root)
    out = root / "out"
    events = list(Runner(RunConfig("demo-shapes", folder, out, device="cpu", recursive=True)).events())
    yield folder, out, events
    (folder / "unreadable.png").chmod(0o644)  # let pytest clean up
    (folder / "locked_folder").chmod(0o755)


def _lines(out: Path) -> dict[str, dict]:
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    by_image = {line["image"]: line for line in lines}
    assert len(by_image) == len(lines), "an image has more than one line"
    return by_image


def test_every_candidate_gets_exactly_one_line(corpus_run):
    folder, out, events = corpus_run
    lines = _lines(out)
    expected = set(EXPECTED_OK) | set(EXPECTED_ERRORS)
    if IS_ROOT:
        # Root reads whatever the permissions say, so these are simply processed.
        expected |= {"unreadable.png", "locked_folder/hidden_by_permissions.png"}
    assert set(lines) == expected
    summary = events[-1].summary
    assert isinstance(events[-1], RunFinished)
    assert summary["counts"]["ok"] + summary["counts"]["error"] == len(expected)
    assert summary["counts"]["error"] == len(EXPECTED_ERRORS)


def test_good_but_odd_images_are_processed(corpus_run):
    _, out, _ = corpus_run
    lines = _lines(out)
    for name in EXPECTED_OK:
        assert lines[name]["status"] == "ok", (name, lines[name]["error"])
        assert lines[name]["error"] is None and lines[name]["top"]
    assert lines["animated.gif"]["note"] == "first frame of 3 used"
    assert lines["multipage.tif"]["note"] == "first frame of 2 used"


def test_each_bad_file_gets_a_clear_message(corpus_run):
    _, out, events = corpus_run
    lines = _lines(out)
    for name, words in EXPECTED_ERRORS.items():
        line = lines[name]
        assert line["status"] == "error", name
        assert line["error"].startswith(f"{name}: "), line["error"]
        assert words in line["error"], (name, line["error"])
        assert "Traceback" not in line["error"] and "top" not in line
    assert "megapixels" in lines["bomb.png"]["error"] and "--max-pixels" in lines["bomb.png"]["error"]
    errors = [e for e in events if isinstance(e, ImageResult) and not e.ok]
    assert len(errors) == len(EXPECTED_ERRORS)


def test_junk_is_skipped_silently_and_counted(corpus_run):
    _, out, events = corpus_run
    lines = _lines(out)
    for name in JUNK + NOT_IMAGES:
        assert name not in lines
    assert events[-1].summary["counts"]["skipped"] == len(JUNK) + len(NOT_IMAGES)
    notes = [e.message for e in events if isinstance(e, RunNote)]
    # The symlink loop is scanned once; the folder we may not list is reported, not fatal.
    assert any("loop/back_up" in n for n in notes), notes
    if not IS_ROOT:
        assert any("locked_folder" in n for n in notes), notes


def test_exif_rotation_is_applied():
    with tempfile.TemporaryDirectory() as tmp:
        stored = Image.new("RGB", (40, 20), (0, 0, 255))
        stored.paste((255, 0, 0), (0, 0, 20, 20))
        exif = Image.Exif()
        exif[0x0112] = 6
        path = Path(tmp) / "rotated.jpg"
        stored.save(path, "JPEG", exif=exif, quality=95)
        decoded = load_image(path)
    assert decoded.original_size == (20, 40) and decoded.image.size == (20, 40)
    top, bottom = decoded.image.getpixel((10, 5)), decoded.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60, top  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_deep_and_float_images_keep_their_range(tmp_path: Path):
    ramp = _gradient(64, 8)
    Image.fromarray((ramp.astype(np.uint16) * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp.astype(np.float32) * 1000.0, "F").save(tmp_path / "float.tif")
    for name in ("deep.png", "float.tif"):
        decoded = np.asarray(load_image(tmp_path / name, mode="L").image).astype(int)
        assert decoded.min() <= 1 and decoded.max() >= 254, name  # scaled, not clipped to white
        assert np.all(np.diff(decoded[0]) >= 0), name  # still a ramp


def test_bomb_is_refused_from_its_header_and_the_limit_is_configurable(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageError, match="30000×30000 pixels .900 megapixels"):
        load_image(bomb)
    _rgb(100, 100).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="100×100 pixels"):
        load_image(tmp_path / "small.png", max_pixels=5000)
    assert load_image(tmp_path / "small.png", max_pixels=10_000).image.size == (100, 100)


def test_scan_survives_symlink_loops_and_counts_junk(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    _rgb().save(tmp_path / "a" / "b" / "x.png")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"x")
    found = [c.rel for c in scan_images(tmp_path, recursive=True)]
    assert found == ["a/b/x.png"]


def _read_as_nobody(path: Path) -> str:
    """Decode `path` in a child process that drops root's privileges first; return its message."""
    code = (
        "import os, sys\nfrom batchlens.core.inputs.images import ImageError, load_image\n"
        "os.setgid(65534)\nos.setuid(65534)\n"  # after the imports: nobody may not read our venv
        "try:\n    load_image(sys.argv[1])\n    print('OK')\n"
        "except ImageError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_unreadable_file_gets_permission_message():
    # Under /tmp (world-traversable) so that an unprivileged child can reach it when we are root.
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "secret.png"
        _rgb().save(path)
        path.chmod(0)
        if IS_ROOT:
            message = _read_as_nobody(path)
        else:
            with pytest.raises(ImageError) as info:
                load_image(path)
            message = str(info.value)
        path.chmod(0o644)
    assert message == "cannot be read: permission denied"


def test_colour_modes_convert_to_what_the_picture_shows(tmp_path: Path):
    source = _rgb(48, 40)
    source.convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg").image).astype(int)
    assert np.abs(cmyk - np.asarray(source).astype(int)).mean() < 8  # the same colours, not inverted

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    rgba.save(tmp_path / "rgba.png")
    decoded = load_image(tmp_path / "rgba.png").image
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((4, 4)) == (255, 0, 0)

    source.quantize(16).save(tmp_path / "palette.png")
    palette = np.asarray(load_image(tmp_path / "palette.png").image).astype(int)
    assert np.abs(palette - np.asarray(source.quantize(16).convert("RGB")).astype(int)).max() == 0

    Image.fromarray(_gradient(40, 30), "L").convert("LA").save(tmp_path / "la.png")
    grey = load_image(tmp_path / "la.png", mode="L").image
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), _gradient(40, 30))
