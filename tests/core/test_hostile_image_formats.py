"""Hostile image files, built here: content in a format BatchLens does not read under an image's name,
containers whose pictures are larger than their headers say, a decode over the memory budget, and
folder trees a recursive walk must survive. Each is refused with one sentence, runs no program,
allocates no picture and takes well under a second.

The proofs: a fake `gs` first on PATH (and subprocess.Popen replaced) shows no program starts;
Pillow's own allocation counter (Image.core.get_stats) shows no picture was allocated, and
tracemalloc bounds what Python allocated.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image

from batchlens.core import image_guard
from batchlens.core.errors import BatchLensError, ImageError
from batchlens.core.formats import IMAGE_EXTENSIONS, PILLOW_FORMATS
from batchlens.core.image_guard import open_image
from batchlens.core.inputs.images import (
    ScanStats,
    decodes_reduced,
    header_size,
    load_image,
    scan_images,
)
from batchlens.core.outputs.result_pictures import render
from tests.core.hostile import assert_one_sentence

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BOUND = 150_000_000  # the default --max-pixels


# -- makers -----------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A grey PNG that says width x height, with one short compressed row (nothing here decodes it)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\0" * (1 + min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", row) + _chunk(b"IEND", b"")


def ico(pictures: list[tuple[tuple[int, int], bytes]]) -> bytes:
    """An icon whose directory names each entry's (claimed) size and holds the given pictures."""
    offset = 6 + 16 * len(pictures)
    directory, data = b"", b""
    for (width, height), picture in pictures:
        directory += struct.pack(
            "<BBBBHHII", width % 256, height % 256, 0, 0, 1, 32, len(picture), offset + len(data)
        )
        data += picture
    return struct.pack("<HHH", 0, 1, len(pictures)) + directory + data


def tiff(pages: list[tuple[int, int]]) -> bytes:
    """A little-endian grey TIFF, one uncompressed strip a page, whose pages say the given sizes."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for number, (width, height) in enumerate(pages):
        strip = b"\x80" * min(width * height, 64)
        tags = [
            (256, 4, width),  # ImageWidth
            (257, 4, height),  # ImageLength
            (258, 3, 8),  # BitsPerSample
            (259, 3, 1),  # Compression: none
            (262, 3, 1),  # BlackIsZero
            (273, 4, 0),  # StripOffsets, filled below
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, height),  # RowsPerStrip
            (279, 4, len(strip)),  # StripByteCounts
        ]
        ifd_at = len(out)
        ifd_size = 2 + 12 * len(tags) + 4
        strip_at = ifd_at + ifd_size
        following = strip_at + len(strip) if number + 1 < len(pages) else 0
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            value = strip_at if tag == 273 else value
            packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", following) + strip
    return bytes(out)


def gif(canvas: tuple[int, int], frames: list[tuple[int, int, int, int]]) -> bytes:
    """A GIF of `canvas` with frames (x, y, width, height), each one LZW sub-block long."""
    out = b"GIF89a" + struct.pack("<HHBBB", *canvas, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for x, y, width, height in frames:
        out += b"!\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension
        out += b"," + struct.pack("<HHHHB", x, y, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return out + b";"


def apng(canvas: tuple[int, int], frames: list[tuple[int, int]]) -> bytes:
    """An animated PNG of `canvas` whose later frames' fcTL chunks say the given sizes."""
    actl = _chunk(b"acTL", struct.pack(">II", len(frames) + 1, 0))
    first = _chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, *canvas, 0, 0, 1, 10, 0, 0))
    body = png(*canvas, actl + first)[:-12]  # without IEND
    for number, (width, height) in enumerate(frames, 1):
        body += _chunk(b"fcTL", struct.pack(">IIIIIHHBB", 2 * number - 1, width, height, 0, 0, 1, 10, 0, 0))
        body += _chunk(b"fdAT", struct.pack(">I", 2 * number) + zlib.compress(b"\0" * 9))
    return body + _chunk(b"IEND", b"")


def _saved(fmt: str) -> bytes:
    for mode in ("RGB", "L", "1"):
        buffer = io.BytesIO()
        try:
            Image.new(mode, (16, 16), 0).save(buffer, fmt)
        except Exception:  # this format does not take this mode, or needs a library not built in
            continue
        return buffer.getvalue()
    return b""


