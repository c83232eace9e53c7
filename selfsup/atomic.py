"""Writing a file atomically, with the permissions a plain ``open`` gives.

The one writer of checkpoints, cached file lists and cached features: ``path`` is always either the
old or the complete new file, never a truncated one, and another user of a shared machine can read
it as the umask allows. No framework import: data loading uses it too.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def atomic_write_bytes(data: bytes, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the complete new file.
    Temporary files left by a writer that was killed are removed by the next successful write.

    The file gets the permissions a plain ``open`` gives: a new file ``0o666`` less the umask (not
    ``tempfile.mkstemp``'s ``0o600``, which locks other users of a shared machine out), a replaced
    file the mode it had."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: a new file of ours, never another writer's; mode 0o666 is reduced by the umask
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.exists():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        for leftover in stale:
            leftover.unlink(missing_ok=True)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(
                err.errno,
                f"could not write {what} '{path}' ({err.strerror or err}); the previous file, if any, is "
                "unchanged. Free disk space or choose another output folder.",
            ) from err
        raise
