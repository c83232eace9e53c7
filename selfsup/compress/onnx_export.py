"""ONNX export of a timm encoder with an onnxruntime parity check, and onnxruntime's dynamic int8
quantisation of the exported graph.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter that is the
default since torch 2.9 (it needs ``onnxscript``); the TorchScript-based one (``dynamo=False``)
warns that it is deprecated. The graph has one input ``images`` ``[batch, 3, H, W]`` (normalised with
the export's mean and std) and one output ``features`` ``[batch, D]`` (the pooled features, what the
timm model returns), with a dynamic batch axis; the weights are stored inside the single
``model.onnx`` file (no external data file).

Parity: onnxruntime (CPU) and torch run the same batch; the export is accepted when
``|ort - torch| <= atol + rtol * |torch|`` everywhere (``numpy.allclose``), and the largest absolute
difference is recorded.

Int8: ``onnxruntime.quantization.quantize_dynamic`` rewrites every MatMul / Gemm with int8 weights
(``QInt8``, per tensor) and activations quantised at run time (``MatMulInteger``): onnxruntime's
maintained CPU int8 path. Its output is compared with float32 torch by the largest absolute
difference and the smallest cosine similarity (it is not expected to match to float tolerance; its
accuracy is in the table).

Loading (onnxruntime only, no torch)::

    import onnxruntime as ort
    session = ort.InferenceSession("DIR/model.onnx", providers=["CPUExecutionProvider"])
    features = session.run(["features"], {"images": images})[0]  # float32 numpy [B, 3, H, W] -> [B, D]
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

ONNX_FILE = "model.onnx"
INPUT_NAME, OUTPUT_NAME = "images", "features"

LOAD_ONNX = """\
import onnxruntime as ort
session = ort.InferenceSession("{dir}/{file}", providers=["CPUExecutionProvider"])
features = session.run(["features"], {{"images": images}})[0]  # float32 numpy [B, 3, H, W], normalised with
# the mean/std in selfsup.json, -> [B, D]"""


class OnnxParityError(RuntimeError):
    """onnxruntime's output differs from torch's beyond the stated tolerance."""


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """Write ``model`` (float, eval) as one ONNX file with a dynamic batch axis; ``example`` is a float
    ``[B, 3, H, W]`` batch used for tracing."""
    model = model.cpu().eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its stages
        torch.onnx.export(
            model,
            (example.cpu(),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    return path


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session; ``threads`` sets its intra-op thread count (inter-op: 1).

    Its threads do not spin-wait for work after a run (onnxruntime's default is to spin): the table
    times torch and onnxruntime variants in turn, and spinning threads would steal the cores from the
    torch variant timed next. This costs onnxruntime a little latency at batch 1."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(sess, images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` float images → ``[B, D]`` float32 features through an onnxruntime session."""
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: images.detach().cpu().float().contiguous().numpy()})[0]
    return torch.from_numpy(out)


@torch.inference_mode()
def check_parity(
    model: nn.Module, path: Path, images: torch.Tensor, atol: float, rtol: float
) -> dict[str, float]:
    """Compare onnxruntime with torch on ``images`` (two batch sizes, to exercise the dynamic axis);
    raise :class:`OnnxParityError` beyond ``atol + rtol * |torch|``. Returns the record for the metadata."""
    sess = session(path)
    worst = 0.0
    for batch in {1, len(images)}:
        x = images[:batch].cpu().float()
        expected = model.cpu().eval()(x).numpy()
        got = run_onnx(sess, x).numpy()
        if got.shape != expected.shape:
            raise OnnxParityError(
                f"onnxruntime returned {got.shape}, torch {expected.shape} (batch {batch})."
            )
        worst = max(worst, float(np.abs(got - expected).max()))
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise OnnxParityError(
                f"the ONNX export differs from torch by up to {worst:.3g} at batch {batch}, beyond "
                f"atol={atol} + rtol={rtol}*|x|: raise --onnx_atol / --onnx_rtol only if that is acceptable, "
                "or report the model (an operator the exporter translates inexactly)."
            )
    return {"atol": atol, "rtol": rtol, "max_abs_diff": worst, "batches_checked": sorted({1, len(images)})}


def quantize_onnx_int8(source: Path, target: Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of ``source`` into ``target`` (see the module docstring)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" hint for every call
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target


@torch.inference_mode()
def compare(model: nn.Module, path: Path, images: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference and smallest cosine similarity of an ONNX model against torch."""
    expected = model.cpu().eval()(images.cpu().float())
    got = run_onnx(session(path), images)
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1).min()
    return {"max_abs_diff": float((got - expected).abs().max()), "min_cosine": float(cosine)}
