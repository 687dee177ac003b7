"""What a batch build is asked to do (:class:`BuildConfig`) and where it writes.

The configuration travels to every Dask task, so it is a frozen dataclass of picklable
values: absolute paths and URLs only (a worker does not share the client's working
directory), options as sorted tuples. Its defaults are ours (mostly the paper's values,
:mod:`gpp_cubes.paper`); the ``gpp build`` options take theirs from here
(:func:`config_default`). :func:`resolve_protocol` is the one place that turns a protocol
(``ours`` or ``paper``) and the options a user gave explicitly into the fields;
:meth:`BuildConfig.create` applies it.

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

from gpp_cubes.contract import NO_TARGETS
from gpp_cubes.errors import ConfigError
from gpp_cubes.paper import (
    EXTREMES_METHOD,
    N_PCS,
    PCA_VARIANCE,
    RADIUS_M,
    STUDY_END,
    STUDY_START,
    TEST_YEARS,
    TRAIN_YEARS,
)
from gpp_cubes.storage import Location, as_location, is_url

WORK_DIR = ".work"
LOG_DIR = "logs"
PCA_FILE = "pca.json"
CATALOG_DIR = "catalog"  # <out>/catalog/cubes/collection.json
SUMMARY_FILE = "build-summary.csv"

#: Cloud-mask methods of :mod:`gpp_cubes.s2.cloud` (``s2_options["cloud_mask"]``).
CLOUD_MASKS = ("scl", "s2cloudless", "cloudsen12")
#: LST sources (:func:`gpp_cubes.sensors.lst.lst_features`).
LST_SOURCES = ("stac", "ee")
#: Readings of the extremes threshold (:func:`gpp_cubes.targets.extremes.detect_extremes`).
EXTREMES_METHODS = ("negative_tail", "quantile")
#: The paper's number of principal components (section 2.1: 18 PCs).
PAPER_PCS = N_PCS
#: Build protocols (``gpp build --protocol``): ours (the defaults) or the paper's data choices.
PROTOCOLS = ("ours", "paper")
#: What ``protocol="paper"`` sets when the option is not given (:func:`resolve_protocol`);
#: the cloud mask only when local CloudSEN12 weights are given.
PAPER_PROTOCOL: dict[str, Any] = {"pca_components": N_PCS, "extremes_method": EXTREMES_METHOD,
                                  "index_list": "paper-122", "cloud_mask": "cloudsen12"}


@dataclass(frozen=True)
class BuildConfig:
    """Everything a worker needs to build a site (picklable, absolute paths only).

    Attributes
    ----------
    out_dir : str
        Output directory, absolute, reachable by every worker: a local path (a shared file
        system on a multi-machine cluster) or an object-storage URL (``s3://bucket/prefix``;
        :mod:`gpp_cubes.storage`).
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
        MODIS LST source: a STAC API (ours, default) or Google Earth Engine (the paper's).
    train_years, test_years : tuple of int
        The temporal split (PCA is fitted on ``train_years``). Paper and ours: 2016-2018
        and 2019-2020 (:data:`gpp_cubes.paper.TRAIN_YEARS`, ``TEST_YEARS``).
    s2_options : tuple of (str, value)
        Keyword arguments of :func:`gpp_cubes.s2.s2_features`, sorted, completed by
        :meth:`create`: ``max_sun_zenith`` [degrees] and ``c_factor_range`` [1] (scene rules),
        ``cloud_mask`` (``"scl"``, ours and the default; ``"s2cloudless"``; ``"cloudsen12"``,
        the paper's), ``cloud_model`` (absolute path of local CloudSEN12-family weights,
        with ``"cloudsen12"`` only) and ``index_list`` (tuple of spyndex names; absent: the
        shipped list of 132 indices, the paper's had 122).
    qa : tuple of (str, value)
        Feature QA options (:class:`gpp_cubes.qa.QAConfig`: ``action`` drop/flag/off,
        ``outlier_sigma``, ``window``); empty: the defaults.
    radius_m : float
        Radius of the S2 circle, the outer radius of the S1 annulus and the buffer of the
        site grid [m]. Paper and ours: 1000 (:data:`gpp_cubes.paper.RADIUS_M`).
    pca_variance : float
        Keep the fewest principal components explaining at least this share of the index
        variance [1] (ours: 0.99); ignored when ``pca_components`` is set.
    pca_components : int, optional
        Keep exactly this many principal components instead (the paper: 18).
    extremes_method : {"negative_tail", "quantile"}
        Reading of the extremes threshold (:func:`gpp_cubes.targets.extremes.detect_extremes`):
        the 10 % quantile of the negative anomalies (ours, about 5 % of days) or of all
        anomalies (the other reading of the paper's sentence, about 10 % of days).
    protocol : {"ours", "paper"}
        Whose data choices the options not given explicitly took (:func:`resolve_protocol`,
        applied by :meth:`create`): ours (the defaults) or the paper's (18 PCs, the
        all-anomalies extremes reading, the ``paper-122`` index list, CloudSEN12 when local
        weights are given). Recorded in every store; determines the site store (its effect
        reaches the other stores through their own options).
    protocol_notes : tuple of str
        What the protocol could not apply or an explicit option overrode (logged, and
        recorded in every store's provenance; no store depends on them).
    targets : bool
        Read GPP from FLUXNET and detect the extremes (default). False: no FLUXNET file is
        read, ``fluxnet_dir`` is dropped; ``GPP`` is all NaN and ``extreme`` all False, each
        with a ``not_observed`` attribute saying why, and the stores record ``targets:
        none`` (cubes to predict GPP where there is no tower).
    pca_from : str, optional
        Absolute path of a PCA JSON of another build to project onto instead of fitting one
        (``gpp build --pca FROM``; :meth:`create` resolves a build directory or a store to
        it with :func:`gpp_cubes.s2.pca.find_pca_file`). Its content, not its path, is in
        the fingerprint (``pca_sha256``).
    pca_sha256 : str, optional
        SHA-256 of the ``pca_from`` file, taken by :meth:`create`.
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
    radius_m: float = RADIUS_M
    pca_variance: float = PCA_VARIANCE
    pca_components: int | None = None
    extremes_method: str = "negative_tail"
    protocol: str = "ours"
    protocol_notes: tuple[str, ...] = ()
    targets: bool = True
    pca_from: str | None = None
    pca_sha256: str | None = None

    def __post_init__(self) -> None:
        if is_url(self.out_dir):
            as_location(self.out_dir)  # refuses a URL with credentials in it
        elif not Path(self.out_dir).is_absolute():
            raise ConfigError(f"out_dir must be absolute or an object-storage URL (workers "
                              f"do not share the client's working directory): {self.out_dir}")
        for name in ("corine_source", "fluxnet_dir"):
            v = getattr(self, name)
            if v and "://" not in v and not Path(v).is_absolute():
                raise ConfigError(f"{name} must be an absolute path or a URL: {v}")
        if self.lst_source not in LST_SOURCES:
            raise ConfigError(f"lst_source {self.lst_source!r}: use one of {LST_SOURCES}")
        if self.extremes_method not in EXTREMES_METHODS:
            raise ConfigError(f"extremes_method {self.extremes_method!r}: use one of "
                              f"{EXTREMES_METHODS}")
        if not self.radius_m > 0:
            raise ConfigError(f"radius_m must be positive [m], got {self.radius_m}")
        if not 0.0 < self.pca_variance <= 1.0:
            raise ConfigError(f"pca_variance must be in (0, 1], got {self.pca_variance}")
        if self.pca_components is not None and self.pca_components < 1:
            raise ConfigError(f"pca_components must be >= 1, got {self.pca_components}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)} "
                              "(--protocol)")
        if bool(self.pca_from) != bool(self.pca_sha256):
            raise ConfigError("pca_from and pca_sha256 go together (BuildConfig.create takes "
                              "the file's digest)")
        if not self.train_years or not self.test_years:
            raise ConfigError(f"train_years {list(self.train_years)} and test_years "
                              f"{list(self.test_years)} must both be non-empty")
        both = sorted(set(self.train_years) & set(self.test_years))
        if both:
            raise ConfigError(f"years {both} are in both train_years "
                              f"{list(self.train_years)} and test_years {list(self.test_years)}")

    @classmethod
    def create(cls, out_dir: str | Path, *, corine_source: str | Path | None = None,
               fluxnet_dir: str | Path | None = None,
               s2_options: Mapping[str, Any] | None = None,
               qa: Mapping[str, Any] | None = None, protocol: str = "ours",
               pca_from: str | Path | None = None, **kwargs: Any) -> BuildConfig:
        """The configuration of a build as a user states it: the protocol applied to the
        options not given (None: not given; :func:`resolve_protocol`), local paths made
        absolute, the S2 and QA options completed with their defaults and validated (so a
        bad value fails before any task, and an option given at its default value records
        the same parameters as no option); years as sorted tuples of int; ``pca_from`` (a
        build directory, a store or a PCA JSON) resolved to its PCA file and digest;
        ``fluxnet_dir`` dropped when ``targets`` is False (nothing reads it)."""
        for name in ("train_years", "test_years"):
            if kwargs.get(name) is not None:
                kwargs[name] = tuple(sorted(int(y) for y in kwargs[name]))
            else:
                kwargs.pop(name, None)
        chosen, notes = resolve_protocol(
            protocol, s2_options=s2_options, pca_from=pca_from,
            **{k: kwargs.pop(k, None) for k in _PROTOCOL_FIELDS})
        kwargs.update({k: v for k, v in chosen.items() if k != "s2_options" and v is not None})
        s2 = _s2_options(chosen["s2_options"])
        if not kwargs.get("targets", True):
            fluxnet_dir = None
        pca = _pca_source(pca_from, dict(s2).get("index_list"))
        return cls(out_dir=_absolute(out_dir), corine_source=_absolute(corine_source),
                   fluxnet_dir=_absolute(fluxnet_dir), s2_options=s2,
                   qa=_qa_options(qa), protocol=protocol, protocol_notes=notes, **pca,
                   **kwargs)

    @property
    def out(self) -> Location:
        """The output directory: a Path, or an ObjectPath for a URL (:mod:`gpp_cubes.storage`)."""
        return as_location(self.out_dir)

    def site_store(self, site_id: str) -> Location:
        return self.out / f"{site_id}.zarr"

    def phase1_store(self, site_id: str, sensor: str) -> Location:
        return self.out / WORK_DIR / site_id / f"{sensor}.zarr"

    def pca_path(self) -> Location:
        return self.out / WORK_DIR / PCA_FILE

    def log_path(self, site_id: str) -> Location:
        return self.out / LOG_DIR / f"{site_id}.log"

    def provenance_params(self) -> dict[str, Any]:
        """The parameters recorded in every store (no credentials: URLs lose queries)."""
        d = asdict(self)
        d.pop("out_dir")
        d["s2_options"] = dict(self.s2_options)
        d["qa"] = dict(self.qa)
        d["protocol_notes"] = list(self.protocol_notes)
        return d

    @property
    def targets_label(self) -> str:
        """What the stores record as their targets: ``"FLUXNET"`` or :data:`NO_TARGETS`."""
        return "FLUXNET" if self.targets else NO_TARGETS


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
    """S2 options as a sorted tuple, the scene rules and the cloud mask of
    :mod:`gpp_cubes.s2` filled in with their defaults, so an explicit default and no option
    give the same fingerprint.

    ``cloud_model`` becomes an absolute path (and is required by ``cloud_mask="cloudsen12"``
    only); ``index_list`` (a file or names) becomes the tuple of its names, left out when it
    is the shipped list. ``cloud_mask="s2cloudless"`` needs the ``s2cloudless`` package:
    checked here, before any task.
    """
    from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH

    if "radius_m" in (options or {}):
        raise ConfigError("the radius is BuildConfig.radius_m (--radius; it sets the S2 "
                          "circle, the S1 annulus and the grid), not an S2 option")
    opts = {"max_sun_zenith": MAX_SUN_ZENITH, "c_factor_range": C_FACTOR_RANGE,
            "cloud_mask": "scl", **(options or {})}
    opts["max_sun_zenith"] = float(opts["max_sun_zenith"])
    opts["c_factor_range"] = tuple(float(v) for v in opts["c_factor_range"])
    _check_cloud_options(opts)
    if opts.get("index_list") is not None:
        from gpp_cubes.s2.indices import default_index_list

        names = index_list_names(opts["index_list"])
        opts["index_list"] = names
        if list(names) == default_index_list():
            del opts["index_list"]
    else:
        opts.pop("index_list", None)
    return tuple(sorted(opts.items()))


def index_list_names(src: Any) -> tuple[str, ...]:
    """The index names of an ``index_list`` option: a shipped list's name (``"default"``,
    ``"paper-122"``), a file, or names (:func:`gpp_cubes.s2.indices.read_index_list`).

    Raises
    ------
    ConfigError
        A missing file, an unknown or duplicate index, an empty list; names ``--index-list``.
    """
    from gpp_cubes.paper import INDEX_LISTS
    from gpp_cubes.s2.indices import read_index_list

    is_path = isinstance(src, Path) or (isinstance(src, str) and src not in INDEX_LISTS and (
        "/" in src or src.endswith(".txt")))
    if is_path and not Path(src).is_file():
        raise ConfigError(f"index list file {src} does not exist (--index-list)")
    try:
        names = tuple(read_index_list(src))
    except ConfigError as err:
        raise ConfigError(f"index list {src}: {err} (--index-list)") from err
    if not names:
        raise ConfigError(f"index list {src} names no index (--index-list)")
    return names


#: ``BuildConfig`` fields a protocol may set (None in :meth:`BuildConfig.create`: not given).
_PROTOCOL_FIELDS = ("pca_components", "pca_variance", "extremes_method", "lst_source")


def resolve_protocol(protocol: str, *, s2_options: Mapping[str, Any] | None = None,
                     pca_components: int | None = None, pca_variance: float | None = None,
                     extremes_method: str | None = None, lst_source: str | None = None,
                     pca_from: Any = None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The one place a protocol meets the options a user gave: what the build uses.

    ``ours`` leaves every option as given (None: the :class:`BuildConfig` default).
    ``paper`` fills the options *not* given (None, or absent from ``s2_options``) with the
    paper's data choices (:data:`PAPER_PROTOCOL`): 18 PCs (:data:`gpp_cubes.paper.N_PCS`;
    not with ``pca_from``, whose PCA has its own), the all-anomalies extremes reading
    (:data:`gpp_cubes.paper.EXTREMES_METHOD`), the ``paper-122`` index list, and the
    CloudSEN12 mask when ``s2_options`` has ``cloud_model`` weights. An explicit option
    that differs from the paper's value is kept, with a note saying it overrides the
    protocol; without weights the mask stays ``scl``, with a warning note (the paper used a
    CloudSEN12 model; its weights cannot be downloaded offline). The LST source is never
    changed (the paper used Google Earth Engine: a note says so when it is not ``ee``).

    Parameters
    ----------
    protocol : {"ours", "paper"}
    s2_options : mapping, optional
        As :meth:`BuildConfig.create` takes them (``cloud_mask``, ``cloud_model``,
        ``index_list``, ...).
    pca_components, pca_variance, extremes_method, lst_source
        The options as given (None: not given).
    pca_from : optional
        ``--pca FROM`` as given (the PCA is imported, not fitted).

    Returns
    -------
    fields : dict
        ``s2_options`` (dict) and the four options (None: the default applies).
    notes : tuple of str
        Overrides and fall-backs, to log and record (empty for ``ours``).

    Raises
    ------
    ConfigError
        An unknown protocol; ``--pcs``/``--pca-variance`` given with ``--pca``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r}: use one of {', '.join(PROTOCOLS)} "
                          "(--protocol)")
    if pca_from is not None and (pca_components is not None or pca_variance is not None):
        raise ConfigError("--pcs/--pca-variance choose how a PCA is fitted, --pca projects onto "
                          "a fitted one: give one or the other")
    s2 = dict(s2_options or {})
    fields: dict[str, Any] = {"s2_options": s2, "pca_components": pca_components,
                              "pca_variance": pca_variance, "extremes_method": extremes_method,
                              "lst_source": lst_source}
    if protocol == "ours":
        return fields, ()
    notes: list[str] = []

    def overrides(option: str, given: Any, paper: Any) -> None:
        notes.append(f"{option} {given} overrides the paper protocol's {paper}")

    if pca_from is not None:
        notes.append(f"the PCA comes from --pca {pca_from}: the paper protocol's {N_PCS} PCs "
                     "do not apply (the imported PCA keeps its components)")
    elif pca_components is not None:
        if pca_components != N_PCS:
            overrides("--pcs", pca_components, f"{N_PCS} PCs")
    elif pca_variance is not None:
        overrides("--pca-variance", pca_variance, f"fixed {N_PCS} PCs")
    else:
        fields["pca_components"] = PAPER_PROTOCOL["pca_components"]
    paper_x = PAPER_PROTOCOL["extremes_method"]
    if extremes_method is None:
        fields["extremes_method"] = paper_x
    elif extremes_method != paper_x:
        overrides("--extremes-threshold", f"reading {extremes_method!r}",
                  f"{paper_x!r} (all-anomalies)")
    paper_list = PAPER_PROTOCOL["index_list"]
    if s2.get("index_list") is None:
        s2["index_list"] = paper_list
    elif index_list_names(s2["index_list"]) != index_list_names(paper_list):
        overrides("--index-list", s2["index_list"], f"{paper_list!r} list")
    if s2.get("cloud_mask") is None:
        if s2.get("cloud_model") is not None:
            s2["cloud_mask"] = PAPER_PROTOCOL["cloud_mask"]
        else:
            s2["cloud_mask"] = "scl"
            notes.append("warning: the paper masked clouds with a CloudSEN12 model, but no "
                         "--cloud-model weights were given (none can be downloaded offline): "
                         "the cloud mask stays scl (Sen2Cor's scene classification)")
    elif s2["cloud_mask"] != PAPER_PROTOCOL["cloud_mask"]:
        overrides("--cloud-mask", s2["cloud_mask"], f"{PAPER_PROTOCOL['cloud_mask']!r} mask")
    if (lst_source or config_default("lst_source")) != "ee":
        notes.append("LST from the STAC API as given: the paper used Google Earth Engine "
                     "(--lst-source earthengine)")
    return fields, tuple(notes)


def _pca_source(pca_from: str | Path | None, index_list: tuple[str, ...] | None
                ) -> dict[str, Any]:
    """``pca_from`` and ``pca_sha256`` of :class:`BuildConfig`: the PCA file ``pca_from``
    resolves to and its digest, after checking that this build computes every index the
    PCA projects (``index_list``: the build's list; None, the default)."""
    if pca_from is None:
        return {}
    from gpp_cubes.errors import InputFormatError
    from gpp_cubes.s2.indices import default_index_list
    from gpp_cubes.s2.pca import find_pca_file, load_pca, pca_file_sha256

    try:
        path = find_pca_file(pca_from)
        fitted = load_pca(path)
    except InputFormatError as err:
        raise ConfigError(f"{err} (--pca)") from err
    names = set(index_list if index_list is not None else default_index_list())
    missing = [i for i in fitted.indices if i not in names]
    if missing:
        raise ConfigError(f"the PCA {path} (--pca) projects {len(missing)} indices this build "
                          f"does not compute: {', '.join(missing[:8])}"
                          f"{' ...' if len(missing) > 8 else ''}; choose an --index-list "
                          "that holds them (e.g. the list of the build the PCA comes from)")
    return {"pca_from": str(path), "pca_sha256": pca_file_sha256(path)}


def _check_cloud_options(opts: dict[str, Any]) -> None:
    """Validate ``cloud_mask``/``cloud_model`` in place (the model path made absolute)."""
    method = opts["cloud_mask"]
    if method not in CLOUD_MASKS:
        raise ConfigError(f"unknown cloud mask {method!r}: use one of {', '.join(CLOUD_MASKS)} "
                          "(--cloud-mask)")
    model = opts.get("cloud_model")
    if method == "cloudsen12":
        if model is None:
            raise ConfigError("cloud mask 'cloudsen12' needs local weights: --cloud-model "
                              "PATH (an ONNX or TorchScript CloudSEN12-family model)")
        if not isinstance(model, str | Path):
            raise ConfigError("cloud_model must be the path of a weights file in a batch "
                              f"build (it travels to every worker), got {type(model).__name__}")
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"CloudSEN12 weights file {path} does not exist (--cloud-model)")
        opts["cloud_model"] = str(path)
        runtime = "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"
        import importlib.util

        if importlib.util.find_spec(runtime) is None:
            raise ConfigError(f"CloudSEN12 weights {path.name} need the {runtime} package, "
                              f"which is not installed: pip install {runtime}")
    elif model is not None:
        raise ConfigError(f"--cloud-model is only used with --cloud-mask cloudsen12, not "
                          f"{method!r}")
    else:
        opts.pop("cloud_model", None)
    if method == "s2cloudless":
        import importlib.util

        if importlib.util.find_spec("s2cloudless") is None:
            raise ConfigError("cloud mask 's2cloudless' needs the s2cloudless package, which "
                              "is not installed: pip install s2cloudless")


def _qa_options(qa: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """All QA options, defaults filled in and validated (:class:`gpp_cubes.qa.QAConfig`)."""
    from gpp_cubes.qa import QAConfig

    return tuple(sorted(QAConfig.from_options(qa).options().items()))


def parse_years(spec: str, option: str = "--train-years") -> tuple[int, ...]:
    """Years from the command line: ``"2016-2018"`` (inclusive range), ``"2016,2018"``, or a
    mix (``"2016-2017,2019"``); sorted, without duplicates.

    Raises
    ------
    ConfigError
        Not years, or a range whose end precedes its start; the message names ``option``.
    """
    years: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ConfigError(f"{option} {spec!r}: expected years like 2016-2018 or "
                              "2019,2020") from None
        if b < a or not 1900 <= a <= 2200 or not 1900 <= b <= 2200:
            raise ConfigError(f"{option} {spec!r}: {part!r} is not a range of years")
        years.update(range(a, b + 1))
    if not years:
        raise ConfigError(f"{option} is empty; give years like 2016-2018")
    return tuple(sorted(years))
