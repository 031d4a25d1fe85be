"""Real Ray clusters for the tests, started as a user starts them: `ray start --head`, then
`ray start --address` for a second node, each in a temp folder of its own with free ports.

Stopping never uses `ray stop`, which kills every Ray process of this user on the machine (another
test run's, a colleague's): a cluster here is stopped by the processes it started, found by a marker
in their environment, and every process those started in turn.
"""

from __future__ import annotations

import os
import shutil
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

    def start(self, cpus: int) -> None:
        """`ray start --head`, tokens on or off as the cluster's admin chose."""
        self.home.mkdir(parents=True)
        if self.token:
            (self.home / ".ray").mkdir()
            (self.home / ".ray" / "auth_token").write_text(self.token)
        self._ray_start(
            ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(self.client_port)]
            + ["--include-dashboard", "false"],
            cpus,
        )

    def add_node(self, cpus: int) -> None:
        """A second node on this machine: `ray start --address HEAD`, as on another machine."""
        self._ray_start(["--address", self.address], cpus)

    def _ray_start(self, args: list[str], cpus: int) -> None:
        env = {**self.env, MARKER: str(self.root), "RAY_AUTH_MODE": "token" if self.token else "disabled"}
        command = [RAY, "start", *args, "--num-cpus", str(cpus), "--disable-usage-stats"]
        command += ["--dashboard-agent-listen-port", str(free_port())]
        command += ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
        command += ["--object-store-memory", str(150 * 2**20)]  # small: this machine is shared
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{done.stdout}\n{done.stderr}")
        self.nodes += 1
        if self.nodes > 1:  # `ray start --address` may return before the head counts the new node
            wait_for_nodes(self, self.nodes)

    def stop(self) -> None:
        """Stop exactly this cluster's processes (and their children), then remove its folder."""
        started = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER) == str(self.root):
                    started.append(process)
            except psutil.Error:
                continue
        family = {p.pid: p for p in started}
        for process in started:  # workers and agents rename themselves and lose the marker: by parent
            try:
                family.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.Error:
                continue
        family.pop(os.getpid(), None)
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

    def processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER) == str(self.root):
                    found.append(process)
            except psutil.Error:
                continue
        return found


def new_cluster(token: str | None) -> TestCluster:
    return TestCluster(Path(tempfile.mkdtemp(prefix="blray", dir="/tmp")), token)


def wait_for_nodes(cluster: TestCluster, count: int, timeout: float = 60) -> None:
    """Until `ray status`-like: the GCS knows `count` live nodes (asked from a separate process)."""
    check = (
        "import ray, sys; ray.init(address='auto', log_to_driver=False, logging_level='ERROR'); "
        "sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= int(sys.argv[1]) else 1)"
    )
    env = {**cluster.env, "RAY_AUTH_MODE": "token" if cluster.token else "disabled"}
    deadline = time.monotonic() + timeout
    while subprocess.run([sys.executable, "-c", check, str(count)], env=env, capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster in {cluster.root} has not got {count} node(s)")
        time.sleep(1)
