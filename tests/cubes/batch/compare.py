"""Store comparison for the build tests: same data, same attributes up to creation times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

VOLATILE = ("created",)


def _prov(ds: xr.Dataset) -> dict:
    p = json.loads(ds.attrs["provenance"])
    items = [p] if "created" in p else list(p.values())
    for d in items:
        for k in VOLATILE:
            d.pop(k, None)
        d.get("parameters", {}).pop("stac_url", None)  # servers run on fresh ports
        # the same FLUXNET files copied elsewhere (the fingerprint names them by file name)
        d.get("parameters", {}).pop("fluxnet_dir", None)
    return p


def assert_same_store(a: Path, b: Path) -> None:
    """Equal variables (bitwise, NaN == NaN), coordinates and attributes (minus times)."""
    with xr.open_zarr(a) as x, xr.open_zarr(b) as y:
        x, y = x.load(), y.load()
        assert sorted(x.variables) == sorted(y.variables), (a, b)
        for name in x.variables:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
            assert x[name].attrs == y[name].attrs, name
        xa = {k: v for k, v in x.attrs.items() if k != "provenance"}
        ya = {k: v for k, v in y.attrs.items() if k != "provenance"}
        assert xa == ya
        assert _prov(x) == _prov(y)
