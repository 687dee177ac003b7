"""Where a build writes and reads: a local directory or an object-storage URL, one layer for both.

Every output of a batch build (per-site stores, ``features.zarr``, the phase-1 stores, the
PCA, the logs, the summary table, the STAC collection) is named by a *location*
(:func:`as_location`): a :class:`pathlib.Path` for a local path, an :class:`ObjectPath` for
an fsspec URL (``s3://bucket/prefix``; ``gs://`` and ``az://`` the same way once gcsfs or
adlfs is installed). :class:`ObjectPath` has the few :class:`~pathlib.Path` operations the
build uses (``/``, ``name``, ``parent``, ``exists``, ``is_file``, ``read_text``,
``write_bytes``, ``unlink``, ``iterdir``...), so readers and writers treat both alike; the
operations a Path lacks for a tree are here (:func:`remove_tree`, :func:`copy_tree`).
``str(location)`` is what xarray and zarr open. Local outputs keep the POSIX guarantees of
:mod:`gpp_cubes.atomic` and :mod:`gpp_cubes.cube.store` (temporary sibling, fsync, rename).

Atomic stores on object storage: a temporary prefix plus a completion marker
---------------------------------------------------------------------------------
Object stores have no rename of a prefix, only whole-object PUTs (atomic per object) and
copies. A store is therefore written to a hidden temporary prefix beside its final one,
read back and checked, and given the completion marker (:data:`gpp_cubes.contract.
COMPLETE_MARKER`); only then is the final prefix's marker removed, its objects replaced by
server-side copies of the temporary's, and its marker written last
(:func:`gpp_cubes.cube.store.write_zarr_atomic`). At every instant a complete copy exists:
the previous store (until the new one is complete in its temporary prefix), or the
temporary (until the final prefix has its marker). A restart that finds the final prefix
without marker and a complete temporary finishes the copy
(:func:`gpp_cubes.cube.store.remove_stale_temporaries`), so a rebuild killed at any point
loses nothing already written.

Why a marker and not icechunk transactions: icechunk makes a commit atomic for every
reader, but only for readers that open the store through icechunk; a zarr store written
with it is not a plain zarr prefix that ``xarray.open_zarr("s3://...")``, other zarr
implementations or a STAC asset href can open. The marker keeps the stores plain zarr
(the data contract, :mod:`gpp_cubes.contract`), at the price that a reader must check the
marker: every reader of this project does (:func:`gpp_cubes.cube.store.is_complete`,
``gpp_models.data.open_cube``, the STAC publisher), and a plain xarray reader that skips the
check may see a store mid-copy during the seconds of a rewrite (never during a first build,
where the marker is simply absent until the store is whole).

Credentials come only from where the storage library looks by itself (for S3, botocore's
chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` and ``~/.aws/credentials``, ``AWS_ENDPOINT_URL`` for S3-compatible servers,
instance roles). A URL carrying credentials (``s3://key:secret@bucket``) or a query string is
refused, so a location's text never holds a secret; logs name locations through
:func:`display`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpp_cubes.errors import ConfigError

__all__ = ["Location", "ObjectPath", "as_location", "copy_tree", "display", "is_url",
           "remove_tree"]

#: ``scheme://``: a URL (``file://`` is a local path).
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)
#: The storage packages fsspec needs per protocol, for the error message.
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
             "abfs": "adlfs", "abfss": "adlfs"}


def is_url(path: Any) -> bool:
    """True if ``path`` names object storage (an :class:`ObjectPath`, or a URL other than
    ``file://``), False for a local path."""
    if isinstance(path, ObjectPath):
        return True
    if not isinstance(path, str):
        return False
    m = _URL.match(path)
    return bool(m) and m["scheme"].lower() != "file"


class ObjectPath:
    """A key prefix or object in object storage, named by its fsspec URL.

    Parameters
    ----------
    url : str
        ``protocol://bucket/key...``; trailing slashes are dropped. User info
        (``key:secret@``), query strings and fragments are refused: credentials come from
        the environment or the standard credential files only.

    Raises
    ------
    ConfigError
        Not a URL, or a URL carrying credentials or a query.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        m = _URL.match(str(url))
        if not m or m["scheme"].lower() == "file":
            raise ConfigError(f"not an object-storage URL: {url!r}")
        scheme, rest = m["scheme"].lower(), m["rest"]
        netloc = rest.split("/", 1)[0]
        if "@" in netloc or "?" in rest or "#" in rest:
            from gpp_cubes.secrets import public_url

            raise ConfigError(
                f"{public_url(str(url))}: a storage URL must not carry credentials, a query or "
                "a fragment; credentials come from the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...) or ~/.aws/credentials")
        rest = re.sub(r"/{2,}", "/", rest).strip("/")
        if not rest:
            raise ConfigError(f"{url!r} names no bucket or container")
        self._url = f"{scheme}://{rest}"

    # -- naming ---------------------------------------------------------------------------
    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"ObjectPath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other._url == self._url

    def __lt__(self, other: ObjectPath) -> bool:
        return self._url < str(other)

    def __hash__(self) -> int:
        return hash(self._url)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ObjectPath, (self._url,))

    def __truediv__(self, part: str | os.PathLike[str]) -> ObjectPath:
        return self.joinpath(part)

    def joinpath(self, *parts: str | os.PathLike[str]) -> ObjectPath:
        """The location ``parts`` below this one (``..`` is refused)."""
        url = self._url
        for part in parts:
            text = os.fspath(part).strip("/")
            if any(p == ".." for p in text.split("/")):
                raise ConfigError(f"'..' in a storage key: {part!r}")
            url = f"{url}/{text}" if text else url
        return ObjectPath(url)

    @property
    def protocol(self) -> str:
        return self._url.split("://", 1)[0]

    @property
    def key(self) -> str:
        """``bucket/key...`` (the URL without its protocol)."""
        return self._url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> ObjectPath:
        head = posixpath.dirname(self.key)
        return ObjectPath(f"{self.protocol}://{head}") if head else self

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> ObjectPath:
        return self.with_name(posixpath.splitext(self.name)[0] + suffix)

    def is_absolute(self) -> bool:
        return True

    def resolve(self) -> ObjectPath:
        return self

    # -- the file system ------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec file system (listings not cached: other processes write too)."""
        return _filesystem(self.protocol)

    @property
    def fs_path(self) -> str:
        """The path the fsspec file system expects."""
        return self.fs._strip_protocol(self._url)

    def exists(self) -> bool:
        return bool(self.fs.exists(self.fs_path))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.fs_path))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.fs_path))

    def iterdir(self) -> Iterator[ObjectPath]:
        """The objects and prefixes directly below (FileNotFoundError if there are none)."""
        for p in self.fs.ls(self.fs_path, detail=False):
            name = posixpath.basename(str(p).rstrip("/"))
            if name:
                yield self / name

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists once an object is written below it."""

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.fs_path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """Write the object whole (one PUT: readers see the old or the new object)."""
        self.fs.pipe_file(self.fs_path, bytes(data))
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def open(self, mode: str = "r", **kwargs: Any) -> Any:
        return self.fs.open(self.fs_path, mode, **kwargs)

    def size(self) -> int | None:
        """The object's size [bytes] (None if unknown)."""
        try:
            return int(self.fs.size(self.fs_path))
        except (FileNotFoundError, TypeError, ValueError):
            return None


