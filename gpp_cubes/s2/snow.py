"""Snow mask: the Fmask v3.2 spectral snow test applied to Sentinel-2.

Fmask's potential-snow test (Zhu & Woodcock, 2012, the "snow test" of the potential cloud
pixel pass) flags a pixel as snow when all hold::

    NDSI  = (green - SWIR1) / (green + SWIR1) > 0.15
    NIR   > 0.11       (Landsat TM/ETM+ band 4, reflectance [1])
    green > 0.10       (Landsat band 2, reflectance [1])

Sentinel-2 equivalents: green = B03, NIR = B08, SWIR1 = B11. The Landsat test also has a
brightness-temperature condition on the thermal band; Sentinel-2 has no thermal band, and
Fmask for Sentinel-2 (Zhu et al., 2015) drops it, as we do. Fmask works on TOA reflectance;
we apply the thresholds to the L2A surface reflectance before NBAR (snow is far brighter than
the TOA-BOA difference at these wavelengths).

References
----------
Zhu, Z. & Woodcock, C. E. (2012). Object-based cloud and cloud shadow detection in Landsat
imagery. Remote Sensing of Environment 118, 83-94. doi:10.1016/j.rse.2011.10.028
Zhu, Z., Wang, S. & Woodcock, C. E. (2015). Improvement and expansion of the Fmask
algorithm: cloud, cloud shadow, and snow detection for Landsats 4-7, 8, and Sentinel 2
images. Remote Sensing of Environment 159, 269-277. doi:10.1016/j.rse.2014.12.014
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr

NDSI_MIN = 0.15
NIR_MIN = 0.11
GREEN_MIN = 0.10


def ndsi(green: xr.DataArray, swir1: xr.DataArray) -> xr.DataArray:
    """Normalised difference snow index (green - SWIR1) / (green + SWIR1) [1]."""
    return (green - swir1) / (green + swir1)


def fmask_snow(green: xr.DataArray, nir: xr.DataArray, swir1: xr.DataArray, *,
               ndsi_min: float = NDSI_MIN, nir_min: float = NIR_MIN,
               green_min: float = GREEN_MIN) -> xr.DataArray:
    """Fmask v3.2 snow test (thermal condition dropped for Sentinel-2).

    Parameters
    ----------
    green, nir, swir1 : xarray.DataArray
        Reflectance [1] (0..1) of B03, B08, B11; NaN where there are no data.
    ndsi_min, nir_min, green_min : float
        Thresholds [1], defaults 0.15, 0.11, 0.10 (Zhu & Woodcock, 2012).

    Returns
    -------
    xarray.DataArray
        bool, True for snow; False where any input is NaN.

    References
    ----------
    Zhu, Z. & Woodcock, C. E. (2012). Remote Sensing of Environment 118, 83-94.
    """
    return (ndsi(green, swir1) > ndsi_min) & (nir > nir_min) & (green > green_min)
