"""`batchlens bench`'s table: the result of `run_bench` (core/run/bench.py) as text."""

from __future__ import annotations

from batchlens.core.machine.memory import format_bytes


def format_table(result: dict) -> str:
    """The rows, their speeds and memory, the forward-only ceiling and what the sampler costs."""
    kind = "RAM (RSS)" if result["memory_kind"] == "cpu" else f"{result['memory_kind'].upper()} allocated"
    rounds = result["repeat"]
    head = (
        f"{result['model']} on {result['device']}, {result['source']}"
        + (f" ({result['model_note']})" if result["model_note"] else "")
        + f"; memory is {kind}; medians over {rounds} round(s) (range in brackets), end to end; "
        + f"load average {result['load_average']}"
    )
    columns = [
        "row",
        "images",
        "images/s",
        "vs plain",
        "vs expert",
        "first result",
        "CPU ms/img",
        "peak mem",
        "peak-start",
        "mem/image",
        "notes",
    ]
    lines = []
    for row in result["rows"]:
        low, high = row["images_per_second_range"]
        spread = f" [{low:.1f}-{high:.1f}]" if len(row["rounds"]) > 1 else ""
        rate = f"{row['images_per_second']:.2f}{spread}"
        first = row["first_result_s"]
        lines.append(
            [
                row["label"],
                str(row["images"]),
                rate,
                f"{row['ratio']:.2f}x" if row["ratio"] is not None else "",
                f"{row['ratio_expert']:.2f}x" if row["ratio_expert"] is not None else "",
                f"{first:.2f} s" if first is not None else "",
                f"{1000 * row['cpu_seconds'] / max(1, row['images']):.0f}",
                format_bytes(row["peak_bytes"]),
                format_bytes(row["peak_growth_bytes"]),
                format_bytes(row["per_image_bytes"]),
                row["note"],
            ]
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = [head, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    ceiling = result.get("ceiling") or {}
    if ceiling:
        out.append(
            f"forward-only ceiling (pre-decoded batch of {ceiling['batch_size']}, {ceiling['threads']} "
            f"threads{', channels_last' if ceiling['channels_last'] else ''}"
            f"{', BatchNorm folded' if ceiling.get('folded_batch_norm') else ''}): "
            f"{ceiling['images_per_second']:.2f} images/s"
        )
    sampler = result["sampler"]
    if sampler.get("percent_of_run") is not None:
        out.append(
            f"memory sampler: {sampler['us_per_sample']:.1f} µs a sample, "
            f"{sampler['percent_of_run']:.3f} % of the --exact run"
            + (
                f"; defaults with vs without sampling: {sampler['ab_percent']:+.2f} %"
                if "ab_percent" in sampler
                else ""
            )
        )
    return "\n".join(out)
