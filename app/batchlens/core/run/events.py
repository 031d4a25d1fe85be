"""The runner's event stream: small frozen dataclasses, plain data only (never a tensor)."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from batchlens.core.machine.memory import MemorySample


@dataclass(frozen=True)
class RunStarted:
    model: str
    task: str
    device: str
    memory_kind: str  # "cuda", "mps", "xpu" or "cpu" (RAM)
    total: int  # images to process in this run
    already_done: int  # images skipped because a previous run finished them (--resume)
    skipped: int  # junk and non-image files passed over by the scan
    output_dir: str


@dataclass(frozen=True)
class ImageResult:
    index: int  # 1-based position in this run
    total: int
    image: str  # path relative to the input folder
    status: str  # "ok" or "error"
    seconds: float
    error: str | None
    fields: dict  # the task's plain result, as written to predictions.jsonl
    memory: MemorySample  # taken after this image's device references were dropped
    input_preview: Image.Image | None = None
    output_preview: Image.Image | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RunNote:
    """Something the user should know that is not tied to one image (warnings, recoveries)."""

    level: str  # "info" or "warning"
    message: str
    memory: MemorySample | None = None
    #: what it is about, for the memory plot's markers: "note" (anything), "out_of_memory" (a recovery
    #: step), "leak", "other_processes", "outsized_image", "memory_snapshot"
    kind: str = "note"


@dataclass(frozen=True)
class RunFinished:
    summary: dict = field(default_factory=dict)
    cancelled: bool = False


Event = RunStarted | ImageResult | RunNote | RunFinished
