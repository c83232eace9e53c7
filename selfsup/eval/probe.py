"""``selfsup probe``: kNN and linear-probe accuracy of one checkpoint, several, or a run's series.

For each checkpoint the frozen features of the labelled training split and of the held-out split
are extracted once and cached on disk, keyed by the encoder's weights, the pooling and the data; a
second probe of the same checkpoint on the same data reads them back. Scores:

- weighted kNN top-1 (cosine, temperature 0.07) for k = 20 and 200 (``selfsup.eval.knn``);
- linear probe top-1 / top-5 with the recipe of ``selfsup.eval.linear_probe``.

Features are the class token for SimCLR and the mean of the patch tokens for MAE (MAE's features
probe better pooled), unless ``--pool`` says otherwise. Results: a table in the terminal,
``probe.csv`` and ``probe.json`` in the output folder and, for a series of checkpoints,
``probe_accuracy.png`` (accuracy against training epoch).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

from selfsup.augment.normalize import Normalize
from selfsup.contract import load_backbone_weights, load_checkpoint, plain, plain_backbone_state, read_meta
from selfsup.data import ImageDataModule
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear_probe import topk_accuracy, train_linear_probe
from selfsup.export import epochs_trained

DATA_KEYS = ("source", "root", "image_size", "train_subset", "val_subset", "subset_seed")


@dataclass
class ProbeResult:
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
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("knn_top1", "extra")}
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


class FeatureCache:
    """Features on disk as safetensors, one file per (encoder weights, pooling, data)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(encoder_state: dict[str, torch.Tensor], spec: dict, pool: str, data: dict) -> str:
        digest = hashlib.sha256()
        for name in sorted(encoder_state):
            digest.update(name.encode())
            digest.update(
                encoder_state[name]
                .detach()
                .cpu()
                .contiguous()
                .reshape(-1)
                .view(torch.uint8)
                .numpy()
                .tobytes()
            )
        digest.update(json.dumps([spec, pool, data], sort_keys=True, default=str).encode())
        return digest.hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load_file(path)
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None

    def save(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(key).with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, self.path(key))


def _data_description(data: ImageDataModule) -> dict[str, Any]:
    desc = {k: getattr(data, k) for k in DATA_KEYS}
    if desc["root"]:
        desc["root"] = str(Path(desc["root"]).resolve())
    return desc


def probe_checkpoint(
    path: str | os.PathLike,
    data: ImageDataModule,
    cache: FeatureCache,
    pool: str | None = None,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    probe_epochs: int = 100,
    device: str | torch.device = "cpu",
    last_blocks: int = 1,
) -> ProbeResult:
    """Probe the backbone of one checkpoint (pretraining or fine-tune: the contract says which
    network it is). ``last_blocks > 1`` concatenates the class tokens of the last blocks (DINO's
    linear evaluation uses 4)."""
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
    feature_pool = pool if last_blocks == 1 else f"{pool}@last{last_blocks}"
    key = FeatureCache.key(state, plain(spec), feature_pool, _data_description(data))
    cached = cache.load(key)
    if cached is None:
        encoder = load_backbone_weights(spec.build(), state, spec, path)
        encoder.to(device)
        normalize = Normalize(meta.mean, meta.std).to(device)
        splits = {}
        for split, label in (("train", "training"), ("val", "held-out")):
            splits[split] = extract_features(
                encoder,
                data.eval_dataloader(split),
                normalize,
                pool,
                device,
                description=f"{path.name}: {label} features",
                last_blocks=last_blocks,
            )
        cached = {
            "train_x": splits["train"][0],
            "train_y": splits["train"][1],
            "val_x": splits["val"][0],
            "val_y": splits["val"][1],
        }
        cache.save(key, cached)
        from_cache = False
    else:
        from_cache = True
    train_x, train_y, val_x, val_y = (cached[k] for k in ("train_x", "train_y", "val_x", "val_y"))
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
    probe = train_linear_probe(train_x, train_y, num_classes, epochs=probe_epochs, device=device)
    top = topk_accuracy(probe.logits(val_x), val_y, (1, 5))
    return ProbeResult(
        checkpoint=str(path),
        method=meta.method,
        epoch=epochs_trained(checkpoint),
        global_step=int(checkpoint.get("global_step", -1)),
        pool=feature_pool,
        knn_top1=knn,
        linear_top1=top[1],
        linear_top5=top[5],
        num_train=int((train_y >= 0).sum()),
        num_val=int((val_y >= 0).sum()),
        features_from_cache=from_cache,
        seconds=time.perf_counter() - start,
        extra={"features_key": key},
    )


def _dedupe(results: list[ProbeResult]) -> list[ProbeResult]:
    """``last.ckpt`` often repeats another checkpoint: keep one result per encoder (identical weights,
    pooling and data), under the more telling name."""
    seen: dict[str, ProbeResult] = {}
    for r in results:
        key = r.extra["features_key"]
        if key not in seen or Path(seen[key].checkpoint).name == "last.ckpt":
            seen[key] = r
    return sorted(seen.values(), key=lambda r: (str(Path(r.checkpoint).parent), r.global_step, r.epoch))


def write_report(
    results: list[ProbeResult], out_dir: str | os.PathLike, console: Console | None = None
) -> Path:
    """Table on the terminal, probe.csv / probe.json, and a PNG of accuracy against epoch for a series."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ks = sorted({k for r in results for k in r.knn_top1})
    table = Table(title="Frozen-encoder evaluation (held-out split)")
    for col in (
        "checkpoint",
        "method",
        "epoch",
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
            Path(r.checkpoint).name,
            r.method,
            str(r.epoch),
            r.pool,
            *[f"{100 * r.knn_top1[k]:.2f}" for k in ks],
            f"{100 * r.linear_top1:.2f}",
            f"{100 * r.linear_top5:.2f}",
            "cached" if r.features_from_cache else "extracted",
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

        accuracy_curves_png(series, out / "probe_accuracy.png")
    return out


def data_for(checkpoint: dict[str, Any], overrides: dict[str, Any]) -> ImageDataModule:
    """The labelled data to probe on: the checkpoint's training data (as saved by Lightning), with
    ``overrides`` on top; STL-10's unlabelled images are left out; the image size is the encoder's."""
    saved = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    args = {k: v for k, v in saved.items() if k in (*DATA_KEYS, "batch_size", "num_workers", "download")}
    args["image_size"] = read_meta(checkpoint).backbone.img_size
    args.update({k: v for k, v in overrides.items() if v is not None})
    args["stl10_unlabeled"] = False
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
    of several methods (e.g. one run folder each) get one accuracy-against-epoch panel each, side
    by side in ``probe_accuracy.png``."""
    checkpoints = find_checkpoints(paths)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    first = Path(paths[0])
    out_dir = Path(out) if out else (first / "probe" if first.is_dir() else first.parent / "probe")
    cache = FeatureCache(
        cache_dir or Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup")) / "features"
    )
    datamodule = data_for(load_checkpoint(checkpoints[0]), data or {})
    results = [
        probe_checkpoint(p, datamodule, cache, pool, ks, temperature, probe_epochs, device, last_blocks)
        for p in checkpoints
    ]
    results = _dedupe(results)
    write_report(results, out_dir)
    return results
