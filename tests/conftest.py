import os
import warnings

# Under pytest-xdist (2 workers, see pyproject.toml) every process a test starts (CLI runs, DDP
# ranks, DataLoader workers, notebooks) inherits one thread too: two workers that each start
# 2-thread processes on 2 cores would spin against each other.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"

# Feature and score caches (probe, KNNReport) go to a folder of this test session, never to the
# user's ~/.cache/selfsup; the processes the tests start inherit it.
if "SELFSUP_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SELFSUP_CACHE"] = tempfile.mkdtemp(prefix="selfsup-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SELFSUP_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

# two cores: keep torch from oversubscribing them. Under pytest-xdist (the default, see
# pyproject.toml) each of the 2 workers gets one thread; `pytest -n 0` runs one process with two.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))


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


# the longest modules first, longest to shortest (module wall times of a 2026-11-23 run): pytest-xdist
# (--dist loadfile) hands whole modules to its workers in this order, as each worker frees up, so the
# short modules fill in at the end instead of one long module running while the other worker idles
LONGEST_FIRST = (
    "tests/test_learning.py",  # ~90 s: the CIFAR-10 learning check
    "tests/test_resume.py",  # ~70 s: 4 runs of the CLI in subprocesses
    "tests/methods/test_dino.py",  # ~65 s
    "tests/test_ddp.py",  # ~40 s
    "tests/methods/test_simclr.py",  # ~37 s
    "tests/test_fsdp.py",  # ~31 s
    "tests/methods/test_mocov3.py",  # ~28 s
    "tests/finetune/test_finetune.py",  # ~28 s
    "tests/test_configs.py",
    "tests/compress/test_api.py",
    "tests/test_export.py",
    "tests/test_cli.py",
    "tests/test_notebooks.py",
    "tests/test_contract.py",
    "tests/methods/test_mae.py",
    "tests/finetune/test_detection_task.py",
    "tests/methods/test_plugin_method.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
