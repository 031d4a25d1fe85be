"""A SYNTHETIC memory snapshot, built in the format torch documents for
`torch.cuda.memory._snapshot()` (torch/cuda/memory.py: segments with blocks, device_traces of
alloc / free_requested / free_completed / segment_alloc entries with time_us and frames) plus
BatchLens's "batchlens_markers". No GPU made it: it stands in until a snapshot recorded on a real GPU
is committed as test data (docs/gpu.md says how to make one)."""

from __future__ import annotations

import random

MIB = 2**20
T0_US = 1_765_000_000_000_000  # the trace's clock: microseconds since the Unix epoch

SITES = [
    ("/site-packages/torch/nn/modules/conv.py", 548, "_conv_forward"),
    ("/site-packages/torch/nn/modules/linear.py", 134, "forward"),
    ("/site-packages/torch/nn/functional.py", 2817, "batch_norm"),
    ("/app/batchlens/core/run/inference.py", 88, "forward_batch"),
    ("/app/batchlens/core/run/pipeline.py", 301, "finish"),
]


def frames(rng: random.Random, depth: int) -> list[dict]:
    site = rng.randrange(len(SITES))
    stack = [SITES[(site + k) % len(SITES)] for k in range(depth)]
    # Fresh string objects, as torch's snapshot has (pickle would otherwise share repeated ones).
    return [
        {"filename": (f + " ")[:-1], "line": line + k, "name": (n + " ")[:-1]}
        for k, (f, line, n) in enumerate(stack)
    ]


def make_snapshot(batches: int = 4, per_batch: int = 20, depth: int = 6, seed: int = 0) -> dict:
    """`batches` batches of one image each; in each, `per_batch` activations are allocated and freed,
    and batch 2's forward holds the biggest block (the peak). Every block is freed by the end except
    the weights (one block that lives throughout)."""
    rng = random.Random(seed)
    trace: list[dict] = []
    markers: list[dict] = []
    t = T0_US
    addr = 0x7F0000000000

    def entry(action: str, address: int, size: int, fr: list[dict]) -> dict:
        return {"action": action, "addr": address, "size": size, "stream": 0, "time_us": t, "frames": fr}

    weights = 64 * MIB
    trace.append(entry("segment_alloc", addr, 2 * weights, []))
    trace.append(entry("alloc", addr, weights, frames(rng, depth)))
    for b in range(batches):
        t += 1000
        markers.append({"time_us": t, "kind": "batch", "text": f"img{b}.png", "images": [f"img{b}.png"]})
        live = []
        for i in range(per_batch):
            t += 50
            size = (rng.randrange(1, 8) + (40 if b == 2 and i == per_batch // 2 else 0)) * MIB
            block = (addr + weights + i * 64 * MIB, size)
            trace.append(entry("alloc", *block, frames(rng, depth)))
            live.append(block)
            if len(live) > 4:
                t += 20
                old = live.pop(0)
                trace.append(entry("free_requested", *old, []))
                trace.append(entry("free_completed", *old, []))
        for old in live:
            t += 20
            trace.append(entry("free_completed", *old, []))
    segment = {
        "address": addr,
        "total_size": 2 * weights,
        "stream": 0,
        "segment_type": "large",
        "segment_pool_id": (0, 0),
        "allocated_size": weights,
        "active_size": weights,
        "blocks": [
            {
                "address": addr,
                "size": weights,
                "requested_size": weights,
                "state": "active_allocated",
                "frames": trace[1]["frames"],
            },
            {
                "address": addr + weights,
                "size": weights,
                "requested_size": weights,
                "state": "inactive",
                "frames": [],
            },
        ],
    }
    return {"segments": [segment], "device_traces": [trace], "batchlens_markers": markers}
