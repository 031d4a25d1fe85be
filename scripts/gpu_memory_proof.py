"""GPU proof, step 4 (issue 28): what else is using my GPU, how much of "reserved" is fragmentation,
which images made the peak. Run by scripts/gpu_proof.sh on a CUDA machine; writes into --out:

* memory-proof.json, memory-proof.log: every figure below, and PASS/FAIL per claim;
* gpu-panel.png: the panel of GPU processes while a second process holds 35 % of the card;
* memory-snapshot.pickle and snapshot-viewer.png: a snapshot recorded during a real run, opened in
  the viewer (the PNGs only where PySide6 is importable on the machine);
* fragmentation.csv: allocated, reserved, inactive split bytes and segments after each batch of a real
  model at changing batch sizes.

The checks on the figures are plain functions (`holder_seen`, `fragmentation_moved`,
`snapshot_facts`), tested on the CPU in tests/core/test_gpu_memory_proof.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOLD_SHARE = 0.35


def holder_seen(report, holder_pid: int, share: float = HOLD_SHARE) -> tuple[bool, str]:
    """Whether NVML's list (a GpuReport) shows the holder with about `share` of the card, and in words."""
    if report.reason:
        return False, f"no list: {report.reason}"
    row = next((p for p in report.processes if p.pid == holder_pid), None)
    if row is None:
        return False, f"the holder (PID {holder_pid}) is not in the list of {len(report.processes)} processes"
    held = (row.used or 0) / report.total
    ok = held >= share - 0.05 and not row.own and any(p.own for p in report.processes)
    return (
        ok,
        f"the holder {row.name} (PID {row.pid}) holds {held:.0%} of the card; BatchLens's row is marked",
    )


def fragmentation_moved(rows: list[dict]) -> tuple[bool, str]:
    """Whether the inactive-split bytes changed as the batch sizes changed (rows: one per batch)."""
    values = [r["inactive_split"] for r in rows if r.get("inactive_split") is not None]
    if len(values) < 2:
        return False, "the backend reported no inactive split bytes"
    sizes = sorted({r["batch"] for r in rows})
    low, high = min(values), max(values)
    return high > low, (
        f"inactive split bytes went from {low / 2**20:.1f} to {high / 2**20:.1f} MiB "
        f"over batch sizes {sizes}; "
        f"segments {min(r['segments'] for r in rows)}..{max(r['segments'] for r in rows)}"
    )


def snapshot_facts(path: Path) -> tuple[bool, dict]:
    """Load the snapshot as the viewer does and say what it holds: events, allocations, markers, the
    batch that made the peak."""
    from batchlens.core.outputs.snapshot_file import load_snapshot
    from batchlens.ui.snapshot_layout import build_layout

    layout = build_layout(load_snapshot(path))
    when, peak = layout.peak
    marker = layout.marker_before(when)
    facts = {
        "bytes": path.stat().st_size,
        "events": layout.events,
        "allocations": layout.blocks_total,
        "batches_marked": len(layout.markers),
        "peak_bytes": peak,
        "peak_batch": marker[2] if marker else None,
    }
    return layout.events > 0 and bool(layout.markers) and marker is not None, facts


def _hold(share: float) -> None:
    """The second process: hold `share` of GPU 0 until killed."""
    import torch

    free, total = torch.cuda.mem_get_info(0)
    block = torch.empty(int(total * share), dtype=torch.uint8, device="cuda")
    block.fill_(1)
    torch.cuda.synchronize()
    print("holding", block.numel(), flush=True)
    time.sleep(600)


def _grab(widget, path: Path) -> bool:
    widget.resize(900, 500)
    widget.show()
    from PySide6.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    return widget.grab().save(str(path))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu-proof"))
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        _hold(HOLD_SHARE)
        return 0
    import torch
    from tests.helpers import make_shapes_folder

    from batchlens.core.machine.gpu_processes import GpuProcessReader
    from batchlens.core.machine.memory import CudaProbe
    from batchlens.core.models import load_model
    from batchlens.core.run.config import RunConfig
    from batchlens.core.run.runner import Runner

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    try:
        from PySide6.QtWidgets import QApplication

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication.instance() or QApplication([])
    except ImportError:
        app = None
    device = torch.device("cuda", 0)
    torch.empty(1, device=device)  # this process's context, so NVML lists it too

    # 1. What else is using my GPU: a second process holds 35 %.
    holder = subprocess.Popen([sys.executable, __file__, "--hold"], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()  # "holding N": the memory is taken
        report = GpuProcessReader("cuda", 0).read()
        ok, words = holder_seen(report, holder.pid)
        results["panel"] = {"pass": ok, "said": words, "processes": [p.__dict__ for p in report.processes]}
        if app is not None:
            from batchlens.ui.gpu_panel import GpuProcessesPanel

            panel = GpuProcessesPanel()
            panel.set_device("cuda", 0)
            panel.wait()
            results["panel"]["png"] = _grab(panel, out / "gpu-panel.png")
            panel.shutdown()
    finally:
        holder.kill()
        holder.wait()

    # 2. How much of reserved is fragmentation: a real model at changing batch sizes.
    model = load_model("demo-denoise", device)
    probe = CudaProbe(device)
    rows = []
    with torch.inference_mode():
        for batch in (1, 16, 3, 32, 5, 64, 7, 24, 2):
            y = model.module(torch.rand(batch, 3, 256, 256, device=device))
            del y
            s = probe.sample()
            rows.append(
                {
                    "batch": batch,
                    "allocated": s.allocated,
                    "reserved": s.reserved,
                    "inactive_split": s.inactive_split,
                    "segments": s.segments,
                }
            )
    with open(out / "fragmentation.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ok, words = fragmentation_moved(rows)
    results["fragmentation"] = {"pass": ok, "said": words}
    del model
    torch.cuda.empty_cache()

    # 3. Which images made the peak: a snapshot recorded during a real run, opened in the viewer.
    folder = out / "snapshot-images"
    make_shapes_folder(folder, 24, size=96)
    run_out = out / "snapshot-run"
    cfg = RunConfig("demo-shapes", folder, run_out, device="cuda", batch_size=4, memory_snapshot="always:16")
    notes = [getattr(e, "message", "") for e in Runner(cfg).events() if type(e).__name__ == "RunNote"]
    snapshot = run_out / "memory-snapshot.pickle"
    if snapshot.exists():
        ok, facts = snapshot_facts(snapshot)
        results["snapshot"] = {"pass": ok, **facts}
        if app is not None:
            from batchlens.ui.snapshot_viewer import SnapshotViewer

            viewer = SnapshotViewer()
            viewer.open(snapshot)
            viewer.wait()
            for _ in range(20):
                app.processEvents()
            results["snapshot"]["viewer"] = viewer.status.text()
            results["snapshot"]["png"] = _grab(viewer, out / "snapshot-viewer.png")
    else:
        results["snapshot"] = {"pass": False, "said": "no snapshot was written", "notes": notes}

    (out / "memory-proof.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    for claim, result in results.items():
        print(f"{'PASS' if result['pass'] else 'FAIL'} {claim}: {result.get('said', result)}")
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
