"""--image-timeout: a forward that takes too long is given up, its images get error lines, and the run
goes on.

What can be stopped and what cannot: Python cannot kill a thread. The forward runs on a helper thread
while the run waits for it at most the time limit. When the limit passes, the run stops waiting and
asks the helper thread to stop with an asynchronous exception, which only takes effect when the thread
next runs Python code: a model whose forward loops in Python stops there; a forward stuck inside one
long C++ or GPU operation goes on in the background until that operation returns, holding its memory,
while the run carries on with the next images. If forwards keep getting stuck (`MAX_STUCK` still
running at once), the run stops with one sentence rather than pile them up: the results so far are
kept and --resume goes on after them.

At the program's end a given-up forward must not be running: Python 3.11-3.13 ends a thread that comes
back from C while the interpreter shuts down with pthread_exit, and unwinding through torch's C++ frames
then calls std::terminate, aborting the whole process ('terminate called without an active exception',
SIGABRT) after a run that went well (CPython gh-87135; 3.14 hangs such a thread instead). So the
command line asks `still_running()` before it returns and, if one is, ends the process at once
(cli/__init__.py).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

from batchlens.core.errors import BatchLensError

MAX_STUCK = 2  # abandoned forwards still running before the run gives up
STOPPING_GRACE_S = 0.25  # how long a forward stopped in Python code may take to unwind


class ForwardTimeout(Exception):
    """The forward took longer than the limit; the message is for the images' error lines."""


class _Abandoned(BaseException):
    """Raised inside an abandoned forward's thread (BaseException: the model's own `except
    Exception` does not swallow it)."""


_stuck: list[threading.Thread] = []


def call_with_timeout(fn: Callable, seconds: float | None, *args):
    """fn(*args), or ForwardTimeout once `seconds` pass (None: no limit, called on this thread)."""
    if seconds is None:
        return fn(*args)
    _stuck[:] = [t for t in _stuck if t.is_alive()]
    # A forward stopped in Python code a moment ago may still be unwinding: before stopping the run,
    # wait that out (not on every image: one stuck in C would make each wait the whole grace).
    if len(_stuck) >= MAX_STUCK and still_running(STOPPING_GRACE_S) >= MAX_STUCK:
        raise BatchLensError(
            f"The model is stuck: {len(_stuck)} forwards passed --image-timeout and are still running "
            "(a forward inside C++ or on the GPU cannot be stopped from within BatchLens), so the run "
            "stopped. The results so far are kept; run again with --resume (and a larger limit) to go on."
        )
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except _Abandoned:
            pass
        except BaseException as exc:  # raised again on the run's thread
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, name="batchlens-forward", daemon=True)
    thread.start()
    if done.wait(seconds):
        if "error" in box:
            raise box.pop("error")
        return box.pop("value")
    # Stop it where Python code runs; otherwise it finishes in the background and is ignored.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Abandoned))
    _stuck.append(thread)
    raise ForwardTimeout(
        f"the model took longer than {seconds:g} s on it (--image-timeout), so it was given up"
    )


def still_running(wait: float) -> int:
    """How many given-up forwards still run after waiting up to `wait` seconds for them. One stopped
    in Python code ends within milliseconds (its `with` blocks' exits still call into torch); one
    inside a long C++ call may never end."""
    deadline = time.monotonic() + wait
    for thread in _stuck:
        thread.join(max(0.0, deadline - time.monotonic()))
    _stuck[:] = [t for t in _stuck if t.is_alive()]
    return len(_stuck)
