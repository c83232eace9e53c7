"""What the compression table measures for one variant: size on disk, CPU latency per image, and kNN /
linear-probe accuracy of its features.

Every variant is measured through the call it is deployed with (the timm model's ``model(x)``, or the
onnxruntime session), on the same batches. Features are extracted by :func:`features` rather than
``selfsup.eval.extract_features`` because the latter calls timm's ``forward_features`` + ``pool``,
which an onnxruntime session does not have; the scores reuse ``selfsup.eval`` (``knn_accuracy``,
``train_linear_probe``, ``topk_accuracy``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Row:
    """One line of the table. Latencies are milliseconds per image (median over repeats); sizes are MB
    (10^6 bytes) of the artefact's files; accuracies are 0..1, None without a data set."""

    variant: str
    artefact: str
    load_with: str
    size_mb: float
    latency_ms: dict[int, float]
    knn_top1: float | None
    linear_top1: float | None
    threads: int
    notes: str = ""

    def as_dict(self) -> dict:
        row = {
            "variant": self.variant,
            "artefact": self.artefact,
            "load_with": self.load_with,
            "size_mb": round(self.size_mb, 4),
        }
        row.update({f"latency_b{b}_ms_per_image": round(v, 4) for b, v in self.latency_ms.items()})
        row.update({"knn20_top1": self.knn_top1, "linear_top1": self.linear_top1})
        row.update({"torch_threads": self.threads, "notes": self.notes})
        return row


def size_mb(paths: Sequence[Path]) -> float:
    """Total size in MB (10^6 bytes) of files, and of the files inside folders."""
    total = 0
    for path in paths:
        files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
        total += sum(os.path.getsize(f) for f in files)
    return total / 1e6


def cpu_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity mask (a container's or a
    scheduler's limit, ``taskset``), with the hyperthreads of one core counted once (Linux sysfs
    topology); ``os.cpu_count()`` where the system tells neither."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, this one included), None where unknown. Above
    the number of cores, processes wait for a core and timings come out slower than on an idle machine."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block, and put back after it
    (None: left as it is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def latency_ms(
    forwards: dict[str, Forward],
    examples: dict[int, torch.Tensor],
    repeats: int,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, dict[int, float]]:
    """Median wall time per image, in milliseconds, of every forward at every batch size:
    ``{name: {batch: ms}}``, with torch pinned to ``threads`` intra-op threads (put back afterwards;
    None: torch's current setting; onnxruntime sessions get theirs when created,
    ``onnx_export.session``). The calls are interleaved
    (each round times every variant once), so that a change in machine load during the measurement
    hits every variant alike; ``warmup`` untimed rounds come first."""
    if repeats < 1:
        raise ValueError(f"latency_repeats must be >= 1, got {repeats}.")
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in examples} for n in forwards}
    with torch.inference_mode(), pinned_threads(threads):
        for round_ in range(warmup + repeats):
            for batch, example in examples.items():
                for name, forward in forwards.items():
                    start = time.perf_counter()
                    forward(example)
                    if round_ >= warmup:
                        times[name][batch].append(time.perf_counter() - start)
    return {
        name: {batch: statistics.median(ts) * 1000.0 / batch for batch, ts in per_batch.items()}
        for name, per_batch in times.items()
    }


@torch.inference_mode()
def features(
    forward: Forward, batches: Sequence, normalize: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D] float32, labels [N])`` of ``(uint8 images, labels)`` batches through ``forward``."""
    feats, labels = [], []
    for images, targets in batches:
        feats.append(forward(normalize(images)).float().cpu())
        labels.append(torch.as_tensor(targets).long())
    return torch.cat(feats), torch.cat(labels)


def accuracy(
    forward: Forward,
    train_batches: Sequence,
    val_batches: Sequence,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    k: int = 20,
    probe_epochs: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """``(kNN top-1 with k neighbours, linear-probe top-1)`` on the held-out batches; the probe recipe is
    ``selfsup.eval.linear_probe``'s, for ``probe_epochs`` epochs."""
    from selfsup.eval.knn import knn_accuracy  # selfsup.eval imports Lightning: only when scoring
    from selfsup.eval.linear_probe import topk_accuracy, train_linear_probe

    train_x, train_y = features(forward, train_batches, normalize)
    val_x, val_y = features(forward, val_batches, normalize)
    knn = knn_accuracy(train_x, train_y, val_x, val_y, k=k, num_classes=num_classes)
    probe = train_linear_probe(train_x, train_y, num_classes, epochs=probe_epochs, seed=seed)
    linear = topk_accuracy(probe.logits(val_x), val_y, ks=(1,))[1]
    return knn, linear