def other_formats() -> dict[str, bytes]:
    """Every format Pillow can write that BatchLens does not read, and forged headers of some it
    only reads (PostScript, PSD): their first bytes are what a plugin would be chosen by."""
    Image.init()
    read = set(PILLOW_FORMATS) | {"MPO"}  # an MPO is a JPEG with more pictures: read as JPEG
    files = {fmt: _saved(fmt) for fmt in sorted(Image.SAVE) if fmt not in read}
    files = {fmt: data for fmt, data in files.items() if data}
    files["PS"] = b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 8 8\n/n 1 def\nshowpage\n"
    files["EPS-forged"] = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n"
    body = files["EPS-forged"]
    files["EPS-binary"] = (
        b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(body), 0, 0, 0, 0) + b"\xff\xff" + body
    )
    files["PSD"] = b"8BPS\x00\x01" + b"\0" * 6 + struct.pack(">HIIHH", 3, 8, 8, 8, 3) + b"\0" * 64
    return files


OTHER_FORMATS = other_formats()


# -- proofs -----------------------------------------------------------------------------------------
@pytest.fixture
def no_programs(tmp_path: Path, monkeypatch) -> Path:
    """A fake Ghostscript first on PATH that leaves a marker file, Pillow's cached answer forgotten,
    and subprocess.Popen replaced by one that records any start. Yields the marker's path."""
    marker = tmp_path / "gs-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gs", "gswin64c", "gswin32c"):
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    started: list = []

    class NoPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            started.append(args)
            raise AssertionError(f"a program was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", NoPopen)
    yield marker
    assert not started, f"programs started: {started}"
    assert not marker.exists(), "the fake Ghostscript ran"


def refused_fast(call, *args, seconds: float = 1.0, **kwargs) -> str:
    """The ImageError message of call(*args), which must come in `seconds`, with no Pillow picture
    allocated and under 8 MB allocated by Python."""
    before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageError) as caught:
            call(*args, **kwargs)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Image.core.get_stats()["new_count"] == before, "a picture was allocated: it was decoded"
    assert elapsed < seconds, f"{elapsed:.2f} s to refuse"
    assert peak < 8_000_000, f"{peak / 1e6:.1f} MB allocated to refuse"
    return str(caught.value)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# -- 1. only the formats BatchLens reads ------------------------------------------------------------
