"""``selfsup probe --embedding_plot``: a 2-D map of each encoder's held-out features, coloured by class.

The map is UMAP (umap-learn) when it is importable and scikit-learn's t-SNE otherwise, on the
L2-normalised features (the kNN probe's cosine geometry), with a fixed seed: the same features give
the same picture. Large splits are first reduced to a deterministic random subset of
``max_points`` (the title says so). The features are the probe's own, read back from its cache
(``selfsup.eval.probe_cache``) by the ``features_key`` each ``ProbeResult`` carries.

A collapsed encoder is reported, not drawn: when the features sit at one place (their spread is a
negligible fraction of their size) or on one line (rank 1), a 2-D map would only spread numerical
noise over the page. The terminal says so, and the PNG holds the note instead of a scatter (for
rank 1, the one coordinate there is, by class).

UMAP's settings follow umap-learn's API guide (https://umap-learn.readthedocs.io/en/latest/api.html):
``UMAP(n_neighbors, n_components, metric, min_dist, random_state, n_jobs).fit_transform(X)``; a
``random_state`` makes it reproducible and single-threaded, so ``n_jobs=1`` is passed to say so
(umap-learn otherwise warns that it overrides it, lmcinnes/umap#298). t-SNE is
``sklearn.manifold.TSNE`` with PCA initialisation and the automatic learning rate.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from selfsup.eval.plots import _figure, save_figure
from selfsup.eval.progress import progress

if TYPE_CHECKING:
    from selfsup.eval.probe import ProbeResult

SEED = 0
MAX_POINTS = 3000
FIGSIZE = (6.4, 6.0)  # inches, at DPI: 768 x 720 pixels
DPI = 120
# collapse: the features' spread below this fraction of their size, or the second principal
# direction below this fraction of the first
COLLAPSE_TOLERANCE = 1e-3


@dataclass
class EmbeddingMap:
    """One map: the PNG, the method (``"UMAP"``, ``"t-SNE"``, or ``None`` when nothing was mapped),
    the points drawn out of ``total``, the 2-D coordinates (``None`` for a collapse to one place)
    and, for a collapsed encoder, the note that says so."""

    path: Path
    method: str | None
    num_points: int
    total: int
    coords: np.ndarray | None
    collapsed: str | None = None


def subsample(
    features: torch.Tensor, labels: torch.Tensor, max_points: int, seed: int = SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``max_points`` rows, the same ones for the same size and seed (in their order)."""
    n = len(features)
    if n <= max_points:
        return features, labels
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
    return features[keep], labels[keep]


def collapse_note(features: torch.Tensor) -> tuple[str, int] | None:
    """``(note, rank)`` when the features have collapsed: to one place (rank 0: their spread, the
    root of the total variance, is under ``COLLAPSE_TOLERANCE`` of their root-mean-square norm) or
    onto one line (rank 1: the second singular value of the centred features is under
    ``COLLAPSE_TOLERANCE`` of the first); ``None`` otherwise."""
    x = features.double()
    n = len(x)
    centred = x - x.mean(0)
    spread = centred.square().sum(1).mean().sqrt().item()
    size = x.square().sum(1).mean().sqrt().item()
    if spread <= COLLAPSE_TOLERANCE * size or spread == 0:
        return (
            f"features collapsed: all {n:,} points at one place; std {spread:.2g} (feature norm {size:.2g})",
            0,
        )
    singular = torch.linalg.svdvals(centred)
    if len(singular) < 2 or singular[1] <= COLLAPSE_TOLERANCE * singular[0]:
        second = singular[1].item() / singular[0].item() if len(singular) > 1 else 0.0
        return (
            f"features collapsed onto one line (rank 1): second direction {second:.2g} of the first; "
            f"std {spread:.2g}",
            1,
        )
    return None


def map_method() -> tuple[str, Callable[[np.ndarray, int], np.ndarray]]:
    """``("UMAP", fit)`` when umap-learn imports, else ``("t-SNE", fit)``; ``fit(x, seed)`` -> ``[N, 2]``."""
    try:
        umap = importlib.import_module("umap")
    except ImportError:
        return "t-SNE", _tsne

    def fit(x: np.ndarray, seed: int) -> np.ndarray:
        reducer = umap.UMAP(
            n_neighbors=max(2, min(15, len(x) - 1)),
            n_components=2,
            metric="euclidean",
            min_dist=0.1,
            random_state=seed,
            n_jobs=1,
        )
        return np.asarray(reducer.fit_transform(x))

    return "UMAP", fit


