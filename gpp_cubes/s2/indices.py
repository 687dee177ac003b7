"""Spectral indices of the spatially averaged Sentinel-2 NBAR, with spyndex.

The paper's order: average NBAR over the clear forest pixels first, then compute the indices
of the averaged reflectance. Two index lists ship as data, each file's header stating its
selection rule: ``default`` (``gpp_cubes/data/s2_indices.txt``, 132 indices, ours) and
``paper-122`` (``gpp_cubes/data/s2_indices_paper122.txt``, the paper's count); a user may
pass another list. Every output records the list and the spyndex version.

Inputs given to spyndex (it fills nothing by itself):

- bands: A=B01, B=B02, G=B03, R=B04, RE1=B05, RE2=B06, RE3=B07, N=B08, N2=B8A, WV=B09,
  S1=B11, S2=B12 (NBAR reflectance [1]);
- constants: the defaults of ``spyndex.constants`` (L=1, g=2.5, C1=6, C2=7.5, gamma=1,
  alpha=0.1, sla=1, slb=0, nexp=2, cexp=1.16, fdelta=0.581, epsilon=1, k=0, ...);
- wavelengths [nm]: Sentinel-2A central wavelengths lambdaG=559.8 (B03), lambdaR=664.6
  (B04), lambdaN=832.8 (B08), lambdaN2=864.7 (B8A), lambdaS1=1613.7, lambdaS2=2202.4;
- kernel terms: RBF kernel ``k(a, b) = exp(-(a - b)^2 / (2 sigma^2))`` from
  ``spyndex.computeKernel`` with, per observation, ``sigma = 0.5 (N + R)``, the choice of
  Camps-Valls et al. (2021) for kNDVI; ``k(a, a) = 1``. kNL uses ``k(N, L)``.

Undefined results (division by zero, log of a negative number...) give NaN, never an
exception.

References
----------
Montero, D. et al. (2023). A standardized catalogue of spectral indices to advance the use
of remote sensing in Earth system research. Scientific Data 10, 197.
doi:10.1038/s41597-023-02096-0
Camps-Valls, G. et al. (2021). A unified vegetation index for quantifying the terrestrial
biosphere. Science Advances 7, eabc7447. doi:10.1126/sciadv.abc7447
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpp_cubes.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

#: spyndex band symbol -> Sentinel-2 band.
SPYNDEX_BANDS: Mapping[str, str] = {
    "A": "B01", "B": "B02", "G": "B03", "R": "B04", "RE1": "B05", "RE2": "B06",
    "RE3": "B07", "N": "B08", "N2": "B8A", "WV": "B09", "S1": "B11", "S2": "B12",
}
#: Sentinel-2A central wavelengths [nm] (ESA S2 spectral response functions, v3.0).
S2_WAVELENGTHS_NM: Mapping[str, float] = {
    "lambdaG": 559.8, "lambdaR": 664.6, "lambdaN": 832.8, "lambdaN2": 864.7,
    "lambdaS1": 1613.7, "lambdaS2": 2202.4,
}


def default_index_list() -> list[str]:
    """The shipped default index list (:data:`gpp_cubes.paper.INDEX_LIST_RESOURCE`)."""
    return named_index_list("default")


def named_index_list(name: str) -> list[str]:
    """A shipped index list by name (:data:`gpp_cubes.paper.INDEX_LISTS`).

    Parameters
    ----------
    name : {"default", "paper-122"}
        ``default``: 132 indices (ours); ``paper-122``: the paper's count, reconstructed
        (the rule is in the file's header).

    Raises
    ------
    ConfigError
        Not the name of a shipped list.
    """
    from gpp_cubes.paper import INDEX_LISTS

    if name not in INDEX_LISTS:
        raise ConfigError(f"no shipped index list named {name!r}; shipped: "
                          f"{', '.join(INDEX_LISTS)} (or give a file)")
    text = resources.files("gpp_cubes").joinpath(INDEX_LISTS[name]).read_text("utf-8")
    return parse_index_list(text)


def parse_index_list(text: str) -> list[str]:
    """Index short names of a list file: one per line, ``#`` comments, blank lines ignored."""
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [n for n in names if n]


def read_index_list(source: str | Path | Sequence[str] | None) -> list[str]:
    """Resolve an index selection: None (the default list), the name of a shipped list
    (``"default"``, ``"paper-122"``: :func:`named_index_list`), a file path, or index names.

    Raises
    ------
    ConfigError
        Unknown index names (not in spyndex) or duplicates.
    """
    import spyndex

    from gpp_cubes.paper import INDEX_LISTS

    if source is None:
        names = default_index_list()
    elif isinstance(source, str) and source in INDEX_LISTS:  # a name wins over a file
        names = named_index_list(source)
    elif isinstance(source, str | Path) and Path(source).is_file():
        names = parse_index_list(Path(source).read_text("utf-8"))
    elif isinstance(source, str):
        names = [source]
    else:
        names = list(source)
    unknown = [n for n in names if n not in spyndex.indices]
    if unknown:
        raise ConfigError(f"unknown spectral indices (not in spyndex {spyndex.__version__}): "
                          f"{', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ConfigError("duplicate names in the index list")
    return names


def index_params(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | float]:
    """All spyndex inputs computable from S2 reflectance: bands, constants, wavelengths, kernels.

    Parameters
    ----------
    bands : mapping
        Sentinel-2 band name (``"B04"``) -> reflectance [1] array.

    Returns
    -------
    dict
        spyndex parameter name -> value.
    """
    import spyndex

    p: dict[str, np.ndarray | float] = {k: c.default for k, c in spyndex.constants.items()
                                        if isinstance(c.default, int | float)}
    p.update(S2_WAVELENGTHS_NM)
    for sym, band in SPYNDEX_BANDS.items():
        if band in bands:
            p[sym] = np.asarray(bands[band], dtype=np.float64)
    if "N" in p and "R" in p:
        n, r = p["N"], p["R"]
        sigma = 0.5 * (np.asarray(n) + np.asarray(r))
        with np.errstate(all="ignore"):
            def k(a: str, b: str | float) -> np.ndarray:
                bb = p[b] if isinstance(b, str) else b
                return np.asarray(spyndex.computeKernel(
                    "RBF", {"a": p[a], "b": bb, "sigma": sigma}))

            p["kNN"] = np.ones_like(sigma)
            p["kNR"] = k("N", "R")
            if "B" in p:
                p["kNB"] = k("N", "B")
            p["kNL"] = k("N", float(p["L"]))
            if "G" in p:
                p["kGG"] = np.ones_like(sigma)
                p["kGR"] = k("G", "R")
                if "B" in p:
                    p["kGB"] = k("G", "B")
    return p


def compute_indices(bands: xr.Dataset, index_list: str | Path | Sequence[str] | None = None
                    ) -> xr.Dataset:
    """Spectral indices of averaged NBAR, one variable per index.

    Parameters
    ----------
    bands : xarray.Dataset
        Reflectance [1] variables ``B01``..``B12`` (any shape, typically (time,)).
    index_list : path, sequence of str or None
        Indices to compute (default: the shipped list).

    Returns
    -------
    xarray.Dataset
        float32 variables named by index short name [1]; NaN where undefined; attrs
        ``spyndex_version`` and ``index_list`` (comma-separated).
    """
    import spyndex
    import xarray as xr

    names = read_index_list(index_list)
    template = next(iter(bands.data_vars.values()))
    params = index_params({b: bands[b].values for b in bands.data_vars})
    out = {}
    for name in names:
        idx = spyndex.indices[name]
        missing = [b for b in idx.bands if b not in params]
        if missing:
            raise ConfigError(f"index {name} needs {missing}, not available from the S2 bands")
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                val = np.asarray(spyndex.computeIndex(name, {b: params[b] for b in idx.bands}),
                                 dtype=np.float64)
            except (ZeroDivisionError, ValueError, FloatingPointError, OverflowError) as err:
                log.debug("index %s undefined: %s", name, err)
                val = np.full(template.shape, np.nan)
        val = np.where(np.isfinite(val), val, np.nan)
        out[name] = xr.DataArray(np.broadcast_to(val, template.shape).astype(np.float32),
                                 dims=template.dims, coords=template.coords,
                                 attrs={"long_name": idx.long_name, "units": "1",
                                        "formula": idx.formula})
    return xr.Dataset(out, attrs={"spyndex_version": spyndex.__version__,
                                  "index_list": ",".join(names)})
