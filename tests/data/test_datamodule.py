import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data import ImageDataModule
from tests.helpers import write_image_folder


def check_batch(batch, batch_size, size, labelled=True):
    images, labels = batch
    assert images.shape == (batch_size, 3, size, size) and images.dtype == torch.uint8
    assert labels.shape == (batch_size,) and labels.dtype == torch.int64
    if labelled:
        assert (labels >= 0).all()


def test_digits_is_the_offline_default():
    dm = ImageDataModule(batch_size=32, num_workers=0)
    assert dm.source == "digits"
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 1797 and dm.num_classes == 10
    check_batch(next(iter(dm.train_dataloader())), 32, 32)
    check_batch(next(iter(dm.val_dataloader())), 32, 32)
    # the held-out split is fixed and disjoint from training
    assert len(dm.val_set) == 360


def test_folder_source(tmp_path):
    root = write_image_folder(tmp_path, classes=("a", "b"), per_class=5, size=20)
    dm = ImageDataModule("folder", str(root), image_size=16, batch_size=4, num_workers=0)
    check_batch(next(iter(dm.train_dataloader())), 4, 16)
    assert len(dm.train_dataloader()) == 2  # 10 images, drop_last
    assert sum(len(b[1]) for b in dm.eval_dataloader("val")) == 10  # complete, unshuffled
    assert dm.classes == ["a", "b"]


def test_folder_with_test_instead_of_val(tmp_path):
    root = write_image_folder(tmp_path, per_class=2, splits=("train", "test"))
    dm = ImageDataModule("folder", str(root), image_size=8, batch_size=2, num_workers=0)
    dm.setup()
    assert len(dm.val_set) == 4


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*root/train/<class>"):
        ImageDataModule("folder", str(tmp_path / "missing"), num_workers=0).setup()
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match="has no 'train' folder"):
        ImageDataModule("folder", str(tmp_path / "flat"), num_workers=0).setup()
    with pytest.raises(ValueError, match="needs data.root"):
        ImageDataModule("folder")
    with pytest.raises(ValueError, match="unknown data source"):
        ImageDataModule("imagenet")


def test_subsets_are_fixed_by_seed():
    a = ImageDataModule(train_subset=100, val_subset=50, num_workers=0)
    b = ImageDataModule(train_subset=100, val_subset=50, num_workers=0)
    a.setup()
    b.setup()
    assert len(a.train_set) == 100 and len(a.val_set) == 50
    assert a.train_set.indices == b.train_set.indices


def write_fake_cifar(root, folder, batches, key, n=6):
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in batches:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(range(n))}
        (base / name).write_bytes(pickle.dumps(entry))
    return base


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_sources_read_torchvision_files(tmp_path, monkeypatch, source):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    if source == "cifar10":
        base = write_fake_cifar(
            tmp_path,
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
        )
        (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    else:
        base = write_fake_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels")
        (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    dm = ImageDataModule(source, str(tmp_path), image_size=32, batch_size=4, num_workers=0)
    check_batch(next(iter(dm.train_dataloader())), 4, 32)
    dm64 = ImageDataModule(source, str(tmp_path), image_size=48, batch_size=3, num_workers=0)
    check_batch(next(iter(dm64.val_dataloader())), 3, 48)


def test_stl10_source_marks_unlabelled_images(tmp_path, monkeypatch):
    import torchvision.datasets.stl10 as stl10

    monkeypatch.setattr(stl10, "check_integrity", lambda *a, **k: True)
    base = tmp_path / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 4), ("unlabeled", 4)):
        (base / f"{split}_X.bin").write_bytes(rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        if split != "unlabeled":
            (base / f"{split}_y.bin").write_bytes(np.arange(1, n + 1, dtype=np.uint8).tobytes())
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    dm = ImageDataModule("stl10", str(tmp_path), image_size=32, batch_size=8, num_workers=0)
    dm.setup()
    assert len(dm.train_set) == 8 and (torch.tensor(dm.train_set.targets) == -1).sum() == 4
    check_batch(next(iter(dm.train_dataloader())), 8, 32, labelled=False)
    check_batch(next(iter(dm.val_dataloader())), 4, 32)


def test_missing_torchvision_files_say_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10 was not found under .*data.download: true"):
        ImageDataModule("cifar10", str(tmp_path), num_workers=0).setup()


def test_prepare_data_downloads_only_when_asked(tmp_path, monkeypatch):
    import selfsup.data.datamodule as datamodule

    calls = []
    monkeypatch.setattr(datamodule, "download_torchvision", lambda source, root: calls.append((source, root)))
    ImageDataModule("cifar10", str(tmp_path)).prepare_data()
    assert calls == []
    ImageDataModule("cifar10", str(tmp_path), download=True).prepare_data()  # mocked above: offline
    assert calls == [("cifar10", str(tmp_path))]


def test_seed_sets_the_training_order(tmp_path):
    def first_labels(seed):
        dm = ImageDataModule(batch_size=64, num_workers=0, seed=seed)
        return next(iter(dm.train_dataloader()))[1]

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))


