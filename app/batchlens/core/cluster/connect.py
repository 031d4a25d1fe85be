"""Ray itself: is it installed, and joining (or starting) the cluster an address names."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path

from batchlens.core.errors import BatchLensError

RAY_VERSION = "2.60.0"  # the version the `cluster` extra pins
INSTALL_HINT = f'pip install "batchlens[cluster]" (it adds ray[data,client]=={RAY_VERSION})'


def ray_installed() -> bool:
    """Whether the cluster extra is here (the installers ship without it), without importing Ray."""
    return importlib.util.find_spec("ray") is not None


def require_ray():
    """Import ray (and Ray Data), or raise BatchLensError saying how to install it."""
    # Ray Data logs every execution to the console at INFO; our own progress says it better.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchLensError(
            f"Running on a cluster needs Ray, which is not installed here: {INSTALL_HINT}."
        ) from None
    return ray


def last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(exc).__name__


RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes its address


def running_cluster() -> str | None:
    """What --cluster auto joins: RAY_ADDRESS, else the last `ray start` on this machine if it still
    answers (Ray itself would wait for minutes on a cluster that is gone), else None."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        remembered = RAY_CURRENT_CLUSTER.read_text().strip()
        host, port = remembered.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return None
    return remembered


def connect(ray, address: str) -> bool:
    """Join (or start) the cluster for `address`. Returns True when this call started Ray here."""
    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return False
    address = (address or "auto").strip()
    if address == "auto":
        address = running_cluster() or "local"
    try:
        if address == "local":  # starts Ray on this machine: no dashboard wanted
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        if address.startswith("ray://") and "timeout" in str(exc).lower():
            hint = (
                " If the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token and "
                "give its token in RAY_AUTH_TOKEN."
            )
        raise BatchLensError(
            f"Cannot connect to the Ray cluster at {address}: {last_line(exc)}.{hint}"
        ) from None
    return True
