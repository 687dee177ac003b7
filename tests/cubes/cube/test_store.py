"""The atomic zarr store and its provenance."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from gpp_cubes.cube.store import is_complete, provenance_base, write_zarr_atomic


# ----------------------------------------------------------------------------- store
def _ds(v: float) -> xr.Dataset:
    t = np.array(["2018-06-01", "2018-06-02"], dtype="datetime64[ns]")
    return xr.Dataset({"a": ("time", np.array([v, v + 1], "float32"),
                             {"units": "1", "long_name": "test"})}, coords={"time": t})


def test_store_atomic_write_and_provenance(tmp_path):
    p = tmp_path / "DE-Hai.zarr"
    prov = {**provenance_base(), "items": ["X"],
            "href": "https://x.blob.core.windows.net/a.tif?sv=1&sig=SECRET",
            "subscription_key": "SECRET"}
    write_zarr_atomic(_ds(1.0), p, provenance=prov)
    assert is_complete(p)
    back = xr.open_zarr(p)
    np.testing.assert_array_equal(back.a.values, [1, 2])
    assert back.a.attrs["units"] == "1"
    text = back.attrs["provenance"]
    assert "SECRET" not in text and json.loads(text)["items"] == ["X"]
    assert json.loads(text)["packages"]["xarray"] == xr.__version__
    assert [f.name for f in tmp_path.iterdir()] == ["DE-Hai.zarr"]  # no temp leftovers



def test_provenance_keeps_ordinary_fields_that_merely_contain_key(tmp_path):
    # The QA section's key_indices and the S2 stage's asset keys are not credentials; an
    # earlier scrubber matched "key" anywhere in a field name and stored "<redacted>".
    p = tmp_path / "DE-Hai.zarr"
    prov = {**provenance_base(), "qa": {"s2": {"key_indices": ["NDVI", "NIRv"]}},
            "asset_keys": {"red": "B04"}, "api_key": "PLANTED-SECRET-123",
            "href": "https://x.example/a.tif?st=2020&se=2021&sig=PLANTED-SIG-4567"}
    write_zarr_atomic(_ds(1.0), p, provenance=prov)
    back = json.loads(xr.open_zarr(p).attrs["provenance"])
    assert back["qa"]["s2"]["key_indices"] == ["NDVI", "NIRv"]
    assert back["asset_keys"] == {"red": "B04"}
    assert back["api_key"] == "***"
    assert back["href"] == "https://x.example/a.tif"  # the query (where signatures live) goes


def test_store_interrupted_rewrite_keeps_previous(tmp_path, monkeypatch):
    import gpp_cubes.cube.store as store

    p = tmp_path / "S.zarr"
    write_zarr_atomic(_ds(1.0), p, provenance={})

    def boom(path):
        raise KeyboardInterrupt  # killed after writing the temp store, before the rename

    monkeypatch.setattr(store, "_fsync_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        write_zarr_atomic(_ds(5.0), p, provenance={})
    monkeypatch.undo()
    assert is_complete(p)
    np.testing.assert_array_equal(xr.open_zarr(p).a.values, [1, 2])
    assert [f.name for f in tmp_path.iterdir()] == ["S.zarr"]
    # a store without marker (killed before the marker) is not complete
    q = tmp_path / "T.zarr"
    shutil.copytree(p, q)
    (q / ".gpp-complete").unlink()
    assert not is_complete(q)
    write_zarr_atomic(_ds(7.0), q, provenance={})  # restart replaces it
    assert is_complete(q)
    np.testing.assert_array_equal(xr.open_zarr(q).a.values, [7, 8])
