"""Ray itself: is it installed, and joining (or starting) the cluster an address names.

Joining is left to Ray, the way `ray.init` does it, so tokens are found where Ray finds them: "auto"
goes to `ray.init(address="auto")`, which reads RAY_ADDRESS or the address `ray start` left on this
machine and, for a cluster on this machine, turns token authentication on by itself when a token is
here (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH). An explicit address never does that
(Ray will not send a token to an address it was merely given): RAY_AUTH_MODE=token says to.

Ray's console output (native gRPC retries, its loggers, the workers' prints) stays out of the user's
terminal unless BatchLens logs at INFO (-v); when joining fails, what Ray said is read to tell a missing
or refused token from a cluster that is not there, in one sentence naming what to set.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from batchlens.core.errors import BatchLensError

log = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"  # the version the `cluster` extra pins
INSTALL_HINT = f'pip install "batchlens[cluster]" (it adds ray[data,client]=={RAY_VERSION})'
TOKEN_SOURCE = "`ray get-auth-token` on the head node prints it; it is kept there in ~/.ray/auth_token"
AUTH_REFUSED = ("InvalidAuthToken", "Unauthenticated", "UNAUTHENTICATED", "authentication token")


def ray_installed() -> bool:
    """Whether the cluster extra is here (the installers ship without it), without importing Ray."""
    return importlib.util.find_spec("ray") is not None


def require_ray():
    """Import ray (and Ray Data), or raise BatchLensError saying how to install it."""
    # Ray Data logs every execution to the console, and Ray's C++ core its own warnings (an actor's
    # restart caveats, gRPC retries); our own progress and sentences say what matters. -v shows them.
    loud = verbose()
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "INFO" if loud else "ERROR")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "info" if loud else "fatal")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchLensError(
            f"Running on a cluster needs Ray, which is not installed here: {INSTALL_HINT}."
        ) from None
    return ray


def verbose() -> bool:
    """-v: Ray may talk on the console."""
    return log.isEnabledFor(logging.INFO)


def last_line(exc: BaseException) -> str:
    text = str(exc)
    grpc_details = re.search(r'details = "([^"]*)"', text)  # a gRPC error's own words
    if grpc_details:
        return grpc_details.group(1).rstrip(".")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(exc).__name__


@dataclass(frozen=True)
class Joined:
    """The cluster a run is on, as summary.json records it."""

    requested: str  # what was asked for: auto, local, HOST:PORT or ray://HOST:PORT
    address: str  # the cluster's GCS address, HOST:PORT
    dashboard: str | None
    node_count: int
    started_here: bool  # a new cluster on this machine, for this run only (shut down after it)

    def to_json(self) -> dict:
        return {
            "requested": self.requested,
            "address": self.address,
            "dashboard": self.dashboard,
            "node_count": self.node_count,
            "started_here": self.started_here,
        }

    def sentence(self) -> str:
        if self.started_here:
            return (
                f"No running Ray cluster was found (RAY_ADDRESS is not set and no `ray start` on this "
                f"machine answers), so one was started here for this run at {self.address}."
            )
        dashboard = f"; dashboard {self.dashboard}" if self.dashboard else ""
        return f"Joined the Ray cluster at {self.address} ({self.node_count} node(s){dashboard})."


def ray_address_file() -> Path:
    """Where `ray start` notes its address: Ray's temp folder (RAY_TMPDIR, TMPDIR or /tmp)/ray."""
    from ray._common.utils import get_ray_address_file  # the cluster extra pins Ray's version

    return Path(get_ray_address_file(None))


