"""One way to get a backbone: :func:`load_encoder`, for every source a user can name.

Every consumer (fine-tune, probe, export, compress, attention, distillation's teacher, continual
pretraining's start) builds its network here, so a source that works in one place works in all:

===========================================  ==============================================
source                                       what comes back
===========================================  ==============================================
``RUN/.../last.ckpt`` (pretraining)           the method's declared backbone (the teacher for
                                             DINO / MoCo v3), as a plain timm model
``RUN/.../last.ckpt`` (fine-tune)             its fine-tuned backbone, LoRA merged, no head
a loaded checkpoint dict                      the same, without reading the file again
an export folder (``selfsup export``)         timm's ``local-dir:`` load of it
any timm / Hugging Face folder                the same (``config.json`` + ``model.safetensors``)
``local-dir:DIR``, ``hf-hub:ORG/NAME``        timm's own loaders
a timm name (``vit_small_patch16_224``)       randomly initialised; ``pretrained=True`` or
                                             ``pretrained_file=PATH`` loads weights through timm
===========================================  ==============================================

The module sits above the checkpoint contract (it reads checkpoints only through it) and below
everything that uses a backbone. ``selfsup.encoders`` stays the bottom layer: it creates encoders
from names and knows nothing of files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import nn

from selfsup.contract import (
    CheckpointError,
    load_backbone_weights,
    load_checkpoint,
    plain_backbone_state,
    read_meta,
)
from selfsup.encoders import NotAVisionTransformer, create_encoder, is_vit_name, pool_kwargs
from selfsup.export_format import METADATA_FILE, is_export_folder, read_export, read_export_metadata

TIMM_PREFIXES = ("local-dir:", "hf-hub:", "hf_hub:", "timm/")

Source = str | os.PathLike | Mapping[str, Any]


def load_encoder(
    source: Source,
    name: str | None = None,
    img_size: int | None = None,
    patch_size: int | None = None,
    method: str | None = None,
    pool: str | None = None,
    *,
    pretrained: bool = False,
    pretrained_file: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """The backbone named by ``source`` (see the module docstring), without classifier, in eval mode;
    calling it returns pooled features ``[B, D]`` (a ViT) or timm's pooled features (a CNN).

    Args:
        source: a checkpoint file, a loaded checkpoint dict, an export or timm folder, a timm
            loader string (``local-dir:``, ``hf-hub:``) or a timm model name.
        name, img_size, patch_size: for a checkpoint or export, the architecture the caller
            expects (a mismatch is a :class:`~selfsup.contract.CheckpointError` naming the file and
            both values); for a timm name, the image and patch size to build (ViTs only).
        method: the pretraining method expected of a checkpoint or export (``simclr``, ``dino``...).
        pool: the pooling of the returned ViT (``token`` or ``avg``); default: a checkpoint's declared
            pooling, an export's recorded one, a timm name's own.
        pretrained, pretrained_file: timm names only: load the name's weights through timm (its
            cache), or from a local file (timm's ``pretrained_cfg_overlay``; it converts the original
            facebookresearch layouts). Loading a name's weights from the network does not work here.
        path: for a loaded checkpoint dict, the file it came from (named in errors).
        **timm_kwargs: further timm arguments (``drop_path_rate``, ``reg_tokens``...).

    Raises:
        FileNotFoundError: a path that does not exist (the message says how to make it).
        CheckpointError: a file or folder that is not a usable checkpoint or export, or holds
            another architecture or method than expected.
        ValueError: an unknown timm name (with suggestions), or a patch size for a CNN.
    """
    expected = {"name": name, "img_size": img_size, "patch_size": patch_size}
    if isinstance(source, Mapping):
        return _from_checkpoint(
            dict(source), Path(path or "<checkpoint>"), expected, method, pool, timm_kwargs
        )
    text = os.fspath(source)
    if text.startswith(TIMM_PREFIXES):
        return _from_timm_loader(text, expected, pool, timm_kwargs)
    file = Path(text).expanduser()
    if file.is_dir():
        return _from_folder(file, expected, method, pool, timm_kwargs)
    if file.is_file():
        return _from_checkpoint(load_checkpoint(file), file, expected, method, pool, timm_kwargs)
    if file.suffix in (".ckpt", ".pt", ".pth", ".safetensors") or looks_like_a_path(text):
        raise FileNotFoundError(missing_source(file))
    return _from_timm_name(text, img_size, patch_size, pool, pretrained, pretrained_file, timm_kwargs)


def names_a_model(source: Source) -> bool:
    """Whether ``source`` is a timm model name (not a file, folder, loaded checkpoint or loader string)."""
    if isinstance(source, Mapping):
        return False
    text = os.fspath(source)
    return not (text.startswith(TIMM_PREFIXES) or Path(text).expanduser().exists() or looks_like_a_path(text))


def looks_like_a_path(text: str) -> bool:
    """A folder or file rather than a timm name: timm names hold no ``/`` except after a loader
    prefix (``hf-hub:org/name``, ``local-dir:DIR``)."""
    return ("/" in text or os.sep in text or text.startswith((".", "~"))) and not re.match(r"^[\w-]+:", text)


def _check_expected(path: Path, found: dict[str, Any], method: str | None, expected: dict[str, Any]) -> None:
    if method is not None and found.get("method") not in (None, method):
        raise CheckpointError(
            f"'{path}' is a {found.get('method')} checkpoint, but a {method} checkpoint was expected."
        )
    for key, want in expected.items():
        if want is None:
            continue
        have = found.get(key)
        if have != want:
            raise CheckpointError(
                f"'{path}' holds a {found.get('name')} encoder with {key}={have!r}, but {key}={want!r} was "
                "expected. Use the checkpoint of that architecture, or ask for the one it holds."
            )


def _from_checkpoint(
    checkpoint: dict[str, Any],
    path: Path,
    expected: dict[str, Any],
    method: str | None,
    pool: str | None,
    timm_kwargs: dict[str, Any],
) -> nn.Module:
    meta = read_meta(checkpoint, path)
    spec = meta.backbone
    found = {
        "name": spec.name,
        "img_size": spec.img_size,
        "patch_size": spec.patch_size,
        "method": meta.method,
    }
    _check_expected(path, found, method, expected)
    model = spec.build(pool=pool or meta.pool, **timm_kwargs)
    return load_backbone_weights(model, plain_backbone_state(checkpoint, meta, path), spec, path).eval()


def _from_folder(
    path: Path, expected: dict[str, Any], method: str | None, pool: str | None, timm_kwargs: dict[str, Any]
) -> nn.Module:
    config = read_export(path)
    args = config.get("model_args", {})
    size = args.get("img_size")
    found = {
        "name": config.get("architecture"),
        "img_size": size[0] if isinstance(size, list | tuple) else size,
        "patch_size": args.get("patch_size"),
        "method": read_export_metadata(path).get("method"),
    }
    _check_expected(path, found, method, expected)
    kwargs = {**pool_kwargs(pool), **timm_kwargs} if is_vit_name(str(found["name"])) else timm_kwargs
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise CheckpointError(f"export folder '{path}' could not be loaded by timm: {err}") from None
    return model.eval()


def _from_timm_loader(
    source: str, expected: dict[str, Any], pool: str | None, timm_kwargs: dict[str, Any]
) -> nn.Module:
    if source.startswith("local-dir:"):
        folder = Path(source.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"'{source}': the folder '{folder}' does not exist.")
    kwargs = {"num_classes": 0, **pool_kwargs(pool), **timm_kwargs}
    try:
        model = timm.create_model(source, pretrained=True, **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise CheckpointError(f"timm could not load '{source}': {str(err).splitlines()[0]}") from None
    architecture = model.pretrained_cfg.get("architecture")
    if expected["name"] is not None and architecture != expected["name"]:
        raise CheckpointError(
            f"'{source}' holds a {architecture} model, but {expected['name']} was expected: point it at a "
            f"{expected['name']} folder, or build {architecture}."
        )
    return model.eval()


def _from_timm_name(
    name: str,
    img_size: int | None,
    patch_size: int | None,
    pool: str | None,
    pretrained: bool,
    pretrained_file: str | os.PathLike | None,
    timm_kwargs: dict[str, Any],
) -> nn.Module:
    if pretrained_file is not None and not Path(pretrained_file).is_file():
        raise FileNotFoundError(
            f"pretrained_file '{pretrained_file}' does not exist (the weights for {name!r})."
        )
    file = None if pretrained_file is None else os.fspath(pretrained_file)
    try:
        return _build_timm_name(name, img_size, patch_size, pool, pretrained, file, timm_kwargs)
    except (RuntimeError, OSError, KeyError) as err:
        if not (pretrained or file):
            raise
        where = f"the file '{file}'" if file else "timm's cache (this machine reaches no model hub)"
        raise CheckpointError(
            f"timm could not load the weights of {name!r} from {where}: {str(err).splitlines()[0]}. Pass the "
            "weights file as pretrained_file (the original .pth or a .safetensors), or a local-dir: folder."
        ) from None


def _build_timm_name(
    name: str,
    img_size: int | None,
    patch_size: int | None,
    pool: str | None,
    pretrained: bool,
    file: str | None,
    timm_kwargs: dict[str, Any],
) -> nn.Module:
    if is_vit_name(name):  # an unknown name too: create_encoder reports it with suggestions
        try:
            model = create_encoder(
                name, img_size, patch_size, pretrained, file, **pool_kwargs(pool), **timm_kwargs
            )
        except NotAVisionTransformer:
            pass
        else:
            return model.eval()
    if patch_size is not None:
        raise ValueError(f"patch_size applies to ViT backbones; {name!r} has no patches: leave it unset.")
    overlay = {"pretrained_cfg_overlay": {"file": file}} if file else {}
    # a CNN takes images of any size: img_size (linked from the data) has nothing to set
    model = timm.create_model(
        name, pretrained=pretrained or bool(file), num_classes=0, **overlay, **timm_kwargs
    )
    return model.eval()


def declared_record(source: Source) -> tuple[str | None, str | None]:
    """``(method, pooling)`` that a selfsup checkpoint or export declares; Nones for any other
    source. A checkpoint file is memory-mapped, not read."""
    if isinstance(source, Mapping):
        meta = read_meta(dict(source))
        return meta.method, meta.pool
    text = os.fspath(source)
    path = Path(text.removeprefix("local-dir:")).expanduser()
    if path.is_dir():
        record = read_export_metadata(path)
        return record.get("method"), record.get("pool")
    if path.is_file() and not text.startswith(TIMM_PREFIXES):
        meta = read_meta(load_checkpoint(path, mmap=True), path)
        return meta.method, meta.pool
    return None, None


def _run_version(checkpoint: Path) -> int:
    """N of ``RUN/version_N/checkpoints/last.ckpt`` (-1 for another name)."""
    suffix = checkpoint.parent.parent.name.removeprefix("version_")
    return int(suffix) if suffix.isdigit() else -1


def missing_source(path: Path) -> str:
    """What to do about a backbone path that does not exist: most often the export of the
    pretraining run (``runs/NAME/export``) has not been made yet."""
    if path.suffix == ".ckpt":
        return (
            f"backbone checkpoint '{path}' does not exist: check the path (a run keeps its checkpoints in "
            "RUN/version_N/checkpoints/)."
        )
    if path.suffix in (".pt", ".pth", ".safetensors"):
        return f"weights file '{path}' does not exist: check the path."
    checkpoints = sorted(path.parent.glob("version_*/checkpoints/last.ckpt"), key=_run_version)
    if checkpoints:
        return (
            f"backbone '{path}' does not exist: the pretraining run has not been exported yet. Make it with "
            f"`selfsup export {checkpoints[-1]} --out {path}`, or set the backbone to that checkpoint."
        )
    return (
        f"backbone '{path}' does not exist: no export folder (or checkpoint) there. Pretrain, then make the "
        f"export with `selfsup export RUN/version_N/checkpoints/last.ckpt --out {path}`; or set the backbone "
        "to a selfsup .ckpt or a timm model name."
    )


__all__ = ["METADATA_FILE", "Source", "declared_record", "is_export_folder", "load_encoder", "missing_source"]
