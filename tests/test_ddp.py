"""Lightning's DDP on CPU processes (gloo): the methods train the same as one process holding the
global batch, MAE needs no find_unused_parameters, and the real CLI runs under torchrun."""

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import MAE, ImageDataModule, SimCLR
from selfsup.augment import SimCLRViewConfig
from selfsup.optim import OptimConfig
from tests.helpers import REPO, shared_data

IDENTITY = SimCLRViewConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    hflip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
)


def simclr(**kwargs):
    L.seed_everything(0)
    return SimCLR(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=4,
        encoder_kwargs={"depth": 1},
        projection_hidden_dim=32,
        projection_dim=16,
        projection_batch_norm=False,
        augment=IDENTITY,
        temperature=0.2,
        optim=OptimConfig(name="sgd", base_lr=0.5, weight_decay=0.0, warmup_epochs=0),
        **kwargs,
    )


def train(module, devices, batch_size, steps, tmp_path):
    L.seed_everything(0)
    data = ImageDataModule(image_size=16, batch_size=batch_size, num_workers=0, train_subset=256)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_fork" if devices > 1 else "auto",  # fork: the ranks start without re-importing
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    return module


def test_simclr_with_ddp_on_two_processes_equals_one_process_with_the_global_batch(tmp_path):
    """3 steps of 2 x 16 images under DDP against 3 steps of 32 images in one process (same images per
    step: the sampler shards one seeded permutation). Each rank holds different images, so a
    gather that dropped the other ranks' gradients could not pass. SGD, whose update is linear in
    the gradient (Adam's normalisation would amplify float noise in near-zero gradients to whole
    steps). Measured largest difference 6e-8 against changes up to 8e-2 (float32 reductions in
    another order); bound 1e-6."""
    single = train(simclr(), 1, 32, 3, tmp_path / "one")
    distributed = train(simclr(), 2, 16, 3, tmp_path / "two")
    worst = max(
        (a - b).abs().max().item() for a, b in zip(single.parameters(), distributed.parameters(), strict=True)
    )
    changed = max(
        (a - b).abs().max().item() for a, b in zip(single.parameters(), simclr().parameters(), strict=True)
    )
    assert changed > 1e-3  # training moved the weights
    print(f"largest difference {worst:.2e}, largest change {changed:.2e}")
    assert worst < 1e-6, worst


def test_without_gather_under_ddp_warns_loudly():
    module = simclr(gather_distributed=False)

    class FakeTrainer:
        world_size = 2

    module._trainer = FakeTrainer()
    with pytest.warns(
        UserWarning, match="gather_distributed=False: each sample is contrasted only with its own"
    ):
        module.on_fit_start()
    module._trainer = None
    assert module.criterion.negatives_per_sample(16) == 30  # logged as train/negatives


def test_mae_trains_under_ddp_without_find_unused_parameters(tmp_path):
    L.seed_everything(0)
    module = MAE("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert "encoder.pos_embed" not in before  # MAE's fixed sine-cosine table
    train(module, 2, 16, 3, tmp_path)  # DDP raises on the 2nd step if a parameter got no gradient
    assert all(not torch.equal(before[n], p) for n, p in module.named_parameters() if n in before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_under_torchrun_with_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    result = subprocess.run(
        command
        + [
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "selfsup",
            "fit",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.max_steps=3",
            "--trainer.log_every_n_steps=1",
            "--trainer.callbacks=[]",
            "--data.init_args.train_subset=256",
            "--data.init_args.batch_size=32",
            "--model.init_args.encoder_kwargs={depth: 1}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and last["selfsup"]["world_size"] == 2
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    negatives = metrics[0].split(",").index("train/negatives")
    assert {float(line.split(",")[negatives]) for line in metrics[1:] if line.split(",")[negatives]} == {
        2 * 32 * 2 - 2
    }
    assert len(last["callbacks"]["ExactResume"]["ranks"]) == 2  # both processes' random states


def stream_worker(rank: int, port: int, root: str, out: str) -> None:
    """One rank of a 2-process job reading selfsup's streaming data module as training would."""
    import hashlib

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = ImageDataModule("streaming", root, image_size=32, batch_size=10, num_workers=1)
        seen = [
            hashlib.sha1(image.numpy().tobytes()).hexdigest()
            for images, _ in data.train_dataloader()
            for image in images
        ]
        torch.save({"seen": seen}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_streaming_shards_every_sample_exactly_once_over_two_ranks(tmp_path):
    from selfsup.cli import run

    cifar = shared_data("cifar10")
    subset = tmp_path / "subset"
    for split, per_class in (("train", 10), ("test", 4)):
        for folder in sorted((cifar / split).iterdir()):
            (subset / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:per_class]:
                shutil.copy(image, subset / split / folder.name / image.name)
    start_method = multiprocessing.get_start_method()
    manifest = run(
        [
            "data",
            "optimize",
            str(subset),
            str(tmp_path / "stream"),
            "--image_size",
            "32",
            "--num_workers",
            "1",
        ]
    )
    assert manifest["splits"] == {"train": 100, "val": 40} and len(manifest["classes"]) == 10
    # litdata forces the start method to spawn; optimize_folder puts the caller's back
    assert multiprocessing.get_start_method() == start_method
    mp.start_processes(
        stream_worker,
        args=(free_port(), str(tmp_path / "stream"), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
        join=True,
    )
    seen = [torch.load(tmp_path / f"{r}.pt", weights_only=True)["seen"] for r in range(2)]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])  # each rank its own shard
    assert len(seen[0]) == len(seen[1]) == 50  # equal shards: DDP's collectives need equal steps
    assert len(set(seen[0]) | set(seen[1])) == 100  # every training image once, none twice

    data = ImageDataModule("streaming", str(tmp_path / "stream"), image_size=32, batch_size=16, num_workers=0)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert data.num_classes == 10 and sum(len(b[1]) for b in data.eval_dataloader("val")) == 40