@contextmanager
def _torch_threads_idle() -> Iterator[None]:
    """torch on one thread while the block runs. After torch has run on several threads (the
    features), its OpenMP workers compete with scikit-learn's own OpenMP runtime: t-SNE of 60
    points took 4-12 s of CPU instead of 0.2 s (2 cores, torch on 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(x) - 1) / 3)  # it must stay below the number of points
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x)


def embedding_png(
    features: torch.Tensor,
    labels: torch.Tensor,
    path: str | os.PathLike,
    name: str = "",
    max_points: int = MAX_POINTS,
    seed: int = SEED,
    console: Console | None = None,
) -> EmbeddingMap:
    """Draw the 2-D map of ``features`` ``[N, D]`` coloured by ``labels`` ``[N]`` (``-1``: no label,
    grey) to ``path`` (``FIGSIZE`` at ``DPI``). ``name`` (the checkpoint) heads the title and the
    progress line; a collapse is printed to ``console`` and noted in the picture instead of a map."""
    console = console or Console()
    total = len(features)
    x, y = subsample(features.float().cpu(), labels.long().cpu(), max_points, seed)
    n = len(x)
    subset = f" (random {n:,} of {total:,}, seed {seed})" if n < total else ""
    collapsed = collapse_note(x) if n > 1 else None
    fig = _figure(*FIGSIZE, dpi=DPI)
    rank_one = collapsed is not None and collapsed[1] == 1
    ax = fig.add_axes((0.06, 0.16, 0.74, 0.72) if rank_one else (0.04, 0.04, 0.76, 0.84))
    coords = method = None
    if collapsed:
        note, rank = collapsed
        console.print(
            f"[bold red]{escape(name)}: {note}[/]: the encoder has collapsed; {escape(Path(path).name)} notes it "
            "instead of a map.",
            highlight=False,
            soft_wrap=True,
        )
        box = {"facecolor": "white", "edgecolor": "red"}
        if rank == 1:  # the one coordinate there is, by class; the note below
            centred = x.double() - x.double().mean(0)
            direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            coords = torch.stack([centred @ direction, y.double()], 1).numpy()
            _scatter(ax, coords, y.numpy())
            ax.set_xlabel("the one direction of the features", fontsize=8)
            ax.set_ylabel("class", fontsize=8)
            fig.text(0.43, 0.03, note.replace("; ", "\n"), ha="center", va="bottom", fontsize=8, bbox=box)
        else:
            ax.text(
                0.5,
                0.5,
                note.replace("; ", "\n"),
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=9,
                bbox=box,
            )
        shown = "shown along their one direction" if rank == 1 else "not mapped"
        title = f"{name}\n{n:,} held-out features{subset}: collapsed, {shown}"
    elif n < 4:
        ax.text(0.5, 0.5, f"{n} points: too few to map", transform=ax.transAxes, ha="center")
        title = f"{name}\n{n} held-out features"
    else:
        method, fit = map_method()
        unit_norm = torch.nn.functional.normalize(x.double(), dim=1).numpy()
        with progress(f"{name}: {method} map of the held-out features", n, "points", console) as advance:
            with _torch_threads_idle():
                coords = np.asarray(fit(unit_norm, seed), dtype=np.float64)
            advance(n)
        _scatter(ax, coords, y.numpy())
        title = f"{name}\n{method} of {n:,} held-out features{subset}"
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    return EmbeddingMap(Path(path), method, n, total, coords, collapsed[0] if collapsed else None)


def _scatter(ax: Any, coords: np.ndarray, labels: np.ndarray) -> None:
    """Points coloured by class (a legend up to 20 classes, a colour bar beyond), unlabelled grey."""
    classes = np.unique(labels[labels >= 0])
    size = 4 if len(coords) > 1000 else 10
    unlabelled = labels < 0
    if unlabelled.any():
        ax.scatter(*coords[unlabelled].T, s=size, c="lightgrey", linewidths=0, label="no label")
    if len(classes) <= 20:
        cmap = _colormap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            ax.scatter(*coords[labels == c].T, s=size, color=cmap(i), linewidths=0, label=str(c))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=2, frameon=False)
    else:
        labelled = ~unlabelled
        points = ax.scatter(*coords[labelled].T, s=size, c=labels[labelled], cmap="turbo", linewidths=0)
        ax.figure.colorbar(points, ax=ax, label="class")


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def report_folder(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None) -> Path:
    """The folder ``selfsup probe`` writes its report to (``probe.json``): ``out``, else ``probe/``
    in the first run folder, or beside the first checkpoint file."""
    first = Path(paths[0])
    return Path(out) if out else (first / "probe" if first.is_dir() else first.parent / "probe")


def embedding_plots(
    results: Sequence[ProbeResult],
    out_dir: str | os.PathLike,
    cache_folder: str | os.PathLike,
    max_points: int = MAX_POINTS,
    seed: int = SEED,
    console: Console | None = None,
) -> list[EmbeddingMap]:
    """One map per probed encoder, ``embedding_<checkpoint>.png`` in ``out_dir`` (checkpoints that
    share weights share one), from the held-out features cached under ``features_key``. An encoder
    whose features are not in the cache (it could not be written) is skipped with a message."""
    from selfsup.eval.probe_cache import ProbeCache

    console = console or Console()
    cache = ProbeCache(cache_folder)
    stems = [Path(r.checkpoint).stem for r in results]
    maps = []
    for result, stem in zip(results, stems, strict=True):
        checkpoint = Path(result.checkpoint)
        if stems.count(stem) > 1:  # the same file name in several runs: add the run's folder
            run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
            stem = f"{run.name}_{stem}"
        features = cache.load_features(result.extra["features_key"])
        if features is None:
            console.print(
                f"{checkpoint.name}: no embedding map: its features are not in the cache '{cache.folder}' "
                "(it could not be written); set --cache_dir to a writable folder.",
                highlight=False,
                soft_wrap=True,
            )
            continue
        name = " = ".join(Path(c).name for c in result.checkpoints or [result.checkpoint])
        maps.append(
            embedding_png(
                features["val_x"],
                features["val_y"],
                Path(out_dir) / f"embedding_{stem}.png",
                name,
                max_points,
                seed,
                console,
            )
        )
    if maps:
        console.print(
            f"embedding maps: {', '.join(str(m.path) for m in maps)}", highlight=False, soft_wrap=True
        )
    return maps
