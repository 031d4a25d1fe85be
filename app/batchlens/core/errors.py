"""Errors that end a run (as opposed to a problem with one image, which is only an event), and the
error of one image file (the run goes on)."""


class BatchLensError(Exception):
    """A problem with the run itself, told to the user as one clear sentence (no traceback)."""


class ImageError(Exception):
    """A problem with one image file. The message is a sentence for a user, without the file name."""
