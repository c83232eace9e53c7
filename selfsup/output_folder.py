"""Output folders written whole (an export, a ``compress`` result): assembled in a staging folder
beside the target and moved into place with renames, so that a crash never leaves a half-written
folder, and with the permissions a plain ``open`` / ``mkdir`` gives under the process's umask.

Replacing an existing folder (``overwrite``) is allowed only when everything in it is something the
writer itself writes: a folder holding anything else (a user's notes, another tool's output) is
refused with the names of those entries, and nothing is deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions a plain ``mkdir`` / ``open`` would have:
    folders ``0o777``, files ``0o666``, less the umask. ``tempfile.mkdtemp`` makes ``0o700`` and
    safetensors writes ``0o600`` whatever the umask, which locks other users out of a shared export."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def staging_folder(out_dir: Path) -> Path:
    """An empty, new folder beside ``out_dir`` (hidden: ``.<name>.<random>``) to assemble it in."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def foreign_entries(folder: Path, written: Collection[str]) -> list[str]:
    """Paths in ``folder`` (relative, POSIX style) that the writer does not write: not one of
    ``written`` nor a folder on the way to one of them."""
    allowed = set(written)
    for path in written:
        allowed.update(str(parent) for parent in Path(path).parents if str(parent) != ".")
    foreign: list[str] = []
    for rel in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")):
        if rel not in allowed and not any(rel.startswith(f"{top}/") for top in foreign):
            foreign.append(rel)  # a foreign folder is named once, not with every file inside it
    return foreign


def check_target(out_dir: Path, overwrite: bool, written: Collection[str], what: str) -> None:
    """Refuse an ``out_dir`` that exists, unless ``overwrite`` and it holds nothing but ``written``
    (what this ``what``, e.g. "an export", writes). An empty folder is taken as if it were new."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"'{out_dir}' exists; pass --overwrite (overwrite=True) to replace it.")
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise FileExistsError(
            f"'{out_dir}' is a {'link' if out_dir.is_symlink() else 'file'}, not a folder holding {what}: "
            "--overwrite replaces only such a folder. Move it away or choose another output folder."
        )
    foreign = foreign_entries(out_dir, written)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"'{out_dir}' holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} that {what} does not "
            f"write ({shown}); --overwrite replaces only {what}, so nothing was deleted. Move them away or "
            "choose another output folder."
        )


def move_into_place(
    staging: Path, out_dir: Path, overwrite: bool, written: Collection[str], what: str
) -> Path:
    """Give the assembled ``staging`` folder umask permissions and rename it to ``out_dir``. An
    existing ``out_dir`` (checked again by :func:`check_target`) is renamed aside first and deleted
    only once the new folder is in place."""
    apply_umask(staging)
    check_target(out_dir, overwrite, written, what)
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return out_dir
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(old / out_dir.name, out_dir)
        old.rmdir()
        raise
    shutil.rmtree(old)
    return out_dir


__all__ = [
    "apply_umask",
    "check_target",
    "current_umask",
    "foreign_entries",
    "move_into_place",
    "staging_folder",
]
