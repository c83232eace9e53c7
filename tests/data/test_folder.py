import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from selfsup.data import ImageDecodeError, ImageFolderDataset
from tests.helpers import write_image_folder


def test_samples_and_labels(tmp_path):
    root = write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=3)
    ds = ImageFolderDataset(root / "train", size=12)
    assert ds.classes == ["a", "b", "c"] and len(ds) == 9
    image, label = ds[4]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 1


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*root/train/<class>/<image>"):
        ImageFolderDataset(tmp_path / "nowhere", size=8)


def test_no_class_folders_and_empty_class_folder(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(ValueError, match="has no class folders"):
        ImageFolderDataset(tmp_path / "train", size=8)
    (tmp_path / "train" / "cat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "cat" / "0.png")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"Class folder '.*dog' contains no images"):
        ImageFolderDataset(tmp_path / "train", size=8)


def test_held_out_split_must_use_training_classes(tmp_path):
    root = write_image_folder(tmp_path, classes=("a", "b"), per_class=1)
    (root / "val" / "zebra").mkdir()
    Image.new("RGB", (4, 4)).save(root / "val" / "zebra" / "0.png")
    with pytest.raises(ValueError, match="zebra"):
        ImageFolderDataset(root / "val", size=8, classes=["a", "b"])


def test_corrupt_file_raises_naming_it_or_is_skipped_with_a_warning(tmp_path):
    root = write_image_folder(tmp_path, classes=("a",), per_class=3, splits=("train",))
    bad = root / "train" / "a" / "1.png"
    bad.write_bytes(b"\x89PNG garbage")
    ds = ImageFolderDataset(root / "train", size=8)
    with pytest.raises(ImageDecodeError, match="1.png"):
        ds[1]
    skipping = ImageFolderDataset(root / "train", size=8, skip_corrupt=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, label = skipping[1]
        skipping[1]  # the same file again: counted once
    assert image.shape == (3, 8, 8)
    messages = [str(w.message) for w in caught if "skip_corrupt" in str(w.message)]
    assert len(messages) == 1 and "1.png" in messages[0] and "1 skipped so far" in messages[0]
    assert len(skipping.skipped) == 1


def test_file_list_is_cached_once_and_rescanned_when_the_folder_changes(tmp_path, monkeypatch):
    import selfsup.data.folder as folder
    from selfsup.data import ImageDataModule

    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=2)
    settle(root)
    scans = []
    real_scan = folder._scan
    monkeypatch.setattr(folder, "_scan", lambda *a, **k: scans.append(a[0]) or real_scan(*a, **k))
    dm = ImageDataModule("folder", str(root), image_size=8, num_workers=0)
    dm.prepare_data()  # one process per node: scans train and val, writes the lists
    assert len(scans) == 2 and len(list(root.glob(".selfsup_files_*.json"))) == 2
    for _ in range(3):  # every process's setup reads them
        fresh = ImageDataModule("folder", str(root), image_size=8, num_workers=0)
        fresh.setup()
        assert len(fresh.train_set) == 4 and fresh.classes == ["a", "b"]
    assert len(scans) == 2
    Image.new("RGB", (4, 4)).save(root / "train" / "b" / "new.png")  # changes the class folder's time
    changed = ImageDataModule("folder", str(root), image_size=8, num_workers=0)
    changed.setup()
    assert len(changed.train_set) == 5 and len(scans) == 3
    off = ImageDataModule("folder", str(root), image_size=8, num_workers=0, file_list_cache=None)
    off.setup()
    assert len(scans) == 5  # no cache: both splits scanned


def test_read_only_dataset_folder_caches_elsewhere(tmp_path, monkeypatch):
    import os

    from selfsup.data.folder import cached_scan, default_cache_dir

    root = write_image_folder(tmp_path / "data", classes=("a",), per_class=2, splits=("train",))
    settle(root)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as if root were read-only
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path / "home")
    cache = default_cache_dir(root)
    assert cache == tmp_path / "home" / ".cache" / "selfsup" / "file_lists"
    classes, samples = cached_scan(root / "train", None, cache)
    assert classes == ["a"] and len(samples) == 2
    assert len(list(cache.glob("*.json"))) == 1 and not list(root.glob(".selfsup_files_*"))


def settle(root):
    """Date every folder under ``root`` a minute back, as a data set written well before the run
    (the cache does not trust a list of folders changed in the last seconds)."""
    import os
    import time

    past = time.time() - 60
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, (past, past))


