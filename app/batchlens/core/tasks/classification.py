"""Classification: softmax scores, the top 5 labels per image, and predictions.csv at the end."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from batchlens.core.files import OutputFolder
from batchlens.core.tasks.base import ImageMeta, TaskAdapter, TaskResult, check_entries, resize_target
from batchlens.core.tasks.kinds import KINDS

CSV_FILE = "predictions.csv"

TOP_K = 5


class ClassificationAdapter(TaskAdapter):
    task = "classification"
    kind = KINDS[task]
    position_free = True  # scores for the whole image
    end_files = (CSV_FILE,)

    def decode_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        # Scores do not refer to pixel positions, so a reduced-scale decode changes nothing else.
        return resize_target(self.transform, size)

    def postprocess(self, output: torch.Tensor, meta: ImageMeta) -> TaskResult:
        return self.postprocess_batch(output.reshape(1, -1), [meta])[0]

    def postprocess_batch(self, output: torch.Tensor, metas: list[ImageMeta]) -> list[TaskResult]:
        """A batch's logits (the batch first) at once: the same numbers as image by image, from a few
        tensor operations per batch instead of a few per image (each one waits for the GIL behind
        the decoding threads)."""
        logits = output.reshape(len(metas), -1).float()
        if self.labels and len(self.labels) != logits.shape[1]:
            # Wrong labels would put a plausible but false name on every image: refuse instead.
            raise ValueError(
                f"the model gives {logits.shape[1]} scores but there are {len(self.labels)} labels; "
                'check the labels file or the sidecar\'s "labels"'
            )
        values, indices = self.scores(logits).topk(min(TOP_K, logits.shape[1]), dim=-1)
        return [
            TaskResult(
                {
                    "top": [
                        {"label": self.label(i), "index": i, "score": round(v, 6)}
                        for v, i in zip(row_values, row_indices)
                    ]
                }
            )
            for row_values, row_indices in zip(values.tolist(), indices.tolist())
        ]

    def check_fields(self, record: dict) -> str | None:
        reason = check_entries(record, "top", {"label": str, "index": int, "score": float})
        if reason is None and not record["top"]:
            reason = "'top' is empty"
        return reason

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (one row per image) -> scores (softmax: the classes compete; multi-label models
        override)."""
        return torch.softmax(logits, dim=-1)

    def finish(self, output_dir: Path | OutputFolder, records: list[dict]) -> list[Path]:
        def write(binary) -> None:
            with io.TextIOWrapper(binary, encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["image", "label", "score"])
                for record in records:
                    if record.get("status") == "ok" and record.get("top"):
                        best = record["top"][0]
                        writer.writerow([record["image"], best["label"], best["score"]])

        return [OutputFolder.at(output_dir).write_atomic(CSV_FILE, write)]
