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
# # Ad hoc Sentinel-2 extraction at a flux tower
#
# This notebook builds the Sentinel-2 L2A cube around one eddy-covariance tower through the
# public Python API of `gpp_cubes` and looks at every step the batch build hides:
#
# 1. the per-pixel cube (reflectance, c-factor NBAR, masks) on a 10 m UTM grid around the
#    tower;
# 2. an RGB and NDVI timeline;
# 3. the cloud, shadow, snow, forest and 1 km circle masks on one date;
# 4. the clear forest fraction over time (the paper keeps dates with >= 1 % clear forest
#    pixels in the circle);
# 5. the daily feature series next to the tower's GPP and its climate-induced extremes.
#
# **Where the data come from is set by the one line `STAC = ...` below.**
# `"demo"` (default) generates a small offline demo world (real file formats, served by a
# real STAC API on 127.0.0.1) so the notebook runs anywhere in about a minute.
# `"planetary-computer"` reads the real archive from Microsoft Planetary Computer (needs
# internet; a `PC_SDK_SUBSCRIPTION_KEY` environment variable raises rate limits but is
# optional). Any other STAC API URL works too.

# %%
STAC = "demo"  # <- the ONE line to change: "demo" | "planetary-computer" | a STAC API URL

SITE = "DE-Hai"  # a station of the catalog (`gpp sites list`)
START, END = "2018-01-01", "2018-12-31"  # Sentinel-2 period [ISO dates, inclusive]

# %% [markdown]
# Optional inputs for the real archive (ignored for the demo world, which ships both):
# a CORINE Land Cover 2018 raster for the forest mask (without it every pixel counts as
# forest) and a directory with FLUXNET2015-format daily files for GPP.

# %%
import os
from pathlib import Path

CORINE = os.environ.get("GPP_CORINE")  # path or URL of CLC2018 (EPSG:3035), or None
FLUXNET_DIR = Path(os.environ.get("GPP_FLUXNET_DIR", "~/fluxnet")).expanduser()

# %%
import atexit
import json
from contextlib import ExitStack

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import spyndex

import gpp_cubes
from gpp_cubes.cube.features import daily_calendar, fill_predictor
from gpp_cubes.sensors.clearsky import daily_clear_sky_ghi
from gpp_cubes.targets.extremes import detect_extremes
from gpp_cubes.targets.fluxnet import find_fluxnet_file, gpp_targets, read_fluxnet

site = gpp_cubes.get_site(SITE)
print(f"{site.id}: {site.name}, {site.latitude:.4f} N {site.longitude:.4f} E, "
      f"{site.elevation_m} m, IGBP {site.igbp}")

# %% [markdown]
# ## The data source
#
# For the demo, `generate_world` writes Sentinel-2 L2A COGs with ESA granule metadata,
# CORINE and FLUXNET files for the site (deterministic from a seed, cached on disk) and
# `serve_world` serves them over HTTP with a `rustac` STAC API, so the cube below goes
# through exactly the same search -> load -> mask -> NBAR code as against Planetary
# Computer. The servers stop when the notebook ends (last cell).

# %%
stack = ExitStack()
atexit.register(stack.close)  # stop the demo servers even if the last cell is not run

if STAC == "demo":
    from gpp_cubes.demo import DemoConfig, generate_world, serve_world

    demo_dir = Path(os.environ.get("GPP_DEMO_DIR", "~/.cache/gpp-cubes/notebooks")).expanduser()
    world = generate_world(demo_dir / "world", DemoConfig(
        sites=(SITE,), start="2018-01-01", end="2020-12-31", s2_revisit_days=10,
        s1_revisit_days=24, modis_step_days=16))
    served = stack.enter_context(serve_world(world))
    source = {"provider": None, "stac_url": served.stac_url}
    CORINE = str(world.corine_path)
    FLUXNET_DIR = world.fluxnet_dir
    print("demo STAC API:", served.stac_url)
elif STAC in ("planetary-computer", "earth-search"):
    world = None
    source = {"provider": STAC, "stac_url": None}
else:
    world = None
    source = {"provider": None, "stac_url": STAC}

# %% [markdown]
# ## 1. The per-pixel cube
#
# `s2_cube` searches the `sentinel-2-l2a` collection, loads all 12 L2A bands on the site's
# 10 m UTM grid (odc-stac, Dask-backed, nothing read yet), converts digital numbers to
# reflectance (with the -1000 offset of processing baseline >= 04.00), masks clouds and
# shadows (scene classification layer), snow (Fmask test), applies the sen2nbar c-factor
# NBAR correction and adds the forest and 1 km circle masks. Several tiles seen on the same
# solar day are mosaicked into one time step.

