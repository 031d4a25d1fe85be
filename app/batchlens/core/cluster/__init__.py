"""Running the engine on a cluster.

What is BatchLens's own, and a second backend would reuse: `plan` (where and how wide), `worker` (a
worker's loop over batches and the rows it hands back), `ledger` (who retried what) and `collector`
(rows -> events, predictions.jsonl in scan order, summary.json). What is Ray: `ray_backend` (Ray Data's
actor pool, the ray:// remote driver) and `connect` (installing and joining a Ray cluster).
"""

from batchlens.core.cluster.connect import ray_installed, require_ray
from batchlens.core.cluster.plan import ClusterConfig, WorkerPlan, plan_workers

# ClusterRunner imports torch (and Ray when a run starts): it loads when first asked for, so the window
# and `batchlens models` start without torch.


def __getattr__(name: str):
    if name == "ClusterRunner":
        from batchlens.core.cluster.ray_backend import ClusterRunner

        return ClusterRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClusterConfig", "ClusterRunner", "WorkerPlan", "plan_workers", "ray_installed", "require_ray"]
