"""Batch builds into object storage (S3 API of moto's server on 127.0.0.1): the same stores
as the local build, complete and plain zarr; a rerun reuses them; a changed parameter stops
the build naming the S3 store; a build killed midway and resumed ends identical to the
uninterrupted one; the PCA, the logs, the summary and the STAC collection live in the bucket.

The reference is the session's local short build (``base``); the S3 build of the same site
and months is made once per session (``s3_base``) and copied server-side for the tests that
change it.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import sys

import boto3
import pytest
import xarray as xr

from gpp_cubes.batch import SENSORS, BuildConfig, build_sites
from gpp_cubes.batch.logs import read_site_log
from gpp_cubes.cube.store import is_complete
from gpp_cubes.errors import StaleStoreError
from gpp_cubes.s2.pca import load_pca
from gpp_cubes.storage import as_location, copy_tree

from .compare import assert_same_store
from .conftest import SITE, short_kwargs
from .test_build_resume_distributed import _kill_once_complete

FINAL = [f"{SITE}.zarr", "features.zarr"]
PHASE1 = [f".work/{SITE}/{s}.zarr" for s in SENSORS]
STORES = FINAL + PHASE1
#: A build in a subprocess on one in-process worker thread (no worker process to spawn).
RUNNER = """
import json, logging, sys
from distributed import Client, LocalCluster
from gpp_cubes.batch import build_sites
args = json.loads(sys.argv[1])
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                  silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
    build_sites(args.pop("sites"), args.pop("out"), client=client, **args)
"""


def _assert_same(local, url: str) -> None:
    """Equal stores: :func:`assert_same_store` for the final ones; a phase-1 store's
    variables and attributes (its provenance holds no creation time) exactly."""
    if url.endswith(tuple(FINAL)):
        assert_same_store(local, url)
        return
    with xr.open_zarr(local) as x, xr.open_zarr(url) as y:
        xr.testing.assert_identical(x.load(), y.load())


def _keys(url: str) -> dict[str, str]:
    """Key (relative to ``url``) -> ETag of every object below ``url``, listed by boto3."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/")
    return {o["Key"][len(prefix) + 1:]: o["ETag"] for page in pages
            for o in page.get("Contents", [])}


@pytest.fixture(scope="session")
def s3_base(build_served, client, s3_server) -> str:
    """The short build of ``base``, written to a bucket: its ``s3://`` URL."""
    url = f"{s3_server.create_bucket()}/short"
    table = build_sites([SITE], url, client=client, **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    return url


def _copy(src: str, s3_server) -> str:
    dst = f"{s3_server.create_bucket()}/out"
    copy_tree(as_location(src), as_location(dst))
    return dst


def test_s3_build_equals_the_local_build(s3_base, base):
    for name in STORES:
        assert is_complete(f"{s3_base}/{name}"), name
        _assert_same(base / name, f"{s3_base}/{name}")  # opened by plain xarray
    keys = _keys(s3_base)
    assert not [k for k in keys if ".tmp-" in k or ".old-" in k]  # no temporaries left
    # the PCA and its sidecar, the summary table
    assert load_pca(f"{s3_base}/.work/pca.json") == load_pca(base / ".work" / "pca.json")
    side = as_location(f"{s3_base}/.work/pca.sites.json").read_text()
    assert json.loads(side) == json.loads((base / ".work" / "pca.sites.json").read_text())
    summary = as_location(f"{s3_base}/logs/build-summary.csv").read_text()
    assert summary == (base / "logs" / "build-summary.csv").read_text()
    # one log part per task (4 phase-1 tasks and the assembly), in time order
    parts = [k for k in keys if k.startswith(f"logs/{SITE}.log.d/")]
    assert len(parts) == len(SENSORS) + 1, parts
    text = read_site_log(BuildConfig.create(s3_base).log_path(SITE))
    for stage in ("s2", "s1", "lst", "gpp", "assemble", "write"):
        assert f"{SITE}: stage {stage} done" in text, stage


def test_s3_catalog_points_at_the_s3_stores(s3_base):
    # read as any STAC client would: the JSON from the bucket, links resolved by hand
    bucket, _, prefix = s3_base.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")

    def get(key: str) -> dict:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    coll_key = f"{prefix}/catalog/cubes/collection.json"
    coll = get(coll_key)
    items = [link["href"] for link in coll["links"] if link["rel"] == "item"]
    assert len(items) == 1
    item = get(posixpath.normpath(posixpath.join(posixpath.dirname(coll_key), items[0])))
    assert item["id"] == SITE
    href = item["assets"]["zarr"]["href"]
    assert href == f"{s3_base}/{SITE}.zarr"
    with xr.open_zarr(href) as ds:
        assert ds.attrs["site_id"] == SITE


def test_no_credential_reaches_the_bucket(s3_base, s3_server):
    # every object the build wrote: metadata and provenance, logs, summary, catalog, PCA
    bucket, _, prefix = s3_base.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    keys = list(_keys(s3_base))
    assert any(k.startswith("logs/") for k in keys) and any(k.endswith(".json") for k in keys)
    secrets = [s3_server.env[k].encode() for k in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")]
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        assert not [s for s in secrets if s in body], key


def test_s3_rerun_reuses_every_store(s3_base, s3_server, build_served, client, no_cluster):
    out = _copy(s3_base, s3_server)
    before = _keys(out)
    table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert list(table["status"]) == ["skipped"], table.to_string()
    after = _keys(out)
    stores = {k: v for k, v in before.items() if ".zarr/" in k}
    assert stores and {k: after.get(k) for k in stores} == stores  # not one object rewritten
    assert not [k for k in after if ".tmp-" in k]
    # the catalog, read back from the bucket and updated, still has its one item
    coll = json.loads(as_location(f"{out}/catalog/cubes/collection.json").read_text())
    assert [link["href"] for link in coll["links"] if link["rel"] == "item"] == [
        f"./{SITE}/{SITE}.json"]


def test_s3_changed_parameter_stops_the_build_naming_the_store(s3_base, s3_server,
                                                               build_served, client):
    out = _copy(s3_base, s3_server)
    with pytest.raises(StaleStoreError, match=rf"{out}/\.work/{SITE}/\w+\.zarr was built with"):
        build_sites([SITE], out, client=client,
                    **short_kwargs(build_served, start="2018-05-02"))


@pytest.mark.slow
def test_s3_build_killed_and_resumed_equals_uninterrupted(base, s3_server, build_served,
                                                          client, tmp_path):
    out = f"{s3_server.create_bucket()}/killed"
    phase1 = [f"{out}/.work/{SITE}/{s}.zarr" for s in SENSORS]
    args = {"sites": [SITE], "out": out, **short_kwargs(build_served)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)], cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # one worker thread runs the phase-1 tasks one after the other: killed (client and
    # worker at once) once the first is done
    _kill_once_complete(proc, phase1, "phase 1")
    done = {p: as_location(f"{p}/.gpp-complete").read_text() for p in phase1
            if is_complete(p)}
    assert 1 <= len(done) < len(phase1), f"not killed during phase 1: {len(done)} done"
    assert not is_complete(f"{out}/{SITE}.zarr")

    table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert list(table["status"]) == ["built"], table.to_string()
    # the phase-1 stores finished before the kill were not redone
    assert {p: as_location(f"{p}/.gpp-complete").read_text() for p in done} == done
    for name in STORES:
        _assert_same(base / name, f"{out}/{name}")
    assert not [k for k in _keys(out) if ".tmp-" in k or ".old-" in k]
