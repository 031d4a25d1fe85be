"""The memory plot's legend, above the plot rather than inside it.

Inside the view it covered the newest samples (bottom right) or the marker labels (along the top).
Here it lives in the plot item's own title row, which the plot does not otherwise use, so it is still
part of the picture Save plot as PNG writes, and it wraps into rows when the plot is narrow.
"""

from __future__ import annotations

import pyqtgraph as pg

SAMPLE_PX = 20  # pyqtgraph's ItemSample is 20x20
GAPS_PX = 8 + 14  # around the sample, then before the next entry
SHORT_NAMES = {  # for a narrow plot
    "allocated (live tensors)": "allocated",
    "reserved (allocated + cache)": "reserved",
    "device used (all processes)": "device used",
    "held unused (reserved − allocated)": "held unused",
    "fragmented (inactive splits)": "fragmented",
}

#: What each line means, in plain words: the tooltip of its legend entry, keyed by the curve's key.
TIPS = {
    "allocated": "Memory held by tensors alive right now: the model's weights, the batch and what the "
    "model computes from it.",
    "reserved": "Everything PyTorch's caching allocator holds on the card: the allocated memory plus a "
    "cache it keeps to reuse instead of asking the driver again.",
    "peak": "The highest the allocated line has been since the run started.",
    "device_used": "Everything in use on the card: this process's reserved memory, its CUDA context, "
    "and other programs (the panel beside the plot lists them).",
    "device_total": "The card's total memory.",
    "held_unused": "Reserved minus allocated: memory PyTorch holds that no tensor uses. The light band "
    "is free cache, which the next tensor can take whole; Clear cache hands it back to the card.",
    "fragmented": "The part of the held memory in inactive splits: free pieces cut from blocks that also "
    "hold live tensors. They count as reserved, but a tensor bigger than a piece cannot use them, so a "
    "run can run out of memory while reserved still looks free. Hover the plot for the segment count.",
}
CPU_TIPS = {
    "allocated": "This process's resident memory (RAM, RSS): running on the CPU, there is no GPU memory.",
    "peak": "The highest this process's RAM has been since the run started.",
}


def explain_entries(legend: pg.LegendItem, tips: dict[str, str]) -> None:
    """Give each legend entry (its sample and its label) the plain-word tooltip of its curve, found by
    the key the plot keeps on the curve (`curve.key`)."""
    for sample, label in legend.items:
        tip = tips.get(getattr(sample.item, "key", ""), "")
        sample.setToolTip(tip)
        label.setToolTip(tip)


def legend_above(plot_item: pg.PlotItem) -> pg.LegendItem:
    legend = pg.LegendItem(labelTextSize="8pt", horSpacing=4, frame=False)
    legend.layout.setContentsMargins(0, 0, 0, 0)
    legend.setParentItem(plot_item)
    legend.anchor(itemPos=(0.5, 0), parentPos=(0.5, 0), offset=(0, 1))
    return legend


def fit_legend(legend: pg.LegendItem, plot_item: pg.PlotItem) -> None:
    """As many columns as fit across the plot, as few rows as that allows, filled evenly (2 + 2, not
    3 + 1); the plot's title row made as tall as the legend. Each entry is named by its curve's name,
    or by its short name when that saves a row (the plot's tooltip says what each line is). The
    legend's size is set here: its own `updateSize` grows it by a few pixels on every call."""
    labels = [label for _, label in legend.items]
    if not labels:
        plot_item.layout.setRowFixedHeight(0, 0)
        return
    names = [sample.item.opts["name"] for sample, _ in legend.items]
    available = plot_item.width() - 4
    rows, columns, widths = _arrange(labels, names, available)
    if rows > 1:
        short = _arrange(labels, [SHORT_NAMES.get(n, n) for n in names], available)
        if short[0] < rows:
            rows, columns, widths = short
        else:
            _arrange(labels, names, available)
    legend.setColumnCount(columns)
    width = sum(max(widths[i::columns]) for i in range(columns))
    height = rows * max([float(SAMPLE_PX)] + [label.preferredHeight() for label in labels])
    legend.size = (width, height)  # fixed: see above
    legend.setGeometry(0, 0, width, height)
    plot_item.layout.setRowFixedHeight(0, height + 2)


def _arrange(labels: list, names: list[str], available: float) -> tuple[int, int, list[float]]:
    """Name the entries; (rows, columns, each entry's width) of the fewest rows that fit."""
    for label, name in zip(labels, names, strict=True):
        if label.text != name:
            label.setText(name)
    widths = [SAMPLE_PX + GAPS_PX + label.preferredWidth() for label in labels]
    n = len(widths)
    fits = next((c for c in range(n, 1, -1) if sum(max(widths[i::c]) for i in range(c)) <= available), 1)
    rows = -(-n // fits)
    return rows, -(-n // rows), widths
