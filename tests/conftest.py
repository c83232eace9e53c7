import os
import warnings

import pytest
import torch

# two cores: keep torch from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _restore_threads():
    """Lightning's DDP launchers set torch's thread count (and OMP_NUM_THREADS) for the processes
    they start, in this process too: put both back so later tests keep both cores."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
        yield


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A SimCLR and an MAE run of 2 epochs on a digits subset (16 px, 1-block ViT-Tiny), with a
    checkpoint per epoch and last.ckpt: {method: {"module", "run_dir", "checkpoints"}}."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from selfsup import MAE, ImageDataModule, SimCLR
    from selfsup.checkpoint import AtomicCheckpointIO

    runs = {}
    for cls in (SimCLR, MAE):
        L.seed_everything(0)
        run_dir = tmp_path_factory.mktemp(f"{cls.method}_run")
        module = cls("vit_tiny_patch16_224", img_size=16, patch_size=4, encoder_kwargs={"depth": 1})
        data = ImageDataModule(image_size=16, batch_size=64, num_workers=0, train_subset=256, val_subset=120)
        checkpoint = ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch{epoch}",
            save_top_k=-1,
            every_n_epochs=1,
            save_last=True,
            auto_insert_metric_name=False,
        )
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            callbacks=[checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(module, data)
        runs[cls.method] = {
            "module": module.eval(),
            "run_dir": run_dir,
            "checkpoints": sorted((run_dir / "checkpoints").glob("*.ckpt")),
        }
    return runs
