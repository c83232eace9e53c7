"""``selfsup compress``: int8, pruned and ONNX versions of an export, and a table comparing them.

- :func:`compress`: what ``selfsup compress`` runs (``selfsup.compress.api``; its command line is
  :mod:`selfsup.commands.compress`);
  ``source``: the export it reads and :func:`load_artefact`; ``variant_int8``, ``variant_pruned``,
  ``variant_onnx``: each artefact folder (``variant``: what they share);
- ``int8``: torchao int8 linear layers; ``pruning``: magnitude pruning with ``torch.nn.utils.prune``;
  ``recover``: the recovery fine-tune; ``onnx_export``: ONNX + onnxruntime parity and int8;
  ``measure`` and ``table``: size, latency, accuracy, and their rich / CSV / PNG renderings.
"""

from selfsup.compress.api import CompressReport, NotAnExport, compress, load_artefact, read_export
from selfsup.compress.pruning import PruneResult, make_permanent, prune_encoder, shrink_mlp, zero_fraction

__all__ = [
    "CompressReport",
    "NotAnExport",
    "PruneResult",
    "compress",
    "load_artefact",
    "make_permanent",
    "prune_encoder",
    "read_export",
    "shrink_mlp",
    "zero_fraction",
]
