"""Shared test helpers: the shared data location, tiny image folders written by tests, and a plain-timm
subprocess that loads an export without importing selfsup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """``../shared/data/<name>``; skips the test with a reason where it is absent (a fresh clone),
    but fails under ``CI=true``: CI must never skip a learning check silently."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = (
            f"this test needs the data set at {path} (the shared CIFAR-10 ImageFolder beside the repository)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {message} is missing.")
        pytest.skip(message)
    return path


def write_image_folder(
    root: Path,
    classes=("cat", "dog"),
    per_class: int = 4,
    size: int = 20,
    splits=("train", "val"),
    seed: int = 0,
) -> Path:
    """``root/<split>/<class>/<i>.png|jpg`` with random RGB images of ``size`` px."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                arr[..., c % 3] = 255 if c else 0  # classes differ in one channel
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(arr).save(folder / f"{i}.{ext}")
    return root


PLAIN_TIMM = textwrap.dedent("""
    import sys
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    export_dir, inputs, outputs = sys.argv[1:]
    model = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
    with torch.no_grad():
        features = model(load_file(inputs)["x"])
    save_file({"features": features.contiguous()}, outputs)
    assert not any(name == "selfsup" or name.startswith("selfsup.") for name in sys.modules), "selfsup was imported"
    print(type(model).__name__, model.global_pool, tuple(features.shape))
""")


def run_in_plain_timm(export_dir: Path, x: torch.Tensor, work: Path) -> tuple[torch.Tensor, str]:
    """Loads ``export_dir`` with ``timm.create_model("local-dir:...")`` in a fresh Python process
    that must not import selfsup, runs it on ``x``; returns its output and what it printed
    (class name, pooling, output shape)."""
    outputs, printed = run_script(PLAIN_TIMM, export_dir, {"x": x}, work, "plain_timm")
    return outputs["features"], printed


def run_script(
    text: str, folder: Path, inputs: dict[str, torch.Tensor], work: Path, name: str
) -> tuple[dict[str, torch.Tensor], str]:
    """Runs the script ``text`` in a fresh Python process as ``script FOLDER INPUTS OUTPUTS`` (both
    safetensors files in ``work``); returns the tensors it saved and what it printed."""
    paths = [work / f"{name}_in.safetensors", work / f"{name}_out.safetensors", work / f"{name}.py"]
    save_file({k: v.contiguous() for k, v in inputs.items()}, paths[0])
    paths[2].write_text(text)
    result = subprocess.run(
        [sys.executable, str(paths[2]), str(folder), str(paths[0]), str(paths[1])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return load_file(paths[1]), result.stdout


PLAIN_OPEN_CLIP = textwrap.dedent("""
    import sys
    import open_clip
    import torch
    from safetensors.torch import load_file, save_file

    folder, inputs, outputs = sys.argv[1:]
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    tensors = load_file(inputs)
    tokens = tokenizer(["a photo of the number seven.", "a photo of the number one."])
    with torch.no_grad():
        image = model.encode_image(tensors["x"])
        text = model.encode_text(torch.cat([tensors["tokens"], tokens]))
    save_file({"image": image.contiguous(), "text": text.contiguous()}, outputs)
    assert not any(name == "selfsup" or name.startswith("selfsup.") for name in sys.modules), "selfsup was imported"
    print(type(model).__name__, tuple(image.shape), tuple(text.shape))
""")


def run_in_plain_open_clip(
    folder: Path, x: torch.Tensor, tokens: torch.Tensor, work: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads an open_clip export folder with ``open_clip.create_model_and_transforms("local-dir:...")``
    and its tokenizer in a fresh Python process that must not import selfsup; returns its image
    embeddings of ``x`` and text embeddings of ``tokens`` followed by two captions its own tokenizer
    made ("a photo of the number seven.", "... one.")."""
    embeddings, _ = run_script(PLAIN_OPEN_CLIP, folder, {"x": x, "tokens": tokens}, work, "plain_open_clip")
    return embeddings["image"], embeddings["text"]


# --- detection (issue 16) ---------------------------------------------------------------------------

DETECTION_CLASSES = {"cifar10": ["airplane", "frog"], "digits": ["0", "1"]}


def make_test_detection_set(root: Path, n_images: int, canvas: int = 64, seed: int = 0, **kwargs) -> Path:
    """A COCO-format detection set under ``root`` (``images/`` + ``annotations.json``) from real
    images: CIFAR-10 airplanes and frogs from ``../shared/data/cifar10/train`` pasted on noise, or the
    digits 0 and 1 where that folder is absent (a fresh clone; the issue allows the fallback, so no
    skip). ``kwargs`` go to ``selfsup.data.synthetic_detection.make_detection_set``."""
    from selfsup.data.synthetic_detection import make_detection_set

    cifar = SHARED_DATA / "cifar10" / "train"
    source = "cifar10" if cifar.is_dir() else "digits"
    kwargs.setdefault("classes", DETECTION_CLASSES[source])
    folder = cifar if source == "cifar10" else None
    return make_detection_set(
        root, n_images, canvas=canvas, source=source, folder=folder, seed=seed, **kwargs
    )


# --- the installed command ---------------------------------------------------------------------------


