import re

import lightning as L
import pytest

from selfsup import ImageDataModule, SimCLR
from selfsup.eval import KNNReport, encoder_knn_top1


def fit_with_report(report: KNNReport) -> tuple[SimCLR, ImageDataModule, list[str]]:
    """One SimCLR step on 256 digits (16 px, 1-block ViT-Tiny); the splits the report loaded."""
    L.seed_everything(0)
    model = SimCLR(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        encoder_kwargs={"depth": 1},
        projection_hidden_dim=32,
        projection_dim=16,
    )
    data = ImageDataModule(
        "digits", image_size=16, batch_size=64, num_workers=0, train_subset=256, val_subset=120
    )
    loaded = []
    real = data.eval_dataloader
    data.eval_dataloader = lambda split, **kw: loaded.append(split) or real(split, **kw)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[report],
    )
    trainer.fit(model, data)
    return model, data, loaded


def test_report_reads_each_split_once_caches_the_initial_features_and_shows_progress(tmp_path, capsys):
    first = KNNReport(k=5, cache_dir=str(tmp_path / "cache"))
    model, data, loaded = fit_with_report(first)
    # one pass per split for both encoders (not one per encoder), each announced with its count and time
    assert loaded == ["train", "val"] and not first.initial_from_cache
    out = capsys.readouterr().out
    assert re.search(r"training features \(trained and initial encoders\): 256 images in \d+\.\d s", out), out
    assert re.search(r"held-out features \(trained and initial encoders\): 120 images in \d+\.\d s", out), out
    assert re.search(r"kNN report: \d+\.\d s", out)
    # the scores are those of the encoders themselves
    trained = encoder_knn_top1(model, data, 5, 0.07, "token")
    assert first.results["top1_trained"] == pytest.approx(trained)

    # the same seed and model on the same data: the initial encoder's features come from the cache
    second = KNNReport(k=5, cache_dir=str(tmp_path / "cache"))
    _, _, loaded = fit_with_report(second)
    assert second.initial_from_cache and loaded == ["train", "val"]
    assert second.results == pytest.approx(first.results)
    assert "features (trained encoder): 256 images" in capsys.readouterr().out


def test_report_without_a_cache_matches_the_initial_encoder(tmp_path):
    import copy

    report = KNNReport(k=5, cache_dir=None)
    model, data, _ = fit_with_report(report)
    initial = copy.deepcopy(model.encoder)
    initial.load_state_dict(report.initial_state)
    assert not report.initial_from_cache
    assert report.results["top1_init"] == pytest.approx(
        encoder_knn_top1(model, data, 5, 0.07, "token", encoder=initial)
    )