#: A local path or an object-storage location.
Location = Path | ObjectPath


def as_location(path: str | os.PathLike[str] | ObjectPath) -> Location:
    """The location ``path`` names: an :class:`ObjectPath` for a URL, else a :class:`Path`
    (``file://`` URLs and ``~`` are resolved to local paths)."""
    if isinstance(path, ObjectPath | Path):
        return path
    text = os.fspath(path)
    if is_url(text):
        return ObjectPath(text)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser()


def display(path: Any) -> str:
    """How a log line or an error message names a location (URLs without credentials)."""
    from gpp_cubes.secrets import public_url

    text = str(path)
    return public_url(text) if is_url(text) else text


def _filesystem(protocol: str) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, use_listings_cache=False)
    except ImportError as err:
        pkg = _BACKENDS.get(protocol, f"the fsspec backend of {protocol}://")
        raise ConfigError(f"{protocol}:// outputs need {pkg}, which is not installed: "
                          f"pip install {pkg}") from err
    except ValueError as err:
        raise ConfigError(f"unknown storage protocol {protocol}:// ({err})") from err


def remove_tree(path: Location) -> None:
    """Remove a directory or prefix and everything below it (nothing if it is missing)."""
    if isinstance(path, ObjectPath):
        fs = path.fs
        try:
            keys = fs.find(path.fs_path, withdirs=False)
        except FileNotFoundError:
            return
        if keys:
            fs.rm(keys)
        return
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def copy_tree(src: ObjectPath, dst: ObjectPath, *, exclude: tuple[str, ...] = ()) -> int:
    """Copy every object below ``src`` to the same key below ``dst`` (server-side copies).

    Parameters
    ----------
    src, dst : ObjectPath
        Prefixes on the same file system.
    exclude : tuple of str
        Keys (relative to ``src``) not copied.

    Returns
    -------
    int
        Objects copied.
    """
    fs = src.fs
    base = src.fs_path.rstrip("/")
    keys = [k for k in fs.find(base, withdirs=False)
            if k[len(base):].lstrip("/") not in exclude]
    if keys:
        target = dst.fs_path.rstrip("/")
        fs.copy(keys, [target + k[len(base):] for k in keys])
    return len(keys)
