"""Int8 quantisation of a timm encoder's ``nn.Linear`` layers with torchao, saved so that torch, timm
and torchao load it without selfsup.

Why torchao: ``torch.ao.quantization.quantize_dynamic`` still runs in torch 2.14 but warns that it is
deprecated and will be removed, and points to torchao's ``quantize_`` API (pytorch/ao#2259); its
quantised tensors (``torch.qint8``) are deprecated too (pytorch/pytorch#184982). torchao is the
maintained tooling, so selfsup uses it, with one of two schemes (``mode``):

- ``weight_only`` (the default; ``Int8WeightOnlyConfig``): int8 weights, one scale per output
  channel, dequantised on the fly; activations stay float.
- ``dynamic`` (``Int8DynamicActivationInt8WeightConfig``): int8 weights per output channel and
  activations quantised to int8 per token at run time: dynamic int8 quantisation proper, fast where
  torch has int8 matrix kernels (CUDA).

Both shrink the linear weights four-fold. Why weight-only by default: measured on this project's
2-core AVX2 CPU (no VNNI), a ViT-Tiny at 32 px, batch 32, the ``dynamic`` scheme ran ~13x slower than
float32 eager (and ~14x under ``torch.compile``), ``weight_only`` ~1.1x, and the deprecated
``torch.ao`` dynamic (fbgemm) ~1.0x; torchao's fast CPU int8 kernels (``Int8DynamicActivationIntx
WeightConfig`` with the ``opaque_torchao_auto`` layout) need its C++ kernel library, which the PyPI
wheel does not load here. Dynamic int8 that is fast on a CPU is the ONNX int8 artefact
(onnxruntime's dynamic quantisation with its integer kernels, ``selfsup.compress.onnx_export``).
``benchmarks/compress_table.py --int8_backends`` re-measures all of these side by side.

Saved as ``model_int8.pt``: the quantised state dict written by ``torch.save`` (torchao tensors
are registered for ``torch.load(weights_only=True)``, so no arbitrary pickle is executed), beside
the source export's ``config.json`` (timm builds the float architecture from it). Loading::

    import timm, torch, torchao  # importing torchao registers its int8 tensors with torch.load
    model = timm.create_model("local-dir:DIR", pretrained=False).eval()
    model.load_state_dict(torch.load("DIR/model_int8.pt", weights_only=True), assign=True)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from torch import nn

Int8Mode = Literal["dynamic", "weight_only"]
INT8_FILE = "model_int8.pt"

LOAD_INT8 = """\
import timm, torch, torchao  # importing torchao registers its int8 tensors with torch.load
model = timm.create_model("local-dir:{dir}", pretrained=False).eval()
model.load_state_dict(torch.load("{dir}/{file}", weights_only=True), assign=True)
features = model(images)  # [B, 3, H, W] normalised with config.json's mean/std -> [B, D]"""


def _config(mode: Int8Mode):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    if mode == "dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    if mode == "weight_only":
        return Int8WeightOnlyConfig()
    raise ValueError(f"int8_mode must be 'dynamic' or 'weight_only', got {mode!r}.")


def quantize_int8(model: nn.Module, mode: Int8Mode = "weight_only") -> nn.Module:
    """A copy of ``model`` (float, CPU) whose ``nn.Linear`` weights are torchao int8 tensors."""
    from torchao.quantization import quantize_

    config = _config(mode)
    quantized = copy.deepcopy(model).cpu().eval()
    quantize_(quantized, config)  # every nn.Linear (the default filter)
    return quantized


def save_int8(model: nn.Module, folder: Path) -> Path:
    """``folder/model_int8.pt``: the quantised state dict (see the module docstring)."""
    path = folder / INT8_FILE
    torch.save(model.state_dict(), path)
    return path


def load_int8(folder: str | Path) -> nn.Module:
    """The int8 model of an ``int8/`` artefact, loaded the documented way (timm + torchao)."""
    import timm
    import torchao  # noqa: F401  registers torchao's tensors with torch.load(weights_only=True)

    folder = Path(folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=False).eval()
    model.load_state_dict(torch.load(folder / INT8_FILE, weights_only=True), assign=True)
    return model
