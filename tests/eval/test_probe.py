import json

import pytest
import torch
from jsonargparse import ArgumentError
from PIL import Image

import selfsup.eval.probe as probe_module
from selfsup.cli import run
from selfsup.eval import topk_accuracy, train_linear_probe
from selfsup.eval.probe import find_checkpoints, probe


def test_linear_probe_separates_linearly_separable_features():
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(4, 32, generator=g)
    labels = torch.randint(0, 4, (2000,), generator=g)
    features = torch.randn(2000, 32, generator=g) + 4 * directions[labels]
    probe_ = train_linear_probe(features[:1500], labels[:1500], 4, epochs=30)
    accuracy = topk_accuracy(probe_.logits(features[1500:]), labels[1500:], (1, 2))
    assert accuracy[1] >= 0.99 and accuracy[2] >= accuracy[1]


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, -1])  # the unlabelled row is ignored
    assert topk_accuracy(logits, labels, (1, 2)) == {1: 0.5, 2: 1.0}


def test_probe_reports_caches_and_plots_a_series(tiny_runs, tmp_path, monkeypatch):
    run_dir = tiny_runs["simclr"]["run_dir"]
    calls = []
    real_extract = probe_module.extract_features
    monkeypatch.setattr(
        probe_module, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k)
    )
    out = tmp_path / "report"
    results = probe([run_dir], probe_epochs=5, out=out, cache_dir=tmp_path / "cache")
    # epoch0, epoch1 and last (= epoch1: the same weights, reported once)
    assert [r.epoch for r in results] == [1, 2]
    assert [r.features_from_cache for r in results] == [False, False]
    assert (
        len(calls) == 2 * 2
    )  # train + held-out features of the 2 distinct encoders (last.ckpt: from the cache)
    for r in results:
        assert r.method == "simclr" and r.pool == "token" and set(r.knn_top1) == {20, 200}
        assert 0 <= r.linear_top1 <= r.linear_top5 <= 1 and r.num_val == 120 and r.num_train == 256
    assert (out / "probe.csv").read_text().splitlines()[0].startswith("checkpoint,method,epoch")
    assert len(json.loads((out / "probe.json").read_text())) == 2
    assert Image.open(out / "probe_accuracy.png").size[0] > 300

    calls.clear()
    again = probe(
        [run_dir / "checkpoints" / "last.ckpt"], probe_epochs=5, out=out, cache_dir=tmp_path / "cache"
    )
    assert calls == [] and again[0].features_from_cache
    assert again[0].knn_top1 == results[-1].knn_top1


def test_mae_is_probed_on_mean_pooled_features_and_pool_can_be_chosen(tiny_runs, tmp_path):
    mae_last = tiny_runs["mae"]["run_dir"] / "checkpoints" / "last.ckpt"
    (default,) = probe([mae_last], probe_epochs=2, out=tmp_path / "a", cache_dir=tmp_path / "cache")
    (token,) = probe(
        [mae_last], pool="token", probe_epochs=2, out=tmp_path / "b", cache_dir=tmp_path / "cache"
    )
    assert default.pool == "avg" and token.pool == "token" and not token.features_from_cache


