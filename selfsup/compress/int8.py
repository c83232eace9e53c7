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

Saved as ``model_int8.safetensors`` (no pickle): torchao's safetensors support
(``torchao.prototype.safetensors``) splits each int8 tensor into its int8 data and float scales plus
JSON metadata, beside the source export's ``config.json`` (timm builds the float architecture from
it). Only the quantised tensors go through that split; the plain ones (class token, position
embedding, norms, biases) are stored as they are, because torchao's loader expects every name it
handles to contain a dot. Loading without selfsup::

    see ``LOAD_INT8`` below (also written into the artefact's README), with DIR the artefact folder
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from torch import nn

Int8Mode = Literal["dynamic", "weight_only"]
INT8_FILE = "model_int8.safetensors"

LOAD_INT8 = """\
import timm, torch
from safetensors import safe_open
from safetensors.torch import load_file
from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

model = timm.create_model("local-dir:{dir}", pretrained=False).eval()
with safe_open("{dir}/{file}", "pt") as f:
    metadata = f.metadata()
int8, rest = unflatten_tensor_state_dict(load_file("{dir}/{file}"), metadata)
model.load_state_dict({{**rest, **int8}}, assign=True)
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
    """``folder/model_int8.safetensors``, written atomically (see the module docstring)."""
    from safetensors.torch import save
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from selfsup.checkpoint import atomic_write_bytes

    state = model.state_dict()
    quantized = {k: v for k, v in state.items() if type(v) is not torch.Tensor}
    plain = {k: v.contiguous() for k, v in state.items() if type(v) is torch.Tensor}
    data, metadata = flatten_tensor_state_dict(quantized)
    path = folder / INT8_FILE
    atomic_write_bytes(save({**plain, **data}, metadata=metadata), path)
    return path


def load_int8(folder: str | Path) -> nn.Module:
    """The int8 model of an ``int8/`` artefact, loaded the documented way (timm + torchao)."""
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    folder = Path(folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=False).eval()
    with safe_open(str(folder / INT8_FILE), "pt") as f:
        metadata = f.metadata()
    int8, rest = unflatten_tensor_state_dict(load_file(folder / INT8_FILE), metadata)
    model.load_state_dict({**rest, **int8}, assign=True)
    return model