def write_nested_folder(root):
    """``root/train/<class>/part<j>/<i>.png``: images one level below the class folders."""
    for name in ("cat", "dog"):
        for part in ("part1", "part2"):
            folder = root / "train" / name / part
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4)).save(folder / f"{i}.png")
    settle(root)
    return root


def test_cached_file_list_sees_images_added_or_deleted_in_nested_folders(tmp_path):
    from selfsup.data import ImageDataModule

    root = write_nested_folder(tmp_path / "data")

    def listed():
        dm = ImageDataModule("folder", str(root), image_size=8, num_workers=0)
        dm.prepare_data()
        dm.setup()
        return {path for path, _ in dm.train_set.samples}

    first = listed()
    assert len(first) == 8 and list(root.glob(".selfsup_files_train_*.json"))
    added = root / "train" / "cat" / "part1" / "new.png"
    Image.new("RGB", (4, 4)).save(added)  # changes part1's time only, not cat's
    assert listed() == first | {str(added)}
    settle(root)
    gone = root / "train" / "dog" / "part2" / "0.png"
    gone.unlink()
    assert listed() == first - {str(gone)} | {str(added)}
    settle(root)
    (root / "train" / "dog" / "part3" / "deeper").mkdir(parents=True)  # a new folder, two levels down
    deep = root / "train" / "dog" / "part3" / "deeper" / "0.png"
    Image.new("RGB", (4, 4)).save(deep)
    assert str(deep) in listed()


def test_file_list_of_a_folder_changed_seconds_ago_is_not_cached(tmp_path):
    from selfsup.data.folder import cached_scan

    root = write_image_folder(tmp_path / "data", classes=("a",), per_class=2, splits=("train",))
    cached_scan(root / "train", None, tmp_path / "cache")  # just written: a file added in the same
    assert not list((tmp_path / "cache").glob("*.json"))  # clock tick would not change a time
    settle(root)
    cached_scan(root / "train", None, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_listed_image_that_vanished_says_the_file_list_is_stale(tmp_path, decode):
    from selfsup.data.folder import cache_path

    root = write_nested_folder(tmp_path / "data")
    ds = ImageFolderDataset(root / "train", size=8, decode=decode, cache_dir=tmp_path / "cache")
    stale = cache_path(root / "train", tmp_path / "cache")
    assert stale.is_file()
    path, _ = ds.samples[1]
    Path(path).unlink()  # deleted after the list was read
    with pytest.raises(ImageDecodeError) as caught:
        ds[1]
    message = str(caught.value)
    assert path in message and "stale" in message and str(stale) in message and "file_list_cache" in message
    assert "Delete or replace the file" not in message
    uncached = ImageFolderDataset(root / "train", size=8, decode=decode)
    skipping = ImageFolderDataset(root / "train", size=8, skip_corrupt=decode == "cpu")
    Path(uncached.samples[0][0]).unlink()
    with pytest.raises(ImageDecodeError, match=r"no longer exists.*listed.*[Rr]estart") as caught:
        uncached[0]
    assert "Delete or replace the file" not in str(caught.value)
    if decode == "cpu":  # skip_corrupt skips it, saying why
        with pytest.warns(UserWarning, match=r"skipping unreadable image '.*0\.png' \(it no longer exists"):
            image, _ = skipping[0]
        assert image.shape == (3, 8, 8)


def test_cached_file_list_is_the_scanned_one(tmp_path):
    from selfsup.data.folder import cache_path, cached_scan, scan_folder

    root = write_nested_folder(tmp_path / "data")
    scanned = scan_folder(root / "train", ["dog", "cat"])
    assert cached_scan(root / "train", ["dog", "cat"], tmp_path / "cache") == scanned  # scans, writes
    assert cache_path(root / "train", tmp_path / "cache").is_file()
    assert cached_scan(root / "train", ["dog", "cat"], tmp_path / "cache") == scanned  # reads
    # another class order is another list: scanned, not read
    assert cached_scan(root / "train", None, tmp_path / "cache")[0] == ["cat", "dog"]