def running_cluster() -> str | None:
    """What --cluster auto joins: RAY_ADDRESS, else the last `ray start` on this machine if it still
    answers (Ray itself would wait for minutes on a cluster that is gone), else None."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        remembered = ray_address_file().read_text().strip()
        host, port = remembered.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return None
    return remembered


# Ray Client's proxy starts a server per session on a port from one fixed range (23000 on); when that
# server dies at start (seen here when two clusters on one machine hand out the same port), a second
# try gets another port. Anything else Ray says is a real answer, given at once.
CLIENT_SERVER_FAILED = "Starting Ray client server failed"
CLIENT_START_TRIES = 3


def connect(ray, address: str) -> Joined:
    """Join (or start) the cluster for `address`; `Joined.started_here` says whether to shut it down."""
    requested = (address or "auto").strip()
    if ray.is_initialized():  # a caller (a test, a notebook, the ray:// driver's actor) is connected
        return describe(ray, requested, started_here=False)
    target, shown, probe = requested, requested, requested
    if requested == "auto":  # Ray reads RAY_ADDRESS or the `ray start` file itself, and finds tokens
        probe = running_cluster()
        target = "auto" if probe else "local"
        shown = f"{probe} (RAY_ADDRESS)" if os.environ.get("RAY_ADDRESS") else (probe or "local")
    if target != "local":
        check_reachable(probe, shown)
    loud = verbose()
    options = {"logging_level": logging.INFO if loud else logging.ERROR, "log_to_driver": loud}
    for attempt in range(CLIENT_START_TRIES):
        with ray_output_kept(not loud) as said:
            try:
                if target == "local":  # starts Ray on this machine: no dashboard wanted
                    ray.init(address="local", include_dashboard=False, **options)
                else:
                    ray.init(address=target, **options)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                failure = exc
            else:
                failure = None
        if failure is None or CLIENT_SERVER_FAILED not in str(failure) or attempt + 1 == CLIENT_START_TRIES:
            break
        log.info("Ray Client's server for this session did not start at %s; trying again", shown)
        time.sleep(1 + attempt)
    if failure is not None:
        log.debug("Ray said, while joining %s:\n%s", shown, said.text)
        raise BatchLensError(failure_sentence(shown, failure, said.text)) from None
    return describe(ray, requested, started_here=target == "local")


def describe(ray, requested: str, started_here: bool) -> Joined:
    from ray._private.worker import get_dashboard_url

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    try:
        dashboard = get_dashboard_url() or None
    except Exception:  # a Ray Client connection has no local node to ask
        dashboard = None
    if dashboard and "://" not in dashboard:
        dashboard = f"http://{dashboard}"
    if dashboard and not answers(dashboard):  # Ray names one even where none runs (no ray[default])
        dashboard = None
    return Joined(requested, ray.get_runtime_context().gcs_address, dashboard, nodes, started_here)


def answers(url: str) -> bool:
    host, port = split_address(url.rstrip("/"))
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def split_address(address: str) -> tuple[str, int]:
    """HOST and PORT of "HOST:PORT" or "ray://HOST:PORT", or the sentence saying what an address is."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise BatchLensError(
            f"{address!r} is not a Ray cluster address: give auto, local, HOST:PORT (the head node's "
            "GCS port, 6379 by default) or ray://HOST:PORT (its Ray Client port, 10001 by default)."
        )
    return host.strip("[]"), int(port)


def check_reachable(address: str, shown: str | None = None) -> None:
    """A wrong host or a port nobody listens on is said at once; Ray would retry it for 20-30 s."""
    shown = shown or address
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except socket.gaierror:
        raise BatchLensError(
            f"Cannot connect to the Ray cluster at {shown}: there is no host named {host} "
            "(check the address)."
        ) from None
    except OSError:
        client = address.startswith("ray://")
        kind = "Ray Client port, 10001 by default" if client else "GCS port, 6379 by default"
        raise BatchLensError(
            f"No Ray cluster answers at {shown}: start one with `ray start --head`, or check the host "
            f"and the port (the head node's {kind})."
        ) from None


def failure_sentence(shown: str, exc: BaseException, said: str) -> str:
    """One sentence for a failed `ray.init`, from the exception and what Ray printed meanwhile."""
    token_sent = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    refused = any(mark in said for mark in AUTH_REFUSED)
    if type(exc).__name__ == "AuthenticationError" and token_sent:  # token mode on, no token here
        return (
            f"The Ray cluster at {shown} needs its token and none was found here: set RAY_AUTH_TOKEN to it "
            f"({TOKEN_SOURCE})."
        )
    if refused and token_sent:
        return (
            f"The Ray cluster at {shown} refused the token from {token_origin() or 'here'}: set "
            f"RAY_AUTH_TOKEN to the cluster's own token ({TOKEN_SOURCE})."
        )
    if refused and token_origin():
        return (
            f"The Ray cluster at {shown} uses token authentication: set RAY_AUTH_MODE=token, so that Ray "
            f"sends the token from {token_origin()} (it sends one to a given address only then)."
        )
    if refused:
        return (
            f"The Ray cluster at {shown} uses token authentication and no token was sent: set "
            f"RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token ({TOKEN_SOURCE})."
        )
    return f"Cannot connect to the Ray cluster at {shown}: {last_line(exc)}."


def token_origin() -> str:
    """Where Ray takes a token from (the variable first, then the file it names, then ~/.ray), or ""."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"{os.environ['RAY_AUTH_TOKEN_PATH']} (RAY_AUTH_TOKEN_PATH)"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else ""


class _Said:
    text = ""


@contextmanager
def ray_output_kept(keep: bool):
    """While Ray joins: keep its native stderr, the Ray Client's retry log and its warnings out of the
    terminal (when `keep`), and hand what it said to the caller (to tell a token problem apart)."""
    said = _Said()
    if not keep:
        yield said
        return
    client_log = logging.getLogger("ray.util.client.worker")
    records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: records.append(record.getMessage())
    old_level, old_propagate = client_log.level, client_log.propagate
    client_log.addHandler(handler)
    client_log.setLevel(logging.DEBUG)
    client_log.propagate = False
    saved = os.dup(2)
    with tempfile.TemporaryFile() as native, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(native.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            client_log.removeHandler(handler)
            client_log.setLevel(old_level)
            client_log.propagate = old_propagate
            native.seek(0)
            text = native.read().decode(errors="replace")
            said.text = "\n".join([text, *records, *(str(w.message) for w in caught)])
