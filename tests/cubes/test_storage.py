"""The storage layer: local paths and object-storage URLs named alike; atomic zarr stores in
S3 (moto's server on 127.0.0.1) that are never visible half-written and lose nothing when a
rewrite is interrupted at any step."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
import xarray as xr

from gpp_cubes.atomic import write_atomic
from gpp_cubes.contract import COMPLETE_MARKER
from gpp_cubes.cube.store import is_complete, remove_stale_temporaries, write_zarr_atomic
from gpp_cubes.errors import ConfigError
from gpp_cubes.storage import ObjectPath, as_location, copy_tree, display, is_url, remove_tree


def _ds(v: float) -> xr.Dataset:
    t = np.array(["2018-06-01", "2018-06-02", "2018-06-03"], dtype="datetime64[ns]")
    return xr.Dataset({"a": ("time", np.array([v, v + 1, v + 2], "float32"),
                             {"units": "1"})}, coords={"time": t})


def _keys(url: str) -> list[str]:
    """Every object key under ``url``, listed by boto3 (a second S3 client, not ours)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


# ------------------------------------------------------------------------------ naming
def test_locations_local_and_url():
    assert as_location("/data/cubes") == Path("/data/cubes")
    assert as_location("file:///data/cubes") == Path("/data/cubes")
    loc = as_location("s3://bucket//cubes/")
    assert isinstance(loc, ObjectPath) and str(loc) == "s3://bucket/cubes"
    store = loc / "DE-Hai.zarr"
    assert str(store) == "s3://bucket/cubes/DE-Hai.zarr"
    assert (store.name, store.suffix, str(store.parent)) == ("DE-Hai.zarr", ".zarr",
                                                             "s3://bucket/cubes")
    assert str((loc / ".work" / "pca.json").with_suffix(".sites.json")) == \
        "s3://bucket/cubes/.work/pca.sites.json"
    assert str(as_location("s3://bucket").parent) == "s3://bucket"  # not above the bucket
    assert is_url("gs://b/x") and is_url(store) and not is_url("/x") and not is_url(Path("/x"))
    with pytest.raises(ConfigError, match=r"'\.\.'"):
        loc / "../other"


@pytest.mark.parametrize("url", ["s3://AKIAEXAMPLE:s3cr3t-value@bucket/cubes",
                                 "s3://bucket/cubes?X-Amz-Signature=abcdef0123"])
def test_urls_with_credentials_are_refused_without_echoing_them(url):
    with pytest.raises(ConfigError) as err:
        as_location(url)
    assert "s3cr3t" not in str(err.value) and "abcdef0123" not in str(err.value)
    assert "environment" in str(err.value)


def test_missing_backend_is_named():
    with pytest.raises(ConfigError, match="gcsfs"):
        as_location("gs://bucket/cubes").exists()


# ------------------------------------------------------------------------------ S3
def test_object_operations_against_s3(s3_bucket):
    base = as_location(f"{s3_bucket}/cubes")
    assert not base.exists() and not base.is_dir()
    write_atomic(base / "logs" / "a.txt", "first")
    write_atomic(f"{s3_bucket}/cubes/logs/b.json", b'{"x": 1}')  # a URL string works too
    assert (base / "logs" / "a.txt").read_text() == "first"
    assert base.is_dir() and (base / "logs" / "a.txt").is_file()
    assert sorted(p.name for p in (base / "logs").iterdir()) == ["a.txt", "b.json"]
    assert (base / "logs" / "b.json").size() == 8
    copy_tree(base / "logs", base / "copy", exclude=("b.json",))
    assert _keys(s3_bucket) == ["cubes/copy/a.txt", "cubes/logs/a.txt", "cubes/logs/b.json"]
    (base / "logs" / "a.txt").unlink()
    (base / "logs" / "a.txt").unlink(missing_ok=True)
    remove_tree(base / "copy")
    assert _keys(s3_bucket) == ["cubes/logs/b.json"]
    assert display(base) == f"{s3_bucket}/cubes"