def selfsup_command() -> list[str]:
    """How a user runs ``selfsup``: the venv's console script (or ``python -m selfsup``)."""
    import shutil

    script = Path(sys.executable).parent / "selfsup"
    if script.exists():
        return [str(script)]
    found = shutil.which("selfsup")
    return [found] if found else [sys.executable, "-m", "selfsup"]


# --- host syncs and dispatched ops (the augmentation's tests; reusable for a training step) ---------

# Tensor methods that copy a tensor's values back to the host: on a GPU each one waits for the device.
HOST_READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__format__", "equal"}
)
# ops whose output size depends on the data: on a GPU they wait for the device to learn it
DATA_DEPENDENT_SHAPES = frozenset({"nonzero", "masked_select", "unique", "unique_consecutive", "argwhere"})


class HostReads(list):
    """Calls recorded by :func:`count_host_reads`: ``"name on device"`` strings."""


def count_host_reads(devices: tuple[str, ...] | None = None):
    """Context manager recording every call that reads tensor values back to the host, made on a
    tensor whose device type is in ``devices`` (every tensor when None): ``.item()``, ``.tolist()``,
    ``.numpy()``, ``.cpu()`` or ``.to("cpu")`` from another device, ``bool()`` / ``int()`` /
    ``float()`` / ``__index__`` / formatting of a tensor, ``torch.equal``, ops with a data-dependent
    output size (``nonzero``, ``masked_select``, ``unique``, boolean-mask indexing), and host data
    sent to such a device without ``non_blocking=True`` (``.to``, ``.cuda``, ``torch.tensor(...,
    device=)``). On a GPU each of these is a host-device sync. Yields the list of calls::

        with count_host_reads() as calls:
            augment(images)
        assert not calls, calls

    On a CPU-only machine, put the "device" data on the ``meta`` device and pass
    ``devices=("meta",)``: host-side bookkeeping on CPU tensors is then not counted, and any read
    of device data is both recorded and an error.
    """
    from contextlib import contextmanager

    from torch.overrides import TorchFunctionMode

    calls = HostReads()

    def counted(tensor: object) -> bool:
        return isinstance(tensor, torch.Tensor) and (devices is None or tensor.device.type in devices)

    def device_types(values) -> list[str]:
        return [torch.device(v).type for v in values if isinstance(v, (str, torch.device))]

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            first = args[0] if args else None
            if counted(first):
                if name in HOST_READS or name in DATA_DEPENDENT_SHAPES:
                    calls.append(f"{name} on {first.device}")
                elif (
                    name == "to"
                    and first.device.type != "cpu"
                    and "cpu" in device_types((*args[1:], kwargs.get("device")))
                ):
                    calls.append(f"to(cpu) on {first.device}")
                elif name == "__getitem__" and len(args) > 1:
                    index = args[1] if isinstance(args[1], tuple) else (args[1],)
                    if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                        calls.append(f"boolean-mask indexing on {first.device}")
            # host data sent to a device without non_blocking: the copy waits for the device's queue
            if isinstance(first, torch.Tensor) and first.device.type == "cpu" and name in ("to", "cuda"):
                targets = device_types((*args[1:], kwargs.get("device"))) or (
                    ["cuda"] if name == "cuda" else []
                )
                sent = [t for t in targets if t != "cpu" and (devices is None or t in devices)]
                if sent and not kwargs.get("non_blocking", False):
                    calls.append(f"blocking copy of a host tensor to {sent[0]}")
            if name in ("tensor", "as_tensor") and (devices is None or "cpu" not in devices):
                sent = [t for t in device_types([kwargs.get("device")]) if t != "cpu"]
                if sent and (devices is None or sent[0] in devices):
                    calls.append(f"torch.{name}(host data) on {sent[0]}")
            return func(*args, **kwargs)

    @contextmanager
    def run():
        with Mode():
            yield calls

    return run()


# ops that only make a new view of existing memory: no kernel runs for them
VIEW_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "expand",
        "permute",
        "t",
        "transpose",
        "as_strided",
        "alias",
        "split",
        "split_with_sizes",
        "unbind",
        "detach",
        "reshape",
        "lift_fresh",
    }
)


def count_dispatches(devices: tuple[str, ...] | None = None, kernels_only: bool = False):
    """Context manager counting the ATen ops dispatched inside it (``TorchDispatchMode``): yields a
    ``collections.Counter`` of op names. ``devices`` keeps the ops with a tensor argument or result
    on those device types (e.g. ``("meta",)`` for a batch put on the meta device, leaving out the
    host-side bookkeeping); ``kernels_only`` leaves out ops that only make views (no kernel)."""
    from collections import Counter
    from contextlib import contextmanager

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    counts: Counter = Counter()

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket.__name__)
            if kernels_only and name in VIEW_OPS:
                return result
            tensors = [t for t in tree_leaves((args, kwargs, result)) if isinstance(t, torch.Tensor)]
            if devices is None or any(t.device.type in devices for t in tensors):
                counts[name] += 1
            return result

    @contextmanager
    def run():
        with Mode():
            yield counts

    return run()


class Payload:
    """Unpickling this would create a file: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))
