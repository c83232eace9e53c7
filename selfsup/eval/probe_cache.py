"""The on-disk cache of ``selfsup probe``: frozen features and the scores computed from them.

Both are keyed by content, never by file name: the features by the encoder's weights, the pooling
and the data (:meth:`ProbeCache.features_key`), the scores by the features' key and the probe's own
settings (:meth:`ProbeCache.scores_key`). A checkpoint copied or saved twice (``last.ckpt`` beside
the ``best-*`` it repeats) therefore finds the same entries, and probing a checkpoint a second time
computes nothing. A cache that cannot be written (a read-only disk, a full one) is a warning: the
probe still reports, it only computes the same things again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from selfsup.atomic import atomic_write_bytes


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and bytes: equal for equal weights, whatever the file."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


DATA_KEYS = ("source", "root", "image_size", "train_subset", "val_subset", "subset_seed")


def default_cache_folder() -> Path:
    """``$SELFSUP_CACHE/features``, or ``~/.cache/selfsup/features``."""
    return Path(os.environ.get("SELFSUP_CACHE", Path.home() / ".cache" / "selfsup")) / "features"


def data_description(data: Any) -> dict[str, Any] | None:
    """What identifies a data module's evaluation images (source, absolute root, size, subsets,
    classes), for a cache key; None for a data module that does not say (not an ``ImageDataModule``)."""
    if not all(hasattr(data, k) for k in DATA_KEYS):
        return None
    desc = {k: getattr(data, k) for k in DATA_KEYS}
    if desc["root"]:
        desc["root"] = str(Path(desc["root"]).resolve())
    desc["classes"] = getattr(data, "class_subset", None)
    return desc


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ProbeCache:
    """Features as safetensors (``<key>.safetensors``) and scores as JSON (``<key>.json``) in ``folder``;
    scores are also kept in memory, so that checkpoints with the same weights share one computation
    even where the folder cannot be written."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._scores: dict[str, dict[str, Any]] = {}  # this process's, also when the disk refuses them

    @staticmethod
    def features_key(weights: str, spec: dict, pool: str, data: dict) -> str:
        """Key of the features of the encoder with ``weights`` (a :func:`weights_digest`); ``spec``
        describes the encoder and its input normalisation."""
        return _key("features", weights, spec, pool, data)

    @staticmethod
    def scores_key(features_key: str, settings: dict[str, Any]) -> str:
        """Key of the scores computed from the features ``features_key`` with ``settings``."""
        return _key("scores", features_key, settings)

    def load_features(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.folder / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            return load_file(path)
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None

    def save_features(self, key: str, tensors: dict[str, torch.Tensor]) -> bool:
        data = save({k: v.contiguous() for k, v in tensors.items()})
        return self._write(f"{key}.safetensors", data, "features")

    def load_scores(self, key: str) -> dict[str, Any] | None:
        if key in self._scores:
            return self._scores[key]
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or damaged: recomputed
            return None

    def save_scores(self, key: str, scores: dict[str, Any]) -> bool:
        """Keep ``scores`` for this process and write them to disk (JSON: dictionary keys become strings)."""
        self._scores[key] = json.loads(json.dumps(scores))
        return self._write(f"{key}.json", json.dumps(scores).encode(), "scores")

    def _write(self, name: str, data: bytes, what: str) -> bool:
        """Write ``folder/name`` atomically, as the umask allows others to read it; on an
        ``OSError`` warn, leave nothing behind and return False."""
        try:
            atomic_write_bytes(data, self.folder / name, what=f"cached {what}")
            return True
        except OSError as err:
            warnings.warn(
                f"could not cache the probe's {what} in '{self.folder}' ({err}); the next probe of "
                "this checkpoint computes them again (set SELFSUP_CACHE or --cache_dir to a writable folder).",
                stacklevel=2,
            )
            return False
