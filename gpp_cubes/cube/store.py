"""Atomic zarr stores with provenance and a completion marker, local or in object storage.

A store is written to a temporary sibling directory, reopened and checked, renamed into
place, and only then gets its completion marker (:data:`gpp_cubes.contract.COMPLETE_MARKER`).
An interrupted write therefore leaves either the previous complete store, or a directory
without a marker (:func:`is_complete` is False and a restart rebuilds it) — never a store
that looks complete.
The hidden temporaries a killed writer leaves (``.<name>.tmp-*``, ``.<name>.old-*``) are
removed by the next write of the same store (:func:`remove_stale_temporaries`).

In object storage (a location of :mod:`gpp_cubes.storage`, e.g. ``s3://bucket/cubes``)
there is no rename: the checked temporary prefix gets the marker first, then the final
prefix loses its marker, receives server-side copies of the temporary's objects and gets
its marker last; the temporary is removed after. A write killed during the copy leaves the
final prefix without marker and a complete temporary, which the next clean-up copies into
place (the module docstring of :mod:`gpp_cubes.storage` gives the reasons for this design).
Zarr format 3 with consolidated metadata; zarr-python 3.0.0-3.0.7 are excluded in
pyproject.toml because of their data-loss bugs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import uuid
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpp_cubes.contract import COMPLETE_MARKER  # re-exported (defined by the contract)
from gpp_cubes.errors import InputFormatError
from gpp_cubes.secrets import scrub_provenance
from gpp_cubes.storage import Location, ObjectPath, as_location, copy_tree, display, remove_tree

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

#: Packages whose versions every store records.
PROVENANCE_PACKAGES: tuple[str, ...] = (
    "gpp-cubes", "numpy", "xarray", "dask", "zarr", "rasterio", "odc-stac", "stackstac",
    "pystac", "pystac-client", "sen2nbar", "spyndex", "s2cloudless", "scikit-learn", "pvlib",
)



def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None for a package that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance_base() -> dict[str, Any]:
    """Versions of the packages a store depends on, Python version and creation time (UTC).

    Returns
    -------
    dict
        ``{"created": ISO time, "python": "3.11.7", "packages": {name: version}}``.
    """
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(), "packages": package_versions()}


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance record of the store ``path`` (None if it has none or does not open).

    Reads the store's metadata only (no data), so it is cheap for many stores.
    """
    import zarr

    try:
        attrs = zarr.open_group(str(as_location(path)), mode="r").attrs
        prov = json.loads(attrs.get("provenance", "null"))
    except Exception:  # missing, half-written or foreign: no record to trust
        return None
    return prov if isinstance(prov, dict) else None


def is_complete(path: str | Path | ObjectPath) -> bool:
    """True if ``path`` (local or object storage) is a store whose write finished (its
    marker exists)."""
    return (as_location(path) / COMPLETE_MARKER).is_file()


_TEMP_NAME = re.compile(r"^\.(?P<store>.+)\.(?P<kind>tmp|old)-(?P<tag>[0-9a-f]{8})"
                        r"(?:-(?P<pid>\d+)-(?P<host>[A-Za-z0-9.\-]+))?$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.\-]", "-", platform.node() or "localhost")


def _temp_path(path: Location, kind: str) -> Location:
    """``.<name>.<kind>-<random>-<pid>-<host>``: who wrote it, to tell live from stale."""
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}-{os.getpid()}-{_host()}"


def _writer_alive(pid: str | None, host: str | None) -> bool:
    """Is the writer of a temporary still running? Only knowable on this host."""
    if pid is None or host != _host():
        return False  # older name format, or another machine: one writer per store
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's): keep it
    return True


def remove_stale_temporaries(path: str | Path | ObjectPath) -> list[Location]:
    """Remove what killed writes of the store ``path`` left behind; return what was removed.

    A write killed midway leaves a hidden ``.<name>.tmp-*`` directory (an incomplete
    store), and one killed between its two renames a ``.<name>.old-*`` (the previous
    store, renamed aside). Temporaries of writers still running on this host are kept
    (a store has one writer at a time; temporaries of other hosts are treated as stale).
    A ``.old-*`` store is removed only when ``path`` is complete; if ``path`` is missing,
    a complete ``.old-*`` is renamed back into place, so the previous store is not lost.
    In object storage, a complete ``.tmp-*`` (a checked store whose copy into place was
    killed) is copied into place when ``path`` is not complete, then removed.

    Parameters
    ----------
    path : str, Path or ObjectPath
        Final store location, e.g. ``out/DE-Hai.zarr`` or ``s3://bucket/cubes/DE-Hai.zarr``.

    Returns
    -------
    list of Path or ObjectPath
        Temporaries removed (restored ones are not listed).
    """
    path = as_location(path)
    if not path.parent.is_dir():
        return []
    removed: list[Location] = []
    olds: list[Path] = []
    finished: list[ObjectPath] = []
    prefix = f".{path.name}."
    for p in sorted(q for q in path.parent.iterdir() if q.name.startswith(prefix)):
        m = _TEMP_NAME.match(p.name)
        if not m or m["store"] != path.name or _writer_alive(m["pid"], m["host"]):
            continue
        if m["kind"] == "old" and isinstance(p, Path):
            olds.append(p)
            continue
        if isinstance(p, ObjectPath) and is_complete(p):
            finished.append(p)
            continue
        remove_tree(p)
        removed.append(p)
    for q in finished:  # object storage: a checked store whose copy into place was killed
        if not is_complete(path):
            _copy_into_place(q, path)
            log.warning("finished %s from %s (a write was killed while copying it into "
                        "place)", display(path), q.name)
        else:
            remove_tree(q)
            removed.append(q)
    for p in olds:
        if not path.exists() and is_complete(p):
            p.rename(path)  # killed between the renames: the previous store comes back
            log.warning("restored %s from %s (a write was killed mid-swap)", path, p.name)
        elif is_complete(path):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed:
        log.info("removed %d stale temporary store(s) of %s: %s", len(removed), display(path),
                 ", ".join(p.name for p in removed))
    return removed


