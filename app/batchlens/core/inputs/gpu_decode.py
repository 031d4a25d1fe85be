"""Decode a batch's JPEGs on the model's device (nvJPEG on CUDA), so the CPU only reads file bytes.

`--gpu-decode`: the pipeline hands each batch's JPEG files to `DeviceDecoder`, which checks each
header on the CPU (size limit, EXIF orientation, colour mode: core/inputs/jpeg_header.py), decodes the
whole list in one call (`torchvision.io.decode_jpeg(list, device=...)`), turns each picture upright
on the device and returns uint8 tensors there; the model's own transform then resizes, crops and
normalises them on the device too. Anything the device path does not take (not a JPEG, CMYK, a file
the decoder refuses) goes back to the ordinary Pillow decode for that image, with the same error
messages as always.

On the CPU the same code runs with libjpeg-turbo, which is how the tests check it against the Pillow
path. On CUDA, the decode and the preprocessing run on a side stream, so the next batch's decode
overlaps the current batch's forward (the consumer waits on `ready()` before using the tensors).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from batchlens.core.formats import DEFAULT_MAX_PIXELS
from batchlens.core.inputs.images import open_input
from batchlens.core.inputs.jpeg_header import read_jpeg_header
from batchlens.core.tasks.base import PREVIEW_SIZE

# EXIF orientation -> the turn PIL's ImageOps.exif_transpose applies, on CxHxW tensors of any device.
_ORIENTATION = {
    2: lambda p: p.flip(-1),  # mirror left-right
    3: lambda p: p.flip(-2, -1),  # 180 degrees
    4: lambda p: p.flip(-2),  # mirror top-bottom
    5: lambda p: p.transpose(-2, -1),  # transpose
    6: lambda p: torch.rot90(p, 3, dims=(-2, -1)),  # 270 degrees counter-clockwise
    7: lambda p: p.transpose(-2, -1).flip(-2, -1),  # transverse
    8: lambda p: torch.rot90(p, 1, dims=(-2, -1)),  # 90 degrees counter-clockwise
}
# torchvision >= 0.29 marks its image codecs deprecated in favour of TorchCodec, which has no batched
# nvJPEG decode yet; the warning is about the future, not about this call.
_DEPRECATED = "The image decoding and encoding capabilities of TorchVision are deprecated"


@dataclass
class EncodedJpeg:
    """A JPEG file read on the CPU, not yet decoded."""

    data: torch.Tensor  # the file's bytes as a 1-D uint8 tensor (decode_jpeg wants them on the CPU)
    size: tuple[int, int]  # (width, height) as stored
    orientation: int  # EXIF orientation, 1 when upright


def preview_of(pixels: torch.Tensor, size: int = PREVIEW_SIZE) -> Image.Image:
    """A small PIL copy of a device picture for previews (only these few pixels cross to the CPU)."""
    height, width = pixels.shape[-2:]
    scale = min(1.0, size / max(height, width))
    if scale < 1.0:
        target = [max(1, round(height * scale)), max(1, round(width * scale))]
        pixels = F.resize(pixels, target, antialias=True)
    array = pixels.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def upright(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a CxHxW picture the way its EXIF orientation says (PIL's exif_transpose, on any device)."""
    turn = _ORIENTATION.get(orientation)
    return turn(pixels).contiguous() if turn else pixels


class DeviceDecoder:
    """Reads JPEG bytes on the CPU and decodes them in batches on `device`."""

    def __init__(
        self, device: torch.device, color_mode: str = "RGB", max_pixels: int | None = DEFAULT_MAX_PIXELS
    ):
        self.device = device
        self.mode = ImageReadMode.GRAY if color_mode == "L" else ImageReadMode.RGB
        self.max_pixels = max_pixels
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def read(self, path: Path) -> EncodedJpeg | None:
        """The file's bytes when the device path can decode it; None sends it to the Pillow decode
        (which also gives the user the reason when the file is broken)."""
        try:
            # The guarded opener never opens a pipe or a device: the Pillow path says what it is.
            with open_input(path) as f:
                data = f.read()
        except Exception:
            return None
        header = read_jpeg_header(data)
        if header is None or header.components not in (1, 3):
            return None  # not a JPEG this path is sure of, or CMYK/YCCK: Pillow converts them properly
        width, height = header.width, header.height
        if self.max_pixels and width * height > self.max_pixels:
            return None  # the Pillow path refuses it with its usual sentence
        pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return EncodedJpeg(pixels, (width, height), header.orientation)

    def decode(self, encoded: list[EncodedJpeg]) -> list[torch.Tensor | None]:
        """uint8 CxHxW tensors on the device, upright; None for a file the decoder refused."""
        if not encoded:
            return []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATED, category=DeprecationWarning)
            try:
                pixels = decode_jpeg([e.data for e in encoded], mode=self.mode, device=self.device)
            except RuntimeError:  # one bad file fails the whole list: find it, keep the others
                pixels = [self._decode_one(e) for e in encoded]
        return [None if p is None else upright(p, e.orientation) for p, e in zip(pixels, encoded)]

    def _decode_one(self, encoded: EncodedJpeg) -> torch.Tensor | None:
        try:
            return decode_jpeg(encoded.data, mode=self.mode, device=self.device)
        except RuntimeError:
            return None

    # -- streams (CUDA only): the decode of batch N+1 overlaps the forward of batch N -------------
    def side_stream(self):
        """Context for the decode and preprocessing work (a no-op off CUDA)."""
        return torch.cuda.stream(self.stream) if self.stream is not None else nullcontext()

    def mark_done(self):
        """An event the consumer waits on before touching this batch's tensors (None off CUDA)."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event


def wait_for(event, tensors: list[torch.Tensor]) -> None:
    """Make the current stream wait for a side-stream batch, and tell the allocator the tensors are
    now used on the current stream (so their memory is not reused while the forward reads it)."""
    if event is None:
        return
    current = torch.cuda.current_stream()
    current.wait_event(event)
    for tensor in tensors:
        tensor.record_stream(current)


def preprocess_pictures(
    preprocess, pictures: list[torch.Tensor], batched: bool | None
) -> tuple[list[torch.Tensor | None], bool | None]:
    """The model's transform over pictures of one size: in one call on the stacked pictures (a
    dozen small device operations per batch instead of per image, each of which waits for the
    GIL behind the decoding threads), when the transform gives the same as image by image;
    checked on the run's first picture (`batched`: None until then), else image by image. Returns the
    tensors (None where the transform failed) and `batched` as now known."""
    if len(pictures) > 1 and batched is not False:
        try:
            batch = preprocess(torch.stack(pictures))
        except Exception:
            batch = None
        if batched is None:  # first time: the same as the one-image call?
            try:
                single = preprocess(pictures[0])
            except Exception:
                single = None
            batched = (
                isinstance(batch, torch.Tensor)
                and isinstance(single, torch.Tensor)
                and batch.shape == (len(pictures), *single.shape)
                and torch.allclose(batch[0], single, atol=1e-5)
            )
        if batched and isinstance(batch, torch.Tensor):
            return list(batch.unbind(0)), batched  # (a stack it cannot take now: image by image below)
    tensors = []
    for picture in pictures:
        try:
            tensors.append(preprocess(picture))
        except Exception:
            tensors.append(None)
    return tensors, batched
