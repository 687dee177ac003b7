# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train a recurrent GPP model on a feature cube
#
# The daily feature cube (`features.zarr`, written by `gpp build`) holds, per site and day,
# the Sentinel-2 principal components, Sentinel-1 backscatter, MODIS land-surface
# temperature, clear-sky irradiance, the tower's GPP and the extreme-day flags. Here we
# load it, train one small LSTM through the `gpp_models` Python API (the 90 days up to day
# *t* predict GPP on day *t*, as in the paper) and compare its predictions with the
# observed GPP and with a seasonal-cycle baseline.
#
# **The one line to change:** `FEATURES = None` builds the cube of the offline demo world
# (about a minute, cached for later runs); set it to the path of your own `features.zarr`
# (or a directory of `<SITE>.zarr` stores) to train on real data.

# %%
FEATURES = None  # <- None: build the demo world's cube | "path/to/features.zarr"

# %%
import hashlib
import logging
import os
import warnings
from pathlib import Path

import distributed  # noqa: F401 (configures its loggers on import)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gpp_models import (
    ModelConfig,
    TrainConfig,
    configure_process,
    nrmse,
    open_cube,
    train_and_evaluate,
)
from gpp_models.evaluate import baseline_predictions

# The one explicit process set-up (glibc's allocator, one JAX CPU device per core), before
# JAX starts: importing gpp_models changes nothing in the process.
configure_process()

# Keep the output readable: Dask's start/stop messages (set after distributed's import, which
# configures its loggers) and zarr's format notices.
logging.getLogger("distributed").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", module=r"zarr\.")

work = Path(os.environ.get("GPP_DEMO_DIR", "~/.cache/gpp-cubes/notebooks")).expanduser()

# %% [markdown]
# ## 1. The feature cube
#
# For the demo we generate the same small world as the `site_extraction` notebook (one
# station, 2018-2020; reused if already on disk), serve it on 127.0.0.1 and run the batch
# builder `build_sites` on a one-worker Dask cluster. The build is resumable: a complete
# store is skipped, so a second run of this notebook only reads it.

# %%
if FEATURES is None:
    from gpp_cubes.batch import build_sites
    from gpp_cubes.demo import DemoConfig, generate_world, serve_world

    demo = DemoConfig(sites=("DE-Hai",), start="2018-01-01", end="2020-12-31",
                      s2_revisit_days=10, s1_revisit_days=24, modis_step_days=16)
    world = generate_world(work / "world", demo)
    with serve_world(world) as served:
        table = build_sites(list(demo.sites), work / "cubes", start=demo.start, end=demo.end,
                            provider=None, stac_url=served.stac_url,
                            corine_source=world.corine_path, fluxnet_dir=world.fluxnet_dir,
                            n_workers=1)
    display(table)  # noqa: F821 (IPython built-in)
    FEATURES = work / "cubes" / "features.zarr"

cube = open_cube(FEATURES)
print(f"{len(cube.sites)} site(s) {', '.join(cube.sites)}; {len(cube.time)} days "
      f"{cube.time[0]:%Y-%m-%d}..{cube.time[-1]:%Y-%m-%d}; "
      f"{len(cube.predictors)} predictors: {', '.join(cube.predictors)}")

# %% [markdown]
# A look at the inputs of the first site: the predictors are standardised here only for
# display (the model standardises with the training years' statistics).

# %%
s = 0
X = cube.X[s]
z = (X - np.nanmean(X, 0)) / np.nanstd(X, 0)
fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                         gridspec_kw={"height_ratios": [2, 1]})
im = axes[0].imshow(z.T, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="none",
                    extent=[0, len(cube.time), len(cube.predictors) - 0.5, -0.5])
axes[0].set_yticks(range(len(cube.predictors)), cube.predictors, fontsize=8)
fig.colorbar(im, ax=axes[0], label="standardised value [1]", pad=0.01)
axes[1].plot(np.arange(len(cube.time)), cube.y[s], ".", ms=2, color="k")
ext = np.flatnonzero(cube.extreme[s])
axes[1].plot(ext, np.zeros_like(ext), "|", color="red", label="extreme day")
axes[1].set_ylabel("GPP\n[g C m-2 d-1]")
axes[1].legend(loc="upper left", fontsize=8)
ticks = [i for i, t in enumerate(cube.time) if t.dayofyear == 1]
axes[1].set_xticks(ticks, [str(cube.time[i].year) for i in ticks])
fig.suptitle(f"{cube.sites[s]}: daily predictors and GPP")
plt.show()

