"""PCA of the spectral indices: fit on the training years of all sites, apply everywhere.

The indices are standardised (zero mean, unit variance per index) and a PCA is fitted on the
rows of the training years only (:data:`gpp_cubes.paper.TRAIN_YEARS`, all sites pooled:
fitting on the test years would leak them into the predictors). Two rules choose how many
leading components are kept, named ``S2_PC1``, ``S2_PC2``, ...: ours (the default), the
fewest that together explain at least :data:`gpp_cubes.paper.PCA_VARIANCE` (0.99) of the
variance; or the paper's, a fixed number (``n_components=18``, ``gpp build --pcs 18``).
The fitted scaler and loadings are stored as JSON next to the cubes, so the same transform
applies to any site and a user can see which indices drive each component.

A batch build (:mod:`gpp_cubes.batch`) fits one PCA on the pooled tables of every site
(:func:`fit_pca_model`) and keeps it in its output directory with a sidecar naming the sites
it saw (:func:`save_pca_model`); every site store records what it used
(:func:`pca_provenance`, with the file's SHA-256). Another build can project its sites onto
that PCA instead of fitting its own (``gpp build --pca FROM``): :func:`find_pca_file` finds
the file from the build directory, one of its stores or the file itself. Fit, apply, save
and load live here, in one place.

References
----------
Jolliffe, I. T. & Cadima, J. (2016). Principal component analysis: a review and recent
developments. Phil. Trans. R. Soc. A 374, 20150202.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.atomic import write_atomic
from gpp_cubes.errors import BuildError, InputFormatError
from gpp_cubes.paper import PCA_VARIANCE, TRAIN_YEARS
from gpp_cubes.storage import Location, ObjectPath, as_location

if TYPE_CHECKING:
    import pandas as pd

#: ``format`` of the JSON written by :func:`save_pca`.
PCA_FORMAT = "gpp-cubes-pca/1"


@dataclass(frozen=True)
class FittedPCA:
    """A standardise-then-PCA transform.

    Attributes
    ----------
    indices : tuple of str
        Input columns, in order.
    mean, scale : tuple of float
        Standardisation of each input (training mean and standard deviation) [index units].
    components : tuple of tuple of float
        Loadings, (n_components, n_indices): row i is ``S2_PC{i+1}``.
    explained_variance_ratio : tuple of float
        Variance fraction of each kept component [1].
    variance_threshold : float
        Cumulative variance the kept components reach at least [1].
    train_years : tuple of int
        Years the PCA was fitted on.
    n_samples : int
        Training rows used.
    dropped_indices : tuple of str
        Inputs left out (constant or mostly undefined on the training rows).
    fixed_components : int, optional
        The number of components asked for (the paper's rule); None: the variance rule.
    """

    indices: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]
    explained_variance_ratio: tuple[float, ...]
    variance_threshold: float
    train_years: tuple[int, ...]
    n_samples: int
    dropped_indices: tuple[str, ...] = ()
    fixed_components: int | None = None

    @property
    def names(self) -> list[str]:
        """Component names ``S2_PC1`` .. ``S2_PCk``."""
        return [f"S2_PC{i + 1}" for i in range(len(self.components))]

    def loadings(self) -> pd.DataFrame:
        """Loadings table (components x indices)."""
        import pandas as pd

        return pd.DataFrame(np.array(self.components), index=self.names,
                            columns=list(self.indices))

    def top_indices(self, component: int, n: int = 5) -> list[str]:
        """The ``n`` indices with the largest absolute loading on ``S2_PC{component}``."""
        row = np.abs(np.array(self.components[component - 1]))
        return [self.indices[i] for i in np.argsort(row)[::-1][:n]]


def fit_pca(table: pd.DataFrame, *, variance: float = PCA_VARIANCE,
            train_years: Sequence[int] = TRAIN_YEARS, max_missing: float = 0.05,
            n_components: int | None = None) -> FittedPCA:
    """Fit the standardised PCA on the training-year rows of an index table.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows = observations (any index containing a ``time`` level or a DatetimeIndex; all
        sites pooled), columns = spectral indices [1].
    variance : float, default :data:`gpp_cubes.paper.PCA_VARIANCE`
        Keep the fewest leading components whose cumulative explained variance >= this [1]
        (ours: 0.99); ignored when ``n_components`` is given.
    train_years : sequence of int, default :data:`gpp_cubes.paper.TRAIN_YEARS`
        Only rows in these years are used for the fit.
    max_missing : float, default 0.05
        Indices undefined (NaN) on more than this fraction of training rows, or constant,
        are left out (recorded in ``dropped_indices``); remaining rows with any NaN are
        skipped.
    n_components : int, optional
        Keep exactly this many leading components (the paper: 18).

    Returns
    -------
    FittedPCA

    Raises
    ------
    BuildError
        Fewer than two usable training rows, or fewer components than ``n_components``
        (at most min(rows, usable indices)).
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    years = _years(table)
    train = table.loc[np.isin(years, list(train_years))]
    frac_nan = train.isna().mean()
    std = train.std()
    keep = [c for c in table.columns if frac_nan[c] <= max_missing and std[c] > 0]
    dropped = tuple(c for c in table.columns if c not in keep)
    x = train[keep].dropna().to_numpy(np.float64)
    if x.shape[0] < 2:
        raise BuildError(f"PCA: only {x.shape[0]} complete training rows in years "
                         f"{list(train_years)}")
    scaler = StandardScaler().fit(x)
    pca = PCA(svd_solver="full").fit(scaler.transform(x))
    if n_components is not None:
        if n_components > pca.n_components_:
            raise BuildError(
                f"PCA: {n_components} components asked for (--pcs), but only "
                f"{pca.n_components_} exist ({x.shape[0]} training rows, {len(keep)} usable "
                f"indices in years {list(train_years)})")
        k = int(n_components)
    else:
        k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_),
                                variance - 1e-12) + 1)
        k = min(k, pca.n_components_)
    return FittedPCA(
        indices=tuple(keep), mean=tuple(scaler.mean_.tolist()),
        scale=tuple(scaler.scale_.tolist()),
        components=tuple(tuple(r) for r in pca.components_[:k].tolist()),
        explained_variance_ratio=tuple(pca.explained_variance_ratio_[:k].tolist()),
        variance_threshold=variance, train_years=tuple(int(y) for y in train_years),
        n_samples=int(x.shape[0]), dropped_indices=dropped,
        fixed_components=None if n_components is None else int(n_components))


