"""ONNX artefacts of the shared ``selfsup compress`` run: onnxruntime matches torch to the stated
tolerance at a batch size the export never saw, a mismatch is refused, and the int8 graph really
runs int8 matrix products."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import timm
import torch

from selfsup.compress.onnx_export import OnnxParityError, check_parity, run_onnx, session


def test_onnx_matches_torch_within_the_recorded_tolerance(compressed, tiny_export):
    folder = compressed.artefacts["onnx"]
    meta = json.loads((folder / "selfsup.json").read_text())
    parity = meta["compression"]["parity"]
    assert parity["atol"] == 1e-4 and parity["rtol"] == 1e-3 and parity["max_abs_diff"] <= 1e-4
    model = timm.create_model(f"local-dir:{tiny_export}", pretrained=True).eval()
    x = torch.randn(5, 3, 16, 16)  # batch 5: neither of the batches checked at export
    with torch.inference_mode():
        expected = model(x).numpy()
    got = run_onnx(session(folder / "model.onnx"), x).numpy()
    assert got.shape == (5, 192)
    np.testing.assert_allclose(got, expected, atol=parity["atol"], rtol=parity["rtol"])
    graph = onnx.load(str(folder / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["images"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis


def test_a_model_that_differs_is_refused(compressed, tiny_export):
    model = timm.create_model(f"local-dir:{tiny_export}", pretrained=True).eval()
    with torch.no_grad():
        model.blocks[0].mlp.fc2.weight.mul_(1.5)
    with pytest.raises(OnnxParityError, match="differs from torch"):
        check_parity(
            model, compressed.artefacts["onnx"] / "model.onnx", torch.randn(2, 3, 16, 16), 1e-4, 1e-3
        )


def test_onnx_int8_runs_integer_matmuls(compressed):
    path = compressed.artefacts["onnx_int8"] / "model.onnx"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert path.stat().st_size < 0.35 * (compressed.artefacts["onnx"] / "model.onnx").stat().st_size
    record = compressed.records["onnx_int8"]["vs_float32_torch"]
    assert record["min_cosine"] > 0.99
