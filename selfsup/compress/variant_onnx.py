"""The ``onnx/`` artefact (float32, checked against torch with onnxruntime) and ``onnx_int8/``."""

from __future__ import annotations

import json
from importlib.metadata import version

import torch

from selfsup.compress.onnx_export import (
    LOAD_ONNX,
    ONNX_FILE,
    check_parity,
    compare,
    export_onnx,
    quantize_onnx_int8,
    run_onnx,
    session,
)
from selfsup.compress.source import METADATA_FILE
from selfsup.compress.variant import BuildContext, Variant, artefact_metadata, write_readme


def build_onnx(context: BuildContext, atol: float, rtol: float, int8: bool) -> list[Variant]:
    """Export ``onnx/`` after a parity check to ``atol`` + ``rtol``; with ``int8``, also ``onnx_int8/``."""
    source, model, sample, pool = context.source, context.source.model, context.sample, context.pool
    channels, height, width = source.input_size
    task = context.progress.add_task("onnx: export and parity check", total=2 if int8 else 1)
    folder = context.staging / "onnx"
    folder.mkdir()
    path = export_onnx(model, folder / ONNX_FILE, sample)
    parity = check_parity(model, path, sample, atol, rtol)
    load = LOAD_ONNX.format(dir="onnx", file=ONNX_FILE)
    import onnx as onnx_package

    opset = {op.domain or "ai.onnx": op.version for op in onnx_package.load(str(path)).opset_import}
    record = {
        "method": "onnx",
        "tool": f"torch.onnx.export(dynamo=True) (torch {torch.__version__}), opsets {opset}",
        "inputs": {"images": ["batch", channels, height, width]},
        "outputs": {"features": ["batch", "D"]},
        "parity": {**parity, "runtime": f"onnxruntime {version('onnxruntime')} CPUExecutionProvider"},
    }
    (folder / METADATA_FILE).write_text(json.dumps(artefact_metadata(source, record, load, pool), indent=2))
    write_readme(
        folder,
        f"ONNX export (float32) of {source.path.name}.",
        load,
        [
            f"onnxruntime matches torch within atol={atol} + rtol={rtol}*|x| "
            f"(largest difference {parity['max_abs_diff']:.3g}).",
        ],
    )
    sess = session(path, context.threads)
    variants = [
        Variant(
            "onnx", lambda x, s=sess: run_onnx(s, x), [path], "onnxruntime", "float32, onnxruntime", record
        )
    ]
    context.progress.advance(task)
    if not int8:
        return variants
    folder8 = context.staging / "onnx_int8"
    folder8.mkdir()
    path8 = quantize_onnx_int8(path, folder8 / ONNX_FILE)
    diff = compare(model, path8, sample)
    load8 = LOAD_ONNX.format(dir="onnx_int8", file=ONNX_FILE)
    record8 = {
        "method": "onnx_int8",
        "tool": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {version('onnxruntime')}), "
        "QInt8 weights, activations quantised at run time (MatMulInteger)",
        "vs_float32_torch": diff,
    }
    (folder8 / METADATA_FILE).write_text(
        json.dumps(artefact_metadata(source, record8, load8, pool), indent=2)
    )
    write_readme(
        folder8,
        f"ONNX export of {source.path.name}, dynamic int8 quantised by onnxruntime.",
        load8,
        [f"Against float32 torch: largest difference {diff['max_abs_diff']:.3g}, "
         f"smallest cosine similarity {diff['min_cosine']:.5f}."],
    )  # fmt: skip
    sess8 = session(path8, context.threads)
    variants.append(
        Variant(
            "onnx_int8",
            lambda x, s=sess8: run_onnx(s, x),
            [path8],
            "onnxruntime",
            "int8, onnxruntime",
            record8,
        )
    )
    context.progress.advance(task)
    return variants
