"""Fixtures of the compression tests: a tiny export and one ``selfsup compress`` run over it."""

from __future__ import annotations

import pytest
import torch

# One run of the command for the whole package of tests: the digits subset, a random-initialised
# 2-block ViT-Tiny at 16 px (kNN@20 ~0.4 on these 150 held-out digits, chance 0.1), every variant.
# int8 is the default weight-only mode (torchao's dynamic mode runs ~10x slower than float32 on a CPU:
# tests/compress/test_int8.py checks its features; onnx_int8 is onnxruntime's dynamic int8).
COMMAND = [
    "--int8",
    "--prune",
    "0.5",
    "--finetune_steps",
    "3",
    "--onnx",
    "--data.source",
    "digits",
    "--data.train_subset",
    "300",
    "--data.val_subset",
    "150",
    "--data.batch_size",
    "64",
    "--probe_epochs",
    "10",
    "--latency_batches",
    "[1, 4]",
    "--latency_repeats",
    "1",
    "--threads",  # not the default (every core): the tests share the machine's cores
    "1",
]


def make_export(path, depth: int = 2, seed: int = 0):
    from selfsup.encoders import create_encoder
    from selfsup.export import write_export

    torch.manual_seed(seed)
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=depth)
    meta = {"method": "simclr", "pool": "token", "mean": [0.5] * 3, "std": [0.5] * 3}
    return write_export(path, encoder, "selfsup_test", (0.5,) * 3, (0.5,) * 3, meta)


@pytest.fixture(scope="session")
def export_factory():
    """``make(path, depth=2, seed=0)`` writes a random-initialised tiny export to ``path``."""
    return make_export


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="session")
def compressed(tiny_export, tmp_path_factory):
    from selfsup.commands.compress import compress_command

    out = tmp_path_factory.mktemp("compressed") / "out"
    report = compress_command([str(tiny_export), "--out", str(out), *COMMAND])
    return report