def test_classes_keeps_those_class_folders_in_both_splits_relabelled_in_order(tmp_path):
    """``classes`` (e.g. two disjoint halves of CIFAR-10 for continual pretraining): only those
    class folders, in both splits, labelled 0..n-1 in the order given; subsets sample from them;
    unknown names are a clear error; the digits (array) source takes it too."""
    root = write_image_folder(tmp_path, classes=("a", "b", "c", "d"), per_class=3, size=12)
    dm = ImageDataModule("folder", str(root), image_size=8, batch_size=2, num_workers=0, classes=["d", "b"])
    dm.setup()
    assert dm.classes == ["d", "b"] and dm.num_classes == 2
    for dataset in (dm.train_set, dm.val_set):
        assert len(dataset) == 6
        assert {(Path(path).parent.name, label) for path, label in dataset.samples} == {("d", 0), ("b", 1)}
    for split in ("train", "val"):
        labels = torch.cat([b[1] for b in dm.eval_dataloader(split)])
        assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    check_batch(next(iter(dm.train_dataloader())), 2, 8)
    # the whole folder is untouched by another module without `classes`
    every = ImageDataModule("folder", str(root), image_size=8, batch_size=2, num_workers=0)
    every.setup()
    assert every.classes == ["a", "b", "c", "d"] and len(every.train_set) == 12
    # train_subset samples among the kept images only
    sub = ImageDataModule("folder", str(root), image_size=8, num_workers=0, classes=["a"], train_subset=2)
    sub.setup()
    assert len(sub.train_set) == 2
    assert all(sub.train_set.dataset.samples[i][1] == 0 for i in sub.train_set.indices)
    unknown = r"classes \['x'\] are not classes of the folder data; it has \['a', 'b', 'c', 'd'\]"
    with pytest.raises(ValueError, match=unknown):
        ImageDataModule("folder", str(root), num_workers=0, classes=["a", "x"]).setup()
    with pytest.raises(ValueError, match="each once"):
        ImageDataModule("folder", str(root), classes=["a", "a"])
    with pytest.raises(ValueError, match="list of class names"):
        ImageDataModule("folder", str(root), classes="a")
    digits = ImageDataModule(image_size=8, num_workers=0, classes=["7", "3"])
    digits.setup()
    assert digits.classes == ["7", "3"] and set(digits.train_set.targets) == {0, 1}
    assert len(digits.train_set) + len(digits.val_set) == 179 + 183  # every 7 and 3 of the 1,797 digits


def test_batch_size_larger_than_the_training_split_warns_once_with_the_sizes(recwarn):
    from types import SimpleNamespace

    def batch_warnings():
        return [str(w.message) for w in recwarn if "batch_size" in str(w.message)]

    small = ImageDataModule(batch_size=16, num_workers=0, train_subset=10)
    loader = small.train_dataloader()
    assert len(loader) == 1  # the whole epoch: one batch of 10
    [message] = batch_warnings()
    assert "batch_size (16)" in message and "10 training images" in message and "at most 10" in message
    recwarn.clear()
    ddp = ImageDataModule(batch_size=16, num_workers=0, train_subset=24)  # 12 per process over 2
    ddp.trainer = SimpleNamespace(world_size=2, global_rank=0)
    ddp.train_dataloader()
    [message] = batch_warnings()
    assert "24 training images (12 per process over 2 processes)" in message and "at most 12" in message
    recwarn.clear()
    ImageDataModule(batch_size=10, num_workers=0, train_subset=10).train_dataloader()
    assert not batch_warnings()  # one full batch: nothing to say


def test_relative_root_is_saved_absolute_for_checkpoints(tmp_path, monkeypatch):
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    write_image_folder(tmp_path / "runs" / "data", classes=("a",), per_class=2, splits=("train",))
    monkeypatch.chdir(tmp_path / "runs")
    dm = ImageDataModule("folder", "data", image_size=8, num_workers=0)
    assert dm.hparams["root"] == str(tmp_path / "runs" / "data")  # what a checkpoint records
    assert dm.root == "data"  # the run itself reads the folder as configured
    config = {"source": "folder", "root": "data", "image_size": 8, "num_workers": 0}
    cli = "lightning.pytorch.cli.instantiate_module"
    with _given_hyperparameters_context(hparams=config, instantiator=cli):  # as LightningCLI builds it
        from_cli = ImageDataModule(**config)
    assert from_cli.hparams["root"] == str(tmp_path / "runs" / "data")
    monkeypatch.chdir(tmp_path)  # probed from another folder
    again = ImageDataModule(**{k: v for k, v in dm.hparams.items() if k in ("source", "root", "image_size")})
    again.setup()
    assert len(again.train_set) == 2
    remote = ImageDataModule("streaming", "s3://bucket/data", num_workers=0)
    assert remote.hparams["root"] == "s3://bucket/data"  # a URL is left as it is


def test_more_workers_than_cores_are_capped_without_torchs_warning(recwarn, monkeypatch):
    """Configs written for GPU nodes ask for 8 workers; on a 2-core machine each loader warned."""
    import selfsup.data.datamodule as datamodule

    monkeypatch.setattr(datamodule, "available_cores", lambda: 2)
    dm = ImageDataModule(batch_size=16, num_workers=8, train_subset=32, val_subset=16)
    loaders = [dm.train_dataloader(), dm.val_dataloader()]
    assert [loader.num_workers for loader in loaders] == [2, 2]
    assert not [w for w in recwarn if "worker processes in total" in str(w.message)]
    dm = ImageDataModule(batch_size=16, num_workers=1, train_subset=32)
    assert dm.train_dataloader().num_workers == 1
