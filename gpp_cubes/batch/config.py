"""What a batch build is asked to do (:class:`BuildConfig`) and where it writes.

The configuration travels to every Dask task, so it is a frozen dataclass of picklable
values: absolute paths and URLs only (a worker does not share the client's working
directory), options as sorted tuples. Its defaults are the paper's (:mod:`gpp_cubes.paper`);
the ``gpp build`` options take theirs from here (:func:`config_default`).

Layout of an output directory::

    <out>/<SITE>.zarr                 final per-site stores
    <out>/features.zarr               the multi-site store
    <out>/.work/<SITE>/<task>.zarr    phase-1 intermediates (one per task of batch.tasks)
    <out>/.work/pca.json              the PCA shared by the directory's stores (+ sidecar)
    <out>/logs/<SITE>.log             one log per site; logs/build-summary.csv
    <out>/catalog/                    STAC collection of the built cubes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gpp_cubes.errors import ConfigError
from gpp_cubes.paper import STUDY_END, STUDY_START, TEST_YEARS, TRAIN_YEARS

WORK_DIR = ".work"
LOG_DIR = "logs"
PCA_FILE = "pca.json"
CATALOG_DIR = "catalog"  # <out>/catalog/cubes/collection.json
SUMMARY_FILE = "build-summary.csv"


@dataclass(frozen=True)
class BuildConfig:
    """Everything a worker needs to build a site (picklable, absolute paths only).

    Attributes
    ----------
    out_dir : str
        Output directory, absolute, reachable by every worker.
    start, end : str
        Calendar [ISO dates, inclusive].
    provider, stac_url : str
        STAC endpoint (:func:`gpp_cubes.stac.providers.resolve_provider`).
    stac_identity : str, optional
        Stable name of the STAC endpoint in the stores' fingerprints, instead of
        ``stac_url`` without its query: for a server started on a fresh port every run
        (the demo world's), so a rerun with the same inputs reuses the stores.
    corine_source : str
        CORINE raster (path or URL) for the forest mask.
    fluxnet_dir : str
        Directory holding the FLUXNET2015-format daily files.
    engine : {"odc", "stackstac"}
        Raster loader.
    lst_source : {"stac", "ee"}
        MODIS LST source.
    train_years, test_years : tuple of int
        The temporal split (PCA is fitted on ``train_years``).
    s2_options : tuple of (str, value)
        Extra keyword arguments of :func:`gpp_cubes.s2.s2_features` (e.g. the cloud mask).
    qa : tuple of (str, value)
        Feature QA options (:class:`gpp_cubes.qa.QAConfig`: ``action`` drop/flag/off,
        ``outlier_sigma``, ``window``); empty: the defaults.
    """

    out_dir: str
    start: str = STUDY_START
    end: str = STUDY_END
    provider: str = "planetary-computer"
    stac_url: str | None = None
    stac_identity: str | None = None
    corine_source: str | None = None
    fluxnet_dir: str | None = None
    engine: str = "odc"
    lst_source: str = "stac"
    train_years: tuple[int, ...] = TRAIN_YEARS
    test_years: tuple[int, ...] = TEST_YEARS
    s2_options: tuple[tuple[str, Any], ...] = ()
    qa: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not Path(self.out_dir).is_absolute():
            raise ConfigError(f"out_dir must be absolute (workers do not share the client's "
                              f"working directory): {self.out_dir}")
        for name in ("corine_source", "fluxnet_dir"):
            v = getattr(self, name)
            if v and "://" not in v and not Path(v).is_absolute():
                raise ConfigError(f"{name} must be an absolute path or a URL: {v}")

    @classmethod
    def create(cls, out_dir: str | Path, *, corine_source: str | Path | None = None,
               fluxnet_dir: str | Path | None = None,
               s2_options: Mapping[str, Any] | None = None,
               qa: Mapping[str, Any] | None = None, **kwargs: Any) -> BuildConfig:
        """The configuration of a build as a user states it: local paths made absolute,
        the S2 and QA options completed with their defaults and validated (so a bad value
        fails before any task, and an option given at its default value records the same
        parameters as no option)."""
        return cls(out_dir=_absolute(out_dir), corine_source=_absolute(corine_source),
                   fluxnet_dir=_absolute(fluxnet_dir), s2_options=_s2_options(s2_options),
                   qa=_qa_options(qa), **kwargs)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def site_store(self, site_id: str) -> Path:
        return self.out / f"{site_id}.zarr"

    def phase1_store(self, site_id: str, sensor: str) -> Path:
        return self.out / WORK_DIR / site_id / f"{sensor}.zarr"

    def pca_path(self) -> Path:
        return self.out / WORK_DIR / PCA_FILE

    def log_path(self, site_id: str) -> Path:
        return self.out / LOG_DIR / f"{site_id}.log"

    def provenance_params(self) -> dict[str, Any]:
        """The parameters recorded in every store (no credentials: URLs lose queries)."""
        d = asdict(self)
        d.pop("out_dir")
        d["s2_options"] = dict(self.s2_options)
        d["qa"] = dict(self.qa)
        return d


def config_default(name: str) -> Any:
    """The default of the :class:`BuildConfig` field ``name`` (for CLI options and help)."""
    for f in fields(BuildConfig):
        if f.name == name and f.default is not MISSING:
            return f.default
    raise KeyError(f"BuildConfig has no field {name!r} with a default")


def _absolute(p: str | Path | None) -> str | None:
    if p is None:
        return None
    s = str(p)
    return s if "://" in s else str(Path(s).expanduser().resolve())


def _s2_options(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """S2 options as a sorted tuple, the scene rules of :mod:`gpp_cubes.s2` filled in with
    their defaults, so an explicit default and no option give the same fingerprint."""
    from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH

    opts = {"max_sun_zenith": MAX_SUN_ZENITH, "c_factor_range": C_FACTOR_RANGE,
            **(options or {})}
    opts["max_sun_zenith"] = float(opts["max_sun_zenith"])
    opts["c_factor_range"] = tuple(float(v) for v in opts["c_factor_range"])
    return tuple(sorted(opts.items()))


def _qa_options(qa: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """All QA options, defaults filled in and validated (:class:`gpp_cubes.qa.QAConfig`)."""
    from gpp_cubes.qa import QAConfig

    return tuple(sorted(QAConfig.from_options(qa).options().items()))
