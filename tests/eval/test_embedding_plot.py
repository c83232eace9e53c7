"""``selfsup probe --embedding_plot``: a 2-D map of the held-out features per encoder, UMAP when
umap-learn imports and t-SNE otherwise, deterministic, and a collapsed encoder reported as such."""

import shutil
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.eval.embedding_plot as embedding_plot
from selfsup.cli import run
from selfsup.eval.embedding_plot import DPI, FIGSIZE, embedding_plots, embedding_png, map_method

SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
TAB10 = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44]])  # the first three class colours


@pytest.fixture
def no_umap(monkeypatch):
    """umap-learn not importable, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "umap", None)


def clusters(n: int, classes: int = 3, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return 4 * torch.randn(classes, dim, generator=g)[labels] + torch.randn(n, dim, generator=g), labels


def class_colour_pixels(path) -> int:
    """How many pixels of the PNG have one of the first three class colours."""
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 1, 3).astype(int)
    return int((np.abs(pixels - TAB10).sum(-1) < 30).any(-1).sum())


def test_tsne_without_umap_same_features_same_picture(no_umap, tmp_path, capsys):
    x, y = clusters(120)
    first = embedding_png(x, y, tmp_path / "a.png", "toy.ckpt")
    embedding_png(x.clone(), y.clone(), tmp_path / "b.png", "toy.ckpt")
    assert first.method == "t-SNE" and first.collapsed is None and first.coords.shape == (120, 2)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert Image.open(tmp_path / "a.png").size == SIZE
    # the map keeps the clusters: each point's nearest neighbour in 2-D is of its class
    distances = torch.cdist(torch.from_numpy(first.coords), torch.from_numpy(first.coords))
    nearest = distances.fill_diagonal_(float("inf")).argmin(1)
    assert (y[nearest] == y).float().mean() > 0.95
    assert class_colour_pixels(tmp_path / "a.png") > 100
    assert "toy.ckpt: t-SNE map of the held-out features: 120 points in" in capsys.readouterr().out


def test_umap_is_chosen_when_importable_on_a_fixed_subset(monkeypatch, tmp_path):
    calls = []

    class UMAP:
        def __init__(self, **kwargs):
            calls.append({"kwargs": kwargs})

        def fit_transform(self, x):
            calls[-1]["x"] = x
            return np.stack([np.arange(len(x)), np.arange(len(x)) % 5], 1).astype(np.float32)

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    x, y = clusters(200, dim=16)
    maps = [embedding_png(x, y, tmp_path / f"{i}.png", "toy.ckpt", max_points=50) for i in range(2)]
    assert [m.method for m in maps] == ["UMAP", "UMAP"] and len(calls) == 2
    assert calls[0]["kwargs"] == {
        "n_neighbors": 15,
        "n_components": 2,
        "metric": "euclidean",
        "min_dist": 0.1,
        "random_state": 0,
        "n_jobs": 1,
    }
    # a random 50 of the 200 points, the same both times, L2-normalised (the kNN probe's cosine)
    inputs = [c["x"] for c in calls]
    assert inputs[0].shape == (50, 16) and np.array_equal(inputs[0], inputs[1])
    np.testing.assert_allclose(np.linalg.norm(inputs[0], axis=1), 1.0, atol=1e-6)
    rows = torch.nn.functional.normalize(x.double(), dim=1).numpy()
    picked = [int(np.abs(rows - row).sum(1).argmin()) for row in inputs[0]]
    assert picked == sorted(set(picked)) and picked != list(range(50))
    assert maps[0].num_points == 50 and maps[0].total == 200
    np.testing.assert_array_equal(maps[0].coords[:, 0], np.arange(50))
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()

    monkeypatch.setitem(sys.modules, "umap", None)
    assert map_method()[0] == "t-SNE"


def test_a_collapsed_encoder_is_reported_not_mapped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(embedding_plot, "map_method", lambda: pytest.fail("a collapsed encoder was mapped"))
    labels = torch.arange(90) % 3
    constant = torch.full((90, 24), 0.7) + 1e-6 * torch.randn(90, 24)  # near-constant
    point = embedding_png(constant, labels, tmp_path / "point.png", "dead.ckpt")
    out = capsys.readouterr().out
    assert "dead.ckpt: features collapsed: all 90 points at one place; std" in out
    assert point.collapsed.startswith("features collapsed: all 90 points") and point.coords is None
    assert Image.open(tmp_path / "point.png").size == SIZE
    assert class_colour_pixels(tmp_path / "point.png") == 0  # the note, no scatter

    line = torch.rand(90, 1) * torch.randn(1, 24) + 3.0  # every point on one line
    one = embedding_png(line, labels, tmp_path / "line.png", "line.ckpt")
    assert (
        "rank 1" in one.collapsed and "line.ckpt: features collapsed onto one line" in capsys.readouterr().out
    )
    assert one.method is None and one.coords.shape == (90, 2)
    np.testing.assert_array_equal(one.coords[:, 1], labels.numpy())  # one row of points per class


def test_features_missing_from_the_cache_are_skipped_with_a_message(tmp_path, capsys):
    result = types.SimpleNamespace(
        checkpoint="run/checkpoints/last.ckpt", checkpoints=[], extra={"features_key": "nothing"}
    )
    assert embedding_plots([result], tmp_path / "out", tmp_path / "cache") == []
    assert "last.ckpt: no embedding map: its features are not in the cache" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_probe_command_line_draws_one_map_per_checkpoint(no_umap, tiny_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs["simclr"]["run_dir"] / "checkpoints", run_dir / "checkpoints")
    common = ["--probe_epochs", "2", "--k", "[5]", "--cache_dir", str(tmp_path / "cache")]
    common += ["--data.val_subset", "60"]
    results = run(["probe", str(run_dir), "--embedding_plot", *common])
    # epoch0, and epoch1 = last.ckpt (the same weights: one map), beside probe.json
    assert len(results) == 2
    report = run_dir / "probe"
    assert (report / "probe.json").is_file()
    assert sorted(p.name for p in report.glob("embedding_*.png")) == [
        "embedding_epoch0.png",
        "embedding_epoch1.png",
    ]
    for png in report.glob("embedding_*.png"):
        assert Image.open(png).size == SIZE
    out = capsys.readouterr().out
    assert "epoch0.ckpt: t-SNE map of the held-out features: 60 points in" in out
    assert "epoch1.ckpt = last.ckpt: t-SNE map" in out

    # the spelling, a file and --out (features from the cache); without the flag, no map
    last = run_dir / "checkpoints" / "last.ckpt"
    run(["probe", str(last), "--embedding-plot", "--out", str(tmp_path / "other"), *common])
    assert Image.open(tmp_path / "other" / "embedding_last.png").size == SIZE
    run(["probe", str(last), "--out", str(tmp_path / "none"), *common])
    assert not list((tmp_path / "none").glob("embedding_*.png"))