# %% [markdown]
# ## 2. Train one small model
#
# A one-layer LSTM with 32 units, trained with Adam on the mean absolute error. The paper
# splits 2016-2018 (training) from 2019-2020 (test); the demo cube covers 2018-2020, so we
# fit on 2018, choose the best epoch on 2019 (held-out validation, the `holdout`
# protocol: the test year is never seen during training) and test on 2020. The real study
# trains 300 epochs after tuning with Optuna (`gpp tune`, `gpp train`).

# %%
years = sorted(int(y) for y in set(cube.years))
config = TrainConfig(
    model=ModelConfig(cell="lstm", layers=1, units=32, dropout=0.1),
    epochs=25, batch_size=64, learning_rate=5e-3, window=90, seed=0,
    train_years=tuple(years[:-1]), val_year=years[-2], test_years=(years[-1],),
)
# One run directory per configuration: rerunning the notebook reloads the finished run.
run_dir = work / "runs" / hashlib.sha1(config.to_json().encode()).hexdigest()[:10]
result = train_and_evaluate(config, run_dir, cube)
print(f"best epoch {int(result.best_epoch[0])}, validation MAE "
      f"{float(result.best_loss[0]):.2f} g C m-2 d-1 on {result.device}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(result.history["epoch"], result.history["train_mae"], label="training years")
ax.plot(result.history["epoch"], result.history["select_mae"], label="validation year")
ax.axvline(int(result.best_epoch[0]), color="grey", ls=":", label="kept epoch")
ax.set_xlabel("epoch")
ax.set_ylabel("MAE [g C m-2 d-1]")
ax.legend()
plt.show()

# %% [markdown]
# ## 3. Predictions on the test year
#
# Observed GPP (dots), the LSTM (line) and the seasonal-cycle baseline (the mean GPP of the
# same day of year in the training years). NRMSE is the RMSE divided by the range of the
# observations (paper, section 2.2).

# %%
pred = result.predict("test")
base = baseline_predictions(result.prepared, config.train_years)
pred["seasonal_cycle"] = base["seasonal_cycle"].to_numpy()
scores = pd.DataFrame({
    site: {"LSTM": nrmse(g["obs"], g["pred"]),
           "seasonal cycle": nrmse(g["obs"], g["seasonal_cycle"])}
    for site, g in pred.groupby("site")}).T
display(scores.round(3))  # noqa: F821 (IPython built-in)

for site, g in pred.groupby("site"):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.5),
                                  gridspec_kw={"width_ratios": [3, 1]})
    ax.plot(g["time"], g["obs"], ".", ms=3, color="k", label="observed")
    ax.plot(g["time"], g["pred"], color="tab:blue", label="LSTM")
    ax.plot(g["time"], g["seasonal_cycle"], color="tab:orange", lw=1,
            label="seasonal cycle")
    ax.fill_between(g["time"], 0, 1, where=g["extreme"].to_numpy(bool), color="red",
                    alpha=0.15, transform=ax.get_xaxis_transform(), label="extreme")
    ax.set_ylabel("GPP [g C m-2 d-1]")
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    ax.set_title(f"{site}, test year {config.test_years[0]}")
    lim = [0, float(np.nanmax(g[["obs", "pred"]].to_numpy())) * 1.05]
    ax2.plot(g["obs"], g["pred"], ".", ms=3)
    ax2.plot(lim, lim, color="grey", lw=0.8)
    ax2.set_xlim(lim)
    ax2.set_ylim(lim)
    ax2.set_xlabel("observed")
    ax2.set_ylabel("predicted")
    ax2.set_title(f"NRMSE {scores.loc[site, 'LSTM']:.3f}")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# Next steps: `gpp tune` (Optuna Hyperband over layers, units and learning rate), the paper's
# three settings (full year, growing season, extremes) in `gpp evaluate`, permutation
# feature importance in `gpp explain`, and the HTML report of `gpp report`.
