"""Turn the proof kit's raw results into docs/gpu-report.md (see scripts/gpu_proof.sh).

    python scripts/gpu_report.py DIR > gpu-report.md
DIR holds env.txt, gpu-tests.xml (pytest's JUnit XML), gpu-tests.log and gpu-bench.json.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path


def tests_section(xml: Path) -> list[str]:
    if not xml.exists():
        return ["The `cuda` tests did not run (no gpu-tests.xml): see gpu-tests.log."]
    lines = ["| test | outcome | seconds |", "|---|---|---|"]
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = (
                    f"{tag}: {(found.get('message') or '').splitlines()[0][:120]}"
                    if found.get("message")
                    else tag
                )
        lines.append(f"| `{case.get('name')}` | {outcome} | {float(case.get('time', 0)):.1f} |")
    return lines


def bench_section(path: Path) -> list[str]:
    if not path.exists():
        return ["The GPU benchmark did not finish (no gpu-bench.json): see gpu-bench.log."]
    data = json.loads(path.read_text())
    lines = [
        f"Model: {data['model']}; {data['cores']} CPU cores; torch {data['torch']}, CUDA {data['cuda']}.",
        "",
        "| row | images | images/s | ratio | first result (s) | peak allocated (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        ratio = row.get("vs_expert", row.get("vs_plain"))
        ratio = "" if ratio is None else f"{ratio:.2f}x {'expert' if 'vs_expert' in row else 'plain'}"
        lines.append(
            f"| {row['name']} ({row['size']}) | {row['images']} | {row['images_per_second']} | {ratio} | "
            f"{row.get('first_result_seconds') or ''} | {row.get('peak_allocated_mib') or ''} |"
        )
    costs = data.get("cache_policy_extra_ms_per_image", {})
    if costs:
        lines += [
            "",
            "Cost of each `--empty-cache` policy at batch 1 (ms per image over `never`, median of 3):",
            "",
        ]
        lines += [f"- `{policy}`: {cost:+.3f} ms" for policy, cost in costs.items()]
    flat = data.get("flat_memory")
    if flat:
        lines += [
            "",
            f"Flat memory over {flat['images']} images (batch {flat.get('batch', '?')}, GPU decode, "
            f"{flat['images_per_second']} images/s): the median allocated over "
            f"{flat.get('stretch_images', '?')} images early in the run "
            f"{flat.get('early_median_allocated_mib', '?')} MiB, over as many late in it "
            f"{flat.get('late_median_allocated_mib', '?')} MiB (difference {flat['difference_mib']} MiB; "
            f"the most allocated: {flat.get('early_max_allocated_mib', '?')} and "
            f"{flat.get('late_max_allocated_mib', '?')} MiB). "
            f"Single readings: after image 100 {flat['allocated_after_100_mib']} MiB, after the last "
            f"{flat['allocated_at_end_mib']} MiB (no batch is prefetched after the last one).",
        ]
    return lines


MiB = 2**20


def _goal(label: str, value: float | None, target: float, unit: str = "") -> str:
    if value is None:
        return f"- {label}: not measured"
    verdict = "met" if value >= target else "NOT met"
    return f"- {label}: {value:.2f}{unit} against {target:g}{unit}: {verdict}"


def long_section(path: Path) -> list[str]:
    """The long-run rows (scripts/gpu_bench.py --long) and issue 29's goals, read off them."""
    if not path.exists():
        return ["The long-run bench did not finish (no gpu-long.json): see gpu-long.log."]
    data = json.loads(path.read_text())
    lines = [
        f"Model: {data['model']}; {data['images']} JPEGs per size; {data['cores']} CPU cores; "
        f"torch {data['torch']}, CUDA {data['cuda']}. Steady state: the images after the first 10 %.",
    ]
    for size, rows in data["sizes"].items():
        lines += [
            "",
            f"### {size}",
            "",
            "| row | images | images/s end to end | steady images/s | x expert (end to end) "
            "| first result (s) | allocated early / late (MiB) | settings |",
            "|---|---|---|---|---|---|---|---|",
        ]
        by_name = {row["name"]: row for row in rows}
        for row in rows:
            if row.get("skipped"):
                lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | | |")
                continue
            memory = row.get("memory")
            mem = f"{memory['early_median'] / MiB:.0f} / {memory['late_median'] / MiB:.0f}" if memory else ""
            first = row.get("first_result_s")
            lines.append(
                f"| {row['label']} | {row['images']} | {row['images_per_second']:.1f} | "
                f"{row['steady_images_per_second']:.1f} | {row.get('vs_expert') or ''} | "
                f"{'' if first is None else f'{first:.2f}'} | {mem} | {row.get('note', '')} |"
            )
        ceiling = by_name.get("ceiling")
        standard, fastest = by_name.get("standard"), by_name.get("fastest")
        lines += ["", f"Goals at {size} (issue 29):", ""]
        lines.append(_goal("Standard end to end / expert", standard and standard.get("vs_expert"), 1.0, "x"))
        lines.append(_goal("Fastest end to end / expert", fastest and fastest.get("vs_expert"), 1.5, "x"))
        if fastest and ceiling and not ceiling.get("skipped"):
            target = min(3000.0, 0.85 * ceiling["images_per_second"])
            lines.append(
                _goal("Fastest steady images/s", fastest["steady_images_per_second"], round(target, 1))
            )
        for row in (standard, fastest):
            if row and row.get("first_result_s") is not None:
                verdict = "met" if row["first_result_s"] <= 1.0 else "NOT met"
                lines.append(
                    f"- {row['label']} first result: {row['first_result_s']:.2f} s against 1 s: {verdict}"
                )
    return lines


def main() -> int:
    folder = Path(sys.argv[1])
    env = (folder / "env.txt").read_text().strip() if (folder / "env.txt").exists() else "(no env.txt)"
    out = [
        "# GPU report",
        "",
        f"Written by `bash scripts/gpu_proof.sh` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. This page is the",
        "project's GPU truth: every figure below was measured in that run; nothing here is estimated.",
        "",
        "## The machine",
        "",
        "```",
        env,
        "```",
        "",
        "## The `cuda` tests (`pytest tests/gpu -m cuda`)",
        "",
        *tests_section(folder / "gpu-tests.xml"),
        "",
        "## Long runs as users have them (`scripts/gpu_bench.py --long`)",
        "",
        *long_section(folder / "gpu-long.json"),
        "",
    ]
    overlap = folder / "gpu-overlap.log"
    if overlap.exists():
        lines = [line for line in overlap.read_text().splitlines() if line.strip()][-4:]
        out += [
            "## The copy ahead on a side stream (`scripts/gpu_profile.py --overlap`)",
            "",
            "```",
            *lines,
            "```",
            "",
        ]
    if (folder / "gpu-bench.json").exists() or (folder / "gpu-bench.log").exists():  # KIT_FULL=1
        out += [
            "## Throughput, cache policy, flat memory (`scripts/gpu_bench.py`)",
            "",
            *bench_section(folder / "gpu-bench.json"),
            "",
        ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
