"""Errors of the model sources, each a BatchLensError (one clear sentence, no traceback)."""

from __future__ import annotations

from batchlens.core.errors import BatchLensError


class PickleRefusedError(BatchLensError):
    """A model file that only loads as a full Python pickle, refused because trust was not given."""

    def __init__(self, path, reason: str = ""):
        self.path = str(path)
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"{path}: this file is a full Python pickle, not plain weights{detail}. Unpickling it can run "
            "any code its author put inside, so BatchLens refused to load it. If you trust where the file "
            "came from, run again with --trust-pickle (in the window: confirm the warning); safer, ask "
            "for a safetensors, TorchScript (.pt) or torch.export (.pt2) file instead."
        )


class WeightsDownloadError(BatchLensError):
    """Catalogue weights could not be downloaded (no network, server error, corrupt file)."""


class DownloadCancelled(BatchLensError):
    """The user cancelled a weights download."""


class StateDictMismatchError(BatchLensError):
    """A state_dict whose keys or shapes do not fit the architecture it is loaded into."""