def _marker_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds") + "\n"


def _copy_into_place(tmp: ObjectPath, path: ObjectPath) -> None:
    """Replace the store ``path`` by the complete store ``tmp`` (object storage).

    ``path`` loses its marker first (from then on no reader takes it for complete), then its
    objects (a previous store's chunks that the new one lacks), receives copies of ``tmp``'s
    objects and gets its marker last; ``tmp`` is removed only then. Killed at any step,
    ``tmp`` stays complete and the next :func:`remove_stale_temporaries` runs this again.
    """
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    remove_tree(path)
    copy_tree(tmp, path, exclude=(COMPLETE_MARKER,))
    (path / COMPLETE_MARKER).write_text(_marker_text())
    remove_tree(tmp)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_zarr_atomic(ds: xr.Dataset, path: str | Path | ObjectPath, *,
                      provenance: dict[str, Any],
                      encoding: dict[str, Any] | None = None) -> Location:
    """Write ``ds`` to a zarr store atomically, with provenance and completion marker.

    Parameters
    ----------
    ds : xarray.Dataset
        Data to write (Dask-backed data are computed chunk by chunk while writing).
    path : str, Path or ObjectPath
        Final store location, e.g. ``out/DE-Hai.zarr`` or ``s3://bucket/cubes/DE-Hai.zarr``
        (:func:`gpp_cubes.storage.as_location`); an existing store there is replaced
        only after the new one was written and validated.
    provenance : dict
        JSON-serialisable record (STAC item ids, masks, parameters...). Stored, scrubbed of
        credentials (:func:`gpp_cubes.secrets.scrub_provenance`: URL queries, secret
        fields, secrets in free text), as the JSON
        string attribute ``provenance``.
    encoding : dict, optional
        Per-variable zarr encoding.

    Returns
    -------
    Path or ObjectPath
        The final store location. Stale temporaries of earlier, killed writes of the same
        store are removed first (:func:`remove_stale_temporaries`).

    Raises
    ------
    InputFormatError
        The written store does not read back with the same variables, shapes and dtypes
        (the temporary store is removed, the previous store is untouched).
    """
    import xarray as xr

    path = as_location(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # left by an earlier write of this store that was killed
    tmp = _temp_path(path, "tmp")
    out = ds.copy()
    out.attrs = dict(ds.attrs)
    out.attrs["provenance"] = json.dumps(scrub_provenance(provenance), sort_keys=True)
    # Fixed-width numpy strings have no zarr v3 data-type spec (other readers may fail on
    # them); variable-length UTF-8 does.
    for name, var in list(out.variables.items()):
        if var.dtype.kind == "U":
            out[name] = var.astype(object)
    try:
        with warnings.catch_warnings():
            # Consolidated metadata is what makes remote (cloud) opens fast; zarr-python
            # warns that v3 has not standardised it yet, which users can do nothing about.
            warnings.filterwarnings("ignore", message="Consolidated metadata",
                                    category=UserWarning)
            out.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=True,
                        encoding=encoding)
        with xr.open_zarr(str(tmp), consolidated=True, chunks=None) as back:
            problems = [name for name, var in out.variables.items()
                        if name not in back.variables
                        or back[name].shape != var.shape
                        or (back[name].dtype != var.dtype and var.dtype.kind not in "OUSM")]
            if problems or back.attrs.get("provenance") != out.attrs["provenance"]:
                raise InputFormatError(f"zarr store {display(path)} failed validation after "
                                       f"writing: variables {problems or 'attrs'} differ")
        if isinstance(tmp, ObjectPath) and isinstance(path, ObjectPath):
            # complete and checked: from here on a kill loses nothing (the clean-up finishes)
            (tmp / COMPLETE_MARKER).write_text(_marker_text())
            _copy_into_place(tmp, path)
            return path
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = _temp_path(path, "old")
            path.rename(old)
        tmp.rename(path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        marker = path / COMPLETE_MARKER
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(_marker_text())
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(path)
    finally:
        # a complete temporary in object storage is the only whole copy while the final
        # prefix is being replaced: it stays for the clean-up to finish the copy
        if tmp.exists() and not (isinstance(tmp, ObjectPath) and is_complete(tmp)):
            remove_tree(tmp)
    return path
