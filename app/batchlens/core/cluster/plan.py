"""Where a cluster run goes and how wide: the settings and the pool's size, whatever the backend."""

from __future__ import annotations

import os
from dataclasses import dataclass

from batchlens.core.errors import BatchLensError


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide to run. `address`: "auto" (the running cluster: RAY_ADDRESS or one started
    on this machine with `ray start`, else a new local one), "local" (always a new local one), or a
    cluster address ("ray://HOST:PORT" for Ray Client, "HOST:PORT" from a cluster node)."""

    address: str = "auto"
    workers: int | None = None  # actors in the pool; None: one per GPU, or one per CPU without GPUs
    # Run the driver's part (scan, predictions.jsonl, summary.json) in an actor on the cluster and
    # stream its events here. None: only for Ray Client (ray://), whose process cannot drive Ray Data
    # and may not see the cluster's storage at all.
    driver_on_cluster: bool | None = None

    @property
    def remote_driver(self) -> bool:
        if self.driver_on_cluster is not None:
            return self.driver_on_cluster
        address = self.address.strip()
        if address == "auto":  # Ray's rule: RAY_ADDRESS stands for "auto"
            address = os.environ.get("RAY_ADDRESS", "")
        return address.startswith("ray://")


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    device: str  # what each worker passes to resolve_device: "cpu" or "cuda"
    gpus_per_worker: float


def plan_workers(resources: dict, device: str, workers: int | None) -> WorkerPlan:
    """Size the worker pool to the cluster's resources (for Ray: `ray.cluster_resources()`)."""
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    device = (device or "auto").strip().lower()
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    elif device.startswith("cuda"):
        if not gpus:
            raise BatchLensError(f"Device {device!r} was requested but the Ray cluster has no GPUs.")
        device = "cuda"  # each worker uses the GPU Ray gives it
    elif device != "cpu":
        raise BatchLensError(f"On a cluster the device is auto, cpu or cuda, not {device!r}.")
    capacity = gpus if device == "cuda" else cpus
    if capacity < 1:
        raise BatchLensError("The Ray cluster has no CPU to run a worker on.")
    if workers is not None and workers < 1:
        raise BatchLensError("The number of workers must be at least 1.")
    if workers is not None and workers > capacity:
        unit = "GPU" if device == "cuda" else "CPU"
        raise BatchLensError(
            f"{workers} workers were asked for, but the Ray cluster has room for {capacity} "
            f"(one {unit} each)."
        )
    return WorkerPlan(workers or capacity, device, 1.0 if device == "cuda" else 0.0)
