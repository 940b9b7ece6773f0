"""Atomic, durable file writes: a file is replaced only once completely written and on disk.

Kept apart from ``run_dir`` (which knows tasks and runs) so that any module can write files
atomically without importing the task schema."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Platforms or file systems that cannot open or fsync
    a directory (Windows, some network mounts) are tolerated: the rename itself stays atomic."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: str | Path, path: str | Path) -> None:
    """Flush ``tmp`` to disk, rename it to ``path`` (on the same file system) and flush the directory
    of ``path``."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.<name>XXXX.tmp``) for writers that take a file name
    (safetensors, NumPy); once the block ends it is fsynced and renamed into place, and the
    directory is fsynced. On an exception the temporary file is removed and ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """An open file (text mode: UTF-8) that replaces ``path`` only once completely written and on
    disk (see ``atomic_path``): a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
