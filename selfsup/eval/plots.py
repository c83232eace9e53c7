"""Pictures of evaluation results, as PNG files.

Figures are drawn with matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot`` or
``matplotlib.use``: nothing here changes process-wide state, and nothing is written anywhere but the
path the caller gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def _figure(width: float, height: float, dpi: int = 120):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def confusion_matrix_png(
    matrix: torch.Tensor, classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction) as a PNG."""
    counts = matrix.float().cpu()
    rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(classes)
    fig = _figure(1.0 + 0.45 * n, 0.8 + 0.45 * n)
    ax = fig.add_subplot()
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{100 * rates[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (% of each true class)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def accuracy_curves_png(
    series: dict[str, tuple[Sequence[float], dict[str, Sequence[float]]]],
    path: str | Path,
    title: str = "",
    xlabel: str = "training epoch",
) -> Path:
    """Accuracy against ``x`` for one or several series, side by side (one panel per series).

    ``series``: ``{panel title: (x values, {curve label: accuracies in %})}``."""
    panels = len(series)
    fig = _figure(5.0 * panels, 3.8)
    first = None
    for i, (name, (xs, curves)) in enumerate(series.items()):
        ax = fig.add_subplot(1, panels, i + 1, sharey=first)
        first = first or ax
        for label, ys in curves.items():
            ax.plot(list(xs), list(ys), marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
