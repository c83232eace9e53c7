"""Data beyond one disk: an ImageFolder written once as LitData chunks, then streamed (locally or from
object storage such as ``s3://``), sharded across processes and workers.

    selfsup data optimize SRC_IMAGEFOLDER DST --image_size 224
    selfsup fit ... --data.init_args.source streaming --data.init_args.root DST   # or s3://bucket/DST

Each split (``train``, and ``val`` or ``test``) becomes ``DST/<split>/`` (LitData's chunk files and
index); ``DST/selfsup_stream.json`` records the image size, the classes and the counts. Images are
stored already resized and centre-cropped, as raw uint8 (``--format raw``, fastest to read) or as
JPEG (``--format jpeg``, about ten times smaller for photographs). With ``progress=True`` (the
command) each split prints a line with its image count, LitData's progress bar (on stderr, updated
about once a second) and a line with its time. Every split's written item count is checked against
its image count, so a worker process that died without an error does not leave a short data set.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from selfsup.data.folder import LAYOUT, find_split_dir, scan_folder
from selfsup.data.images import decode_bytes, load_image, resize_center_crop

MANIFEST = "selfsup_stream.json"
Format = Literal["raw", "jpeg"]


class _Encoder:
    """Picklable per-item function for ``litdata.optimize`` (it runs in worker processes)."""

    def __init__(self, size: int, fmt: Format, quality: int) -> None:
        self.size, self.fmt, self.quality = size, fmt, quality

    def __call__(self, item: tuple[int, str, int]) -> dict[str, Any]:
        index, path, label = item
        image = load_image(path, self.size)  # [3, S, S] uint8: decoded, resized, centre-cropped
        if self.fmt == "jpeg":
            buffer = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=self.quality)
            data = np.frombuffer(buffer.getvalue(), dtype=np.uint8).copy()
        else:
            data = image.numpy()
        return {"index": index, "label": label, "image": data}


def optimize_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    image_size: int,
    num_workers: int = 2,
    fmt: Format = "raw",
    quality: int = 95,
    chunk_bytes: str = "64MB",
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``src`` (an ImageFolder) as LitData chunks under ``dst``; returns the manifest.

    ``progress`` prints each split's count and time on stdout and LitData's progress bar on stderr
    (LitData's own messages are kept back, and shown only if a split comes out short).

    Raises:
        RuntimeError: a split's chunks hold fewer items than its folder has images.
    """
    import litdata

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"'{src}' does not exist. Expected an ImageFolder: {LAYOUT}.")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"'{dst}' exists and is not empty: choose a new output folder.")
    classes = None
    manifest: dict[str, Any] = {"image_size": image_size, "format": fmt, "splits": {}}
    for split in ("train", "val"):
        split_dir = find_split_dir(src, split)
        if split_dir is None:
            if split == "train":
                raise FileNotFoundError(f"'{src}' has no 'train' folder. Expected layout: {LAYOUT}.")
            continue
        classes, samples = scan_folder(split_dir, classes)
        inputs = [(i, path, label) for i, (path, label) in enumerate(samples)]
        workers = max(1, num_workers)
        if progress:
            print(f"{split}: {len(samples)} images from {split_dir} to {dst / split}, {workers} worker(s)")
        started = time.perf_counter()
        litdata_log = io.StringIO()
        # litdata.optimize sets the process-wide multiprocessing start method (to spawn); put the
        # caller's back, or every DataLoader this process makes afterwards re-imports torch per worker.
        start_method = multiprocessing.get_start_method(allow_none=True)
        try:
            with contextlib.redirect_stdout(litdata_log):  # its messages; the bar goes to stderr
                litdata.optimize(
                    fn=_Encoder(image_size, fmt, quality),
                    inputs=inputs,
                    output_dir=str(dst / split),
                    chunk_bytes=chunk_bytes,
                    num_workers=workers,
                    verbose=progress,
                    reorder_files=False,
                )
        finally:
            multiprocessing.set_start_method(start_method, force=True)
        check_written(dst / split, len(samples), litdata_log.getvalue())
        if progress:
            seconds = time.perf_counter() - started
            print(
                f"{split}: {len(samples)} images in {seconds:.1f} s ({len(samples) / seconds:.1f} images/s)"
            )
        manifest["splits"][split] = len(samples)
    manifest["classes"] = classes
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def check_written(split_dir: Path, expected: int, log: str = "") -> None:
    """Raise unless LitData's index in ``split_dir`` lists ``expected`` items (``log``: its messages,
    shown in the error)."""
    try:
        chunks = json.loads((split_dir / "index.json").read_text())["chunks"]
        written = sum(int(chunk["chunk_size"]) for chunk in chunks)
    except (OSError, ValueError, KeyError, TypeError) as err:
        written, detail = 0, f"no readable index.json ({type(err).__name__}: {err})"
    else:
        detail = f"its chunks hold {written} items"
    if written != expected:
        tail = " | ".join(log.strip().splitlines()[-5:])
        raise RuntimeError(
            f"LitData wrote {split_dir} short: {detail}, the folder has {expected} images (a worker "
            f"process may have died, e.g. out of memory). Delete '{split_dir.parent}' and run again"
            + (f". LitData said: {tail}" if tail else ".")
        )


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of an optimised folder (local or remote, through fsspec)."""
    import fsspec

    try:
        with fsspec.open(f"{root.rstrip('/')}/{MANIFEST}", "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"'{root}' is not an optimised data folder (no {MANIFEST}); create one with "
            "`selfsup data optimize SRC_IMAGEFOLDER DST`."
        ) from None


class StreamedImages:
    """Turns a LitData item into ``(uint8 [3, S, S] image, label)``; picklable for workers."""

    def __init__(self, fmt: Format, size: int, stored_size: int) -> None:
        self.fmt, self.size, self.stored_size = fmt, size, stored_size

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int]:
        data = item["image"]
        if self.fmt == "jpeg":  # torchvision's decoder, as for image folders
            image = decode_bytes(torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1))).contiguous()
        else:
            image = torch.as_tensor(np.asarray(data))
        if self.size != self.stored_size:
            image = resize_center_crop(image, self.size)
        return image, int(item["label"])


def streaming_dataset(
    root: str, split: str, image_size: int, shuffle: bool, seed: int = 0, drop_last: bool | None = None
):
    """A LitData ``StreamingDataset`` of one split yielding ``(uint8 image, label)``, sharded across the
    processes of the job and the workers of each DataLoader."""
    import litdata

    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        return None
    return litdata.StreamingDataset(
        f"{root.rstrip('/')}/{split}",
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        transform=StreamedImages(manifest["format"], image_size, manifest["image_size"]),
    )
