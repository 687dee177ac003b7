"""The Sentinel-2 stage: a per-pixel cube with masks, and the per-site daily features.

:func:`s2_cube` returns the lazy cube of a site, ready to plot; :func:`s2_features` reduces
it, a block of time steps at a time, to the daily mean NBAR over the clear forest pixels of
the circle and its spectral indices (paper section 2.1, "Sentinel-2"). The stage in order:

- :mod:`~gpp_cubes.s2.scenes`: which scenes are used (search, scene rules, granule metadata);
- :mod:`~gpp_cubes.s2.reflectance`: digital numbers to reflectance (BOA offsets), duplicate
  processings and mixed offsets;
- :mod:`~gpp_cubes.s2.cloud`, :mod:`~gpp_cubes.s2.snow`: cloud/shadow and snow masks;
- :mod:`~gpp_cubes.s2.granule`, :mod:`~gpp_cubes.s2.nbar`: angle grids and c-factor NBAR;
- :mod:`~gpp_cubes.s2.cube`: the per-pixel cube (:func:`s2_cube`);
- :mod:`~gpp_cubes.s2.stream`: the block-wise reduction to means, streamed or from the cube;
- :mod:`~gpp_cubes.s2.features`: means + indices + provenance (:func:`s2_features`);
- :mod:`~gpp_cubes.s2.indices`, :mod:`~gpp_cubes.s2.pca`: spectral indices and their PCA.
"""

from __future__ import annotations

from gpp_cubes.s2.cube import s2_cube
from gpp_cubes.s2.features import s2_features
from gpp_cubes.s2.reflectance import (
    COLLECTION,
    S2_BANDS,
    baseline_offset,
    drop_duplicates,
    one_offset_per_day,
    to_reflectance,
)
from gpp_cubes.s2.stream import reduce_cube, used_item_ids

__all__ = [
    "COLLECTION",
    "S2_BANDS",
    "baseline_offset",
    "drop_duplicates",
    "one_offset_per_day",
    "reduce_cube",
    "s2_cube",
    "s2_features",
    "to_reflectance",
    "used_item_ids",
]
