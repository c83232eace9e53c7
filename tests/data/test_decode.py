"""``decode: gpu``: encoded files through the loader, decoded in the training step (on the CPU
here: the fallback, with one warning)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.data.decode as decode
from selfsup.data import ImageDataModule, ImageFolderDataset, load_image
from selfsup.data.decode import decode_batch, encoded_collate
from selfsup.data.images import read_bytes
from tests.helpers import write_image_folder


def test_cpu_fallback_warns_once_and_equals_the_cpu_path(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "_warned", False)
    root = write_image_folder(tmp_path, classes=("a",), per_class=4, size=20, splits=("train",))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 18), dtype=np.uint8), mode="L").save(
        root / "train" / "a" / "g.bmp"
    )
    paths = sorted((root / "train" / "a").iterdir())  # JPEG, PNG and grayscale BMP files
    encoded = [read_bytes(p).numpy() for p in paths]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = decode_batch(encoded, 16, "cpu")
        second = decode_batch(encoded, 16, torch.device("cpu"))
    fallbacks = [w for w in caught if "decode is 'gpu'" in str(w.message)]
    assert len(fallbacks) == 1
    expected = torch.stack([load_image(p, 16) for p in paths])
    assert first.dtype == torch.uint8 and torch.equal(first, expected) and torch.equal(second, expected)


def test_folder_yields_bytes_and_the_loader_keeps_them_on_the_host(tmp_path):
    root = write_image_folder(tmp_path, classes=("a", "b"), per_class=3, size=20)
    ds = ImageFolderDataset(root / "train", size=16, decode="gpu")
    data, label = ds[0]
    assert data.dtype == torch.uint8 and data.ndim == 1 and label == 0
    images, labels = encoded_collate([ds[i] for i in range(4)])
    # NumPy arrays, which Lightning's batch transfer leaves alone (nvJPEG reads host memory)
    assert isinstance(images, list) and all(isinstance(a, np.ndarray) for a in images)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 0, 1]
    from lightning.fabric.utilities.apply_func import move_data_to_device

    moved, _ = move_data_to_device((images, labels), torch.device("meta"))
    assert all(isinstance(a, np.ndarray) for a in moved) and _.device.type == "meta"


def test_datamodule_decode_gpu(tmp_path):
    root = write_image_folder(tmp_path, classes=("a", "b"), per_class=4, size=20)
    dm = ImageDataModule("folder", str(root), image_size=16, batch_size=4, num_workers=0, decode="gpu")
    images, labels = next(iter(dm.train_dataloader()))
    assert isinstance(images, list) and len(images) == 4 and labels.shape == (4,)
    with pytest.warns(UserWarning, match="decode is 'gpu'"):
        decode.warnings.simplefilter("always")
        decoded = decode_batch(images, 16, "cpu")
    assert decoded.shape == (4, 3, 16, 16)
    # feature extraction (kNN, probes) always gets decoded uint8 batches
    eval_images, _ = next(iter(dm.eval_dataloader("val")))
    assert eval_images.dtype == torch.uint8 and eval_images.shape[1:] == (3, 16, 16)
    with pytest.raises(ValueError, match="folder source"):
        ImageDataModule("digits", decode="gpu")
    with pytest.raises(ValueError, match="skip_corrupt"):
        ImageDataModule("folder", str(root), decode="gpu", skip_corrupt=True)
    with pytest.raises(ValueError, match="decode"):
        ImageDataModule("folder", str(root), decode="nvjpeg")


def test_the_gpu_paths_resize_matches_the_cpu_paths():
    # decode_batch's resize for nvJPEG output (float32 antialiased, as PyTorch's CUDA resize needs),
    # run here on the CPU: within one grey level of the workers' uint8 resize
    from selfsup.data.decode import _resize_crop_float
    from selfsup.data.images import resize_center_crop

    x = torch.randint(0, 256, (3, 75, 100), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for size in (32, 90):
        difference = (_resize_crop_float(x, size).int() - resize_center_crop(x, size).int()).abs().max()
        assert difference <= 1, (size, difference)


def test_batch_images_passes_decoded_batches_and_decodes_encoded_ones(tmp_path, monkeypatch):
    """The one branch the pretraining step, the fine-tune and ``selfsup preview`` share: a uint8
    tensor is returned as it is (no copy), a list or tuple of encoded files is decoded."""
    from selfsup.data.decode import batch_images

    monkeypatch.setattr(decode, "_warned", True)  # the CPU fallback's warning is tested above
    root = write_image_folder(tmp_path, classes=("a",), per_class=3, size=20, splits=("train",))
    paths = sorted((root / "train" / "a").iterdir())
    decoded = torch.stack([load_image(p, 16) for p in paths])
    assert batch_images(decoded, 16, "cpu") is decoded
    encoded = [read_bytes(p).numpy() for p in paths]
    for batch in (encoded, tuple(encoded)):
        assert torch.equal(batch_images(batch, 16, torch.device("cpu")), decoded)