def test_store_in_s3_is_complete_plain_zarr_with_no_temporaries(s3_bucket):
    url = f"{s3_bucket}/cubes/DE-Hai.zarr"
    out = write_zarr_atomic(_ds(1.0), url, provenance={"items": ["X"]})
    assert str(out) == url and is_complete(url)
    with xr.open_zarr(url) as back:  # a plain xarray reader, no gpp_cubes involved
        np.testing.assert_array_equal(back["a"].values, [1, 2, 3])
        assert json.loads(back.attrs["provenance"])["items"] == ["X"]
    keys = _keys(s3_bucket)
    assert f"cubes/DE-Hai.zarr/{COMPLETE_MARKER}" in keys
    assert all(k.startswith("cubes/DE-Hai.zarr/") for k in keys), keys  # temporary removed


def _etags(url: str) -> dict[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    return {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in _keys(url)
            if k.startswith(prefix + "/")}


def test_rewrite_interrupted_before_the_swap_keeps_the_previous_store(s3_bucket, monkeypatch):
    import gpp_cubes.cube.store as store

    url = f"{s3_bucket}/cubes/S.zarr"
    write_zarr_atomic(_ds(1.0), url, provenance={})
    before = _etags(url)

    def killed(tmp, path):
        raise KeyboardInterrupt  # the new store is complete in its temporary prefix

    monkeypatch.setattr(store, "_copy_into_place", killed)
    with pytest.raises(KeyboardInterrupt):
        write_zarr_atomic(_ds(5.0), url, provenance={})
    monkeypatch.undo()
    assert _etags(url) == before and is_complete(url)  # previous store untouched
    with xr.open_zarr(url) as back:
        np.testing.assert_array_equal(back["a"].values, [1, 2, 3])
    # the next write (the killed writer is gone: this process stands for it) cleans up and
    # replaces the store
    monkeypatch.setattr(store, "_writer_alive", lambda pid, host: False)
    write_zarr_atomic(_ds(5.0), url, provenance={})
    with xr.open_zarr(url) as back:
        np.testing.assert_array_equal(back["a"].values, [5, 6, 7])
    assert all(k.startswith("cubes/S.zarr/") for k in _keys(s3_bucket))


def test_rewrite_killed_mid_copy_is_finished_by_the_cleanup(s3_bucket, monkeypatch):
    import gpp_cubes.cube.store as store

    url = f"{s3_bucket}/cubes/S.zarr"
    write_zarr_atomic(_ds(1.0), url, provenance={"v": 1})
    real_copy = store.copy_tree

    def half_copy(src, dst, *, exclude=()):
        keys = sorted(k for k in src.fs.find(src.fs_path) if not k.endswith(COMPLETE_MARKER))
        first = keys[0][len(src.fs_path):].lstrip("/")
        src.fs.copy(keys[0], dst.fs_path + "/" + first)  # one object reached the target
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "copy_tree", half_copy)
    with pytest.raises(KeyboardInterrupt):
        write_zarr_atomic(_ds(5.0), url, provenance={"v": 2})
    monkeypatch.setattr(store, "copy_tree", real_copy)
    monkeypatch.setattr(store, "_writer_alive", lambda pid, host: False)  # the writer died
    # the final prefix lost its marker (never read half-copied); the new store is whole in
    # its temporary prefix, which carries the marker
    assert not is_complete(url)
    tmps = [k for k in _keys(s3_bucket) if k.startswith("cubes/.S.zarr.tmp-")]
    assert any(k.endswith(COMPLETE_MARKER) for k in tmps), tmps
    assert remove_stale_temporaries(url) == []  # nothing lost: the copy is finished instead
    assert is_complete(url)
    with xr.open_zarr(url) as back:
        np.testing.assert_array_equal(back["a"].values, [5, 6, 7])
        assert json.loads(back.attrs["provenance"])["v"] == 2
    assert all(k.startswith("cubes/S.zarr/") for k in _keys(s3_bucket))


def test_failed_first_write_leaves_nothing_that_looks_complete(s3_bucket, monkeypatch):
    url = f"{s3_bucket}/cubes/S.zarr"
    bad = _ds(1.0)
    bad.attrs["note"] = object()  # zarr cannot encode it: the write fails midway

    with pytest.raises(Exception):  # noqa: B017 - whichever error zarr raises
        write_zarr_atomic(bad, url, provenance={})
    assert not is_complete(url)
    assert _keys(s3_bucket) == []  # the incomplete temporary is removed
