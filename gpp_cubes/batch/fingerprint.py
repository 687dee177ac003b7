"""Fingerprints: what each store of a build was made from, so resume never silently reuses.

Stage of the data flow: bookkeeping of :mod:`gpp_cubes.batch`. Every store a build writes
records in its provenance (key ``fingerprint``) the named values that determine its content,
and a short hash of them:

=============================  ==========================================================
store                          values of its fingerprint
=============================  ==========================================================
``.work/<SITE>/s2.zarr``       site position, dates, provider and STAC endpoint, CORINE
                               identity, engine, radius, S2 options (scene rules, cloud
                               mask, the cloud model's identity, index list), QA options,
                               gpp-cubes, spyndex, sen2nbar
``.work/<SITE>/s1.zarr``       position, dates, provider and STAC, CORINE, engine, radius
``.work/<SITE>/lst.zarr``      position, dates, provider and STAC, LST source
``.work/<SITE>/target.zarr``   position, elevation, dates, the site's FLUXNET file
                               identity, the extremes threshold reading, whether targets
                               are read (``targets``)
``.work/pca.sites.json``       (the PCA's sidecar) train years, the PCA rule (variance
                               threshold or number of components), the hashes of the S2
                               stores the PCA in ``pca.json`` was fitted on; for a PCA
                               projected onto from another build (``--pca``), the SHA-256
                               of its file instead
``<SITE>.zarr``                site record, dates, train/test years, protocol, targets, the
                               hashes (and values) of its four phase-1 stores and of the PCA
``features.zarr``              none of its own: its provenance keeps each site store's
=============================  ==========================================================

Every stage also records the gpp-cubes version, and every
:class:`~gpp_cubes.batch.BuildConfig` field that :data:`NOT_DETERMINING` does not list as
irrelevant to it: a field added to ``BuildConfig`` later counts for every stage until it is
listed there (a needless rebuild costs time, a wrong reuse costs trust). Input files are
identified by path (CORINE) or name (FLUXNET: the same files copied elsewhere stay the same)
plus size and modification time [ns]; URLs without their query, so no credential is ever
recorded; the STAC endpoint by ``stac_identity`` when the caller gives one (a server started
on a fresh port every run, such as the demo world's).

Before a build starts, :func:`gpp_cubes.batch.resume.plan_resume` compares them with the
stores already there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpp_cubes.secrets import public_url
from gpp_cubes.storage import as_location, is_url

#: Provenance key of the fingerprint record.
KEY = "fingerprint"
#: Hex digits of the short hash.
HASH_LENGTH = 16
#: Phase-1 stages, one store each per site (the tasks of :mod:`gpp_cubes.batch.tasks`).
PHASE1 = ("s2", "s1", "lst", "target")

_ALL_INPUT_FIELDS = frozenset({"provider", "stac_url", "stac_identity", "corine_source",
                               "fluxnet_dir", "engine", "lst_source", "s2_options",
                               "radius_m", "extremes_method"})
#: The PCA rule (:func:`gpp_cubes.s2.pca.fit_pca`) or the PCA projected onto (``--pca``, by
#: the SHA-256 of its file, not its path): determine the PCA only.
_PCA_FIELDS = frozenset({"pca_variance", "pca_components", "pca_from", "pca_sha256"})
#: Recorded, but derived from the other fields: determine no store.
_DERIVED = frozenset({"protocol_notes"})
#: The protocol reaches the phase-1 stores and the PCA through the options it sets; only the
#: site store is determined by the label itself (so a store never claims another protocol).
_LABELS = frozenset({"protocol"})
#: ``BuildConfig`` fields (keys of ``provenance_params()``) that do NOT determine a stage's
#: content; every other field does. ``stac_identity`` is recorded as the ``stac_url`` value.
NOT_DETERMINING: dict[str, frozenset[str]] = {
    "s2": frozenset({"fluxnet_dir", "lst_source", "train_years", "test_years",
                     "extremes_method", "targets"}) | _PCA_FIELDS | _DERIVED | _LABELS,
    "s1": frozenset({"fluxnet_dir", "lst_source", "train_years", "test_years", "s2_options",
                     "extremes_method", "targets"}) | _PCA_FIELDS | _DERIVED | _LABELS,
    "lst": frozenset({"fluxnet_dir", "corine_source", "engine", "train_years", "test_years",
                      "s2_options", "radius_m", "extremes_method", "targets"})
    | _PCA_FIELDS | _DERIVED | _LABELS,
    "target": frozenset({"provider", "stac_url", "stac_identity", "corine_source", "engine",
                         "lst_source", "train_years", "test_years", "s2_options",
                         "radius_m"}) | _PCA_FIELDS | _DERIVED | _LABELS,
    # the PCA sees its inputs through the S2 stores' hashes (an imported one: its digest)
    "pca": _ALL_INPUT_FIELDS | {"start", "end", "test_years", "targets", "pca_from"}
    | _DERIVED | _LABELS,
    # a site store sees its inputs through its phase-1 stores' hashes (and the PCA's)
    "site": _ALL_INPUT_FIELDS | _PCA_FIELDS | _DERIVED,
}
#: Site attributes that determine a stage (the site store records them all).
SITE_FIELDS: dict[str, tuple[str, ...]] = {
    "s2": ("latitude", "longitude"), "s1": ("latitude", "longitude"),
    "lst": ("latitude", "longitude"), "target": ("latitude", "longitude", "elevation_m"),
    "pca": (),
}
#: Packages whose version determines a stage.
VERSIONS: dict[str, tuple[str, ...]] = {"s2": ("gpp-cubes", "spyndex", "sen2nbar")}
#: S2 options that change how fast, not what, is computed (:func:`gpp_cubes.s2.s2_features`).
S2_RUNTIME_OPTIONS = frozenset({"read_threads", "blocks_in_flight", "cache_dir"})

_UNSET = "(unset)"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Fingerprint:
    """Named values that determine a store's content, and their short hash.

    Attributes
    ----------
    values : dict
        Flat ``name -> JSON value``; ``input.<name>`` holds the hash of a store this one is
        made from.
    hash : str
        First :data:`HASH_LENGTH` hex digits of the SHA-256 of the canonical JSON of
        ``values`` (kept as recorded: a record's values may have been redacted since).
    inputs : dict
        ``name -> {"hash", "values"}`` of the input stores, kept to explain a difference.
    """

    values: dict[str, Any]
    hash: str
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def make(cls, values: Mapping[str, Any],
             inputs: Mapping[str, Fingerprint | None] | None = None, *,
             explain_inputs: bool = True) -> Fingerprint:
        """The fingerprint of ``values`` and of the input stores ``inputs`` (their hashes)."""
        inputs = dict(inputs or {})
        vals = {**values, **{f"input.{k}": fp.hash if fp else None for k, fp in inputs.items()}}
        vals = json.loads(json.dumps(vals, default=str))  # tuples -> lists, paths -> text
        digest = hashlib.sha256(_canonical(vals).encode()).hexdigest()[:HASH_LENGTH]
        detail = {k: {"hash": fp.hash, "values": fp.values}
                  for k, fp in inputs.items() if fp is not None} if explain_inputs else {}
        return cls(values=vals, hash=digest, inputs=detail)

    def record(self) -> dict[str, Any]:
        """What the store's provenance keeps (JSON)."""
        rec: dict[str, Any] = {"hash": self.hash, "values": self.values}
        if self.inputs:
            rec["inputs"] = self.inputs
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> Fingerprint | None:
        """The fingerprint of a :meth:`record` (None if ``rec`` is not one)."""
        if not isinstance(rec, Mapping) or not isinstance(rec.get("hash"), str):
            return None
        return cls(values=dict(rec.get("values") or {}), hash=rec["hash"],
                   inputs=dict(rec.get("inputs") or {}))

    def input(self, name: str) -> Fingerprint | None:
        """The recorded fingerprint of input ``name`` (values only if they were kept)."""
        h = self.values.get(f"input.{name}")
        if not isinstance(h, str):
            return None
        detail = self.inputs.get(name) or {}
        return Fingerprint(values=dict(detail.get("values") or {}), hash=h)


def differences(old: Fingerprint, new: Fingerprint) -> list[tuple[str, Any, Any]]:
    """The values that differ, ``(name, old, new)``, in the order of ``new``.

    A differing input store is explained by its own differing values when both records
    kept them; a sub-value (``corine_source.size``) is left out when its parent differs.
    """
    keys = list(new.values) + [k for k in old.values if k not in new.values]
    changed = [k for k in keys if _canonical(old.values.get(k, _UNSET))
               != _canonical(new.values.get(k, _UNSET))]
    out: list[tuple[str, Any, Any]] = []
    for k in changed:
        if any(k.startswith(c + ".") for c in changed if c != k and not c.startswith("input.")):
            continue
        name = k.removeprefix("input.")
        was, has = (Fingerprint.from_record(fp.inputs.get(name)) for fp in (old, new))
        if k.startswith("input.") and was is not None and has is not None:
            inner = differences(was, has)
            if inner:  # name the values, once even if several inputs share them
                out.extend(d for d in inner if d[0] not in {o[0] for o in out})
                continue
        out.append((k, old.values.get(k, _UNSET), new.values.get(k, _UNSET)))
    return out


# --------------------------------------------------------------------------------------
# Identities of the inputs
# --------------------------------------------------------------------------------------


def source_identity(name: str, source: str | os.PathLike[str] | None, *,
                    by_name: bool = False) -> dict[str, Any]:
    """Values naming an input file: ``{name: path, name.size: bytes, name.mtime_ns: ns}``.

    A URL (``://``) is named by :func:`public_url` alone; ``by_name`` names a local file by
    its file name rather than its path (the same file copied elsewhere stays the same), and
    a file in object storage by its name and size (:mod:`gpp_cubes.storage`).
    """
    if source is None:
        return {name: None}
    text = str(source)
    if "://" in text and by_name and is_url(text):  # in object storage: its name and size
        from gpp_cubes.storage import ObjectPath

        loc = as_location(text)
        size = loc.size() if isinstance(loc, ObjectPath) else None
        return {name: loc.name, f"{name}.size": size}
    if "://" in text:
        return {name: public_url(text)}
    path = Path(text)
    try:
        st = path.stat()
    except OSError:
        return {name: path.name if by_name else text}
    return {name: path.name if by_name else text, f"{name}.size": st.st_size,
            f"{name}.mtime_ns": st.st_mtime_ns}


def _stac_endpoint(cfg: Any) -> str:
    if getattr(cfg, "stac_identity", None):
        return str(cfg.stac_identity)
    from gpp_cubes.stac.providers import resolve_provider

    return public_url(resolve_provider(cfg.provider, cfg.stac_url).url)


def _versions(names: Sequence[str]) -> dict[str, Any]:
    from gpp_cubes.cube.store import package_versions

    return {f"version.{k}": v for k, v in package_versions(tuple(names)).items()}


def _config_values(cfg: Any, stage: str, site_id: str | None) -> dict[str, Any]:
    """The ``BuildConfig`` values that determine ``stage``, inputs by identity."""
    skip = NOT_DETERMINING[stage] | {"stac_identity"}
    out: dict[str, Any] = {}
    for name, value in cfg.provenance_params().items():
        if name in skip:
            continue
        if name == "provider":
            from gpp_cubes.stac.providers import resolve_provider

            out["provider"] = resolve_provider(cfg.provider, cfg.stac_url).name
        elif name == "stac_url":
            out["stac_url"] = _stac_endpoint(cfg)
        elif name == "corine_source":
            out.update(source_identity("corine_source", value))
        elif name == "fluxnet_dir":
            out.update(source_identity("fluxnet_file", _fluxnet_file(value, site_id),
                                       by_name=True))
        elif name == "s2_options":
            for k, v in sorted(dict(value).items()):
                if k == "cloud_model":  # local weights: by path, size and mtime
                    out.update(source_identity("s2_options.cloud_model", v))
                elif k not in S2_RUNTIME_OPTIONS:
                    out[f"s2_options.{k}"] = v
        elif isinstance(value, Mapping):
            out.update({f"{name}.{k}": v for k, v in sorted(value.items())})
        else:
            out[name] = value
    return out


def _fluxnet_file(directory: str | None, site_id: str | None) -> Path | None:
    if not directory or site_id is None or not as_location(directory).is_dir():
        return None
    from gpp_cubes.targets.fluxnet import find_fluxnet_file

    return find_fluxnet_file(directory, site_id)


# --------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------


def _site_values(site: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """``site.<name>`` values of the site attributes a store records (all if ``names`` is
    None), as :func:`gpp_cubes.cube.features.site_attributes` writes them."""
    from gpp_cubes.cube.features import site_attributes

    attrs = site_attributes(site)
    return {f"site.{k}": attrs[k] for k in (attrs if names is None else names)}


def phase1_fingerprint(cfg: Any, site: Any, sensor: str) -> Fingerprint:
    """Fingerprint of the phase-1 store of ``sensor`` ("s2", "s1", "lst", "target").

    Parameters
    ----------
    cfg : BuildConfig
    site : gpp_cubes.sites.Site
        The site (position [degrees], elevation [m]).
    sensor : str
    """
    from gpp_cubes.sites.catalog import as_site

    site = as_site(site)
    return Fingerprint.make({"stage": sensor, **_site_values(site, SITE_FIELDS[sensor]),
                             **_config_values(cfg, sensor, site.id),
                             **_versions(VERSIONS.get(sensor, ("gpp-cubes",)))})


def pca_fingerprint(cfg: Any, s2: Mapping[str, Fingerprint | None]) -> Fingerprint:
    """Fingerprint of the PCA fitted on the S2 stores ``s2`` (site id -> their fingerprint),
    or, when ``cfg.pca_from`` names another build's PCA, of that file's content alone
    (``s2`` is then ignored: the PCA does not depend on this build's S2 stores)."""
    if getattr(cfg, "pca_sha256", None):
        return Fingerprint.make({"stage": "pca", "pca_sha256": cfg.pca_sha256,
                                 **_versions(("gpp-cubes",))})
    return Fingerprint.make({"stage": "pca", **_config_values(cfg, "pca", None),
                             **_versions(("gpp-cubes",))},
                            {f"s2/{s}": s2[s] for s in sorted(s2)}, explain_inputs=False)


def site_fingerprint(cfg: Any, site: Any, inputs: Mapping[str, Fingerprint | None]
                     ) -> Fingerprint:
    """Fingerprint of a site store made from ``inputs`` (its phase-1 stores and "pca")."""
    return Fingerprint.make({"stage": "site", **_site_values(site),
                             **_config_values(cfg, "site", None),
                             **_versions(("gpp-cubes",))},
                            {k: inputs.get(k) for k in (*PHASE1, "pca")})


def read_fingerprint(path: str | Path) -> Fingerprint | None:
    """The fingerprint a store recorded (None if it has none)."""
    from gpp_cubes.cube.store import read_provenance

    return Fingerprint.from_record((read_provenance(path) or {}).get(KEY))


def pca_sidecar_content(sites: Sequence[str], fp: Fingerprint | None,
                        imported: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the sidecar of a batch build's PCA holds (:func:`gpp_cubes.s2.pca.save_pca_model`):
    the sites it was fitted on and its fingerprint; for a PCA projected onto from another
    build, where it came from (``{"path", "sha256"}``, :data:`gpp_cubes.s2.pca.IMPORTED_KEY`)."""
    from gpp_cubes.s2.pca import IMPORTED_KEY

    out: dict[str, Any] = {"sites": sorted(sites), KEY: fp.record() if fp else None}
    if imported:
        out[IMPORTED_KEY] = dict(imported)
    return out


def read_pca_sidecar(path: Path) -> tuple[list[str], Fingerprint | None]:
    """Sites and fingerprint of the PCA ``path`` (an older version's sidecar, a plain list
    of sites, has no fingerprint)."""
    from gpp_cubes.s2.pca import read_sidecar

    data = read_sidecar(path)
    if data is None:
        return [], None
    return data["sites"], Fingerprint.from_record(data.get(KEY))
