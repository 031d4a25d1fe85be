"""predictions.jsonl's `seconds` is the image's own processing time, not its wait in a queue (issue 25)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from batchlens.core.models import load_model
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import RunFinished
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder

FORWARD_SECONDS = 0.04


class SlowForward(nn.Module):
    """The demo model with a forward that takes a known time, so that prepared batches queue up
    behind it (prefetch 3 decodes far faster than the model computes)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(FORWARD_SECONDS)
        return self.inner(x)


def test_image_seconds_are_its_own_time_and_do_not_grow_with_the_queue(tmp_path: Path):
    make_shapes_folder(tmp_path / "in", 32, size=48)
    model = load_model("demo-shapes", torch.device("cpu"))
    model.module = SlowForward(model.module)
    config = RunConfig(
        "demo-shapes",
        tmp_path / "in",
        tmp_path / "out",
        device="cpu",
        batch_size=4,
        prefetch=3,
        previews=False,
    )
    events = list(Runner(config, model=model).events())
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    seconds = [line["seconds"] for line in lines]
    assert len(seconds) == 32 and all(s > 0 for s in seconds)
    # Decoding runs on `decode` threads side by side, everything else in the loop: the honest bound.
    threads = finished.summary["threads"]["decode"]
    assert sum(seconds) <= finished.summary["seconds"] * (threads + 1)
    # Each image's share of its batch's forward is about FORWARD_SECONDS / 4 (10 ms); waiting behind
    # three prepared batches would add about 3 forwards (120 ms) to every image after the first batch.
    later = sorted(seconds[4:])
    median = later[len(later) // 2]
    assert median < 1.5 * FORWARD_SECONDS
    first, last = seconds[4:12], seconds[-8:]
    assert sum(last) / len(last) <= 2 * sum(first) / len(first) + 0.01
