"""Turning the model options a user gave into the loader's request (RunConfig.model_options).

The command line's flags and the window's model sources describe the same things; this is the one
place that names the options `core.models.load_model` reads and the form they take there (paths as
strings; unset options left out, so a model file's sidecar and the task's defaults still apply).
Kept free of torch so that importing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: What the model is ("weights": a state_dict for a torchvision architecture, "arch", "task",
#: "labels", "input_size", "resize", "crop", "interpolation", "mean", "std": these override a model
#: file's sidecar), how far to trust
#: its file ("trust_pickle"), and the task's options ("min_score" for detection).
MODEL_OPTIONS = (
    "weights",
    "arch",
    "task",
    "labels",
    "input_size",
    "resize",
    "crop",
    "interpolation",
    "mean",
    "std",
    "trust_pickle",
    "min_score",
)


def model_request(choices: Mapping[str, object]) -> dict:
    """RunConfig.model_options from the user's choices: None dropped, paths as strings."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in choices.items()
        if value is not None
    }
