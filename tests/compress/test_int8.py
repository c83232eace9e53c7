"""Int8 artefact: every linear weight is int8, the file is ~4x smaller, and it reloads (the documented
way) to exactly the model that was quantised."""

from __future__ import annotations

import shutil

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from selfsup.compress.int8 import INT8_FILE, load_int8, quantize_int8, save_int8


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_quantised_linear_layers_round_trip(mode, tiny_export, tmp_path):
    model = timm.create_model(f"local-dir:{tiny_export}", pretrained=True).eval()
    quantized = quantize_int8(model, mode)
    linears = [m for m in quantized.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.weight.qdata.dtype == torch.int8 for m in linears)
    assert all(type(m.weight).__name__ == "Int8Tensor" for m in linears)
    assert type(model.blocks[0].attn.qkv.weight) is nn.Parameter  # the original is untouched

    shutil.copy(tiny_export / "config.json", tmp_path / "config.json")
    path = save_int8(quantized, tmp_path)
    save_file(model.state_dict(), tmp_path / "float.safetensors")
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, nn.Linear))
    saved_less = (tmp_path / "float.safetensors").stat().st_size - path.stat().st_size
    assert saved_less > 0.7 * linear_bytes  # int8 linear weights: 3/4 of their float32 bytes saved

    reloaded = load_int8(tmp_path)
    x = torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), quantized(x), atol=0, rtol=0)
        float_out = model(x)
        cosine = torch.nn.functional.cosine_similarity(reloaded(x), float_out, dim=1)
    assert cosine.min() > 0.995
    assert (reloaded(x) - float_out).abs().max() > 0  # it is not the float model


def test_unknown_mode():
    with pytest.raises(ValueError, match="int8_mode must be"):
        quantize_int8(nn.Linear(2, 2), "int4")
    assert INT8_FILE.endswith(".safetensors")
