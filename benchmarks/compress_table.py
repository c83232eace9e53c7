"""The compression table for a pretrained ViT-Tiny: size on disk, CPU latency per image (batch 1 and
32) and kNN@20 / linear-probe top-1 on the held-out digits, for the original and every variant that
``selfsup compress`` writes, all measured in one process.

1. Pretrain a ViT-Tiny briefly with SimCLR on scikit-learn's digits (the quickstart recipe of
   ``configs/quickstart.yaml``: 16 px, 4-px patches, ``--depth`` blocks, ``--epochs`` epochs) and
   export it; or pass ``--export DIR`` to use an existing export.
2. ``compress`` it four times, on the same data and thread count:
   - int8 (torchao weight-only) + 50% unstructured pruning with a recovery fine-tune + ONNX (+ ONNX
     int8, onnxruntime's dynamic quantisation);
   - int8 (torchao dynamic); 50% unstructured pruning without fine-tune;
   - one third of the attention heads, with the fine-tune;
   - half of the MLP channels (a physically smaller model), with the fine-tune.
3. Print every table, then one combined table (the original once) whose latencies are re-measured
   for every artefact together, interleaved (each round times each artefact once), and write it as
   ``compress_table.csv`` in ``--out``.
4. With ``--int8_backends``: the int8 tools side by side on the same encoder, latency only
   (interleaved): float32 torch, torchao weight-only and dynamic, the deprecated
   ``torch.ao.quantization.quantize_dynamic`` (reference), onnxruntime float32 and int8. This is the
   measurement behind the choice documented in ``selfsup/compress/int8.py``.

    python benchmarks/compress_table.py --out /tmp/compress_bench --int8_backends   # ~8 min on 2 cores
    python benchmarks/compress_table.py --export runs/export --out /tmp/cb          # an existing export
"""

from __future__ import annotations

import argparse
import copy
import csv
import tempfile
import warnings
from pathlib import Path


