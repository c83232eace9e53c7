"""What ``KNNReport`` adds to a one-step run, for this checkout and (optionally) another, side by side.

The run is the encoder of configs/simclr/vit_tiny_cifar10.yaml (ViT-Tiny, 4-px patches, 32 px,
batch 512) on a CIFAR-10 ImageFolder subset, one training step. Each variant runs in a fresh
process with the checkout's ``selfsup`` first on ``PYTHONPATH``:

- ``no report``: the step alone (this checkout), the reference;
- ``<checkout>``: the step, then ``KNNReport`` (k=20), its time measured around ``on_fit_end``;
- for this checkout, the report a second time with the same seed: the initial encoder's features
  then come from the cache (a fresh ``SELFSUP_CACHE`` folder per invocation, so the first is cold).

    git archive HEAD selfsup | tar -x -C /tmp/before      # the code before the change
    python benchmarks/knn_report_cost.py --root ../shared/data/cifar10 --other /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One run in this process: fit one step, with or without the report; print a JSON line."""
    import lightning as L

    import selfsup
    from selfsup import ImageDataModule, SimCLR
    from selfsup.eval import KNNReport

    L.seed_everything(0, verbose=False)
    data = ImageDataModule(
        "folder",
        args.root,
        image_size=32,
        batch_size=512,
        num_workers=args.workers,
        train_subset=args.train_subset,
        val_subset=args.val_subset,
    )
    model = SimCLR(
        "vit_tiny_patch16_224",
        patch_size=4,
        img_size=32,
        projection_hidden_dim=2048,
        projection_dim=128,
        temperature=0.2,
    )
    callbacks = []
    timing = {"report_s": 0.0}
    if args.report:
        report = KNNReport(k=20, temperature=0.07)
        real = report.on_fit_end

        def timed(trainer, module):
            start = time.perf_counter()
            real(trainer, module)
            timing["report_s"] = time.perf_counter() - start

        report.on_fit_end = timed
        callbacks.append(report)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    total = time.perf_counter() - start
    result = {
        "selfsup": str(Path(selfsup.__file__).parent.parent),
        "total_s": total,
        "report_s": timing["report_s"],
        "step_s": total - timing["report_s"],
    }
    if args.report:
        result.update(report.results)
        result["initial_from_cache"] = getattr(report, "initial_from_cache", False)
    print("RESULT " + json.dumps(result), flush=True)


def run_variant(checkout: Path, report: bool, args: argparse.Namespace, env: dict[str, str]) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--root",
        str(Path(args.root).resolve()),
        "--workers",
        str(args.workers),
        "--train-subset",
        str(args.train_subset),
    ]
    if args.val_subset:
        command += ["--val-subset", str(args.val_subset)]
    if report:
        command.append("--report")
    out = subprocess.run(
        command,
        env={**env, "PYTHONPATH": str(checkout)},
        cwd=tempfile.gettempdir(),  # never the repository: its selfsup would come first
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/cifar10")
    parser.add_argument("--workers", type=int, default=8, help="decode workers (the config's 8)")
    parser.add_argument("--train-subset", type=int, default=2048)
    parser.add_argument("--val-subset", type=int, default=None, help="default: all 10,000 test images")
    parser.add_argument("--other", help="another checkout to compare with (e.g. /tmp/before)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory(prefix="selfsup_knn_cache_") as cache:
        env["SELFSUP_CACHE"] = cache
        rows.append(("no report (this checkout)", run_variant(REPO, False, args, env)))
        if args.other:
            rows.append((f"report, {args.other}", run_variant(Path(args.other).resolve(), True, args, env)))
        rows.append(("report, this checkout (cold cache)", run_variant(REPO, True, args, env)))
        rows.append(("report, this checkout (same seed again)", run_variant(REPO, True, args, env)))
    val = args.val_subset or "all"
    print(
        f"\n1 step + KNNReport, ViT-Tiny/4 at 32 px, batch 512, train_subset {args.train_subset}, "
        f"val {val}, {args.workers} workers"
    )
    print(f"{'variant':45} {'run s':>8} {'step s':>8} {'report s':>9} {'init %':>7} {'trained %':>9}")
    for name, r in rows:
        init = f"{100 * r['top1_init']:.2f}" if "top1_init" in r else "-"
        trained = f"{100 * r['top1_trained']:.2f}" if "top1_trained" in r else "-"
        print(f"{name:45} {r['total_s']:8.1f} {r['step_s']:8.1f} {r['report_s']:9.1f} {init:>7} {trained:>9}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
