"""Permutation feature importance: FI_f = NRMSE(feature f permuted) - NRMSE(unpermuted).

Feature f's *whole sequences* (the ``window`` days of every sample) are shuffled across test
samples, the other features stay in place; the error is computed per site, the procedure
repeated ``n_repeats`` times (10 in the paper) and summarised by mean and standard deviation
per site. Which samples a sequence may move between is the *scope*:

``site`` (default)
    Each site's test samples are shuffled among themselves. A feature that only carries what
    distinguishes one site from another (latitude, through clear-sky radiation; a site's mean
    greenness) keeps its values, so its importance is what it adds *within* a site: the
    day-to-day and seasonal variation the site's own GPP follows.
``pooled``
    The test samples of all sites are shuffled together (the scope of earlier versions). A
    sequence may then come from another latitude and season, so a feature that separates
    sites gains importance from the site offsets it carries; this can inflate, e.g., the
    ranking of clear-sky radiation first.

The paper says only that "the feature array was randomly shuffled" over the test set
(section 2.3); it does not say whether sites were pooled. :func:`explain_run` takes the scope
from the run's recorded protocol unless it is given (``holdout`` -> ``site``, ``paper`` ->
``pooled``, :data:`gpp_models.config.PROTOCOL_READINGS`). The scope used is recorded in the
``scope`` column of every output row, and :func:`explain_run` adds where it came from
(``scope_source``: ``option`` or ``protocol <name>``).

References
----------
Montero, D. et al. (2024), section 2.3. Breiman, L. (2001). Random forests. Machine Learning
45, 5-32 (permutation importance).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh

from gpp_models.config import (
    IMPORTANCE_SCOPES,
    ImportanceScope,
    ModelConfig,
    check_choice,
    protocol_reading,
)
from gpp_models.data import gather_windows_time_major
from gpp_models.evaluate import nrmse
from gpp_models.models import build_model
from gpp_models.parallel import batch_mesh, replicate, split_batch
from gpp_models.train import TrainResult

PredictPermuted = Callable[[int | None, np.ndarray | None], np.ndarray]
Scope = ImportanceScope

#: Shuffling scopes of :func:`permutation_importance`; the first is the default.
SCOPES: tuple[str, ...] = IMPORTANCE_SCOPES
#: What each scope means, for reports and the command line.
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "site": "each feature's sequences shuffled within each site's test samples",
    "pooled": "each feature's sequences shuffled across the test samples of all sites pooled",
}


def check_scope(scope: str) -> str:
    """``scope`` if it is one of :data:`SCOPES`; otherwise a ConfigError naming the choices."""
    return check_choice(scope, SCOPES, "permutation importance scope")


def draw_permutations(sites: np.ndarray, n_features: int, n_repeats: int, *,
                      scope: Scope = "site", seed: int = 0) -> np.ndarray:
    """Random shuffles of the samples for every repeat and feature.

    Parameters
    ----------
    sites : ndarray, shape (n,)
        Site id of each sample.
    n_features, n_repeats : int
    scope : {"site", "pooled"}
        ``site``: sample i takes its sequence from a sample of the same site; ``pooled``: from
        any sample.
    seed : int

    Returns
    -------
    ndarray of int, shape (n_repeats, n_features, n)
        ``perm[r, f, i]`` is the sample whose sequence of feature f sample i gets in repeat r.
    """
    check_scope(scope)
    sites = np.asarray(sites)
    n = len(sites)
    rng = np.random.default_rng(seed)
    groups = ([np.flatnonzero(sites == s) for s in dict.fromkeys(sites.tolist())]
              if scope == "site" else [np.arange(n)])
    out = np.empty((n_repeats, n_features, n), np.int64)
    for r in range(n_repeats):
        for f in range(n_features):
            for idx in groups:
                out[r, f, idx] = idx[rng.permutation(len(idx))]
    return out


def permutation_importance(
    predict_permuted: PredictPermuted,
    obs: np.ndarray,
    sites: np.ndarray,
    feature_names: Sequence[str],
    *,
    n_repeats: int = 10,
    seed: int = 0,
    scope: Scope = "site",
    permutations: np.ndarray | None = None,
) -> pd.DataFrame:
    """FI per site, feature and repeat.

    Parameters
    ----------
    predict_permuted : callable
        ``predict_permuted(f, perm)`` returns predictions [g C m-2 d-1] for all n samples with
        feature ``f``'s sequences taken from samples ``perm`` (``f=None``: unpermuted).
    obs : ndarray, shape (n,)
        Observed GPP [g C m-2 d-1].
    sites : ndarray, shape (n,)
        Site id of each sample.
    feature_names : sequence of str
    n_repeats : int
        Shuffles per feature.
    seed : int
        Seed of the shuffles.
    scope : {"site", "pooled"}
        Shuffle within each site's samples (default) or across all samples (module
        docstring).
    permutations : ndarray of int, shape (n_repeats, n_features, n), optional
        Explicit shuffles (for reproducing hand-worked numbers). Under ``scope="site"`` each
        must map every sample to a sample of the same site.

    Returns
    -------
    DataFrame
        Columns ``site``, ``feature``, ``repeat``, ``fi`` [NRMSE units], ``baseline_nrmse``
        and ``scope``.

    Raises
    ------
    ValueError
        Unknown scope, or explicit permutations that move samples between sites under
        ``scope="site"``.
    """
    check_scope(scope)
    sites = np.asarray(sites)
    F = len(feature_names)
    if permutations is None:
        permutations = draw_permutations(sites, F, n_repeats, scope=scope, seed=seed)
    elif scope == "site":
        moved = sites[np.asarray(permutations)] != sites
        if moved.any():
            r, f, i = (int(v[0]) for v in np.nonzero(moved))
            raise ValueError(
                f"scope='site' but permutation (repeat {r}, feature {feature_names[f]!r}) "
                f"gives sample {i} of site {sites[i]} a sequence from site "
                f"{sites[permutations[r, f, i]]}")
    site_ids = list(dict.fromkeys(sites.tolist()))
    masks = {s: np.asarray(sites) == s for s in site_ids}
    base_pred = predict_permuted(None, None)
    base = {s: nrmse(obs[m], base_pred[m]) for s, m in masks.items()}
    rows = []
    for r in range(permutations.shape[0]):
        for f in range(F):
            pred = predict_permuted(f, permutations[r, f])
            for s, m in masks.items():
                rows.append({"site": s, "feature": feature_names[f], "repeat": r,
                             "fi": nrmse(obs[m], pred[m]) - base[s],
                             "baseline_nrmse": base[s], "scope": scope})
    return pd.DataFrame(rows)


def summarize_importance(fi: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over repeats per site and feature."""
    return (fi.groupby(["site", "feature"], sort=False)["fi"]
              .agg(fi_mean="mean", fi_std="std").reset_index())


