"""Text for a terminal: file names are data, never instructions to the terminal.

A file name may hold control characters and escape sequences ("\\x1b[2K\\r" erases the line and goes
back to its start, so a name can wipe an `error:` line and print a fake "Finished"), bidirectional
overrides that reorder what is shown, or bytes that are not UTF-8 (os.fsdecode keeps them as lone
surrogates, which a UTF-8 terminal cannot even print). `printable` writes all of those as visible
escapes; the command line passes every line it prints through it, and its log formatter does the same.
JSON output (predictions.jsonl, summary.json) stays lossless: JSON escapes control characters itself.
"""

from __future__ import annotations

import logging
import re

# C0 controls (newline and tab too: a name must not start a line of its own), DEL and C1 controls
# (0x9b is a one-byte CSI), Unicode's bidirectional marks and overrides, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    return f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` with every character a terminal would act on written as a visible escape (\\x1b, \\r,
    \\u202e, \\xe9 for an undecodable byte); other text, accents and CJK included, is unchanged."""
    return _UNSAFE.sub(_escape, str(text))


class PrintableFormatter(logging.Formatter):
    """A log formatter whose messages pass through `printable` (a traceback, when there is one, is
    appended as Python writes it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return printable(super().formatMessage(record))
