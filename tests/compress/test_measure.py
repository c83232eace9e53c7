"""The table's measurements: sizes in MB of files, latency as a median per image, and accuracy through
the deployed call."""

from __future__ import annotations

import os
import time

import pytest
import torch

from selfsup.compress.measure import accuracy, cpu_cores, latency_ms, size_mb


def test_size_counts_files_and_folders(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 1_500_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 250_000)
    assert size_mb([tmp_path / "a.bin"]) == pytest.approx(1.5)
    assert size_mb([tmp_path]) == pytest.approx(1.75)


def test_latency_is_the_interleaved_median_per_image():
    calls = []

    def slow(x):
        calls.append(("slow", len(x)))
        time.sleep(0.02 if len(calls) != 9 else 0.5)  # one outlier in a timed round: the median ignores it

    def fast(x):
        calls.append(("fast", len(x)))

    ms = latency_ms({"slow": slow, "fast": fast}, {4: torch.zeros(4, 1)}, repeats=5, warmup=1)
    assert calls[:4] == [("slow", 4), ("fast", 4)] * 2  # interleaved rounds
    assert len(calls) == 12
    assert 0.02 * 1000 / 4 <= ms["slow"][4] < 0.1 * 1000 / 4
    assert ms["fast"][4] < ms["slow"][4] / 10
    with pytest.raises(ValueError, match="latency_repeats"):
        latency_ms({"slow": slow}, {1: torch.zeros(1, 1)}, repeats=0)


def test_latency_pins_the_thread_count_it_is_given_and_puts_torchs_back():
    before = torch.get_num_threads()
    pinned = 2 if before == 1 else 1
    seen = []

    def forward(x):
        seen.append(torch.get_num_threads())

    latency_ms({"model": forward}, {1: torch.zeros(1, 1)}, repeats=2, warmup=1, threads=pinned)
    assert seen == [pinned] * 3 and torch.get_num_threads() == before

    def failing(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        latency_ms({"model": failing}, {1: torch.zeros(1, 1)}, repeats=1, threads=pinned)
    assert torch.get_num_threads() == before


def test_cpu_cores_counts_only_the_cpus_this_process_may_run_on():
    allowed = os.sched_getaffinity(0)
    assert 1 <= cpu_cores() <= len(allowed)
    os.sched_setaffinity(0, {min(allowed)})  # as `taskset -c N` or a container's CPU set would
    try:
        assert cpu_cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_accuracy_of_separable_features():
    """Features that are the one-hot label: kNN and the linear probe are both perfect; features that are
    noise: both near chance."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    images = labels.view(-1, 1).float()
    batches = [(images[i : i + 50], labels[i : i + 50]) for i in range(0, 200, 50)]

    def one_hot(x):
        return torch.nn.functional.one_hot(x.view(-1).long(), 4).float()

    knn, linear = accuracy(one_hot, batches, batches, lambda x: x, 4, k=5, probe_epochs=30)
    assert knn == 1.0 and linear == 1.0

    def noise(x):
        return torch.randn(len(x), 16, generator=generator)

    knn, linear = accuracy(noise, batches[:2], batches[2:], lambda x: x, 4, k=5, probe_epochs=30)
    assert knn < 0.5 and linear < 0.5
