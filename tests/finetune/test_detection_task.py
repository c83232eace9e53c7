"""Detection fine-tuning (issue 16): ``FineTune(task="detection")`` from a pretrained encoder learns,
its export reproduces it, the strategies that do not apply say so, and the config runs through the CLI.

(The detector alone, trained without Lightning from a random encoder, is checked in
``tests/heads/test_detection.py``; the mAP closed forms and the picture callback in
``tests/eval/test_detection.py``.)
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import timm
import torch
from safetensors.torch import load_file

from selfsup import FineTune, ImageDataModule, SimCLR
from selfsup.cli import run
from selfsup.data.detection import DetectionDataModule
from selfsup.eval.detection import DetectionGrid
from selfsup.export import export
from selfsup.finetune import LoRA
from selfsup.finetune.export import DETECTOR_FILE, export_finetuned, load_detector
from selfsup.finetune.lora import LoRALinear
from tests.helpers import REPO, count_host_reads, make_test_detection_set

SIZE = 32  # CIFAR-sized canvases, 4-px patches: an 8x8 patch grid, pyramid levels 8x8 to 1x1
DETECTOR = {"channels": 64, "head_convs": 2}
STEPS = 60  # 7.5 epochs of 8 batches of 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for this module: its small convolutions gain nothing from two, and on a
    shared 2-core machine two threads spin against the other load (measured: the fine-tune below took
    14 s with one thread and 120 s with two while other jobs ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pretrain_simclr(folder) -> str:
    """A SimCLR run of 4 steps of 64 (1-block ViT-Tiny, 32 px, 4-px patches, 512-wide projection) on
    scikit-learn's digits (in memory: no folder to scan), exported: the "pretrained encoder"."""
    L.seed_everything(0)
    data = ImageDataModule(image_size=SIZE, batch_size=64, num_workers=0, train_subset=256, val_subset=64)
    module = SimCLR(
        "vit_tiny_patch16_224",
        img_size=SIZE,
        patch_size=4,
        encoder_kwargs={"depth": 1},
        projection_hidden_dim=512,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(folder / "simclr.ckpt")
    return str(export(folder / "simclr.ckpt", folder / "simclr_export"))


def detection_data(folder, seed: int = 0) -> DetectionDataModule:
    """96 canvases of 32 px with 1-2 CIFAR-10 airplanes / frogs (or digits 0 / 1) each: 64 to train, 32
    held out (written once under ``folder``)."""
    root = folder / "detection"
    if not (root / "annotations.json").is_file():
        make_test_detection_set(
            root, 96, canvas=SIZE, seed=seed, objects_per_image=(1, 2), object_size=(0.3, 0.5)
        )
    return DetectionDataModule(str(root), image_size=SIZE, batch_size=8, num_workers=0, val_fraction=1 / 3)


def detection_module(backbone: str, strategy="full", **kwargs) -> FineTune:
    return FineTune(
        backbone,
        num_classes=2,
        task="detection",
        strategy=strategy,
        img_size=SIZE,
        augment={"crop_scale": (0.5, 1.0)},
        detector=DETECTOR,
        optim={"base_lr": 3.2e-2, "weight_decay": 0.05, "warmup_epochs": 0},  # lr 1e-3 at batch 8
        **kwargs,
    )


def finetune_and_score(folder, backbone: str, seed: int = 0, steps: int = STEPS) -> dict:
    """mAP@50 of the held-out canvases at initialisation (``trainer.validate``) and after ``steps``
    fine-tuning steps (validated once, at the end); the checkpoint goes to ``folder/detection.ckpt``.
    Returns plain values (JSON)."""
    data = detection_data(folder, seed)
    L.seed_everything(seed)
    module = detection_module(backbone)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        check_val_every_n_epoch=10_000,  # validate once, after the last step (below)
        logger=L.pytorch.loggers.CSVLogger(folder / "logs"),
        callbacks=[DetectionGrid(every_n_epochs=7, num_images=4)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    before = float(trainer.validate(module, data, verbose=False)[0]["val/map_50"])
    module.train()
    trainer.fit(module, data)
    train_metrics = sorted(trainer.logged_metrics)
    after = trainer.validate(module, data, verbose=False)[0]
    trainer.save_checkpoint(folder / "detection.ckpt")
    return {
        "before": before,
        "after": float(after["val/map_50"]),
        "map": float(after["val/map"]),
        "train_metrics": train_metrics,
        "val_metrics": sorted(after),
        "pretrained_method": module.pretrained_method,
        "class_names": module.task.class_names,
        "classes": data.classes,
    }


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Pretrain, fine-tune and score once for this module (pytest-xdist's --dist loadfile keeps a
    module on one worker)."""
    folder = tmp_path_factory.mktemp("detection_finetune")
    result = finetune_and_score(folder, pretrain_simclr(folder))
    (folder / "result.json").write_text(json.dumps(result))
    result = json.loads((folder / "result.json").read_text())
    result["checkpoint"] = folder / "detection.ckpt"
    result["module"] = FineTune.from_checkpoint(folder / "detection.ckpt")
    result["data"] = detection_data(folder)
    return result


def test_finetuning_a_pretrained_encoder_raises_map50(finetuned):
    """The SimCLR encoder above, fine-tuned fully (layer decay 0.75) with a 64-channel pyramid and FCOS
    (2 convolutions per branch) for 60 AdamW steps of 8 canvases (lr 1e-3, crop 0.5-1 + flip on the
    boxes); mAP@50 on the 32 held-out canvases, through the module's own validation.

    Measured (2026-11-23, 2-core AMD EPYC, CIFAR-10 objects): at initialisation 0.000 for every seed
    (FCOS's 0.01 classification prior scores no box above the 0.05 threshold); after the 60 steps
    0.385, 0.632 and 0.500 with data and init seeds 0, 1 and 2 (mAP 0.12, 0.25, 0.18; seed 0 with two
    threads instead of one: 0.437); after 80 steps 0.72, 0.70, 0.70. Required: +0.20 mAP@50, about half the smallest gain measured.
    """
    assert finetuned["before"] <= 0.05
    assert finetuned["after"] >= finetuned["before"] + 0.20, (finetuned["before"], finetuned["after"])
    assert finetuned["pretrained_method"] == "simclr"
    assert finetuned["class_names"] == finetuned["classes"] == finetuned["module"].task.class_names
    assert {"train/loss_classification", "train/loss_bbox_regression"} <= set(finetuned["train_metrics"])
    assert {"val/map", "val/map_50", "val/map_75"} <= set(finetuned["val_metrics"])
    log_dir = finetuned["checkpoint"].parent / "logs" / "lightning_logs" / "version_0"
    assert (log_dir / "detections.png").is_file()  # the task's picture at the end of fit
    assert (log_dir / "detections" / "epoch_006.png").is_file()  # the DetectionGrid callback's


def test_export_reproduces_the_finetuned_detector(finetuned, tmp_path):
    module, data = finetuned["module"], finetuned["data"]
    out = export_finetuned(finetuned["checkpoint"], tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "model.safetensors",
        "selfsup.json",
        DETECTOR_FILE,
    }
    meta = json.loads((out / "selfsup.json").read_text())
    assert meta["task"]["name"] == "detection" and meta["detector"]["classes"] == data.classes
    assert meta["detector"]["config"]["channels"] == DETECTOR["channels"]
    assert not any(k.startswith("backbone.encoder.") for k in load_file(out / DETECTOR_FILE))
    images = torch.stack([data.val_set[i][0] for i in range(8)])
    expected = module.predict_boxes(images)
    detector = load_detector(out)
    with torch.no_grad():
        got = detector(images.float() / 255)
    for a, b in zip(expected, got, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(b["scores"], a["scores"], atol=1e-5, rtol=1e-5)
        assert torch.equal(a["labels"], b["labels"])
    # the encoder part is a plain timm model
    encoder = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = images.float() / 255
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_features(x), module.encoder.forward_features(x))


def test_lora_detection_exports_merged(tmp_path):
    data = detection_data(tmp_path)
    L.seed_everything(0)
    module = detection_module(
        "vit_tiny_patch16_224", strategy=LoRA(rank=4), patch_size=4, backbone_kwargs={"depth": 1}
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    assert any(isinstance(m, LoRALinear) and m.lora_B.abs().sum() > 0 for m in module.encoder.modules())
    out = export_finetuned(tmp_path / "lora.ckpt", tmp_path / "export")
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    module.eval()
    images = torch.stack([data.val_set[i][0] for i in range(4)])
    features = module.task.head.backbone(images.float() / 255)  # the pyramid, on the LoRA encoder
    merged = load_detector(out).backbone(images.float() / 255)
    for name in features:
        torch.testing.assert_close(merged[name], features[name], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["partial", "bitfit", "adapter", "prompt"])
def test_strategies_that_do_not_apply_to_detection_are_clear_errors(strategy):
    with pytest.raises(
        ValueError,
        match=f"the '{strategy}' strategy does not apply to detection; use one of full, lora, linear",
    ):
        detection_module(
            "vit_tiny_patch16_224", strategy=strategy, patch_size=4, backbone_kwargs={"depth": 1}
        )


def test_detection_needs_a_vit_and_only_detection_predicts_boxes():
    with pytest.raises(ValueError, match="detection needs a Vision Transformer"):
        FineTune("resnet18", num_classes=2, task="detection", img_size=SIZE)
    classifier = FineTune(
        "vit_tiny_patch16_224", num_classes=2, img_size=SIZE, patch_size=4, backbone_kwargs={"depth": 1}
    )
    assert getattr(classifier, "predict_boxes", None) is None  # DetectionGrid then warns and skips
    assert "transfer_batch_to_device" not in vars(classifier)  # Lightning's own transfer


def test_training_batch_waits_for_no_device():
    """The boxes are augmented on the host and sent non-blocking, as are the crop parameters: on a
    stand-in device (``meta``) nothing in the batch preparation reads device values back."""
    module = detection_module("vit_tiny_patch16_224", patch_size=4, backbone_kwargs={"depth": 1})
    images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8).to("meta")
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[0.0, 0.0, 32.0, 32.0], [4.0, 4.0, 8.0, 8.0]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    moved = module.transfer_batch_to_device((images, targets), torch.device("meta"), 0)
    assert moved[0].device.type == "meta" and moved[1] is targets  # the targets stay on the host
    with count_host_reads(devices=("meta",)) as calls:
        images_out, targets_out = module.task.train_batch(images, targets)
    assert not calls, calls
    assert images_out.shape == (3, 3, SIZE, SIZE) and images_out.device.type == "meta"
    assert all(t["boxes"].device.type == "meta" and t["labels"].device.type == "meta" for t in targets_out)


def test_config_fast_dev_run_through_the_cli_and_export(tmp_path, monkeypatch):
    root = make_test_detection_set(tmp_path / "data", 12, canvas=SIZE, objects_per_image=(1, 2))
    monkeypatch.chdir(tmp_path)
    cli = run(
        [
            "fit",
            "-c",
            str(REPO / "configs/finetune/detection_vit_tiny.yaml"),
            "--trainer.fast_dev_run=true",
            "--model.init_args.backbone=vit_tiny_patch16_224",
            "--model.init_args.backbone_kwargs={depth: 1}",
            f"--data.init_args.root={root}",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
            "--trainer.accelerator=cpu",
        ]
    )
    assert cli.trainer.global_step == 1 and cli.model.task.name == "detection"
    assert cli.model.encoder.patch_embed.patch_size == (4, 4) and cli.model.image_size == SIZE
    assert "val/map_50" in cli.trainer.logged_metrics
    assert (tmp_path / "detections" / "epoch_000.png").is_file()  # DetectionGrid from the config
    out = run(["export", str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "export")])
    assert (out / DETECTOR_FILE).is_file() and len(
        load_detector(out).eval()(torch.rand(1, 3, SIZE, SIZE))
    ) == 1