# %%
cube = gpp_cubes.s2_cube(SITE, START, END, corine=CORINE, cloud_mask="scl", **source)
print(f"{cube.sizes['time']} time steps on a {cube.sizes['y']} x {cube.sizes['x']} grid "
      f"({cube.attrs['crs']}), {len(json.loads(cube.attrs['stac_items']))} items used, "
      f"{len(json.loads(cube.attrs['dropped_items']))} dropped")
print("NBAR:", cube.attrs["nbar"], "| forest mask:", cube.attrs["forest_mask"])
cube

# %% [markdown]
# ## 2. RGB and NDVI timeline
#
# Twelve dates spread over the period. RGB is B04/B03/B02 NBAR stretched to 0-0.15
# reflectance; NDVI = (B08 - B04) / (B08 + B04) is computed per pixel with `spyndex`.
# The circle marks the 1 km analysis radius around the tower (cross). Nothing is masked yet:
# clouds (white) and snow show up as low NDVI, which is what the masks below remove.

# %%
x_km = (cube.x.values - cube.x.values.mean()) / 1000
y_km = (cube.y.values - cube.y.values.mean()) / 1000
extent = [x_km[0], x_km[-1], y_km[-1], y_km[0]]
radius_km = cube.attrs["radius_m"] / 1000
steps = np.unique(np.linspace(0, cube.sizes["time"] - 1, 12).round().astype(int))
sub = cube.isel(time=steps)[["B02", "B03", "B04", "B08"]].compute()
ndvi = spyndex.computeIndex("NDVI", params={"N": sub["B08"], "R": sub["B04"]})


def mark_tower(ax):
    """Tower cross and the analysis circle, in km from the grid centre."""
    ax.plot(0, 0, "+", color="red", ms=8)
    ax.add_patch(plt.Circle((0, 0), radius_km, fill=False, color="red", lw=0.8))
    ax.set_xticks([])
    ax.set_yticks([])


ncol = 6
nrow = 2 * int(np.ceil(len(steps) / ncol))
fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.3 * nrow), squeeze=False,
                         layout="constrained")
for ax in axes.flat:
    ax.set_visible(False)