def pretrain(work: Path, depth: int, epochs: int) -> Path:
    import lightning as L

    from selfsup import ImageDataModule, SimCLR
    from selfsup.augment import SimCLRViewConfig
    from selfsup.export import export
    from selfsup.optim import OptimConfig

    L.seed_everything(0)
    data = ImageDataModule("digits", image_size=16, batch_size=128, num_workers=0)
    model = SimCLR(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        encoder_kwargs={"depth": depth},
        projection_hidden_dim=512,
        projection_dim=128,
        temperature=0.2,
        augment=SimCLRViewConfig(
            crop_scale=(0.3, 1.0), hflip_prob=0.0, jitter_strength=0.5, grayscale_prob=0.0, blur_prob=0.0
        ),
        optim=OptimConfig(base_lr=1e-3, weight_decay=0.05, warmup_epochs=3),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    trainer.save_checkpoint(work / "pretrained.ckpt")
    return export(work / "pretrained.ckpt", work / "export", overwrite=True)


def int8_backends(export_dir: Path, work: Path, threads: int | None, repeats: int) -> None:
    """Latency of the int8 tools on one encoder, interleaved, batch 1 and 32."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from selfsup.compress.int8 import quantize_int8
    from selfsup.compress.measure import latency_ms
    from selfsup.compress.onnx_export import export_onnx, quantize_onnx_int8, run_onnx, session

    if threads:
        torch.set_num_threads(threads)
    model = load_float(export_dir)
    size = model.pretrained_cfg["input_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        legacy = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    onnx_path = export_onnx(model, work / "backends.onnx", torch.randn(2, *size))
    onnx8_path = quantize_onnx_int8(onnx_path, work / "backends_int8.onnx")
    sessions = {
        "onnxruntime float32": session(onnx_path, threads),
        "onnxruntime int8": session(onnx8_path, threads),
    }
    forwards = {
        "torch float32": model,
        "torchao int8 weight-only": quantize_int8(model, "weight_only"),
        "torchao int8 dynamic": quantize_int8(model, "dynamic"),
        "torch.ao quantize_dynamic (deprecated)": legacy,
        **{name: (lambda x, s=sess: run_onnx(s, x)) for name, sess in sessions.items()},
    }
    examples = {b: torch.randn(b, *size) for b in (1, 32)}
    ms = latency_ms(forwards, examples, repeats)
    table = Table(
        title=f"int8 tools, latency (ms per image, median of {repeats}, {torch.get_num_threads()} threads)"
    )
    for column in ("tool", "batch 1", "batch 32", "batch 32 vs float32"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    base = ms["torch float32"][32]
    for name, by_batch in ms.items():
        table.add_row(name, f"{by_batch[1]:.3f}", f"{by_batch[32]:.3f}", f"{by_batch[32] / base:.2f}x")
    Console().print(table)


def load_float(export_dir: Path):
    import timm

    return timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the compressed artefacts and the table")
    parser.add_argument("--export", default=None, help="an existing export (skips pretraining)")
    parser.add_argument("--depth", type=int, default=4, help="ViT-Tiny blocks for the pretraining")
    parser.add_argument("--epochs", type=int, default=20, help="SimCLR epochs on the digits")
    parser.add_argument("--finetune_steps", type=int, default=100, help="recovery steps after pruning")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats (median)")
    parser.add_argument("--int8_backends", action="store_true", help="also compare the int8 tools' latency")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from selfsup.compress import compress, load_artefact
    from selfsup.compress.measure import latency_ms

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out))
    export_dir = Path(args.export) if args.export else pretrain(work, args.depth, args.epochs)
    common = dict(
        data={"source": "digits", "batch_size": 256},
        latency_batches=(1, 32),
        latency_repeats=args.repeats,
        threads=args.threads,
        overwrite=True,
    )
    ft = args.finetune_steps
    runs = {
        "main": dict(int8=True, prune=0.5, prune_mode="unstructured", finetune_steps=ft, onnx=True),
        "alt": dict(int8=True, int8_mode="dynamic", prune=0.5, prune_mode="unstructured"),
        "heads": dict(prune=1 / 3, prune_mode="heads", finetune_steps=ft),
        "mlp": dict(prune=0.5, prune_mode="mlp", finetune_steps=ft),
    }
    combined = []  # (label, row, folder)
    for name, options in runs.items():
        report = compress(export_dir, out / name, **common, **options)
        for row in report.rows:
            if row.variant == "original" and combined:
                continue
            label = row.variant if name == "main" or row.variant == "original" else f"{row.variant} ({name})"
            folder = export_dir if row.variant == "original" else report.artefacts[row.variant]
            combined.append((label, row, folder))

    # every artefact's latency again, in one interleaved measurement (the per-run tables above were
    # measured at different times)
    threads = combined[0][1].threads
    torch.set_num_threads(threads)
    forwards = {label: load_artefact(folder, threads) for label, _, folder in combined}
    first = load_float(export_dir)
    examples = {b: torch.randn(b, *first.pretrained_cfg["input_size"]) for b in (1, 32)}
    latencies = latency_ms(forwards, examples, args.repeats)

    table = Table(title=f"compression of {export_dir} (CPU, {threads} threads; latency: median ms per image)")
    for column in ("variant", "MB", "ms b1", "ms b32", "kNN@20 %", "linear %", "notes"):
        table.add_column(column, justify="left" if column in ("variant", "notes") else "right")
    for label, row, _ in combined:
        row.latency_ms = latencies[label]
        table.add_row(
            label,
            f"{row.size_mb:.2f}",
            f"{row.latency_ms[1]:.3f}",
            f"{row.latency_ms[32]:.3f}",
            f"{100 * row.knn_top1:.1f}",
            f"{100 * row.linear_top1:.1f}",
            row.notes,
        )
    Console(width=140).print(table)
    with open(out / "compress_table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["label", *combined[0][1].as_dict()])
        writer.writeheader()
        for label, row, _ in combined:
            writer.writerow({"label": label, **row.as_dict()})
    print(f"wrote {out / 'compress_table.csv'}")
    if args.int8_backends:
        int8_backends(export_dir, work, args.threads, args.repeats)


if __name__ == "__main__":
    main()
