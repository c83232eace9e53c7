"""``selfsup probe``: kNN and linear-probe accuracy of one checkpoint, several, or a run's series.

For each checkpoint the frozen features of the labelled training split and of the held-out split
are extracted once and cached on disk, keyed by the encoder's weights, the pooling and the data, and
so are the scores computed from them (keyed by the features and the probe's settings): a second
probe of the same checkpoint on the same data reads them back (``selfsup.eval.probe_cache``).
Checkpoints that hold the same weights (``last.ckpt`` and the ``best-*`` it repeats) share one
computation and one row of the report, which names them all. Scores:

- weighted kNN top-1 (cosine, temperature 0.07) for k = 20 and 200 (``selfsup.eval.knn``);
- linear probe top-1 / top-5 with the recipe of ``selfsup.eval.linear_probe``.

Features are the class token for SimCLR and the mean of the patch tokens for MAE (MAE's features
probe better pooled), unless ``--pool`` says otherwise. Results: a table in the terminal,
``probe.csv`` and ``probe.json`` in the output folder and, for a series of checkpoints,
``probe_accuracy.png`` (accuracy against the epochs completed).
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from selfsup.augment.normalize import Normalize
from selfsup.contract import (
    data_arguments,
    epochs_trained,
    load_checkpoint,
    plain,
    plain_backbone_state,
    read_meta,
)
from selfsup.data import ImageDataModule
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear_probe import topk_accuracy, train_linear_probe
from selfsup.eval.probe_cache import (
    DATA_KEYS,
    ProbeCache,
    data_description,
    default_cache_folder,
    weights_digest,
)
from selfsup.load import load_encoder


@dataclass
class ProbeResult:
    """The scores of one encoder. ``checkpoint`` names it; ``checkpoints`` lists every checkpoint
    probed that holds the same weights (``last.ckpt`` and the ``best-*`` it repeats), all of which
    these scores are for. ``epoch``: epochs completed (:func:`selfsup.contract.epochs_trained`, the
    count in the checkpoint names)."""

    checkpoint: str
    method: str
    epoch: int
    global_step: int
    pool: str
    knn_top1: dict[int, float]
    linear_top1: float
    linear_top5: float
    num_train: int
    num_val: int
    features_from_cache: bool
    seconds: float
    checkpoints: list[str] = field(default_factory=list)
    weights_sha256: str = ""
    scores_from_cache: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("knn_top1", "extra", "checkpoints")}
        row["checkpoints"] = " ".join(self.checkpoints)
        row.update({f"knn{k}_top1": v for k, v in self.knn_top1.items()})
        return row


def find_checkpoints(paths: list[str | os.PathLike]) -> list[Path]:
    """Checkpoint files from files and run folders (``<run>/checkpoints/*.ckpt`` or ``<dir>/*.ckpt``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
            ckpts = sorted(folder.glob("*.ckpt"))
            if not ckpts:
                raise FileNotFoundError(
                    f"no *.ckpt files in '{folder}': pass checkpoint files or a run folder."
                )
            found.extend(ckpts)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"'{p}' is neither a checkpoint file nor a folder.")
    return found


# the linear probe's recipe: the defaults of train_linear_probe (its settings besides the epochs)
LINEAR_PROBE_RECIPE = {
    name: param.default
    for name, param in inspect.signature(train_linear_probe).parameters.items()
    if param.default is not inspect.Parameter.empty and name not in ("epochs", "device", "description")
}


def _probe_settings(ks: tuple[int, ...], temperature: float, probe_epochs: int) -> dict[str, Any]:
    """Everything besides the features that the scores depend on: the kNN's and the linear probe's
    settings, with the linear probe's recipe."""
    return {
        "ks": sorted(ks),
        "temperature": temperature,
        "probe_epochs": probe_epochs,
        "linear_probe": LINEAR_PROBE_RECIPE,
    }


def probe_checkpoint(
    path: str | os.PathLike,
    data: ImageDataModule,
    cache: ProbeCache,
    pool: str | None = None,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    probe_epochs: int = 100,
    device: str | torch.device = "cpu",
    last_blocks: int = 1,
) -> ProbeResult:
    """Probe the backbone of one checkpoint (pretraining or fine-tune: the contract says which
    network it is). ``last_blocks > 1`` concatenates the class tokens of the last blocks (DINO's
    linear evaluation uses 4). Scores already in ``cache`` for the same weights, pooling, data and
    settings are read back; features already there are not extracted again."""
    start = time.perf_counter()
    path = Path(path)
    checkpoint = load_checkpoint(path)
    meta = read_meta(checkpoint, path)
    pool = pool or meta.pool
    spec = meta.backbone
    if data.image_size != spec.img_size:
        raise ValueError(
            f"'{path}' holds an encoder for {spec.img_size}-px images but the data is resized to "
            f"{data.image_size} px: set --data.image_size {spec.img_size}."
        )
    state = plain_backbone_state(checkpoint, meta, path)
    weights = weights_digest(state)
    feature_pool = pool if last_blocks == 1 else f"{pool}@last{last_blocks}"
    encoder_spec = {**plain(spec), "mean": list(meta.mean), "std": list(meta.std)}
    key = ProbeCache.features_key(weights, encoder_spec, feature_pool, data_description(data))
    scores_key = ProbeCache.scores_key(key, _probe_settings(ks, temperature, probe_epochs))
    scores = cache.load_scores(scores_key)
    features_from_cache = scores_from_cache = scores is not None
    if scores is None:
        features = cache.load_features(key)
        features_from_cache = features is not None
        if features is None:
            encoder = load_encoder(checkpoint, path=path)
            encoder.to(device)
            normalize = Normalize(meta.mean, meta.std).to(device)
            features = {}
            for split, label in (("train", "training"), ("val", "held-out")):
                features[f"{split}_x"], features[f"{split}_y"] = extract_features(
                    encoder,
                    data.eval_dataloader(split),
                    normalize,
                    pool,
                    device,
                    description=f"{path.name}: {label} features",
                    last_blocks=last_blocks,
                )
            cache.save_features(key, features)
        scores = _scores(features, ks, temperature, probe_epochs, device, f"{path.name}: linear probe")
        cache.save_scores(scores_key, scores)
    return ProbeResult(
        checkpoint=str(path),
        method=meta.method,
        epoch=epochs_trained(checkpoint),
        global_step=int(checkpoint.get("global_step", -1)),
        pool=feature_pool,
        knn_top1={int(k): v for k, v in scores["knn_top1"].items()},
        linear_top1=scores["linear_top1"],
        linear_top5=scores["linear_top5"],
        num_train=scores["num_train"],
        num_val=scores["num_val"],
        features_from_cache=features_from_cache,
        seconds=time.perf_counter() - start,
        checkpoints=[str(path)],
        weights_sha256=weights,
        scores_from_cache=scores_from_cache,
        extra={"features_key": key},
    )


def _scores(
    features: dict[str, torch.Tensor],
    ks: tuple[int, ...],
    temperature: float,
    probe_epochs: int,
    device: str | torch.device,
    description: str,
) -> dict[str, Any]:
    """kNN and linear-probe scores of ``features`` (``train_x``, ``train_y``, ``val_x``, ``val_y``)."""
    train_x, train_y, val_x, val_y = (features[k] for k in ("train_x", "train_y", "val_x", "val_y"))
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    knn = {
        k: knn_accuracy(
            train_x.to(device),
            train_y.to(device),
            val_x.to(device),
            val_y.to(device),
            k,
            temperature,
            num_classes,
        )
        for k in ks
    }
    linear = train_linear_probe(
        train_x, train_y, num_classes, epochs=probe_epochs, device=device, description=description
    )
    top = topk_accuracy(linear.logits(val_x), val_y, (1, 5))
    return {
        "knn_top1": knn,
        "linear_top1": top[1],
        "linear_top5": top[5],
        "num_train": int((train_y >= 0).sum()),
        "num_val": int((val_y >= 0).sum()),
    }


def _merge_duplicates(results: list[ProbeResult]) -> list[ProbeResult]:
    """One result per encoder (identical weights, pooling and data), under the more telling name
    (not ``last.ckpt``) and listing every checkpoint that holds it."""
    groups: dict[str, list[ProbeResult]] = {}
    for r in results:
        groups.setdefault(r.extra["features_key"], []).append(r)
    merged = []
    for group in groups.values():
        named = [r for r in group if Path(r.checkpoint).name != "last.ckpt"]
        first = (named or group)[0]
        merged.append(
            replace(
                first,
                checkpoints=[r.checkpoint for r in [first, *(r for r in group if r is not first)]],
                features_from_cache=all(r.features_from_cache for r in group),
                scores_from_cache=all(r.scores_from_cache for r in group),
                seconds=sum(r.seconds for r in group),
            )
        )
    return sorted(merged, key=lambda r: (str(Path(r.checkpoint).parent), r.global_step, r.epoch))


def write_report(
    results: list[ProbeResult], out_dir: str | os.PathLike, console: Console | None = None
) -> Path:
    """Table on the terminal, probe.csv / probe.json, and a PNG of accuracy against the epochs
    completed for a series."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ks = sorted({k for r in results for k in r.knn_top1})
    table = Table(title="Frozen-encoder evaluation (held-out split)")
    for col in (
        "checkpoint",
        "method",
        "epochs",
        "pool",
        *[f"kNN k={k}" for k in ks],
        "linear top-1",
        "linear top-5",
        "features",
    ):
        table.add_column(
            col, justify="left" if col in ("checkpoint", "method", "pool", "features") else "right"
        )
    for r in results:
        table.add_row(
            " = ".join(Path(c).name for c in r.checkpoints or [r.checkpoint]),
            r.method,
            str(r.epoch),
            r.pool,
            *[f"{100 * r.knn_top1[k]:.2f}" for k in ks],
            f"{100 * r.linear_top1:.2f}",
            f"{100 * r.linear_top5:.2f}",
            _provenance(r),
        )
    (console or Console(width=shutil.get_terminal_size((150, 24)).columns)).print(table)
    rows = [r.row() for r in results]
    with open(out / "probe.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "probe.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    series: dict[str, Any] = {}
    for method in dict.fromkeys(r.method for r in results):
        mine = sorted((r for r in results if r.method == method), key=lambda r: (r.epoch, r.global_step))
        curves = {f"kNN top-1 (k={k})": [100 * r.knn_top1[k] for r in mine] for k in ks}
        curves["linear probe top-1"] = [100 * r.linear_top1 for r in mine]
        series[f"{method} ({mine[0].pool} features)"] = ([r.epoch for r in mine], curves)
    if any(len(xs) > 1 for xs, _ in series.values()):
        from selfsup.eval.plots import accuracy_curves_png

        accuracy_curves_png(series, out / "probe_accuracy.png", xlabel="epochs completed")
    return out


def _provenance(result: ProbeResult) -> str:
    """Where a result's features and scores came from, for the report's "features" column."""
    if result.scores_from_cache:
        return "cached, scores too"
    return "cached" if result.features_from_cache else "extracted"


def data_for(checkpoint: dict[str, Any], overrides: dict[str, Any]) -> ImageDataModule:
    """The labelled data to probe on: the checkpoint's training data (as saved by Lightning), with
    ``overrides`` on top; STL-10's unlabelled images are left out; the image size is the encoder's.

    A relative data root saved by an older checkpoint is taken from the current folder; when it
    does not exist there, the error says so and asks for ``--data.root``."""
    saved = data_arguments(checkpoint)
    args = {k: v for k, v in saved.items() if k in (*DATA_KEYS, "batch_size", "num_workers", "download")}
    args["image_size"] = read_meta(checkpoint).backbone.img_size
    args.update({k: v for k, v in overrides.items() if v is not None})
    args["stl10_unlabeled"] = False
    root = args.get("root")
    if (
        overrides.get("root") is None
        and root
        and args.get("source", "digits") != "digits"
        and not Path(root).is_absolute()
        and not Path(root).exists()
    ):
        raise FileNotFoundError(
            f"the checkpoint's data root '{root}' is relative and does not exist from the current folder "
            f"'{Path.cwd()}': pass --data.root with the data's folder."
        )
    return ImageDataModule(**args)


def probe(
    paths: list[str | os.PathLike],
    data: dict[str, Any] | None = None,
    pool: str | None = None,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    probe_epochs: int = 100,
    out: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    last_blocks: int = 1,
) -> list[ProbeResult]:
    """Probe every checkpoint in ``paths`` (files or run folders) and write the report. Checkpoints
    of several methods (e.g. one run folder each) get one accuracy-against-epochs panel each, side
    by side in ``probe_accuracy.png``. Checkpoints with the same weights are computed once and
    reported in one result that lists them all (``ProbeResult.checkpoints``)."""
    checkpoints = find_checkpoints(paths)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    first = Path(paths[0])
    out_dir = Path(out) if out else (first / "probe" if first.is_dir() else first.parent / "probe")
    cache = ProbeCache(cache_dir or default_cache_folder())
    datamodule = data_for(load_checkpoint(checkpoints[0]), data or {})
    results = [
        probe_checkpoint(p, datamodule, cache, pool, ks, temperature, probe_epochs, device, last_blocks)
        for p in checkpoints
    ]
    results = _merge_duplicates(results)
    write_report(results, out_dir)
    return results


def probe_scores_for(checkpoint: str | os.PathLike, probe_file: str | os.PathLike) -> dict[str, Any]:
    """The scores that ``probe_file`` (a ``probe.json``) holds for ``checkpoint``: those of the entry
    that names it or, failing that, of the entry whose backbone weights are the checkpoint's (a
    checkpoint probed under another name: ``last.ckpt`` and the ``best-*`` it repeats, a copy).
    ``{}`` when it holds none."""
    checkpoint = Path(checkpoint)
    entries = json.loads(Path(probe_file).read_text())
    target = checkpoint.resolve()
    match = next(
        (
            e
            for e in entries
            if any(Path(name).resolve() == target for name in e.get("checkpoints") or [e["checkpoint"]])
        ),
        None,
    )
    if match is None and any(e.get("weights_sha256") for e in entries):
        loaded = load_checkpoint(checkpoint)
        weights = weights_digest(plain_backbone_state(loaded, read_meta(loaded, checkpoint), checkpoint))
        match = next((e for e in entries if e.get("weights_sha256") == weights), None)
    if match is None:
        return {}
    return {k: match[k] for k in ("knn_top1", "linear_top1", "linear_top5", "pool")}
