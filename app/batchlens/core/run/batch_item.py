"""One image on its way through a batch (`Item`), a batch ready for the model (`Prepared`), and why a
forward gave nothing to use (`ForwardFailure`): CPU data only, never a reference past the batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from batchlens.core.inputs.images import Candidate, DecodedImage
from batchlens.core.outputs.records import non_finite, record_line
from batchlens.core.tasks.base import TaskResult

__all__ = [
    "NOT_FINITE",
    "ForwardFailure",
    "Item",
    "Prepared",
    "all_finite",
    "non_finite",
    "record_line",
    "share_time",
]

NOT_FINITE = "the model produced NaN or infinity for it, so there is no result to trust"


def all_finite(output) -> bool:
    """Whether a model output (a tensor, or a mapping or list of them) holds no NaN or infinity."""
    if isinstance(output, torch.Tensor):
        return not output.is_floating_point() or bool(torch.isfinite(output).all())
    if isinstance(output, dict):
        return all(all_finite(v) for v in output.values())
    if isinstance(output, (list, tuple)):
        return all(all_finite(v) for v in output)
    return True


@dataclass
class Item:
    """One image on its way through a batch. Holds CPU data only."""

    candidate: Candidate
    # Seconds of work on this image alone (its decode and preprocessing, and its share of its batch's
    # stacking, forward, postprocessing and writing), never time spent waiting in a queue (issue 25)
    work: float = 0.0
    decoded: DecodedImage | None = None
    tensor: torch.Tensor | None = None
    error: str | None = None
    result: TaskResult | None = None
    recovered: list[str] = field(default_factory=list)  # out-of-memory recovery steps it took

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None

    def fields(self) -> dict:
        """The task's JSON fields for this image (empty when it failed), plus any decode note."""
        fields = dict(self.result.fields) if self.ok else {}
        if self.decoded is not None and self.decoded.note:
            fields["note"] = self.decoded.note
        if self.ok and self.recovered:
            fields["recovered"] = list(self.recovered)
        return fields

    def error_message(self) -> str | None:
        return None if self.ok else f"{self.candidate.rel}: {self.error or 'the model gave no result for it'}"

    def seconds(self) -> float:
        """predictions.jsonl's `seconds`: the image's own processing time."""
        return round(self.work, 4)


def share_time(items: list[Item], seconds: float) -> None:
    """A batch's step, timed once for all its images: each image's equal share of it."""
    for item in items:
        item.work += seconds / len(items)


@dataclass
class Prepared:
    """A batch decoded and preprocessed, CPU only, ready for the model (`BatchPipeline.prepare`).

    Images of equal tensor shape are stacked into one batch tensor per group (pinned when the model
    is on CUDA, so the copy to the GPU does not block); each item's tensor is a view into it."""

    items: list[Item]
    groups: list[tuple[list[Item], torch.Tensor | None]]
    ready: torch.cuda.Event | None = None  # --gpu-decode on CUDA: the side stream's work is done


@dataclass(frozen=True)
class ForwardFailure:
    """Why a batch's forward gave no outputs to use: the words for the user (never the exception, whose
    traceback would keep the failed forward's tensors), and whether the device ran out of memory."""

    words: str
    out_of_memory: bool = False
