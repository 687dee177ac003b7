"""Atomic file writes: a reader sees the old file or the new one, never a truncated one.

Every small file the project writes (caches, catalog JSON, PCA models, fingerprints, the site
selection) goes through :func:`write_atomic` or :func:`atomic_path`: the content goes to a
hidden temporary file in the same directory (same file system, so the rename is atomic), is
flushed to disk, and replaces the target with :func:`os.replace`. A process killed midway
leaves at most a hidden ``.<name>.*.part`` file. A directory (a zarr store) is written through
:func:`atomic_directory`; the feature stores use the swap of :mod:`gpp_cubes.cube.store`, which
adds validation and a completion marker on top.

:func:`write_atomic` also takes an object-storage location (a URL or a
:class:`gpp_cubes.storage.ObjectPath`): there the object is written whole in one PUT, which
object stores make atomic (a reader gets the old object or the new one). The other helpers
are local only. For local paths this module needs the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path`` through; renamed onto ``path`` on success.

    Parameters
    ----------
    path : str or Path
        The file to (re)place. Its directory is created if missing.
    suffix : str, optional
        Suffix of the temporary name, for writers that insist on one (``numpy.save``
        appends ``.npy`` unless the name already ends with it).
    durable : bool, default True
        fsync the bytes before the rename, so that ``path`` survives an operating-system
        crash whole. Caches that validate what they read back pass False: the rename alone
        keeps a killed process from leaving a truncated file, and an fsync costs
        milliseconds per file.

    Yields
    ------
    Path
        Where to write. On an exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:  # the bytes reach the disk before the rename
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Any, content: str | bytes, *, encoding: str = "utf-8",
                 durable: bool = True) -> Any:
    """Write ``content`` (text or bytes) to ``path`` atomically.

    Parameters
    ----------
    path : str, Path or gpp_cubes.storage.ObjectPath
        Target file, or object (a URL such as ``s3://bucket/cubes/.work/pca.json``).
    content : str or bytes
        Text is encoded with ``encoding``.
    encoding : str, default "utf-8"
    durable : bool, default True
        As :func:`atomic_path` (local files only).

    Returns
    -------
    Path or ObjectPath
        ``path`` (as a location).
    """
    data = content.encode(encoding) if isinstance(content, str) else content
    if not isinstance(path, str | os.PathLike) or "://" in str(path):
        from gpp_cubes.storage import as_location

        path = as_location(path)
        if not isinstance(path, Path):  # object storage: one whole-object PUT
            path.write_bytes(data)
            return path
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A hidden sibling directory to write ``path`` through; swapped in on success.

    The previous ``path`` (if any) is renamed aside before the new one is renamed in and
    removed only then, so a process killed at any point leaves the old or the new directory
    under ``path`` (plus, at worst, a hidden ``.<name>.part-*`` / ``.<name>.old-*`` sibling).

    Parameters
    ----------
    path : str or Path
        The directory to (re)place. Its parent is created if missing.

    Yields
    ------
    Path
        Where to write (does not exist yet). On an exception it is removed and ``path`` is
        untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.part-{tag}")
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{tag}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
