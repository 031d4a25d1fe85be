"""After the run at scale: evaluation over a 20,000-line predictions.jsonl, and sorting 20,000 files.

    python benchmarks/after_run.py [N]    (default 20,000)

Makes, in a temporary folder, N small files in 10 class folders and a classification run's
predictions.jsonl about them (5 top labels a line, 1 in 50 failed, a review for 1 in 20), then times:
reading the run and evaluating it (evaluation.json and confusion.png written), the CSV export, planning
the sort (the counts per folder), the copy sort, its undo, and a move sort and its undo. Nothing is
kept. The files are 2 KiB each: the times are the per-file overhead, not the disk's bandwidth.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

from batchlens.core.outputs.evaluation import evaluate  # noqa: E402
from batchlens.core.outputs.export import export  # noqa: E402
from batchlens.core.outputs.sorting import do_sort, plan_sort, undo_sort  # noqa: E402

LABELS = [f"class_{i:02d}" for i in range(10)]


def make(base: Path, n: int) -> Path:
    rng = random.Random(0)
    inputs, run = base / "in", base / "run"
    run.mkdir()
    blob = os.urandom(2048)
    lines, reviews = [], []
    for i in range(n):
        truth = LABELS[i % len(LABELS)]
        rel = f"{truth}/img_{i:06d}.jpg"
        (inputs / truth).mkdir(parents=True, exist_ok=True)
        (inputs / rel).write_bytes(blob)
        if i % 50 == 7:
            lines.append({"image": rel, "status": "error", "error": "is empty (0 bytes)", "seconds": 0.001})
            continue
        order = rng.sample(LABELS, 5) if rng.random() < 0.3 else [truth, *rng.sample(LABELS, 4)]
        scores = sorted((rng.random() for _ in order), reverse=True)
        top = [
            {"label": label, "index": LABELS.index(label), "score": round(s, 6)}
            for label, s in zip(order, scores)
        ]
        lines.append({"image": rel, "status": "ok", "error": None, "seconds": 0.01, "top": top})
        if i % 20 == 3:
            reviews.append({"image": rel, "label": truth, "at": "2026-12-07T05:00:00+00:00"})
    (run / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "reviews.jsonl").write_text("".join(json.dumps(x) + "\n" for x in reviews))
    (run / "run.json").write_text(json.dumps({"task": "classification", "input": str(inputs)}))
    return run


def timed(name: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{name:<44} {time.perf_counter() - start:7.2f} s")
    return result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        run = timed(f"make {n:,} files and lines", lambda: make(base, n))
        result = timed("evaluate (evaluation.json + confusion.png)", lambda: evaluate(run))
        print(f"  accuracy {result.report['accuracy']:.3f}, {result.report['failed']} failed")
        timed("export csv", lambda: export(run, "csv", base / "r.csv"))
        plan = timed("plan the sort (counts per folder)", lambda: plan_sort(run, base / "sorted", 0.5))
        print(f"  {sum(plan.counts.values()):,} placements into {len(plan.counts)} folders")
        timed("sort --copy", lambda: do_sort(plan))
        timed("sort --undo (remove the copies)", lambda: undo_sort(base / "sorted"))
        plan = plan_sort(run, base / "moved", 0.5, "move")
        timed("sort --move", lambda: do_sort(plan))
        timed("sort --undo (move them back)", lambda: undo_sort(base / "moved"))
        left = sum(1 for _ in (base / "in").rglob("*.jpg"))
        print(f"  input files after the move and its undo: {left:,} of {n:,}")


if __name__ == "__main__":
    main()