def test_the_allowlist_names_no_plugin_that_runs_a_program_or_reads_documents():
    assert set(PILLOW_FORMATS) <= {"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "ICO", "TGA"}
    assert not {"EPS", "PDF", "PS", "ICNS", "MPO"} & set(PILLOW_FORMATS)
    Image.init()
    assert set(PILLOW_FORMATS) <= set(Image.OPEN), "a format on the list has no Pillow opener"


def test_every_open_of_an_image_in_the_product_names_its_formats():
    """Image.open without `formats` would try every plugin Pillow has: only image_guard opens images,
    and the one other call (the cluster's previews, PNGs its own workers made) names PNG."""
    package = Path(__file__).resolve().parents[2] / "app" / "batchlens"
    loose = []
    for path in package.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if "Image.open(" in code and "formats=" not in code:
                loose.append(f"{path.relative_to(package)}:{number}")
    assert loose == [], f"opens an image with every Pillow plugin: {loose}"


@pytest.mark.parametrize("fmt", sorted(OTHER_FORMATS))
def test_another_format_under_every_image_name_is_refused_without_running_anything(
    fmt: str, tmp_path: Path, no_programs: Path
):
    data = OTHER_FORMATS[fmt]
    for extension in sorted(IMAGE_EXTENSIONS):
        path = _write(tmp_path, f"photo{extension}", data)
        message = refused_fast(load_image, path)
        assert_one_sentence(f"{path.name} {message}.", path.name)
        assert "not one of the image formats" in message or "not an image" in message, message
        assert header_size(path) is None
        assert decodes_reduced(path, lambda size: (8, 8)) is False
        pictures = render({"status": "ok"}, path, tmp_path)
        assert pictures.input is None and path.name in pictures.note
        path.unlink()


def test_a_postscript_photo_is_named_for_what_it_is(tmp_path: Path, no_programs: Path):
    path = _write(tmp_path, "holiday.jpg", OTHER_FORMATS["EPS-forged"])
    message = refused_fast(load_image, path)
    assert message.startswith("is a PostScript file, not one of the image formats BatchLens reads")
    pdf = refused_fast(load_image, _write(tmp_path, "scan.png", OTHER_FORMATS["PDF"]))
    assert pdf == "is a PDF document, not an image"


def test_a_run_over_a_postscript_photo_reports_it_and_starts_no_program(tmp_path: Path, no_programs: Path):
    from batchlens.core.run.config import RunConfig
    from batchlens.core.run.events import ImageResult
    from batchlens.core.run.runner import Runner

    folder = tmp_path / "photos"
    folder.mkdir()
    _write(folder, "a.jpg", OTHER_FORMATS["EPS-forged"])
    Image.new("RGB", (40, 30), "red").save(folder / "b.png")
    config = RunConfig(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    results = {e.image: e for e in Runner(config).events() if isinstance(e, ImageResult)}
    assert results["b.png"].status == "ok"
    assert results["a.jpg"].status == "error" and "PostScript" in results["a.jpg"].error


def test_the_allowed_formats_still_open(tmp_path: Path):
    picture = Image.new("RGB", (20, 10), (10, 200, 30))
    for extension in (".jpg", ".png", ".bmp", ".gif", ".tif", ".webp", ".ppm", ".tga", ".ico"):
        path = tmp_path / f"ok{extension}"
        picture.save(path)
        decoded = load_image(path)
        assert decoded.original_size == (20, 10) and decoded.image.mode == "RGB", extension
    frames = [Image.new("L", (12, 8), shade) for shade in (0, 120, 250)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("pages.tif", "anim.png", "anim.gif"):
        assert load_image(tmp_path / name).note == "first frame of 3 used", name
    # A Multi-Picture JPEG (stereo cameras) opens through the JPEG plugin, which hands it to MPO's.
    frames[0].convert("RGB").save(tmp_path / "stereo.jpg", "MPO", save_all=True, append_images=frames[1:])
    with open(tmp_path / "stereo.jpg", "rb") as f, open_image(f) as im:
        assert im.format == "MPO" and im.n_frames == 3
    assert load_image(tmp_path / "stereo.jpg").note == "first frame of 3 used"


def test_an_allowed_format_with_a_broken_header_is_named(tmp_path: Path):
    broken = {"a.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "b.ico": b"\x00\x00\x01\x00", "c.gif": b"GIF89a"}
    for name, data in broken.items():
        message = refused_fast(load_image, _write(tmp_path, name, data))
        assert message.startswith(("looks like a ", "looks like an ")) and "damaged" in message, message


# -- 2. every picture a container declares ----------------------------------------------------------
def test_the_issue_icon_bomb_is_refused_from_its_entry_header(tmp_path: Path):
    """The issue's .ico: the directory says 16x16, the PNG inside is 20,000x20,000 (Pillow decodes an
    icon as it opens it: 2.2 GB and 6.6 s before)."""
    path = _write(tmp_path, "favicon.ico", ico([((16, 16), png(20000, 20000))]))
    message = refused_fast(load_image, path, seconds=0.2)
    assert "20000×20000" in message and "directory calls 16×16" in message, message
    assert header_size(path) is None
    assert_one_sentence(f"{path.name} {message}.", path.name)


def test_an_icon_with_a_bitmap_entry_larger_than_its_directory_says_is_refused(tmp_path: Path):
    bitmap = struct.pack("<IiiHHIIiiII", 40, 30000, 2 * 30000, 1, 32, 0, 0, 0, 0, 0, 0)
    path = _write(tmp_path, "app.ico", ico([((32, 32), png(32, 32)), ((48, 48), bitmap)]))
    message = refused_fast(load_image, path, seconds=0.2)
    assert "icon entry 2 of 2" in message and "30000×30000" in message, message


def test_a_tiff_with_an_oversized_later_page_is_refused(tmp_path: Path):
    path = _write(tmp_path, "scan.tif", tiff([(8, 8), (8, 8), (30000, 30000)]))
    message = refused_fast(load_image, path, seconds=0.2)
    assert "page 3" in message and "30000×30000" in message, message
    fine = _write(tmp_path, "fine.tif", tiff([(8, 8), (9, 9)]))
    assert load_image(fine).original_size == (8, 8)  # the maker makes real TIFFs


@pytest.mark.parametrize(
    "canvas, frames, where",
    [
        ((65535, 65535), [(0, 0, 1, 1)], ""),  # the canvas
        ((10, 10), [(0, 0, 65535, 65535)], ""),  # the first frame grows the canvas as it opens
        ((10, 10), [(0, 0, 10, 10), (0, 0, 10, 10), (20000, 20000, 10, 10)], "frame 3"),
    ],
)
def test_a_gif_with_an_oversized_canvas_or_frame_is_refused(canvas, frames, where, tmp_path: Path):
    path = _write(tmp_path, "anim.gif", gif(canvas, frames))
    message = refused_fast(load_image, path, seconds=0.2)
    assert "megapixels" in message and where in message, message
    with Image.open(io.BytesIO(gif((10, 10), [(0, 0, 10, 10)] * 3))) as im:
        assert (im.size, im.n_frames) == ((10, 10), 3)  # the maker makes GIFs Pillow reads


def test_an_apng_with_an_oversized_canvas_or_frame_is_refused(tmp_path: Path):
    frame = _write(tmp_path, "frame.png", apng((16, 16), [(16, 16), (30000, 30000)]))
    assert "frame 3" in refused_fast(load_image, frame, seconds=0.2)
    canvas = _write(tmp_path, "canvas.png", apng((30000, 30000), [(16, 16)]))
    assert "30000×30000" in refused_fast(load_image, canvas, seconds=0.2)
    with Image.open(_write(tmp_path, "ok.png", apng((16, 16), [(16, 16), (8, 8)]))) as im:
        assert im.n_frames == 3  # the maker makes real APNGs


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    claimed=st.tuples(st.integers(1, 256), st.integers(1, 256)),
    real=st.tuples(st.integers(1, 400), st.integers(1, 400)),
)
def test_an_icon_is_refused_exactly_when_an_entry_is_over_the_bound(claimed, real):
    """By its directory's word or by its picture's own header, whichever is larger (a small bound, so
    that what is let through decodes in a blink: Pillow decodes an icon as it opens it)."""
    data = io.BytesIO(ico([(claimed, png(*real))]))
    bound = 20_000
    if max(real[0] * real[1], claimed[0] * claimed[1]) > bound:
        with pytest.raises(ImageError, match="megapixels"):
            open_image(data, bound)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Image was not the expected size"
        try:
            open_image(data, bound).close()
        except OSError:
            pass  # our PNGs hold one short row: truncated, which is not the bound's business


@settings(max_examples=60, deadline=None, database=None)
@given(
    canvas=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
    frames=st.lists(
        st.tuples(st.integers(0, 65535), st.integers(0, 65535), st.integers(1, 65535), st.integers(1, 65535)),
        min_size=1,
        max_size=6,
    ),
)
def test_a_gif_is_refused_exactly_when_a_frame_reaches_past_the_bound(canvas, frames):
    bound = 50_000_000
    reach = max(canvas[0], *(x + w for x, y, w, h in frames)) * max(
        canvas[1], *(y + h for x, y, w, h in frames)
    )  # the canvas grows to hold each frame
    data = io.BytesIO(gif(canvas, frames))
    if reach > bound:
        with pytest.raises(ImageError, match="megapixels"):
            open_image(data, bound)
    else:
        open_image(data, bound).close()


# -- 3. the memory budget ---------------------------------------------------------------------------
def test_a_decode_over_the_memory_free_is_refused_before_it_starts(tmp_path: Path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("RGB", (1500, 1000), "blue").save(path)
    monkeypatch.setattr(image_guard, "_SMALL_DECODE", 1_000_000)  # below this, memory is not read
    monkeypatch.setattr(image_guard, "available_memory", lambda: 4_000_000)
    message = refused_fast(load_image, path)
    assert "GB of memory to decode" in message and "1500×1000" in message, message
    assert_one_sentence(f"wide.png {message}.", "wide.png")
    monkeypatch.setattr(image_guard, "available_memory", lambda: 40_000_000)
    assert load_image(path).original_size == (1500, 1000)


def test_the_budget_counts_the_conversion_copies():
    assert image_guard.decode_bytes("L", (100, 100), "L") == 10_000
    assert image_guard.decode_bytes("RGB", (100, 100), "RGB") == 40_000
    assert image_guard.decode_bytes("RGBA", (100, 100), "RGB") > 4 * 40_000  # composited over white
    assert image_guard.decode_bytes("F", (100, 100), "RGB") >= 100 * 100 * 8  # through float64
    bound = 150_000_000  # an image within the bound is never refused for its mode alone
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LA"):
        assert image_guard.decode_bytes(mode, (bound, 1)) <= bound * image_guard.DECODE_BYTES_PER_PIXEL, mode


# -- 4. the walk ------------------------------------------------------------------------------------
@contextlib.contextmanager
def nested(top: Path, depth: int):
    """top/d/d/.../d, `depth` folders deep, made and removed relative to each parent's descriptor (a
    path at depth 1,200 is looked up through every folder above it: seconds for the whole chain, and
    Path.mkdir(parents=True) and shutil.rmtree recurse themselves). Yields the deepest folder."""
    import resource  # not on Windows, where the test is skipped

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < depth + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, depth + 100), hard))
    fds = [os.open(top, os.O_RDONLY)]  # fds[i]: the folder i levels down
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fds[-1])
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        yield Path(top, *["d"] * depth)
    finally:
        for level in range(len(fds) - 1, 0, -1):  # the caller removed what it put in them
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[level - 1])
        os.close(fds.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(os.mkdir not in os.supports_dir_fd, reason="needs mkdir relative to a folder")
def test_1200_nested_folders_are_walked(tmp_path: Path):
    (tmp_path / "top.png").write_bytes(b"")
    with nested(tmp_path, 1200) as deepest:
        (deepest / "x.png").write_bytes(b"")
        assert sys.getrecursionlimit() < 1200 * 2  # deep enough that a recursive walk would fail
        start = time.perf_counter()
        found = [c.rel for c in scan_images(tmp_path, recursive=True)]
        elapsed = time.perf_counter() - start
        (deepest / "x.png").unlink()
    assert found == ["d/" * 1200 + "x.png", "top.png"]
    assert elapsed < 1.5


def test_the_walk_keeps_its_sorted_order(tmp_path: Path):
    for rel in ("b/2.png", "b/1.png", "a.png", "a/z.png", "c.png", "b/sub/0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [c.rel for c in scan_images(tmp_path, recursive=True)]
    assert found == ["a/z.png", "a.png", "b/1.png", "b/2.png", "b/sub/0.png", "c.png"]


def _unlistable(folder: Path, monkeypatch) -> None:
    """Make `folder` one that cannot be listed: chmod 000, or for root (whom permissions do not stop)
    an os.scandir that answers as the kernel does to anyone else."""
    if not IS_ROOT:
        folder.chmod(0)  # the caller gives the permissions back
        return
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_input_folder_that_cannot_be_listed_is_one_sentence_and_exit_2(
    tmp_path: Path, monkeypatch, capsys
):
    from batchlens.cli import main

    folder = tmp_path / "locked"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    _unlistable(folder, monkeypatch)
    try:
        with pytest.raises(BatchLensError, match="cannot be listed"):
            list(scan_images(folder))
        code = main(
            ["run", "--model", "demo-shapes", "--input", str(folder), "--output", str(tmp_path / "out")]
        )
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "0 image" not in err
    assert_one_sentence(err.removeprefix("batchlens: "), folder)
    assert "permission denied" in err


@pytest.mark.skipif(IS_ROOT, reason="root lists a folder whatever its permissions")
def test_a_chmod_000_input_folder_is_refused(tmp_path: Path, capsys):
    from batchlens.cli import main

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        code = main(
            ["run", "--model", "demo-shapes", "--input", str(folder), "--output", str(tmp_path / "out")]
        )
    finally:
        folder.chmod(0o755)
    assert code == 2 and "cannot be listed" in capsys.readouterr().err


def test_a_subfolder_that_cannot_be_listed_is_a_note_and_the_walk_goes_on(tmp_path: Path, monkeypatch):
    for rel in ("a/1.png", "b/2.png", "c/3.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    _unlistable(tmp_path / "b", monkeypatch)
    stats = ScanStats()
    try:
        found = [c.rel for c in scan_images(tmp_path, recursive=True, stats=stats)]
    finally:
        (tmp_path / "b").chmod(0o755)
    assert found == ["a/1.png", "c/3.png"] and stats.skipped_dirs == ["b/"]
