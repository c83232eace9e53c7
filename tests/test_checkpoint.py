import os

import pytest
import torch

from selfsup.checkpoint import AtomicCheckpointIO, CheckpointError, atomic_torch_save, load_checkpoint


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="previous file, if any, is unchanged"):
        atomic_torch_save({"step": 2, "big": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_checkpoint_io_loads_weights_only(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "a.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "a.ckpt")["state_dict"]["w"], torch.ones(2))
    torch.save({"payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(Exception, match="(?i)weights.only"):
        io.load_checkpoint(tmp_path / "evil.ckpt")


def test_load_checkpoint_refuses_bad_files(tmp_path):
    torch.save({"payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refuses to execute"):
        load_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a selfsup training checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")
