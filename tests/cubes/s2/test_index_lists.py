"""The shipped index lists: ``default`` (ours, 132) and ``paper-122`` (the paper's count).

The paper-122 file is checked against its header's rule, re-derived here from the installed
spyndex catalogue with this module's own reading of "computable from reflectance alone".
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import spyndex
import xarray as xr

from gpp_cubes.batch import BuildConfig
from gpp_cubes.errors import ConfigError
from gpp_cubes.paper import INDEX_LISTS
from gpp_cubes.s2.indices import (
    SPYNDEX_BANDS,
    compute_indices,
    default_index_list,
    named_index_list,
    read_index_list,
)


def _reflectance_only(name: str) -> bool:
    """Every input of the index is a Sentinel-2 band, a constant with a default value, a
    wavelength of an S2 band or an RBF kernel term of two bands (or a band and L)."""
    def ok(p: str) -> bool:
        if p.startswith("lambda"):  # a constant without a default: the band's wavelength
            return ok(p.removeprefix("lambda"))
        if p in spyndex.bands:
            return bool(getattr(spyndex.bands[p], "sentinel2a", None))
        if p in spyndex.constants:
            return isinstance(spyndex.constants[p].default, int | float)
        return re.fullmatch(r"k[A-Z][A-Z]", p) is not None
    return all(ok(p) for p in spyndex.indices[name].bands)


def test_paper_122_follows_its_stated_rule():
    """Sentinel-2, vegetation domain, added by 2022-10-26, reflectance only, plus kNDVI."""
    by_rule = {n for n, i in spyndex.indices.items()
               if "Sentinel-2" in i.platforms and i.application_domain == "vegetation"
               and str(i.date_of_addition) <= "2022-10-26"}
    assert len(by_rule) == 122  # the catalogue entries the rule leaves
    dropped = {n for n in by_rule if not _reflectance_only(n)}
    assert dropped == {"NIRvP"}  # needs PAR
    want = (by_rule - dropped) | {"kNDVI"}
    names = named_index_list("paper-122")
    assert len(names) == len(set(names)) == 122
    assert set(names) == want
    assert names == sorted(names)
    # every index the paper names is in it
    assert {"kNDVI", "MCARI", "DSWI5", "NDMI"} <= set(names)


def test_both_lists_are_spyndex_names_computable_from_the_s2_bands():
    rng = np.random.default_rng(0)
    n = 6
    refl = {b: 0.02 + 0.05 * rng.random(n) for b in SPYNDEX_BANDS.values()}
    refl.update(B08=0.3 + 0.1 * rng.random(n), B8A=0.32 + 0.1 * rng.random(n),
                B07=0.28 + 0.1 * rng.random(n))  # a vegetated spectrum: NIR >> red
    bands = xr.Dataset({b: ("time", v) for b, v in refl.items()})
    for name in INDEX_LISTS:
        names = read_index_list(name)
        assert all(x in spyndex.indices for x in names)
        assert all(_reflectance_only(x) for x in names), name
        out = compute_indices(bands, name)  # raises if an input is missing
        assert list(out.data_vars) == names
        finite = [x for x in names if np.isfinite(out[x].values).all()]
        assert len(finite) >= 0.9 * len(names), sorted(set(names) - set(finite))
    assert read_index_list("default") == default_index_list() == read_index_list(None)
    assert len(default_index_list()) == 132
    assert set(named_index_list("paper-122")) <= set(default_index_list())


def test_named_lists_in_the_build_config(tmp_path):
    assert BuildConfig.create(tmp_path, s2_options={"index_list": "default"}) \
        == BuildConfig.create(tmp_path)
    cfg = BuildConfig.create(tmp_path, s2_options={"index_list": "paper-122"})
    assert dict(cfg.s2_options)["index_list"] == tuple(named_index_list("paper-122"))
    with pytest.raises(ConfigError, match="no shipped index list named 'paper-123'"):
        named_index_list("paper-123")
    with pytest.raises(ConfigError, match="paper-123"):  # not a name, file, nor an index
        BuildConfig.create(tmp_path, s2_options={"index_list": "paper-123"})
