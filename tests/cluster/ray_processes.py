"""Real Ray clusters for the tests, started as a user starts them: `ray start --head`, then
`ray start --address` for a second node, each in a temp folder of its own with free ports.

Each `ray start` runs with `--block`, as a child of the test process that gets SIGTERM when the test
process dies (Linux's parent-death signal), so a test run that is killed still takes its cluster with
it. Stopping never uses `ray stop`, which kills every Ray process of this user on the machine (another
test run's, a colleague's): a cluster here is stopped by its `ray start` processes, then anything left
of it, found by a marker in its environment, and every process those started in turn.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MARKER = "BATCHLENS_TEST_CLUSTER"  # in the environment of every process a test cluster starts
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class TestCluster:
    """One Ray cluster on this machine. `env` is what a user's shell would hold to reach it: its temp
    folder (so `auto` finds it, as `ray start` leaves its address there) and a home holding the token."""

    root: Path  # short: Ray puts unix sockets under it
    token: str | None
    gcs_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    nodes: int = 0
    starts: list[subprocess.Popen] = field(default_factory=list)  # `ray start --block`, one a node

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def env(self) -> dict[str, str]:
        """The user's environment for `auto`: Ray finds the cluster and (for `auto`) ~/.ray/auth_token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_TMPDIR=str(self.root), HOME=str(self.home))
        return env

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def address(self) -> str:
        """The GCS address, as `ray start` wrote it down (HOST:PORT)."""
        return (self.root / "ray" / "ray_current_cluster").read_text().strip()

    def start(self, cpus: int, wait: bool = True) -> None:
        """`ray start --head`, tokens on or off as the cluster's admin chose."""
        self.home.mkdir(parents=True)
        if self.token:
            (self.home / ".ray").mkdir()
            (self.home / ".ray" / "auth_token").write_text(self.token)
        self._ray_start(
            ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(self.client_port)]
            + ["--include-dashboard", "false"],
            cpus,
            wait,
        )

    def add_node(self, cpus: int) -> None:
        """A second node on this machine: `ray start --address HEAD`, as on another machine."""
        self._ray_start(["--address", self.address], cpus)

    def _ray_start(self, args: list[str], cpus: int, wait: bool = True) -> None:
        env = {**self.env, MARKER: str(self.root), "RAY_AUTH_MODE": "token" if self.token else "disabled"}
        command = [RAY, "start", *args, "--block", "--num-cpus", str(cpus), "--disable-usage-stats"]
        command += ["--dashboard-agent-listen-port", str(free_port())]
        command += ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
        command += ["--object-store-memory", str(150 * 2**20)]  # small: this machine is shared
        log = self.root / f"ray-start-{len(self.starts)}.log"
        with log.open("w") as out:
            start = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        self.starts.append(start)
        self.nodes += 1
        if wait:
            self.wait()

    def wait(self) -> None:
        """Until the node started last has joined."""
        wait_for_nodes(self, self.nodes, self.starts[-1], self.root / f"ray-start-{len(self.starts) - 1}.log")

    def stop(self) -> None:
        """Stop exactly this cluster's processes (and their children), then remove its folder."""
        family = self.family()  # first: once a raylet is gone, its agents no longer show whose they are
        for start in reversed(self.starts):  # `ray start --block` stops its node on SIGTERM
            if start.poll() is None:
                start.terminate()
        for start in self.starts:
            try:
                start.wait(timeout=3)
            except subprocess.TimeoutExpired:  # what it has not stopped yet is stopped below
                start.kill()
                start.wait()
        family.update({p.pid: p for p in self.family().values()})
        for process in family.values():
            try:
                process.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(list(family.values()), timeout=2)
        for process in alive:  # Ray's agents may ignore SIGTERM
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def family(self) -> dict[int, psutil.Process]:
        """This cluster's processes, by the marker in their environment, and all their children:
        workers and agents rename themselves, which wipes the marker from what /proc shows."""
        family = {p.pid: p for p in self.processes()}
        for process in list(family.values()):
            try:
                family.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.Error:
                continue
        family.pop(os.getpid(), None)
        return family

    def processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER) == str(self.root):
                    found.append(process)
            except psutil.Error:
                continue
        return found


def stop_all(*clusters: TestCluster) -> None:
    """Stop several clusters at once: all are told first, then each is waited for."""
    for cluster in clusters:
        for start in cluster.starts:
            if start.poll() is None:
                start.terminate()
    for cluster in clusters:
        cluster.stop()


def new_cluster(token: str | None) -> TestCluster:
    return TestCluster(Path(tempfile.mkdtemp(prefix="blray", dir="/tmp")), token)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process goes, however it goes."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_nodes(
    cluster: TestCluster, count: int, start: subprocess.Popen, log: Path, timeout: float = 120
) -> None:
    """Until the GCS knows `count` live nodes (asked from a separate process, as `ray status` would)."""
    check = (
        "import ray, sys; ray.init(address='auto', log_to_driver=False, logging_level='ERROR'); "
        "sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= int(sys.argv[1]) else 1)"
    )
    env = {**cluster.env, "RAY_AUTH_MODE": "token" if cluster.token else "disabled"}
    deadline = time.monotonic() + timeout
    while True:
        if start.poll() is not None:
            raise RuntimeError(f"ray start failed:\n{log.read_text()}")
        if (cluster.root / "ray" / "ray_current_cluster").exists():
            asked = subprocess.run([sys.executable, "-c", check, str(count)], env=env, capture_output=True)
            if asked.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cluster.root} has not got {count} Ray node(s):\n{log.read_text()}")
        time.sleep(0.5)
