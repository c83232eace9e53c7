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


def pil_rgb(path) -> torch.Tensor:
    """What selfsup decoded with PIL before torchvision's decoders: the reference."""
    with Image.open(path) as img:
        img.load()
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode == "I;16" or img.mode == "I":
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(arr / 65535 * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
        rgb = np.array(img.convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1)


def test_every_format_decodes_as_pil_did(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    cases = {
        "rgb.jpg": (photo, {"quality": 95}),
        "gray.jpg": (photo.convert("L"), {}),
        "cmyk.jpg": (photo.convert("CMYK"), {}),
        "rgb.png": (photo, {}),
        "gray.png": (photo.convert("L"), {}),
        "palette.png": (palette, {}),
        "palette_t.png": (transparent, {}),
        "rgba.png": (photo.convert("RGBA"), {}),
        "sixteen.png": (Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)), {}),
        "anim.gif": (palette, {}),
        "rgb.webp": (photo, {"lossless": True}),
        "rgb.bmp": (photo, {}),
        "rgb.tiff": (photo, {}),
        "gray.pgm": (photo.convert("L"), {}),
    }
    for name, (img, kwargs) in cases.items():
        path = save(tmp_path, name, img, **kwargs)
        out = load_image(path)
        assert out.shape == (3, 24, 32) and out.dtype == torch.uint8, name
        difference = (out.int() - pil_rgb(path).int()).abs().max().item()
        # PNG, GIF, WebP, BMP, TIFF, PGM: identical; JPEG: libjpeg-turbo in both, same settings
        assert difference <= (1 if name.endswith(".jpg") or name == "sixteen.png" else 0), (name, difference)


def test_resize_matches_torchvision_on_the_central_square():
    import torchvision.transforms.v2.functional as TF

    x = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    out = resize_center_crop(x, 12)
    expected = TF.resize(TF.center_crop(x, [30, 30]), [12, 12], antialias=True)
    assert torch.equal(out, expected) and out.is_contiguous()


def test_large_jpegs_decode_at_a_reduced_scale_close_to_full_decoding(tmp_path):
    from sklearn.datasets import load_sample_images

    photo = Image.fromarray(load_sample_images().images[0]).resize((600, 400), Image.BICUBIC)
    path = save(tmp_path, "large.jpg", photo, quality=95)
    reduced = load_image(path, size=64)  # 400 >= 2 * 64: decoded at 1/4 scale (100 x 150)
    full = resize_center_crop(load_image(path), 64)
    assert reduced.shape == full.shape == (3, 64, 64)
    assert (reduced.float() - full.float()).abs().mean() < 4  # grey levels, out of 255