for k in range(len(steps)):
    day = str(sub.time.values[k])[:10]
    rgb = np.dstack([sub[b].values[k] for b in ("B04", "B03", "B02")])
    ax = axes[2 * (k // ncol), k % ncol]
    ax.set_visible(True)
    ax.imshow(np.clip(np.nan_to_num(rgb) / 0.15, 0, 1), extent=extent)
    ax.set_title(day, fontsize=8)
    mark_tower(ax)
    ax = axes[2 * (k // ncol) + 1, k % ncol]
    ax.set_visible(True)
    im = ax.imshow(ndvi.values[k], cmap="YlGn", vmin=0, vmax=1, extent=extent)
    mark_tower(ax)
fig.colorbar(im, ax=axes, shrink=0.5, label="NDVI [1]")
fig.suptitle(f"{SITE}: RGB (rows 1, 3) and NDVI (rows 2, 4)")
plt.show()

# %% [markdown]
# ## 3. Masks on one date
#
# We pick a partly cloudy date (cloud + shadow cover in the circle closest to 30 %) to show
# what each mask removes. `clear` is what the spatial mean uses: valid data, not cloud,
# shadow or snow, forest, and inside the circle.

# %%
in_circle = cube["buffer"]
cover = ((cube["cloud"] | cube["shadow"]).where(in_circle).mean(("y", "x"))).compute()
t_show = int(np.abs(cover.values - 0.3).argmin())
day = cube.isel(time=t_show)[["B02", "B03", "B04", "cloud", "shadow", "snow", "forest",
                              "buffer", "clear"]].compute()
print("date shown:", str(day.time.values)[:10], f"(cloud+shadow in circle: "
      f"{float(cover[t_show]):.0%})")

panels = ["cloud", "shadow", "snow", "forest", "buffer", "clear"]
fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.4 * (len(panels) + 1), 2.8))
rgb = np.dstack([day[b].values for b in ("B04", "B03", "B02")])
axes[0].imshow(np.clip(np.nan_to_num(rgb) / 0.15, 0, 1), extent=extent)
axes[0].set_title("RGB")
for ax, name in zip(axes[1:], panels, strict=True):
    ax.imshow(day[name].values, cmap="Greys_r", vmin=0, vmax=1, extent=extent,
              interpolation="nearest")
    ax.set_title(f"{name} ({float(day[name].mean()):.0%})", fontsize=9)
for ax in axes:
    mark_tower(ax)
fig.suptitle(f"{SITE}, {str(day.time.values)[:10]}: masks (white = True)")
plt.show()

# %% [markdown]
# ## 4. Clear forest fraction over time
#
# Fraction of the forest pixels inside the circle that are clear on each date. Dates below
# 1 % are dropped by `s2_features` (paper, section 2.1).

# %%
region = cube["forest"] & cube["buffer"]
clear_fraction = (cube["clear"].sum(("y", "x")) / region.sum()).compute().to_series()
clear_fraction.index = clear_fraction.index.normalize()

fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(clear_fraction.index, clear_fraction.values, width=4, color="tab:blue")
ax.axhline(0.01, color="red", lw=0.8, label="1 % rule")
ax.set_ylabel("clear forest fraction [1]")
ax.set_ylim(0, 1)
ax.legend(loc="upper right")
ax.set_title(f"{SITE}: {int((clear_fraction >= 0.01).sum())} of {len(clear_fraction)} "
             "dates usable")
plt.show()

# %% [markdown]
# With the demo world we know the truth: each scene records the clear forest fraction it
# was generated with, which the cube should recover.

# %%
if world is not None:
    truth = world.truth.s2_scenes
    truth = truth[truth["site"] == SITE].assign(day=lambda d: pd.to_datetime(d["date"]))
    truth = truth.groupby("day")["clear_forest_fraction_1km"].mean()
    both = pd.concat({"cube": clear_fraction, "truth": truth}, axis=1, join="inner")
    print(f"{len(both)} dates compared; max |cube - truth| = "
          f"{(both['cube'] - both['truth']).abs().max():.3f}")

# %% [markdown]
# ## 5. Daily features, GPP and extremes
#
# `s2_features` reduces the cube to the mean NBAR over the clear forest pixels of the circle
# (one row per usable date) and computes the spectral indices of that mean. The batch build
# then puts every predictor on a daily calendar by linear interpolation in time, and adds
# the daily clear-sky irradiance (pvlib). GPP comes from the FLUXNET2015 daily file with the
# paper's filters (NEE_VUT_REF_QC >= 0.7, GPP >= 0), never interpolated; extremes are runs
# of >= 5 days in the negative tail of the GPP anomalies (shaded): in the demo world, as at
# many European towers in 2018, a summer drought.

# %%
feats = gpp_cubes.s2_features(SITE, START, END, corine=CORINE, cloud_mask="scl", **source)
print(f"{feats.sizes['time']} usable dates, {len(feats.attrs['index_list'].split(','))} "
      "spectral indices")

calendar = daily_calendar(START, END)
scene_ndvi = feats["NDVI"].to_series()
daily_ndvi, counts = fill_predictor(scene_ndvi, calendar, name="NDVI", site_id=SITE)
ghi = daily_clear_sky_ghi(site.latitude, site.longitude, site.elevation_m or 0.0, START, END)
print(f"NDVI: {counts.n_observed} observed days, {counts.n_interpolated} interpolated")

# %%
flux_file = find_fluxnet_file(FLUXNET_DIR, SITE) if FLUXNET_DIR.is_dir() else None
if flux_file is not None:
    flux = read_fluxnet(flux_file)
    # the whole record, so the seasonal cycle of the anomalies uses every year
    gpp_all = gpp_targets(flux, str(flux.index[0].date()), str(flux.index[-1].date()))
    extremes = detect_extremes(gpp_all)
    gpp = gpp_all.reindex(calendar)
    is_extreme = extremes.flags.reindex(calendar, fill_value=False)
    print(f"GPP: {gpp.notna().mean():.0%} valid days in {START[:4]}; "
          f"{len(extremes.events)} extreme events in the record")
else:
    gpp, is_extreme = None, None
    print(f"no FLUXNET daily file for {SITE} in {FLUXNET_DIR}: GPP panel skipped")

# %%
fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
axes[0].plot(calendar, daily_ndvi, color="tab:green", lw=1, label="daily (interpolated)")
axes[0].plot(scene_ndvi.index, scene_ndvi.values, "o", color="tab:green", ms=3,
             label="clear-sky scenes")
axes[0].set_ylabel("NDVI [1]")
axes[0].legend(loc="lower center", fontsize=8)
axes[1].plot(ghi.index, ghi.values, color="tab:orange")
axes[1].set_ylabel("clear-sky GHI\n[W m-2]")
if gpp is not None:
    axes[2].plot(gpp.index, gpp.values, ".", color="k", ms=2)
    axes[2].fill_between(calendar, 0, 1, where=is_extreme.to_numpy(), color="red",
                         alpha=0.2, transform=axes[2].get_xaxis_transform(),
                         label="GPP extreme")
    axes[2].legend(loc="upper left", fontsize=8)
axes[2].set_ylabel("GPP\n[g C m-2 d-1]")
fig.suptitle(f"{SITE}: daily features and GPP, {START} to {END}")
plt.show()

# %% [markdown]
# The same per-site features, joined with Sentinel-1, MODIS land-surface temperature and the
# PCA of the spectral indices, are what `gpp build` writes into `<SITE>.zarr` for the models
# (see the `train_model` notebook).

# %%
stack.close()  # stop the demo servers
