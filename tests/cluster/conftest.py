"""Two real Ray clusters on this machine, started once for all of tests/cluster (they take seconds
each, and CI has two cores): one with token authentication and two nodes (a head and a worker node,
one CPU each), one without tokens (a head with two). Stopped afterwards, and with the test process
if it is killed (tests/cluster/ray_processes.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from tests.cluster.ray_processes import TestCluster, new_cluster, stop_all

NO_RAY = 'Ray is not installed (the cluster extra: pip install -e ".[cluster]")'
TOKEN = "batchlens0test0token0" + "0123456789abcdef" * 2  # what `ray get-auth-token` would print


@dataclass(frozen=True)
class Clusters:
    token: TestCluster  # RAY_AUTH_MODE=token, two nodes; its token in its home's ~/.ray/auth_token
    open: TestCluster  # RAY_AUTH_MODE=disabled, one node of two CPUs


@pytest.fixture(scope="package")
def clusters():
    pytest.importorskip("ray", reason=NO_RAY)
    saved = dict(os.environ)
    token, open_ = new_cluster(TOKEN), new_cluster(None)
    try:
        t0 = time.perf_counter()
        token.start(cpus=1, wait=False)  # both heads start at once
        open_.start(cpus=2)  # two jobs at once there (test_joining) need not wait for each other
        token.wait()
        token.add_node(cpus=1)
        print(f"\n[tests/cluster] three Ray nodes started in {time.perf_counter() - t0:.1f} s")
        # This test process is a user of the token cluster: its temp folder and its home (the token).
        os.environ.update(RAY_TMPDIR=str(token.root), HOME=str(token.home))
        yield Clusters(token, open_)
    finally:
        import ray

        ray.shutdown()
        stop_all(token, open_)
        os.environ.clear()  # Ray sets RAY_AUTH_MODE=token in this process when it finds a token
        os.environ.update(saved)


@pytest.fixture
def ray_cluster(clusters: Clusters):
    """This process joined to the token cluster with `auto` (ray.init(address="auto") finds the
    cluster `ray start` noted down and the token in ~/.ray), as BatchLens joins it."""
    import ray

    from batchlens.core.cluster.connect import connect

    if not ray.is_initialized():
        joined = connect(ray, "auto")
        assert joined.address == clusters.token.address and not joined.started_here
    deadline = time.monotonic() + 60
    while sum(node["Alive"] for node in ray.nodes()) < 2:  # the worker node may still be registering
        assert time.monotonic() < deadline, "the worker node never joined"
        time.sleep(0.5)
    return ray


@pytest.fixture
def no_ray_connection():
    """This process not joined to any cluster (the next `ray_cluster` joins again)."""
    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.shutdown()
