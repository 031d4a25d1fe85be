"""Messages from the engine, said in the window's words.

The engine writes its sentences for the command line ("pass --weights FILE", "run again with
--resume"), because that is where most of them are read. In the window the same advice must name the
window's own control or action, and raw system errors ("[Errno -2] Name or service not known") must
read as plain words. `for_window(text)` does both, from the tables below: first whole phrases (so the
sentence stays grammatical), then any remaining option by the control that sets it, or as a setting of
`batchlens run` when the window has none. tests/ui/test_run_screen.py checks that every option named
in core/'s messages is covered, so a new message cannot slip a bare flag into the window.
"""

from __future__ import annotations

import re

#: Whole phrases first: (pattern, the window's words).
PHRASES: list[tuple[str, str]] = [
    (
        r"pass a weights file with --weights FILE",
        "choose a weights file with the Weights button beside the model",
    ),
    (
        r"give the checkpoint with --weights FILE",
        "choose the checkpoint with the Weights button beside the model",
    ),
    (r"\(consider --cpu-fallback, or resizing it\)", "(tick Fall back to CPU, or make the image smaller)"),
    (r"\(allow it with --cpu-fallback\)", "(tick Fall back to CPU to allow it)"),
    (
        r"run again with --trust-pickle \(in the window: confirm the warning\)",
        "press Run again and confirm the warning",
    ),
    (
        r"\(confirm when asked, or --trust-pickle on the command line\)",
        "(press Run again and confirm when asked)",
    ),
    (r"Pass --task \(([^)]*)\) or write a sidecar", r"Write a sidecar (with the task: \1)"),
    (r"with --arch NAME or ", "with "),
    (r"\(--arch or the sidecar's \"arch\"\)", '(the sidecar\'s "arch")'),
    (r"and give its path as the model", "and open it with Open Hugging Face folder… in the model list"),
    (r"\(--labels, or ", "("),
    (r" \(or pass --labels FILE\)", ""),
    (
        r"run (?:again|the same command) with --resume(?: \(and a larger limit\))?",
        "press Run again and choose Resume",
    ),
    (r"\(use --resume to go on\)", "(press Run and choose Resume to go on)"),
    (
        r"use --resume to continue it, --overwrite to replace it, or another folder",
        "press Run and choose Resume to continue it, Overwrite to replace it, or Another folder",
    ),
    (r"use --overwrite to replace it, or another folder", "press Run and choose Overwrite or Another folder"),
    (r" \(the torch hub cache; set TORCH_HOME to move it\)", " (PyTorch's download folder)"),
    (r"\bTORCH_HOME\b", "PyTorch's download folder"),
    (r"(^|[.!?] )Pillow\b", r"\1The image reader"),
    (r"\bPillow\b", "the image reader"),
    (r"\bRSS\b", "RAM"),
    (r"\bimage_to_image\b", "image to image"),
]

#: The run's notes that the status bar says in fewer words (the whole note stays in the log).
STATUS_PHRASES: list[tuple[str, str]] = [
    (r"^Batch size auto: (?:chose )?(\d+) \(.*\)\.?$", r"Processing \1 images at a time."),
    (r"^The model takes one image at a time \(.*\): batch 1\.$", "Processing one image at a time."),
]

#: Task names as the window says them ("image_to_image" is the files' and the command line's word).
TASK_WORDS = {"image_to_image": "image to image"}


def task_words(task: str) -> str:
    return TASK_WORDS.get(task, task)


#: Any option left over: the control that sets it in the window.
CONTROLS = {
    "--weights": "the Weights button beside the model",
    "--cpu-fallback": "Fall back to CPU",
    "--resume": "Resume (offered when you press Run)",
    "--overwrite": "Overwrite (offered when you press Run)",
    "--device": "the Device choice",
    "--batch-size": "the Speed choice",
    "--prefetch": "the Speed choice",
    "--fast-decode": "Speed: Fastest",
    "--cluster": "the cluster address beside Device",
    "--trust-pickle": "the confirmation when you press Run",
    "--input": "the Input folder",
    "--model": "the Model choice",
}

#: Raw system errors (strerror texts) in plain words.
_NO_NAME = "the server's name could not be looked up"
SYSTEM_ERRORS = {
    "Name or service not known": _NO_NAME,
    "Temporary failure in name resolution": _NO_NAME,
    "nodename nor servname provided, or not known": _NO_NAME,
    "Connection refused": "the server refused the connection",
    "Network is unreachable": "the network cannot be reached",
    "timed out": "the server did not answer in time",
    "No space left on device": "the disk is full",
    "Permission denied": "permission denied (this folder or file may not be written)",
}

_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?: (?:FILE|NAME|N|DIR))?")
_ERRNO = re.compile(r"<urlopen error (.*?)>|\[Errno -?\d+\] ")


def _option(match: re.Match) -> str:
    name = match.group(1)
    return CONTROLS.get(name, f"the command line's {name[2:]} setting (`batchlens run {name}`)")


def for_window(text: str) -> str:
    """`text` with command-line advice turned into the window's controls and raw errors into words.
    A command quoted in backticks (`ray start --head`) is another program's, and stays as it is."""
    for pattern, words in PHRASES:
        text = re.sub(pattern, words, text)
    text = _ERRNO.sub(lambda m: m.group(1) or "", text)
    for raw, words in SYSTEM_ERRORS.items():
        text = text.replace(raw, words)
    parts = re.split(r"(`[^`]*`)", text)  # odd parts are quoted commands
    return "".join(part if i % 2 else _OPTION.sub(_option, part) for i, part in enumerate(parts))


def for_status(text: str) -> str:
    """`for_window(text)`, with the batch sizer's figures (images/s by size) left to the log."""
    text = for_window(text)
    for pattern, words in STATUS_PHRASES:
        text = re.sub(pattern, words, text)
    return text
