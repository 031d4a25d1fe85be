"""Errors that end a run (as opposed to a problem with one image, which is only an event)."""


class BatchLensError(Exception):
    """A problem with the run itself, told to the user as one clear sentence (no traceback)."""
