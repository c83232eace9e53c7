"""Every shipped CPU recipe, end to end, as a user runs it: ``selfsup fit -c CONFIG`` for
``configs/quickstart.yaml`` and every ``configs/*/digits.yaml`` (found by glob, so a new recipe is
measured without touching this file), each in its own process, one after the other.

For each run it records what the user is shown: the kNN top-1 of the random-initialised and the
trained backbone on the held-out split (the ``KNNReport`` table at the end of the run, read from its
``knn_report.json``), the last logged ``train/teacher_entropy`` beside its maximum ``log(out_dim)``
where the method logs one (DINO, DINOv2; a value near the maximum is a uniform-teacher collapse), any
``TeacherCollapseWarning`` the run printed, and the wall time of the whole command (start-up and
both kNN evaluations included), and for an image-text recipe the zero-shot top-1 before and after
(``zeroshot_report.json``). It prints a markdown table. ``--jobs 2`` runs two recipes at once
(give each one thread: ``OMP_NUM_THREADS=1``); wall times then include the other run's share.

A recipe that trains from another run's checkpoint (``configs/distill/digits.yaml`` names
``runs/quickstart/version_0/checkpoints/last.ckpt``) is given this benchmark's run of that recipe
instead, so the quickstart runs first.

    OMP_NUM_THREADS=1 python benchmarks/recipes.py --out /tmp/recipes --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/recipes.py --out /tmp/recipes --only dino mocov3
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def recipes() -> list[Path]:
    """The quickstart first (other recipes start from it), then ``configs/*/digits.yaml``."""
    return [REPO / "configs/quickstart.yaml", *sorted(REPO.glob("configs/*/digits.yaml"))]


def label(config: Path) -> str:
    return str(config.relative_to(REPO))


def run_name(config: Path) -> str:
    """The CSV logger's ``name`` in the config (``runs/<name>/version_N``)."""
    logger = (yaml.safe_load(config.read_text()).get("trainer") or {}).get("logger") or {}
    return (logger.get("init_args") or {}).get("name", "default")


def source_run(config: Path) -> str | None:
    """The recipe run a config trains from (``runs/<name>/...`` in ``model.init_args.teacher``)."""
    model = (yaml.safe_load(config.read_text()).get("model") or {}).get("init_args") or {}
    teacher = model.get("teacher")
    return Path(teacher).parts[1] if isinstance(teacher, str) and teacher.startswith("runs/") else None


def teacher_override(config: Path, done: dict[str, Path]) -> list[str]:
    """``--model.init_args.teacher`` pointing at this benchmark's run of the recipe the config
    trains from, if any."""
    name = source_run(config)
    if name is None:
        return []
    if name not in done:
        raise SystemExit(f"{label(config)} trains from runs/{name}: run that recipe first.")
    return ["--model.init_args.teacher", str(done[name] / "checkpoints" / "last.ckpt")]


def run(config: Path, out: Path, extra: list[str]) -> dict:
    save_dir = out / config.parent.name / config.stem
    command = [
        sys.executable, "-m", "selfsup", "fit", "-c", str(config),
        "--trainer.logger.init_args.save_dir", str(save_dir),
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    log = save_dir.with_suffix(".log")
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{label(config)} failed (exit {result.returncode}); its output is in {log}.")
    folder = max((save_dir / run_name(config)).glob("version_*"), key=lambda p: p.stat().st_mtime)
    report = folder / "knn_report.json"
    if not report.is_file():
        raise SystemExit(
            f"{label(config)} printed no kNN report: add selfsup.eval.KNNReport to its callbacks."
        )
    knn = json.loads(report.read_text())
    zeroshot = folder / "zeroshot_report.json"
    zeroshot = json.loads(zeroshot.read_text()) if zeroshot.is_file() else None
    entropy = last_value(folder / "metrics.csv", "train/teacher_entropy")
    out_dim = ((yaml.safe_load((folder / "config.yaml").read_text())["model"].get("init_args")) or {}).get(
        "out_dim"
    )
    return {
        "config": label(config),
        "folder": folder,
        "init": 100 * knn["top1_init"],
        "trained": 100 * knn["top1_trained"],
        "steps": knn["steps"],
        "entropy": entropy,
        "max_entropy": math.log(out_dim) if entropy is not None and out_dim else None,
        "warned": "TeacherCollapseWarning" in result.stderr,
        "zeroshot": None
        if zeroshot is None
        else (100 * zeroshot["top1_init"], 100 * zeroshot["top1_trained"]),
        "wall": wall,
    }


def last_value(metrics: Path, name: str) -> float | None:
    with metrics.open() as f:
        values = [row[name] for row in csv.DictReader(f) if row.get(name)]
    return float(values[-1]) if values else None


def table(rows: list[dict]) -> str:
    lines = [
        "| config | steps | kNN top-1 % random init → trained | lift | final teacher entropy / log K | collapse warning | zero-shot top-1 % | wall |",
        "|---|---:|---|---:|---|---|---|---:|",
    ]
    for r in rows:
        entropy = "" if r["entropy"] is None else f"{r['entropy']:.3f} / {r['max_entropy']:.3f}"
        warned = "" if r["entropy"] is None else ("yes" if r["warned"] else "no")
        zeroshot = "" if r["zeroshot"] is None else "{:.2f} → {:.2f}".format(*r["zeroshot"])
        lines.append(
            f"| `{r['config']}` | {r['steps']} | {r['init']:.2f} → {r['trained']:.2f} | "
            f"{r['trained'] - r['init']:+.2f} | {entropy} | {warned} | {zeroshot} | {r['wall'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/selfsup_recipes"), help="run folders and logs")
    parser.add_argument(
        "--only", nargs="*", default=None, help="configs whose path contains one of these (the quickstart "
        "still runs first where a chosen recipe trains from it)"
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="recipes run at once (each its own process)")
    parser.add_argument("--skip", nargs="*", default=[], help="configs whose path contains one of these")
    args = parser.parse_args()
    chosen = recipes()
    if args.only:
        chosen = [c for c in chosen if any(word in label(c) for word in args.only)]
        needs = {source_run(c) for c in chosen}
        chosen = [c for c in recipes() if c in chosen or run_name(c) in needs]
    chosen = [c for c in chosen if not any(word in label(c) for word in args.skip)]
    args.out.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    rows: dict[Path, dict] = {}
    sources = [c for c in chosen if any(source_run(other) == run_name(c) for other in chosen)]
    # the recipes others train from first, then the rest, --jobs at a time
    for batch in (sources, [c for c in chosen if c not in sources]):
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {}
            for config in batch:
                print(f"{label(config)} ...", flush=True)
                futures[config] = pool.submit(run, config, args.out, teacher_override(config, done))
            for config, future in futures.items():
                rows[config] = future.result()
                done[run_name(config)] = rows[config]["folder"]
                print(table([rows[config]]).splitlines()[-1], flush=True)
    print()
    print(table([rows[c] for c in chosen]))


if __name__ == "__main__":
    main()
