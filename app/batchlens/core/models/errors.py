"""Errors of the model sources, each a BatchLensError (one clear sentence, no traceback)."""

from __future__ import annotations

from batchlens.core.errors import BatchLensError


class PickleRefusedError(BatchLensError):
    """A model file that would run code (a full Python pickle, native code) or touch files (TorchScript
    file operations) when loaded, refused because trust was not given."""

    def __init__(
        self,
        path,
        reason: str = "",
        holds: str = "a full Python pickle, not plain weights",
        danger: str = "can run any code its author put inside",
    ):
        self.path = str(path)
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"{path} holds {holds}{detail}, which {danger}, so BatchLens refused to load it: if you trust "
            "where the file came from, run again with --trust-pickle (in the window: confirm the warning), "
            "or ask for a safetensors file instead."
        )


class WeightsDownloadError(BatchLensError):
    """Catalogue weights could not be downloaded (no network, server error, corrupt file)."""


class DownloadCancelled(BatchLensError):
    """The user cancelled a weights download."""


class StateDictMismatchError(BatchLensError):
    """A state_dict whose keys or shapes do not fit the architecture it is loaded into."""
