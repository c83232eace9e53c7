"""The table's renderings: CSV columns, a PNG with and without accuracy, and the printed table."""

from __future__ import annotations

import csv

from rich.console import Console

from selfsup.compress.measure import Row
from selfsup.compress.table import render, write_csv, write_png


def rows(with_accuracy: bool = True):
    acc = (0.8, 0.9) if with_accuracy else (None, None)
    return [
        Row("original", "exp", "timm", 3.6, {1: 2.0, 32: 1.0}, *acc, threads=2, notes="float32"),
        Row("int8", "int8", "torch+torchao", 1.0, {1: 3.0, 32: 1.5}, *acc, threads=2, notes="int8"),
    ]


def test_csv_png_and_console(tmp_path):
    write_csv(rows(), tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == ["original", "int8"]
    assert table[1]["latency_b32_ms_per_image"] == "1.5" and table[0]["knn20_top1"] == "0.8"
    for accuracy in (True, False):
        path = write_png(rows(accuracy), tmp_path / f"t{accuracy}.png", "title")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    console = Console(record=True, width=120)
    render(rows(False), "title", console)
    text = console.export_text()
    assert "original" in text and "n/a" in text and "2 torch/onnxruntime threads" in text
