"""What each task is, without torch: its name in plain words, whether an image's result holds one
label or many classes, whether its boxes carry scores, and what holds its true answers. Each adapter
carries its own (`TaskAdapter.kind`); the window reads this module before PyTorch loads (the sidecar
dialog's task list, the results browser's label list, Evaluate, Sort and Export), so that it never
branches on a task's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskKind:
    task: str
    title: str  # what the task does, in plain words (the sidecar dialog's choices)
    many_classes: bool = False  # an image holds many classes (boxes, a mask's pixels), not one label
    scored_boxes: bool = False  # the result is boxes, each with a score: a threshold keeps some
    truth: str = "the CSV of image,label"  # what holds the true answers, for Evaluate…

    @property
    def label_words(self) -> tuple[str, str]:
        """What one of the result's names is called, singular and plural: Label(s) or Class(es)."""
        return ("Class", "Classes") if self.many_classes else ("Label", "Labels")


#: every task, in the order the window offers them
KINDS: dict[str, TaskKind] = {
    kind.task: kind
    for kind in (
        TaskKind("classification", "Classification: a label for each image"),
        TaskKind(
            "detection",
            "Detection: boxes around objects",
            many_classes=True,
            scored_boxes=True,
            truth="the COCO JSON file of the true boxes",
        ),
        TaskKind(
            "segmentation",
            "Segmentation: a class for every pixel",
            many_classes=True,
            truth="the folder of true masks",
        ),
        TaskKind("image_to_image", "Image to image: denoise, upscale…"),
    )
}
#: what is known of a result whose task is not known (an output folder without summary.json or run.json)
UNKNOWN = TaskKind("", "")


def kind_of(task: str | None) -> TaskKind:
    return KINDS.get(task or "", UNKNOWN)
