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
(:func:`pca_provenance`). Fit, apply, save and load live here, in one place.

References
----------
Jolliffe, I. T. & Cadima, J. (2016). Principal component analysis: a review and recent
developments. Phil. Trans. R. Soc. A 374, 20150202.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.atomic import write_atomic
from gpp_cubes.errors import BuildError, InputFormatError
from gpp_cubes.paper import PCA_VARIANCE, TRAIN_YEARS

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


def save_pca(fitted: FittedPCA, path: str | Path) -> Path:
    """Write the fitted PCA as JSON (loadings, explained variance, standardisation), atomically."""
    return write_atomic(path, json.dumps({"format": PCA_FORMAT, **asdict(fitted)}, indent=1))


def load_pca(path: str | Path) -> FittedPCA:
    """Read a PCA written by :func:`save_pca`."""
    data = json.loads(Path(path).read_text())
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


def pca_sidecar(path: str | Path) -> Path:
    """``pca.sites.json`` beside ``pca.json``: the sites the PCA saw (and, for a batch build,
    its fingerprint)."""
    return Path(path).with_suffix(".sites.json")


def save_pca_model(fitted: FittedPCA, path: str | Path, sidecar: Mapping[str, Any]) -> Path:
    """Save a shared PCA: first its sidecar, then the PCA itself.

    The previous PCA is removed before the sidecar is written, so a process killed between
    the two writes never pairs an old PCA with a new sidecar; the PCA file is written last,
    so its presence means the fit is complete.

    Parameters
    ----------
    fitted : FittedPCA
    path : path
        The PCA file (``.json``).
    sidecar : mapping
        JSON content of :func:`pca_sidecar` (``{"sites": [...], ...}``), written with sorted
        keys.
    """
    path = Path(path)
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
    the output directory, components, variance, training rows, and the sites it saw)."""
    path = Path(path)
    side = pca_sidecar(path)
    sites = (read_sidecar(path) or {"sites": []})["sites"] if side.is_file() else None
    return {"file": f"{path.parent.name}/{path.name}", "n_components": len(fitted.components),
            "explained_variance_ratio": [round(v, 6) for v in fitted.explained_variance_ratio],
            "train_years": list(fitted.train_years), "n_samples": fitted.n_samples,
            "variance_threshold": fitted.variance_threshold,
            "rule": (f"fixed {fitted.fixed_components} components"
                     if fitted.fixed_components is not None
                     else f"explained variance >= {fitted.variance_threshold}"),
            "dropped_indices": list(fitted.dropped_indices), "sites": sites}
