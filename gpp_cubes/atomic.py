"""Atomic file writes: a reader sees the old file or the new one, never a truncated one.

Every small file the project writes (caches, catalog JSON, PCA models, fingerprints, the site
selection) goes through :func:`write_atomic` or :func:`atomic_path`: the content goes to a
hidden temporary file in the same directory (same file system, so the rename is atomic), is
flushed to disk, and replaces the target with :func:`os.replace`. A process killed midway
leaves at most a hidden ``.<name>.*.part`` file. Zarr stores, which are directories, use the
swap in :mod:`gpp_cubes.cube.store`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write ``path`` through; renamed onto ``path`` on success.

    Parameters
    ----------
    path : str or Path
        The file to (re)place. Its directory is created if missing.
    suffix : str, optional
        Suffix of the temporary name, for writers that insist on one (``numpy.save``
        appends ``.npy`` unless the name already ends with it).

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
        with open(tmp, "rb+") as fh:  # the bytes reach the disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``content`` (text or bytes) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Target file.
    content : str or bytes
        Text is encoded with ``encoding``.
    encoding : str, default "utf-8"

    Returns
    -------
    Path
        ``path``.
    """
    data = content.encode(encoding) if isinstance(content, str) else content
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