def test_probe_command_line(tiny_runs, tmp_path):
    last = tiny_runs["mae"]["run_dir"] / "checkpoints" / "last.ckpt"
    results = run(
        [
            "probe",
            str(last),
            "--probe_epochs",
            "2",
            "--k",
            "[5]",
            "--out",
            str(tmp_path / "out"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--data.val_subset",
            "60",
        ]
    )
    assert len(results) == 1 and set(results[0].knn_top1) == {5} and results[0].num_val == 60
    with pytest.raises(
        ArgumentError, match="unrecognized option '--data.sorce'. Did you mean '--data.source'"
    ):
        run(["probe", str(last), "--data.sorce", "digits"])  # `selfsup` prints it as one line, status 2


def test_probe_errors(tiny_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a folder"):
        find_checkpoints([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.ckpt files"):
        find_checkpoints([tmp_path / "empty"])
    last = tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="set --data.image_size 16"):
        probe_module.probe_checkpoint(
            last,
            probe_module.ImageDataModule(image_size=32, num_workers=0),
            probe_module.ProbeCache(tmp_path / "c"),
        )


def test_probe_reports_when_the_cache_cannot_be_written(tiny_runs, tmp_path, monkeypatch):
    """A cache folder that cannot be created or written (here: under a regular file, which fails for
    root too, as a read-only disk does) is a warning; the probe still scores and reports, and
    last.ckpt still shares the computation of the checkpoint it repeats."""
    run_dir = tiny_runs["simclr"]["run_dir"]
    calls = []
    real_extract = probe_module.extract_features
    monkeypatch.setattr(
        probe_module, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k)
    )
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="could not cache the probe's features in .*a_file"):
        results = probe([run_dir], probe_epochs=2, ks=(5,), out=out, cache_dir=tmp_path / "a_file" / "cache")
    assert len(results) == 2 and len(calls) == 2 * 2 and not any(r.features_from_cache for r in results)
    assert [e["linear_top1"] for e in json.loads((out / "probe.json").read_text())] == [
        r.linear_top1 for r in results
    ]


def test_a_second_probe_reads_the_scores_back(tiny_runs, tmp_path, monkeypatch):
    last = tiny_runs["mae"]["run_dir"] / "checkpoints" / "last.ckpt"
    kwargs = {"probe_epochs": 3, "ks": (5,), "out": tmp_path / "out", "cache_dir": tmp_path / "cache"}
    (first,) = probe([last], **kwargs)

    def no_probe(*args, **kw):
        raise AssertionError("the linear probe ran again")

    monkeypatch.setattr(probe_module, "train_linear_probe", no_probe)
    monkeypatch.setattr(probe_module, "extract_features", no_probe)
    (second,) = probe([last], **kwargs)
    assert second.scores_from_cache and second.features_from_cache and not first.scores_from_cache
    assert (second.knn_top1, second.linear_top1, second.linear_top5) == (
        first.knn_top1,
        first.linear_top1,
        first.linear_top5,
    )
    # other probe settings are other scores: computed (from the cached features)
    with pytest.raises(AssertionError, match="ran again"):
        probe([last], **{**kwargs, "probe_epochs": 4})
    with pytest.raises(AssertionError, match="ran again"):
        probe([last], **{**kwargs, "temperature": 0.1})


def test_duplicates_share_one_row_and_export_finds_their_scores(tiny_runs, tmp_path, capsys, monkeypatch):
    """last.ckpt repeats epoch1.ckpt: one computation and one row naming both; probe.json lists
    both paths; export of either (or of a copy elsewhere, matched by weights) gets the scores."""
    import shutil

    monkeypatch.setenv("COLUMNS", "200")  # a table row on one line, as in a wide terminal

    run_dir = tiny_runs["simclr"]["run_dir"]
    ckpts = run_dir / "checkpoints"
    out = tmp_path / "report"
    results = probe([run_dir], probe_epochs=2, ks=(5,), out=out, cache_dir=tmp_path / "cache")
    assert len(results) == 2
    assert results[1].checkpoints == [str(ckpts / "epoch1.ckpt"), str(ckpts / "last.ckpt")]
    assert "epoch1.ckpt = last.ckpt" in capsys.readouterr().out
    entries = json.loads((out / "probe.json").read_text())
    assert {p for e in entries for p in e["checkpoints"]} == {str(p) for p in ckpts.glob("*.ckpt")}
    copy = tmp_path / "elsewhere" / "copy.ckpt"
    copy.parent.mkdir()
    shutil.copy(ckpts / "last.ckpt", copy)
    for name, checkpoint in (("last", ckpts / "last.ckpt"), ("best", ckpts / "epoch1.ckpt"), ("copy", copy)):
        exported = run(
            ["export", str(checkpoint), "--out", str(tmp_path / name), "--probe", str(out / "probe.json")]
        )
        meta = json.loads((exported / "selfsup.json").read_text())
        assert meta["probe"]["linear_top1"] == results[1].linear_top1, name
        assert meta["probe"]["knn_top1"] == {"5": results[1].knn_top1[5]}, name
    exported = run(
        [
            "export",
            str(ckpts / "epoch0.ckpt"),
            "--out",
            str(tmp_path / "e0"),
            "--probe",
            str(out / "probe.json"),
        ]
    )
    assert (
        json.loads((exported / "selfsup.json").read_text())["probe"]["linear_top1"] == results[0].linear_top1
    )


def test_the_report_counts_epochs_completed(tiny_runs, tmp_path, monkeypatch):
    """The table's column and the plot's axis say "epochs", the count of epochs completed that the
    checkpoint names and the export metadata use."""
    import torch
    from rich.console import Console

    import selfsup.eval.plots as plots
    from selfsup.export import epochs_trained

    run_dir = tiny_runs["simclr"]["run_dir"]
    labels = []
    monkeypatch.setattr(
        plots, "accuracy_curves_png", lambda series, path, title="", xlabel="": labels.append(xlabel)
    )
    results = probe([run_dir], probe_epochs=2, ks=(5,), out=tmp_path / "a", cache_dir=tmp_path / "cache")
    for r in results:
        assert r.epoch == epochs_trained(torch.load(r.checkpoint, map_location="cpu", weights_only=False))
    console = Console(record=True, width=200)
    probe_module.write_report(results, tmp_path / "b", console=console)
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "checkpoint" in line)
    columns = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert columns[:3] == ["checkpoint", "method", "epochs"]
    rows = [[c.strip() for c in line.strip("│ ").split("│")] for line in lines if ".ckpt" in line]
    assert [row[2] for row in rows] == [str(r.epoch) for r in results] == ["1", "2"]
    assert labels and labels[0] == "epochs completed"


def test_a_relative_data_root_that_is_not_here_asks_for_data_root(tiny_runs, tmp_path, monkeypatch):
    checkpoint = probe_module.load_checkpoint(tiny_runs["simclr"]["run_dir"] / "checkpoints" / "last.ckpt")
    checkpoint["datamodule_hyper_parameters"] = {"source": "folder", "root": "data/cifar10"}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'data/cifar10' is relative .* pass --data.root"):
        probe_module.data_for(checkpoint, {})
    # with --data.root, or where the relative root exists from here, the data module is built
    assert probe_module.data_for(checkpoint, {"root": str(tmp_path)}).root == str(tmp_path)
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    assert probe_module.data_for(checkpoint, {}).root == "data/cifar10"