def _years(table: pd.DataFrame) -> np.ndarray:
    import pandas as pd

    idx = table.index
    if isinstance(idx, pd.MultiIndex):
        idx = idx.get_level_values("time")
    return pd.DatetimeIndex(idx).year.to_numpy()


def apply_pca(fitted: FittedPCA, table: pd.DataFrame) -> pd.DataFrame:
    """Project a site's index table onto the fitted components.

    Parameters
    ----------
    fitted : FittedPCA
    table : pandas.DataFrame
        Columns including ``fitted.indices`` [1].

    Returns
    -------
    pandas.DataFrame
        Columns ``S2_PC1..S2_PCk`` (float32), same index; NaN rows where any input is NaN.
    """
    import pandas as pd

    missing = [c for c in fitted.indices if c not in table.columns]
    if missing:
        raise InputFormatError(f"index table lacks {missing} needed by the fitted PCA")
    x = table[list(fitted.indices)].to_numpy(np.float64)
    z = (x - np.array(fitted.mean)) / np.array(fitted.scale)
    pcs = z @ np.array(fitted.components).T
    return pd.DataFrame(pcs.astype(np.float32), index=table.index, columns=fitted.names)


def save_pca(fitted: FittedPCA, path: str | Path | ObjectPath) -> Location:
    """Write the fitted PCA as JSON (loadings, explained variance, standardisation), atomically."""
    return write_atomic(path, json.dumps({"format": PCA_FORMAT, **asdict(fitted)}, indent=1))


