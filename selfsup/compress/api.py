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

import copy
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
from torch import nn

from selfsup.compress.int8 import INT8_FILE, LOAD_INT8, Int8Mode, load_int8, quantize_int8, save_int8
from selfsup.compress.measure import Row, accuracy, cpu_cores, latency_ms, load_average, size_mb
from selfsup.compress.onnx_export import (
    LOAD_ONNX,
    ONNX_FILE,
    check_parity,
    compare,
    export_onnx,
    quantize_onnx_int8,
    run_onnx,
    session,
)
from selfsup.compress.pruning import (
    PRUNE_MODES,
    PruneMode,
    make_permanent,
    prune_encoder,
    shrink_mlp,
    zero_fraction,
)
from selfsup.compress.recover import distill_recover
from selfsup.compress.table import CSV_FILE, PNG_FILE, render, write_csv, write_png
from selfsup.output_folder import check_target, move_into_place, staging_folder

EXPORT_FILES = ("config.json", "model.safetensors")
METADATA_FILE = "selfsup.json"
REPORT_FILE = "compress.json"
DATA_KEYS = ("source", "root", "batch_size", "num_workers", "train_subset", "val_subset", "subset_seed")
LOAD_PRUNED = """\
import timm
model = timm.create_model("local-dir:{dir}", pretrained=True).eval()
features = model(images)  # [B, 3, H, W] normalised with config.json's mean/std -> [B, D]"""
README_FILE = "README.txt"
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


class NotAnExport(ValueError):
    """The folder given to ``compress`` is not a selfsup / timm export."""


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


@dataclass
class Source:
    path: Path
    model: nn.Module
    config: dict[str, Any]
    metadata: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]


def read_export(export_dir: str | os.PathLike) -> Source:
    """Load an export folder with plain timm; clear errors for a missing path or a folder that is not one."""
    import timm

    path = Path(export_dir)
    hint = "Pass a folder written by `selfsup export CKPT --out DIR` (config.json + model.safetensors)."
    if not path.exists():
        raise FileNotFoundError(f"export folder '{path}' does not exist. {hint}")
    if not path.is_dir():
        what = "a checkpoint: export it first" if path.suffix == ".ckpt" else "a file, not a folder"
        raise NotAnExport(f"'{path}' is {what}. {hint}")
    missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
    if missing:
        raise NotAnExport(f"'{path}' is not an export: it lacks {', '.join(missing)}. {hint}")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise NotAnExport(f"'{path / 'config.json'}' is not valid JSON ({err}). {hint}") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise NotAnExport(f"'{path / 'config.json'}' has no 'architecture': not a timm export. {hint}")
    metadata = {}
    if (path / METADATA_FILE).is_file():
        metadata = json.loads((path / METADATA_FILE).read_text())
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise NotAnExport(f"timm could not load the export '{path}': {err}") from None
    cfg = config.get("pretrained_cfg", {})
    mean = cfg.get("mean") or metadata.get("mean")
    std = cfg.get("std") or metadata.get("std")
    if not mean or not std:
        raise NotAnExport(f"'{path}' records no mean/std (config.json pretrained_cfg): re-export it.")
    input_size = tuple(cfg.get("input_size") or model.pretrained_cfg.get("input_size"))
    return Source(path, model, config, metadata, tuple(mean), tuple(std), input_size)


def load_artefact(folder: str | os.PathLike, threads: int | None = None):
    """A callable ``images [B, C, H, W] float -> features [B, D]`` for an artefact folder written by
    :func:`compress` (or for the original export), loaded the way its ``selfsup.json`` documents."""
    import timm

    folder = Path(folder)
    method = None
    if (folder / METADATA_FILE).is_file():
        method = json.loads((folder / METADATA_FILE).read_text()).get("compression", {}).get("method")
    if method in ("onnx", "onnx_int8"):
        sess = session(folder / ONNX_FILE, threads)
        return lambda x: run_onnx(sess, x)
    if method == "int8":
        return load_int8(folder)
    if not all((folder / f).is_file() for f in EXPORT_FILES):
        raise NotAnExport(f"'{folder}' is neither an export nor an artefact written by selfsup compress.")
    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


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


