"""One atomic writer for every file the project writes (checkpoints, images, JSON, caches).

A file is written to a temporary file with a unique name in the target's folder, flushed
and fsynced, renamed over the target, and the folder is fsynced. A kill while writing leaves
the previous file intact, and concurrent writers of one target never publish a torn file:
each renames its own complete temporary file, and the last rename wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a unique temporary file beside ``path``, then publish it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def remove_stale_temp_files(folder: str | Path) -> int:
    """Remove the temporary files writers killed mid-write left in ``folder``; call it only
    where no other writer is at work. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda file: file.write(data))


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_bytes(path, text.encode("utf-8"))