def load_pca(path: str | Path | ObjectPath) -> FittedPCA:
    """Read a PCA written by :func:`save_pca` (a local path or an object-storage URL)."""
    data = json.loads(as_location(path).read_text())
    if data.pop("format", None) != PCA_FORMAT:
        raise InputFormatError(f"{path} is not a gpp-cubes PCA file")
    data["components"] = tuple(tuple(r) for r in data["components"])
    return FittedPCA(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# --------------------------------------------------------------------------------------
# One PCA shared by the sites of a batch build
# --------------------------------------------------------------------------------------


def fit_pca_model(tables: Mapping[str, pd.DataFrame],
                  train_years: Sequence[int] = TRAIN_YEARS, *,
                  variance: float = PCA_VARIANCE, n_components: int | None = None
                  ) -> FittedPCA:
    """Fit :func:`fit_pca` on the pooled index tables of several sites.

    Parameters
    ----------
    tables : mapping of site id -> pandas.DataFrame
        Daily S2 index tables (clear days) [1]; pooled in sorted site order so the fit is
        deterministic.
    train_years : sequence of int
        Years the PCA is fitted on.
    variance, n_components
        The rule choosing the number of components (:func:`fit_pca`).
    """
    import pandas as pd

    ids = sorted(tables)
    pooled = pd.concat([tables[s] for s in ids], keys=ids, names=["site", "time"])
    return fit_pca(pooled, train_years=train_years, variance=variance,
                   n_components=n_components)


def pca_sidecar(path: str | Path | ObjectPath) -> Location:
    """``pca.sites.json`` beside ``pca.json``: the sites the PCA saw (and, for a batch build,
    its fingerprint)."""
    return as_location(path).with_suffix(".sites.json")


def save_pca_model(fitted: FittedPCA, path: str | Path | ObjectPath,
                   sidecar: Mapping[str, Any]) -> Location:
    """Save a shared PCA: first its sidecar, then the PCA itself.

    The previous PCA is removed before the sidecar is written, so a process killed between
    the two writes never pairs an old PCA with a new sidecar; the PCA file is written last,
    so its presence means the fit is complete.

    Parameters
    ----------
    fitted : FittedPCA
    path : path or ObjectPath
        The PCA file (``.json``), local or in object storage (:mod:`gpp_cubes.storage`).
    sidecar : mapping
        JSON content of :func:`pca_sidecar` (``{"sites": [...], ...}``), written with sorted
        keys.
    """
    path = as_location(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    write_atomic(pca_sidecar(path), json.dumps(dict(sidecar), sort_keys=True))
    return save_pca(fitted, path)


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of the PCA ``path`` as a dict with at least ``sites`` (None if missing
    or unreadable). An older version's sidecar, a plain list of sites, gives ``{"sites":
    [...]}``."""
    try:
        data = json.loads(pca_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, list):
        return {"sites": [str(s) for s in data]}
    return {**data, "sites": [str(s) for s in data.get("sites", [])]}


def pca_provenance(fitted: FittedPCA, path: str | Path) -> dict[str, Any]:
    """What a site store records about the shared PCA ``path`` it used (the file relative to
    the output directory, components, variance, training rows, the sites it saw, the file's
    SHA-256 and, for a PCA projected onto from another build, :data:`IMPORTED_KEY`)."""
    path = as_location(path)
    side_data = read_sidecar(path) or {}
    sites = side_data.get("sites", []) if pca_sidecar(path).is_file() else None
    out = {"file": f"{path.parent.name}/{path.name}", "n_components": len(fitted.components),
           "explained_variance_ratio": [round(v, 6) for v in fitted.explained_variance_ratio],
           "train_years": list(fitted.train_years), "n_samples": fitted.n_samples,
           "variance_threshold": fitted.variance_threshold,
           "rule": (f"fixed {fitted.fixed_components} components"
                    if fitted.fixed_components is not None
                    else f"explained variance >= {fitted.variance_threshold}"),
           "dropped_indices": list(fitted.dropped_indices), "sites": sites,
           "sha256": pca_file_sha256(path)}
    if side_data.get(IMPORTED_KEY):  # projected onto another build's PCA (--pca)
        out[IMPORTED_KEY] = side_data[IMPORTED_KEY]
    return out


# --------------------------------------------------------------------------------------
# Projecting onto another build's PCA (gpp build --pca FROM)
# --------------------------------------------------------------------------------------

#: Sidecar and provenance key of an imported PCA: ``{"path": ..., "sha256": ...}`` of the
#: file it was copied from.
IMPORTED_KEY = "imported_from"


def pca_file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a PCA file's bytes: its identity in fingerprints and provenance."""
    return hashlib.sha256(as_location(path).read_bytes()).hexdigest()


def find_pca_file(source: str | Path) -> Path:
    """The PCA JSON of a previous build, from what a user names (``gpp build --pca FROM``).

    Parameters
    ----------
    source : path
        The PCA file itself (``<out>/.work/pca.json``, :func:`save_pca`); a build's output
        directory (its ``.work/pca.json``); or one of its stores (``<SITE>.zarr`` or
        ``features.zarr``), whose provenance names the PCA file relative to the directory
        the store is in and its SHA-256, which must still match.

    Returns
    -------
    pathlib.Path
        The PCA file, absolute; it loads with :func:`load_pca`.

    Raises
    ------
    InputFormatError
        Nothing there, no PCA beside the store, a PCA file that changed since the store was
        built, or a file that is not a gpp-cubes PCA; the message names the path.
    """
    from gpp_cubes.batch.config import PCA_FILE, WORK_DIR

    src = Path(source).expanduser().resolve()
    if src.is_file():
        path = src
    elif (src / "zarr.json").is_file() or (src / ".zgroup").is_file():
        path = _pca_of_store(src)
    elif src.is_dir():
        path = src / WORK_DIR / PCA_FILE
        if not path.is_file():
            raise InputFormatError(f"{src} holds no PCA ({WORK_DIR}/{PCA_FILE} is missing): "
                                   "give a build's output directory, one of its stores, or "
                                   "its PCA JSON")
    else:
        raise InputFormatError(f"PCA source {src} does not exist")
    try:
        load_pca(path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise InputFormatError(f"{path} is not a gpp-cubes PCA file: {err}") from err
    return path


def _pca_of_store(store: Path) -> Path:
    """The PCA file a site or multi-site store was built with (its provenance ``pca``)."""
    from gpp_cubes.cube.store import read_provenance

    prov = read_provenance(store) or {}
    rec = prov.get("pca")
    if rec is None:  # a multi-site store: provenance by site, one PCA for all
        rec = next((v["pca"] for v in prov.values() if isinstance(v, dict) and "pca" in v),
                   None)
    if not isinstance(rec, Mapping) or not rec.get("file"):
        raise InputFormatError(f"store {store} records no PCA in its provenance (not a site "
                               "or multi-site store of gpp build)")
    path = store.parent / str(rec["file"])
    if not path.is_file():
        raise InputFormatError(f"the PCA of store {store}, {path}, is missing (the store was "
                               "moved without its build directory?): give the PCA JSON")
    want = rec.get("sha256")
    if want and pca_file_sha256(path) != want:
        raise InputFormatError(f"{path} is not the PCA store {store} was built with (its "
                               "SHA-256 differs: refitted since); rebuild the store or give "
                               "the PCA JSON explicitly")
    return path
