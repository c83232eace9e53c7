import json

import pytest
import torch
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
    with pytest.raises(SystemExit):
        run(["probe", str(last), "--data.sorce", "digits"])


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
            probe_module.FeatureCache(tmp_path / "c"),
        )