def median_importance(summary: pd.DataFrame) -> pd.Series:
    """Median over sites of the per-site mean FI, sorted decreasing (the paper's Fig. 2)."""
    return summary.groupby("feature")["fi_mean"].median().sort_values(ascending=False)


@functools.partial(jax.jit, static_argnames=("model_cfg", "window", "mesh"))
def _predict_permuted_step(params: Any, X: jax.Array, f: jax.Array, s: jax.Array,
                           t: jax.Array, s_src: jax.Array, t_src: jax.Array, *,
                           model_cfg: ModelConfig, window: int, mesh: Mesh | None) -> jax.Array:
    model = build_model(model_cfg)

    def ensemble_mean(params: Any, X: jax.Array, f: jax.Array, s: jax.Array, t: jax.Array,
                      s_src: jax.Array, t_src: jax.Array) -> jax.Array:
        xw = gather_windows_time_major(X, s, t, window)
        col = gather_windows_time_major(jnp.take(X, f, axis=2)[..., None], s_src, t_src,
                                        window)
        xw = jax.lax.dynamic_update_slice_in_dim(xw, col, f, axis=2)
        return jax.vmap(lambda p: model.apply({"params": p}, xw, train=False))(params).mean(0)

    return split_batch(ensemble_mean, mesh, (False,) * 3 + (True,) * 4, out_batch_dim=0)(
        params, X, f, s, t, s_src, t_src)


def model_predictor(params: Any, Z: np.ndarray, site_idx: np.ndarray, time_idx: np.ndarray, *,
                    model_cfg: ModelConfig, window: int, y_mean: float = 0.0,
                    y_std: float = 1.0, batch: int = 512) -> PredictPermuted:
    """A ``predict_permuted`` for a trained (ensemble) network: mean over members [GPP units].

    Windows are gathered on the device; feature f's window of sample i is gathered from
    sample ``perm[i]`` (one compiled function for all features and repeats).
    """
    mesh = batch_mesh(batch)
    params, X = replicate((params, jnp.asarray(Z)), mesh)
    n = len(site_idx)
    nb = max(1, math.ceil(n / batch))
    pad = nb * batch - n
    s = np.concatenate([site_idx, np.zeros(pad, np.int32)]).astype(np.int32)
    t = np.concatenate([time_idx, np.full(pad, window - 1, np.int32)]).astype(np.int32)

    def run(f: int | None, perm: np.ndarray | None) -> np.ndarray:
        src = np.arange(n) if perm is None else np.asarray(perm)
        src = np.concatenate([src, np.zeros(pad, int)])
        fi = jnp.asarray(0 if f is None else f, jnp.int32)
        out = [_predict_permuted_step(params, X, fi, s[sl], t[sl], s[src[sl]], t[src[sl]],
                                      model_cfg=model_cfg, window=window, mesh=mesh)
               for sl in (slice(i * batch, (i + 1) * batch) for i in range(nb))]
        return np.concatenate([np.asarray(o) for o in out])[:n] * y_std + y_mean

    return run


def explain_run(result: TrainResult, *, n_repeats: int = 10, seed: int = 0,
                scope: Scope | None = None) -> pd.DataFrame:
    """Permutation importance of every predictor for a trained run on its test samples.

    Parameters
    ----------
    result : TrainResult
        A trained run (single model or ensemble: the ensemble mean is scored).
    n_repeats : int
        Shuffles per feature (10 in the paper).
    seed : int
        Seed of the shuffles.
    scope : {"site", "pooled"}, optional
        Shuffle within each site's test samples or across all sites pooled; default the
        scope the run's protocol implies (``site`` under ``holdout``, ``pooled`` under
        ``paper``).

    Returns
    -------
    DataFrame
        As :func:`permutation_importance` (with its ``scope`` column), plus ``model`` and
        ``scope_source`` (``option`` or ``protocol <name>``) columns.
    """
    prep, cfg = result.prepared, result.config
    if scope is not None:
        check_scope(scope)
    chosen, source = protocol_reading("importance_scope", [cfg.protocol], scope)
    s, t = prep.splits["test"]
    fn = model_predictor(result.params, prep.Z, s, t, model_cfg=cfg.model, window=cfg.window,
                         y_mean=prep.y_mean, y_std=prep.y_std)
    fi = permutation_importance(fn, prep.cube.y[s, t], np.asarray(prep.cube.sites)[s],
                                prep.cube.predictors, n_repeats=n_repeats, seed=seed,
                                scope=cast(Scope, chosen))
    fi.insert(0, "model", cfg.model.cell.upper())
    fi["scope_source"] = source
    return fi
