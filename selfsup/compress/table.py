"""The compression table: printed with rich, written as ``compress.csv`` and ``compress.png``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from selfsup.compress.measure import Row

CSV_FILE, PNG_FILE = "compress.csv", "compress.png"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def render(rows: Sequence[Row], title: str, console: Console | None = None, note: str = "") -> Table:
    """Print the table (and return it); ``note`` (e.g. the machine's load) goes in the caption after
    the thread count."""
    batches = list(rows[0].latency_ms) if rows else []
    caption = (
        f"CPU, {rows[0].threads} torch/onnxruntime threads" + (f", {note}" if note else "") if rows else None
    )
    table = Table(title=title, caption=caption)
    table.add_column("variant", no_wrap=True)
    table.add_column("MB", justify="right", no_wrap=True)
    for b in batches:
        table.add_column(f"ms/img\nbatch {b}", justify="right", no_wrap=True)
    table.add_column("kNN@20\ntop-1 %", justify="right", no_wrap=True)
    table.add_column("linear\ntop-1 %", justify="right", no_wrap=True)
    table.add_column("notes (how to load: README.txt of each folder)", min_width=16)
    for row in rows:
        table.add_row(
            row.variant,
            f"{row.size_mb:.2f}",
            *(f"{row.latency_ms[b]:.3f}" for b in batches),
            _pct(row.knn_top1),
            _pct(row.linear_top1),
            row.notes,
        )
    (console or Console()).print(table)
    return table


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    dicts = [row.as_dict() for row in rows]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dicts[0]))
        writer.writeheader()
        writer.writerows(dicts)
    return path


def write_png(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Three bar panels, one bar group per variant: size on disk, CPU latency per image (one bar per
    batch size) and top-1 accuracy (kNN and linear probe; left out without a data set).
    ``matplotlib.figure.Figure`` + Agg canvas: no pyplot, no global backend."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [r.variant for r in rows]
    y = np.arange(len(rows))
    with_accuracy = all(r.knn_top1 is not None for r in rows)
    panels = 3 if with_accuracy else 2
    fig = Figure(figsize=(4.2 * panels, 0.5 * len(rows) + 1.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, sharey=True)

    def bars(ax, series: dict[str, list[float]], xlabel: str, fmt: str) -> None:
        height = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * height
            drawn = ax.barh(y + offset, values, height=height, label=label)
            ax.bar_label(drawn, labels=[fmt.format(v) for v in values], fontsize=7, padding=2)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="lower right")

    bars(axes[0], {"MB": [r.size_mb for r in rows]}, "size on disk (MB)", "{:.2f}")
    batches = list(rows[0].latency_ms)
    bars(
        axes[1],
        {f"batch {b}": [r.latency_ms[b] for r in rows] for b in batches},
        f"CPU latency (ms per image, {rows[0].threads} threads)",
        "{:.2f}",
    )
    if with_accuracy:
        bars(
            axes[2],
            {"kNN@20": [100 * r.knn_top1 for r in rows], "linear": [100 * r.linear_top1 for r in rows]},
            "top-1 accuracy (%)",
            "{:.1f}",
        )
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path
