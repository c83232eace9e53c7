"""The ``int8/`` artefact: torchao int8 linear layers, saved, reloaded, and compared to float32."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version

import torch

from selfsup.compress.int8 import INT8_FILE, LOAD_INT8, Int8Mode, load_int8, quantize_int8, save_int8
from selfsup.compress.source import METADATA_FILE
from selfsup.compress.variant import BuildContext, Variant, artefact_metadata, write_readme

SCHEMES = {
    "dynamic": "Int8DynamicActivationInt8WeightConfig (int8 weights per channel, int8 activations per token)",
    "weight_only": "Int8WeightOnlyConfig (int8 weights per channel, float activations)",
}


def build_int8(context: BuildContext, mode: Int8Mode) -> Variant:
    """Quantise the source's linear layers with torchao (``mode``), write ``int8/`` and reload it."""
    source, model, sample = context.source, context.source.model, context.sample
    task = context.progress.add_task("int8: quantising with torchao", total=1)
    folder = context.staging / "int8"
    folder.mkdir()
    quantized = quantize_int8(model, mode)
    shutil.copy2(source.path / "config.json", folder / "config.json")
    save_int8(quantized, folder)
    reloaded = load_int8(folder)
    with torch.inference_mode():
        drift = float((reloaded(sample) - model(sample)).abs().max())
    load = LOAD_INT8.format(dir=folder.name, file=INT8_FILE)
    record = {
        "method": "int8",
        "mode": mode,
        "tool": f"torchao {version('torchao')} quantize_ with {SCHEMES[mode]}",
        "layers": "every nn.Linear (qkv, proj, fc1, fc2); patch embedding, norms and tokens stay float32",
        "max_abs_diff_vs_float32": drift,
        "files": ["config.json", INT8_FILE],
    }
    (folder / METADATA_FILE).write_text(
        json.dumps(artefact_metadata(source, record, load, context.pool), indent=2)
    )
    write_readme(
        folder,
        f"int8 ({mode}) quantisation of {source.path.name} with torchao.",
        load,
        [
            f"Tool: {record['tool']}.",
            f"Largest |int8 - float32| feature difference on a test batch: {drift:.4g}.",
        ],
    )
    context.progress.advance(task)
    return Variant(
        "int8",
        reloaded,
        [folder / "config.json", folder / INT8_FILE],
        "torch+torchao",
        f"torchao int8 ({mode})",
        record,
    )