def _write_readme(folder: Path, title: str, load: str, lines: list[str]) -> None:
    text = "\n".join(
        [title, "", *lines, "", "Load it (paths relative to the compress output folder):", "", load, ""]
    )
    (folder / README_FILE).write_text(text)


def _artefact_metadata(source: Source, record: dict[str, Any], load: str, pool: str) -> dict[str, Any]:
    return {
        "kind": "compressed",
        "source_export": str(source.path.resolve()),
        "architecture": source.config.get("architecture"),
        "pool": pool,
        "mean": list(source.mean),
        "std": list(source.std),
        "input_size": list(source.input_size),
        "compression": record,
        "load": load,
        "source_metadata": source.metadata,
    }


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
            result = _build_and_measure(
                source, staging, progress, normalize, datamodule, pool,
                int8=int8, int8_mode=int8_mode, prune=prune, prune_mode=prune_mode,
                finetune_steps=finetune_steps, finetune_lr=finetune_lr, onnx=onnx,
                onnx_atol=onnx_atol, onnx_rtol=onnx_rtol, knn_k=knn_k, probe_epochs=probe_epochs,
                latency_batches=tuple(latency_batches), latency_repeats=latency_repeats,
                threads=threads, device=device, seed=seed,
            )  # fmt: skip
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


