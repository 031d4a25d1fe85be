"""--image-timeout's given-up forwards (core/run/watchdog.py): which of them the program must not leave
running when Python shuts down (a subprocess run with stuck images: tests/core/test_signals.py)."""

from __future__ import annotations

import threading
import time

import pytest

from batchlens.core.run.watchdog import ForwardTimeout, call_with_timeout, still_running


def test_still_running_waits_for_forwards_stopped_in_python_and_counts_those_stuck_in_c():
    release = threading.Event()

    def looping_in_python() -> None:
        while True:
            time.sleep(0.01)

    def stuck_in_c() -> None:
        release.wait()  # one blocking call: the asynchronous stop cannot reach it

    assert still_running(wait=0) == 0
    with pytest.raises(ForwardTimeout, match="took longer than 0.2 s"):
        call_with_timeout(looping_in_python, 0.2)
    with pytest.raises(ForwardTimeout):
        call_with_timeout(stuck_in_c, 0.2)
    try:
        assert still_running(wait=2) == 1  # the Python one ended, the C one still waits
    finally:
        release.set()
    assert still_running(wait=10) == 0  # back from C, it is stopped at its next Python line


def test_a_forward_still_unwinding_from_its_stop_is_not_counted_as_stuck():
    """One forward stopped in Python code, still unwinding (its `finally` calls into C for 0.1 s), and
    one stuck in C: only one is stuck, so the next image runs (it used to stop the run, MAX_STUCK 2)."""
    release = threading.Event()

    def stopped_while_cleaning_up() -> None:
        try:
            while True:
                time.sleep(0.005)
        finally:
            time.sleep(0.1)  # like a `with` block's exit calling into torch

    with pytest.raises(ForwardTimeout):
        call_with_timeout(stopped_while_cleaning_up, 0.05)
    with pytest.raises(ForwardTimeout):
        call_with_timeout(release.wait, 0.02)  # stuck in one blocking call
    try:
        assert call_with_timeout(lambda: "next image", 1.0) == "next image"
    finally:
        release.set()
    assert still_running(wait=10) == 0
