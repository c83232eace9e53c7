"""``selfsup.export``: any selfsup checkpoint → an export folder, by the kind the checkpoint
declares. A pretraining checkpoint exports its backbone (``selfsup.export``, the folder format), and
whatever else its method declares (``export_extra(checkpoint_path, folder)``: CLIP's open_clip folder); a
fine-tune checkpoint exports the fine-tuned model with its head (``selfsup.finetune.export``, which
writes through the same folder writer). This module sits above both, so neither points at the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selfsup.contract import load_checkpoint, read_meta
from selfsup.export import export as export_pretrained


def export(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    pool: str | None = None,
    probe_scores: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir`` from a selfsup checkpoint of either kind (see the module docstring).
    ``pool`` and ``probe_scores`` apply to pretraining checkpoints; ``overwrite`` replaces an earlier
    export only (never a folder holding anything else)."""
    meta = read_meta(load_checkpoint(checkpoint_path, mmap=True), checkpoint_path)
    if meta.kind == "finetune":
        from selfsup.finetune.export import export_finetuned

        return export_finetuned(checkpoint_path, out_dir, overwrite=overwrite)
    folder = export_pretrained(
        checkpoint_path, out_dir, pool=pool, probe_scores=probe_scores, overwrite=overwrite
    )
    extra = getattr(_method_class(meta.method), "export_extra", None)
    if extra is not None:  # what a method writes besides its backbone (CLIP: an open_clip folder)
        extra(checkpoint_path, Path(folder))
    return folder


def _method_class(name: str) -> type | None:
    """The class of a registered method (None for one this installation does not know)."""
    from selfsup.methods import METHODS

    entry = METHODS.get(name)
    return None if entry is None else entry.load()