def _build_and_measure(
    source: Source,
    staging: Path,
    progress: Progress,
    normalize: nn.Module,
    datamodule,
    pool: str,
    *,
    int8: bool,
    int8_mode: Int8Mode | None,
    prune: float | None,
    prune_mode: PruneMode | None,
    finetune_steps: int,
    finetune_lr: float,
    onnx: bool,
    onnx_atol: float,
    onnx_rtol: float,
    knn_k: int,
    probe_epochs: int,
    latency_batches: tuple[int, ...],
    latency_repeats: int,
    threads: int,
    device: str,
    seed: int,
) -> tuple[list[Row], dict[str, dict[str, Any]], list[str], float | None]:
    model = source.model
    channels, height, width = source.input_size
    generator = torch.Generator().manual_seed(seed)
    if datamodule is not None:
        sample = normalize(next(iter(datamodule.eval_dataloader("val", batch_size=8)))[0])
    else:
        sample = torch.randn(8, channels, height, width, generator=generator)
    # (name, forward, artefact paths for the size, how to load, notes)
    variants: list[tuple[str, Any, list[Path], str, str]] = [
        ("original", model, [source.path / f for f in EXPORT_FILES], "timm local-dir", "float32, timm")
    ]
    records: dict[str, dict[str, Any]] = {}
    names: list[str] = []

    if int8:
        task = progress.add_task("int8: quantising with torchao", total=1)
        folder = staging / "int8"
        folder.mkdir()
        quantized = quantize_int8(model, int8_mode)
        shutil.copy2(source.path / "config.json", folder / "config.json")
        save_int8(quantized, folder)
        reloaded = load_int8(folder)
        with torch.inference_mode():
            drift = float((reloaded(sample) - model(sample)).abs().max())
        scheme = {
            "dynamic": "Int8DynamicActivationInt8WeightConfig (int8 weights per channel, int8 activations per token)",
            "weight_only": "Int8WeightOnlyConfig (int8 weights per channel, float activations)",
        }[int8_mode]
        load = LOAD_INT8.format(dir=folder.name, file=INT8_FILE)
        record = {
            "method": "int8",
            "mode": int8_mode,
            "tool": f"torchao {version('torchao')} quantize_ with {scheme}",
            "layers": "every nn.Linear (qkv, proj, fc1, fc2); patch embedding, norms and tokens stay float32",
            "max_abs_diff_vs_float32": drift,
            "files": ["config.json", INT8_FILE],
        }
        (folder / METADATA_FILE).write_text(
            json.dumps(_artefact_metadata(source, record, load, pool), indent=2)
        )
        _write_readme(
            folder,
            f"int8 ({int8_mode}) quantisation of {source.path.name} with torchao.",
            load,
            [
                f"Tool: {record['tool']}.",
                f"Largest |int8 - float32| feature difference on a test batch: {drift:.4g}.",
            ],
        )
        records["int8"] = record
        names.append("int8")
        variants.append(
            (
                "int8",
                reloaded,
                [folder / "config.json", folder / INT8_FILE],
                "torch+torchao",
                f"torchao int8 ({int8_mode})",
            )
        )
        progress.advance(task)

    if prune is not None:
        student = copy.deepcopy(model)
        result = prune_encoder(student, prune, prune_mode)
        losses = []
        if finetune_steps:
            task = progress.add_task(f"pruned: recovery fine-tune ({prune_mode})", total=finetune_steps)
            losses = distill_recover(
                student,
                model,
                datamodule.train_dataloader(),
                normalize.to(device),
                finetune_steps,
                lr=finetune_lr,
                device=device,
                on_step=lambda step, loss: progress.advance(task),
            )
            student.cpu()
            normalize.cpu()
            model.cpu()
        make_permanent(student)
        sparsity = zero_fraction(student, result.targets)
        all_params = list(student.parameters())
        model_sparsity = sum(int((p == 0).sum()) for p in all_params) / sum(p.numel() for p in all_params)
        final, mlp_ratio = student.eval(), None
        if prune_mode == "mlp":
            import timm

            def build(ratio: float) -> nn.Module:
                args = dict(source.config.get("model_args", {}), mlp_ratio=ratio)
                args["num_classes"] = source.config.get("num_classes", 0)
                built = timm.create_model(source.config["architecture"], pretrained=False, **args)
                built.pretrained_cfg = dict(model.pretrained_cfg)
                return built

            final, mlp_ratio = shrink_mlp(student, result.per_block, build)
        record = {
            "method": "prune",
            **result.as_dict(),
            "sparsity_of_targets": sparsity,
            "sparsity_of_all_parameters": model_sparsity,
            "parameters": sum(p.numel() for p in final.parameters()),
            "parameters_original": sum(p.numel() for p in model.parameters()),
            "physically_smaller": prune_mode == "mlp",
            "mlp_ratio": mlp_ratio,
            "tool": f"torch.nn.utils.prune (torch {torch.__version__})",
            "finetune": {
                "steps": finetune_steps,
                "lr": finetune_lr,
                "objective": "MSE of output tokens to the unpruned original (masks kept)",
                "loss_first": float(losses[0]) if losses else None,
                "loss_last": float(losses[-1]) if losses else None,
            },
        }
        load = LOAD_PRUNED.format(dir="pruned")
        metadata = dict(
            source.metadata, compression=record, load=load, source_export=str(source.path.resolve())
        )
        from selfsup.export import write_export

        tag = f"{source.config.get('pretrained_cfg', {}).get('tag') or 'selfsup'}_pruned"
        folder = write_export(staging / "pruned", final, tag, source.mean, source.std, metadata)
        kept = (
            "the model is rebuilt with fewer MLP channels (mlp_ratio)"
            if prune_mode == "mlp"
            else "pruned weights are stored as zeros (timm's ViT cannot express fewer heads per block)"
            if prune_mode == "heads"
            else "pruned weights are stored as zeros; dense kernels do not run faster on them"
        )
        _write_readme(
            folder,
            f"{prune_mode} magnitude pruning ({prune}) of {source.path.name}: a plain timm export.",
            load,
            [
                f"Removed {result.removed} of {result.total} {record['unit']}; measured sparsity of the targeted "
                f"weights {sparsity:.4f}, of all parameters {model_sparsity:.4f}.",
                f"Recovery fine-tune: {finetune_steps} steps. {kept}.",
            ],
        )
        import timm

        reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        records["pruned"] = record
        names.append("pruned")
        notes = f"{prune_mode} {prune:.3g}, sparsity {sparsity:.3f}" + (
            f", ft {finetune_steps}" if finetune_steps else ""
        )
        variants.append(("pruned", reloaded, [folder / f for f in EXPORT_FILES], "timm local-dir", notes))

    if onnx:
        task = progress.add_task("onnx: export and parity check", total=2 if int8 else 1)
        folder = staging / "onnx"
        folder.mkdir()
        path = export_onnx(model, folder / ONNX_FILE, sample)
        parity = check_parity(model, path, sample, onnx_atol, onnx_rtol)
        load = LOAD_ONNX.format(dir="onnx", file=ONNX_FILE)
        import onnx as onnx_package

        opset = {op.domain or "ai.onnx": op.version for op in onnx_package.load(str(path)).opset_import}
        record = {
            "method": "onnx",
            "tool": f"torch.onnx.export(dynamo=True) (torch {torch.__version__}), opsets {opset}",
            "inputs": {"images": ["batch", channels, height, width]},
            "outputs": {"features": ["batch", "D"]},
            "parity": {**parity, "runtime": f"onnxruntime {version('onnxruntime')} CPUExecutionProvider"},
        }
        (folder / METADATA_FILE).write_text(
            json.dumps(_artefact_metadata(source, record, load, pool), indent=2)
        )
        _write_readme(
            folder,
            f"ONNX export (float32) of {source.path.name}.",
            load,
            [
                f"onnxruntime matches torch within atol={onnx_atol} + rtol={onnx_rtol}*|x| "
                f"(largest difference {parity['max_abs_diff']:.3g}).",
            ],
        )
        records["onnx"] = record
        names.append("onnx")
        sess = session(path, threads)
        variants.append(
            ("onnx", lambda x, s=sess: run_onnx(s, x), [path], "onnxruntime", "float32, onnxruntime")
        )
        progress.advance(task)
        if int8:
            folder8 = staging / "onnx_int8"
            folder8.mkdir()
            path8 = quantize_onnx_int8(path, folder8 / ONNX_FILE)
            diff = compare(model, path8, sample)
            load8 = LOAD_ONNX.format(dir="onnx_int8", file=ONNX_FILE)
            record8 = {
                "method": "onnx_int8",
                "tool": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {version('onnxruntime')}), "
                "QInt8 weights, activations quantised at run time (MatMulInteger)",
                "vs_float32_torch": diff,
            }
            (folder8 / METADATA_FILE).write_text(
                json.dumps(_artefact_metadata(source, record8, load8, pool), indent=2)
            )
            _write_readme(
                folder8,
                f"ONNX export of {source.path.name}, dynamic int8 quantised by onnxruntime.",
                load8,
                [f"Against float32 torch: largest difference {diff['max_abs_diff']:.3g}, "
                 f"smallest cosine similarity {diff['min_cosine']:.5f}."],
            )  # fmt: skip
            records["onnx_int8"] = record8
            names.append("onnx_int8")
            sess8 = session(path8, threads)
            variants.append(
                ("onnx_int8", lambda x, s=sess8: run_onnx(s, x), [path8], "onnxruntime", "int8, onnxruntime")
            )
            progress.advance(task)

    train_batches = val_batches = None
    num_classes = 0
    if datamodule is not None:
        train_batches = list(datamodule.eval_dataloader("train"))
        val_batches = list(datamodule.eval_dataloader("val"))
        num_classes = datamodule.num_classes
    task = progress.add_task("measuring latency, then accuracy", total=len(variants) + 1)
    examples = {b: torch.randn(b, channels, height, width, generator=generator) for b in latency_batches}
    load = load_average()
    latencies = latency_ms(
        {name: forward for name, forward, *_ in variants}, examples, latency_repeats, threads=threads
    )
    progress.advance(task)
    rows = []
    for name, forward, paths, load_with, notes in variants:
        knn = linear = None
        if train_batches is not None:
            knn, linear = accuracy(
                forward, train_batches, val_batches, normalize, num_classes, knn_k, probe_epochs, seed
            )
        artefact = str(source.path) if name == "original" else paths[-1].parent.name
        rows.append(
            Row(name, artefact, load_with, size_mb(paths), latencies[name], knn, linear, threads, notes)
        )
        progress.advance(task)
    return rows, records, names, load
