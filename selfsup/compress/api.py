"""``compress``: int8, pruned and ONNX versions of an export, and the table that compares them.

``out_dir`` receives one sub-folder per artefact, each with a ``selfsup.json`` (what was done: method,
tool, amount, measured sparsity, tolerance, how to load) and a ``README.txt`` (how to load it):

    int8/        config.json + model_int8.safetensors: torchao int8 linear layers; timm + torch + torchao load it
    pruned/      a plain timm export (config.json + model.safetensors): ``timm.create_model("local-dir:...")``
    onnx/        model.onnx (float32), checked against torch with onnxruntime; onnxruntime loads it
    onnx_int8/   model.onnx quantised by onnxruntime (with both --int8 and --onnx)
    compress.csv, compress.png, compress.json   the table (and, in the JSON, every record)

The original export is measured where it is (not copied). Every artefact is reloaded the documented
way before it is measured, so the table scores what a user gets. The folder is assembled beside
``out_dir`` and renamed into place at the end: an error (or a kill) leaves nothing half-written.
``overwrite`` replaces an earlier compress output only (``COMPRESS_WRITES``): a folder holding
anything else is refused and nothing in it is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selfsup.compress.int8 import INT8_FILE, Int8Mode
from selfsup.compress.measure import Row, accuracy, cpu_cores, latency_ms, load_average, size_mb
from selfsup.compress.onnx_export import ONNX_FILE
from selfsup.compress.pruning import PRUNE_MODES, PruneMode
from selfsup.compress.source import (
    EXPORT_FILES,
    METADATA_FILE,
    NotAnExport,
    load_artefact,
    read_export,
)
from selfsup.compress.table import CSV_FILE, PNG_FILE, render, write_csv, write_png
from selfsup.compress.variant import README_FILE, BuildContext, Variant
from selfsup.compress.variant_int8 import build_int8
from selfsup.compress.variant_onnx import build_onnx
from selfsup.compress.variant_pruned import PruneOptions, build_pruned
from selfsup.output_folder import check_target, move_into_place, staging_folder

__all__ = [
    "COMPRESS_WRITES",
    "CompressReport",
    "NotAnExport",
    "compress",
    "load_artefact",
    "read_export",
]

REPORT_FILE = "compress.json"
DATA_KEYS = ("source", "root", "batch_size", "num_workers", "train_subset", "val_subset", "subset_seed")

ARTEFACTS = ("int8", "pruned", "onnx", "onnx_int8")
# everything compress writes in --out: what --overwrite may replace
COMPRESS_WRITES = (
    REPORT_FILE,
    CSV_FILE,
    PNG_FILE,
    *(
        f"{folder}/{name}"
        for folder in ARTEFACTS
        for name in (*EXPORT_FILES, METADATA_FILE, README_FILE, INT8_FILE, ONNX_FILE)
    ),
)
COMPRESS_WHAT = "a compress output"


@dataclass
class CompressReport:
    """What :func:`compress` wrote: the table's rows, each artefact's folder and record, the files."""

    out_dir: Path
    rows: list[Row]
    artefacts: dict[str, Path]
    records: dict[str, dict[str, Any]]
    csv: Path
    png: Path
    threads: int


def _check_arguments(
    int8: bool,
    int8_mode: Int8Mode | None,
    prune: float | None,
    prune_mode: PruneMode | None,
    finetune_steps: int,
    onnx: bool,
    data: dict | None,
) -> None:
    if int8_mode is not None and not int8:
        raise ValueError(f"--int8_mode {int8_mode} needs --int8.")
    if int8_mode not in (None, "dynamic", "weight_only"):
        raise ValueError(f"int8_mode must be 'dynamic' or 'weight_only', got {int8_mode!r}.")
    if prune_mode is not None and prune is None:
        raise ValueError(f"--prune_mode {prune_mode} needs --prune AMOUNT (a fraction in (0, 1), e.g. 0.5).")
    if prune_mode not in (None, *PRUNE_MODES):
        raise ValueError(f"prune_mode must be one of {', '.join(PRUNE_MODES)}, got {prune_mode!r}.")
    if not (int8 or prune is not None or onnx):
        raise ValueError("nothing to do: ask for at least one of --int8, --prune AMOUNT, --onnx.")
    if prune is not None and not 0.0 < prune < 1.0:
        raise ValueError(f"--prune must be a fraction in (0, 1), got {prune}: e.g. --prune 0.5 removes half.")
    if finetune_steps < 0:
        raise ValueError(f"--finetune_steps must be >= 0, got {finetune_steps}.")
    if finetune_steps and prune is None:
        raise ValueError("--finetune_steps recovers a pruned model: it needs --prune AMOUNT.")
    if finetune_steps and not data:
        raise ValueError(
            "--finetune_steps needs images to fine-tune on: set --data.source (and --data.root)."
        )
    if data:
        unknown = sorted(set(data) - set(DATA_KEYS))
        if unknown:
            raise ValueError(f"unknown data option(s) {unknown}; the options are {', '.join(DATA_KEYS)}.")
        if not data.get("source"):
            raise ValueError("data needs a source (e.g. --data.source digits, or folder with --data.root).")


def compress(
    export_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    int8: bool = False,
    int8_mode: Int8Mode | None = None,
    prune: float | None = None,
    prune_mode: PruneMode | None = None,
    finetune_steps: int = 0,
    finetune_lr: float = 1e-4,
    onnx: bool = False,
    onnx_atol: float = 1e-4,
    onnx_rtol: float = 1e-3,
    data: dict[str, Any] | None = None,
    knn_k: int = 20,
    probe_epochs: int = 100,
    latency_batches: tuple[int, ...] = (1, 32),
    latency_repeats: int = 20,
    threads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    overwrite: bool = False,
    console: Console | None = None,
) -> CompressReport:
    """Compress the encoder of an export folder and tabulate every variant (see the module docstring).

    Args:
        export_dir: a folder written by ``selfsup export`` (or any timm ``save_for_hf`` folder).
        out_dir: the folder to write (must not exist unless ``overwrite``).
        int8: write ``int8/`` (torchao int8 linear layers; see ``selfsup.compress.int8``) and, with
            ``onnx``, ``onnx_int8/`` (onnxruntime's dynamic int8).
        int8_mode: ``weight_only`` (int8 weights; the default: as fast as float32 on a CPU) or ``dynamic``
            (int8 weights and activations: fast only where int8 kernels run, ~10x slower on a CPU).
        prune: fraction in (0, 1) to prune; writes ``pruned/``.
        prune_mode: ``unstructured`` (default), ``heads`` or ``mlp`` (see ``selfsup.compress.pruning``).
        finetune_steps: recovery steps of feature distillation to the original (needs ``data``).
        finetune_lr: its AdamW learning rate.
        onnx: write ``onnx/`` (float32 ONNX) after an onnxruntime parity check to ``onnx_atol`` and
            ``onnx_rtol``.
        data: ``{"source": "digits" | "folder" | "cifar10" | ..., "root", "batch_size", "num_workers",
            "train_subset", "val_subset", "subset_seed"}`` (``selfsup.ImageDataModule`` arguments; the
            image size is the export's). Without it, the table has no accuracy columns.
        knn_k: neighbours of the kNN score; probe_epochs: epochs of the linear probe.
        latency_batches, latency_repeats: batch sizes timed (median of repeats, per image) on the CPU.
        threads: torch and onnxruntime intra-op threads for the timings (default: the physical cores
            this process may run on, ``measure.cpu_cores``); torch's own setting is put back after.
        device: where the recovery fine-tune and feature extraction for it run.
        overwrite: replace an earlier compress output in ``out_dir`` (a folder holding anything
            else is refused, nothing deleted).
    """
    console = console or Console()
    int8_mode = int8_mode if int8_mode is not None or not int8 else "weight_only"
    prune_mode = prune_mode if prune_mode is not None or prune is None else "unstructured"
    _check_arguments(int8, int8_mode, prune, prune_mode, finetune_steps, onnx, data)
    if not latency_batches or any(b < 1 for b in latency_batches):
        raise ValueError(f"latency_batches must be positive batch sizes, got {latency_batches}.")
    if latency_repeats < 1:
        raise ValueError(f"latency_repeats must be >= 1, got {latency_repeats}.")
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite, COMPRESS_WRITES, COMPRESS_WHAT)
    source = read_export(export_dir)
    if out_dir.resolve() == source.path.resolve() or source.path.resolve() in out_dir.resolve().parents:
        raise ValueError(f"--out '{out_dir}' is the export folder or inside it: choose a folder beside it.")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    cores = cpu_cores()
    threads = threads or cores

    from selfsup.augment.normalize import Normalize  # selfsup.augment imports Kornia: not at import time

    torch.manual_seed(seed)
    normalize = Normalize(source.mean, source.std)
    datamodule = None
    if data:
        from selfsup.data import ImageDataModule

        options = {k: v for k, v in data.items() if v is not None}
        options.setdefault("num_workers", 0)
        datamodule = ImageDataModule(image_size=source.input_size[-1], **options)
        datamodule.setup()
    pool = getattr(source.model, "global_pool", "") or ""

    staging = staging_folder(out_dir)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            generator = torch.Generator().manual_seed(seed)
            if datamodule is not None:
                sample = normalize(next(iter(datamodule.eval_dataloader("val", batch_size=8)))[0])
            else:
                sample = torch.randn(8, *source.input_size, generator=generator)
            context = BuildContext(
                source, staging, progress, normalize, datamodule, pool, sample, generator, threads, device
            )
            result = _build_and_measure(
                context,
                int8_mode if int8 else None,
                PruneOptions(prune, prune_mode, finetune_steps, finetune_lr) if prune is not None else None,
                (onnx_atol, onnx_rtol) if onnx else None,
                MeasureOptions(knn_k, probe_epochs, tuple(latency_batches), latency_repeats, seed),
            )
        rows, records, names, load = result
        title = f"compress {source.path.name}: {source.config.get('architecture')} {source.input_size[1:]} px"
        write_csv(rows, staging / CSV_FILE)
        write_png(rows, staging / PNG_FILE, title)
        report = {
            "source_export": str(source.path.resolve()),
            "torch_threads": threads,
            "cpu_cores": cores,
            "load_average_1min": load,
            "data": data or None,
            "rows": [row.as_dict() for row in rows],
            "artefacts": records,
            "versions": {
                p: version(p) for p in ("torch", "timm", "torchao", "onnx", "onnxruntime") if _has(p)
            },
        }
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
        move_into_place(staging, out_dir, overwrite, COMPRESS_WRITES, COMPRESS_WHAT)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    busy = f"load average {load:g} on {cores} cores" if load is not None else f"{cores} cores"
    render(rows, title, console, note=busy)
    console.print(f"wrote {out_dir}: {', '.join(names)}, {CSV_FILE}, {PNG_FILE}")
    if load is not None and load > cores:
        console.print(
            f"[yellow]note: the machine was busy when timing ({busy}): threads waited for cores, so the "
            "latencies are slower than on an idle machine. Time again when it is idle, or with fewer "
            "--threads.[/yellow]"
        )
    return CompressReport(
        out_dir=out_dir,
        rows=rows,
        artefacts={name: out_dir / name for name in names},
        records=records,
        csv=out_dir / CSV_FILE,
        png=out_dir / PNG_FILE,
        threads=threads,
    )


def _has(package: str) -> bool:
    try:
        version(package)
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class MeasureOptions:
    """How the table scores each variant: kNN neighbours, probe epochs, timed batch sizes and repeats."""

    knn_k: int
    probe_epochs: int
    latency_batches: tuple[int, ...]
    latency_repeats: int
    seed: int


def _build_and_measure(
    context: BuildContext,
    int8_mode: Int8Mode | None,
    prune: PruneOptions | None,
    onnx_tolerance: tuple[float, float] | None,
    measure: MeasureOptions,
) -> tuple[list[Row], dict[str, dict[str, Any]], list[str], float | None]:
    """Build the variants asked for (``int8_mode`` set: int8; ``prune``; ``onnx_tolerance`` set: ONNX
    checked to that atol, rtol)
    in ``context.staging``, then time and score them with the original."""
    source = context.source
    original = Variant(
        "original", source.model, [source.path / f for f in EXPORT_FILES], "timm local-dir", "float32, timm"
    )
    built: list[Variant] = []
    if int8_mode is not None:
        built.append(build_int8(context, int8_mode))
    if prune is not None:
        built.append(build_pruned(context, prune))
    if onnx_tolerance is not None:
        built.extend(build_onnx(context, *onnx_tolerance, int8=int8_mode is not None))
    records = {variant.name: variant.record for variant in built}
    rows, load = _measure(context, [original, *built], measure)
    return rows, records, [variant.name for variant in built], load


def _measure(
    context: BuildContext, variants: list[Variant], options: MeasureOptions
) -> tuple[list[Row], float | None]:
    """Time every variant on random batches, then (with data) score it with kNN and a linear probe."""
    channels, height, width = context.source.input_size
    datamodule, normalize, threads = context.datamodule, context.normalize, context.threads
    train_batches = val_batches = None
    num_classes = 0
    if datamodule is not None:
        train_batches = list(datamodule.eval_dataloader("train"))
        val_batches = list(datamodule.eval_dataloader("val"))
        num_classes = datamodule.num_classes
    task = context.progress.add_task("measuring latency, then accuracy", total=len(variants) + 1)
    examples = {
        b: torch.randn(b, channels, height, width, generator=context.generator)
        for b in options.latency_batches
    }
    load = load_average()
    latencies = latency_ms(
        {variant.name: variant.forward for variant in variants},
        examples,
        options.latency_repeats,
        threads=threads,
    )
    context.progress.advance(task)
    rows = []
    for name, forward, paths, load_with, notes, _ in variants:
        knn = linear = None
        if train_batches is not None:
            knn, linear = accuracy(
                forward,
                train_batches,
                val_batches,
                normalize,
                num_classes,
                options.knn_k,
                options.probe_epochs,
                options.seed,
            )
        artefact = str(context.source.path) if name == "original" else paths[-1].parent.name
        rows.append(
            Row(name, artefact, load_with, size_mb(paths), latencies[name], knn, linear, threads, notes)
        )
        context.progress.advance(task)
    return rows, load
