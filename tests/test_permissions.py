"""Checkpoints and exports get the permissions a plain ``open`` / ``mkdir`` gives under the umask:
readable by the other users of a shared machine under umask 022, private under 077."""

import os
import stat
from contextlib import contextmanager

import pytest
import torch

from selfsup.checkpoint import atomic_torch_save
from selfsup.encoders import create_encoder
from selfsup.export import write_export


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_a_checkpoint_file_follows_the_umask(tmp_path, mask):
    path = tmp_path / "checkpoints" / "last.ckpt"
    with umask(mask):
        atomic_torch_save({"w": torch.zeros(2)}, path)
        assert mode(path) == 0o666 & ~mask
        atomic_torch_save({"w": torch.ones(2)}, path)  # replacing it keeps what the umask gave
    assert mode(path) == 0o666 & ~mask
    assert torch.load(path, weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_replaced_checkpoint_keeps_the_mode_it_was_given(tmp_path):
    path = tmp_path / "last.ckpt"
    with umask(0o022):
        atomic_torch_save({"w": torch.zeros(2)}, path)
        os.chmod(path, 0o640)
        atomic_torch_save({"w": torch.ones(2)}, path)
    assert mode(path) == 0o640


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_an_export_folder_follows_the_umask(tmp_path, mask):
    encoder = create_encoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1)
    with umask(mask):
        out = write_export(tmp_path / "export", encoder, "t", (0.5,) * 3, (0.5,) * 3, {"method": "t"})
    assert mode(out) == 0o777 & ~mask
    files = {p.name: mode(p) for p in out.iterdir()}
    assert files == dict.fromkeys(["config.json", "model.safetensors", "selfsup.json"], 0o666 & ~mask)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_cached_file_lists_and_probe_caches_follow_the_umask(tmp_path, mask):
    """A file list cached beside a shared data set must be readable by its other users."""
    import time

    from selfsup.data.folder import cached_scan
    from selfsup.eval.probe_cache import ProbeCache
    from tests.helpers import write_image_folder

    root = write_image_folder(tmp_path / "data", per_class=1)
    past = time.time() - 60  # folders that changed seconds ago are not cached (too recent to trust)
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            os.utime(folder, (past, past))
    with umask(mask):
        cached_scan(root / "train", cache_dir=tmp_path / "lists")
        cache = ProbeCache(tmp_path / "features")
        assert cache.save_features("k", {"x": torch.zeros(2)}) and cache.save_scores("k", {"top1": 0.5})
    written = [*(tmp_path / "lists").rglob("*.*"), *(tmp_path / "features").iterdir()]
    assert len(written) == 3
    assert {mode(p) for p in written} == {0o666 & ~mask}
