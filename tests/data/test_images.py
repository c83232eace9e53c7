import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import ImageDecodeError, load_image, resize_center_crop


def save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_rgb_is_resized_and_centre_cropped(tmp_path):
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 20:60] = 200  # the centre square is bright, the sides dark
    out = load_image(save(tmp_path, "a.png", Image.fromarray(arr)), size=20)
    assert out.shape == (3, 20, 20) and out.dtype == torch.uint8
    assert out.float().mean() > 180  # the crop kept the centre


def test_grayscale_palette_rgba_16bit_and_cmyk_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((8, 8), 77, dtype=np.uint8), mode="L")
    palette = Image.fromarray(np.full((8, 8, 3), (10, 120, 230), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    rgba = Image.fromarray(
        np.dstack([np.full((8, 8, 3), 50, np.uint8), np.full((8, 8), 128, np.uint8)]), mode="RGBA"
    )
    sixteen = Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16))
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    cases = {
        "gray.png": (gray, {}, (77, 77, 77)),
        "palette.png": (palette, {}, (10, 120, 230)),
        "palette_t.png": (transparent, {}, (10, 120, 230)),
        "rgba.png": (rgba, {}, (50, 50, 50)),
        "sixteen.png": (sixteen, {}, (128, 128, 128)),
        "cmyk.jpg": (cmyk, {"quality": 100}, (255, 0, 0)),
    }
    for name, (img, kwargs, colour) in cases.items():
        out = load_image(save(tmp_path, name, img, **kwargs), size=8)
        assert out.shape == (3, 8, 8) and out.dtype == torch.uint8, name
        centre = out[:, 4, 4].tolist()
        assert all(abs(a - b) <= 3 for a, b in zip(centre, colour, strict=True)), (name, centre)


def test_image_smaller_than_the_crop_is_upscaled(tmp_path):
    out = load_image(save(tmp_path, "tiny.png", Image.new("RGB", (5, 7), (1, 2, 3))), size=32)
    assert out.shape == (3, 32, 32)


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content == "truncated":
        Image.new("RGB", (64, 64), (9, 9, 9)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match="broken.jpg") as err:
        load_image(path, size=16)
    assert "skip_corrupt" in str(err.value) and err.value.path == str(path)


def test_resize_center_crop_batched_and_identity():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert resize_center_crop(x, 16) is x or torch.equal(resize_center_crop(x, 16), x)
    assert resize_center_crop(x, 8).shape == (2, 3, 8, 8)
    assert resize_center_crop(x[0], 24).shape == (3, 24, 24)
