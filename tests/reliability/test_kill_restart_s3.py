"""The kill-and-restart guarantee of tests/reliability/test_kill_restart.py in object storage
(moto's S3 server on 127.0.0.1): a store rewrite killed with SIGKILL leaves the previous store
object for object identical and the only one with a marker, and the restart ends with the new
store and no temporary left.

(A rewrite killed while its checked temporary is copied into place is covered in
tests/cubes/test_storage.py; first writes killed, in a batch build into S3 killed during
phase 1 and resumed, in tests/cubes/batch/test_build_s3.py.)
"""

from __future__ import annotations

import subprocess
import sys

import boto3
import numpy as np
import xarray as xr

from gpp_cubes.contract import COMPLETE_MARKER
from gpp_cubes.cube.store import is_complete

from .test_kill_restart import WRITER, kill_when


def _write(url: str, offset: float, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, url, str(offset), str(pause)],
                            start_new_session=True)  # inherits the AWS_* of the S3 server


def _objects(bucket_url: str) -> dict[str, str]:
    """Key -> ETag of every object of the bucket (boto3, not the code under test)."""
    bucket = bucket_url.removeprefix("s3://")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _kill_mid_write(bucket_url: str, url: str, offset: float) -> None:
    def under_way() -> bool:  # the temporary store has its first chunks
        return sum(".tmp-" in k and "/v/c/" in k for k in _objects(bucket_url)) >= 3

    kill_when(_write(url, offset, pause=0.1), under_way, poll=0.05)


def _values(url: str) -> np.ndarray:
    with xr.open_zarr(url) as ds:
        return ds["v"].values


def test_killed_rewrite_in_s3_keeps_the_previous_store_and_restart_finishes(s3_bucket):
    url = f"{s3_bucket}/cubes/SITE.zarr"
    assert _write(url, 0.0).wait(timeout=120) == 0
    assert _values(url)[:, 0, 0].tolist() == list(range(40))
    before = _objects(s3_bucket)
    _kill_mid_write(s3_bucket, url, 100.0)
    after = _objects(s3_bucket)
    assert {k: after.get(k) for k in before} == before and is_complete(url)
    # only the previous store carries a marker; the half-written one is a hidden temporary
    assert [k for k in after if k.endswith(COMPLETE_MARKER)] == [
        f"cubes/SITE.zarr/{COMPLETE_MARKER}"]
    assert _write(url, 100.0).wait(timeout=120) == 0
    assert _values(url)[:, 0, 0].tolist() == [100.0 + i for i in range(40)]
    assert all(k.startswith("cubes/SITE.zarr/") for k in _objects(s3_bucket))
