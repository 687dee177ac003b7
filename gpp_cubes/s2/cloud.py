"""Cloud and cloud-shadow masks of Sentinel-2 L2A, pluggable.

Three methods, chosen with ``cloud_mask=`` in :func:`gpp_cubes.s2_cube`:

``"scl"`` (default)
    The Sen2Cor scene classification shipped with every L2A scene: clouds are classes 8
    (medium probability), 9 (high probability) and 10 (thin cirrus), shadows class 3. Costs
    nothing beyond reading one 20 m band; misses thin/small clouds and over-flags bright
    surfaces more than the learned models (Aybar et al., 2022).
``"s2cloudless"``
    The LightGBM pixel classifier of Sentinel Hub (Zupanc, 2017), whose model ships inside
    the ``s2cloudless`` package (no download). Costs a LightGBM prediction per pixel
    (measured in ``benchmarks/README.md``; the model is loaded once per process); clouds only, so
    shadows come from SCL class 3. The model was trained on L1C top-of-atmosphere
    reflectance with B10 (cirrus), which L2A lacks: we feed L2A bottom-of-atmosphere
    reflectance and B10 = 0. The model leans on B10: on the demo world it finds none of the
    planted clouds (their spectrum scores 0.11 with B10 = 0, 0.99 with B10 = 0.05;
    threshold 0.4) and calls the planted bright block cloud. How real L2A clouds fare
    without B10 is untested.
``"cloudsen12"``
    A CloudSEN12-family segmentation model (the paper's choice; Aybar et al., 2022), e.g. a
    CloudSEN12 UNet or omnicloudmask, loaded from *local* weights the user gives
    (``cloud_model=`` a path or a ready predictor): their hubs cannot be reached from every
    machine. Best masks (clouds, thin clouds and shadows), but a CNN forward pass per scene:
    ~0.1-1 s per 512 x 512 tile on a CPU (``benchmarks/README.md``), needs PyTorch or ONNX
    Runtime. Scenes are padded to multiples of :data:`CLOUDSEN12_SIZE_MULTIPLE` pixels for
    the network.

All return boolean (time, y, x) DataArrays ``cloud`` and ``shadow`` (lazy with Dask input).

References
----------
Main-Knorn, M. et al. (2017). Sen2Cor for Sentinel-2. Proc. SPIE 10427.
Zupanc, A. (2017). Improving cloud detection with machine learning. Sentinel Hub blog.
Aybar, C. et al. (2022). CloudSEN12, a global dataset for semantic understanding of cloud
and cloud shadow in Sentinel-2. Scientific Data 9, 782. doi:10.1038/s41597-022-01878-2
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gpp_cubes.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

#: SCL classes (Sen2Cor): 0 no data, 1 saturated/defective, 2 dark area pixels,
#: 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus, 11 snow/ice.
SCL_CLOUD: tuple[int, ...] = (8, 9, 10)
SCL_SHADOW: tuple[int, ...] = (3,)
SCL_INVALID: tuple[int, ...] = (0, 1)

#: The 10 bands of s2cloudless' model, in its order (B10 absent from L2A, see module docs).
S2CLOUDLESS_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10",
                                      "B11", "B12")
#: Input bands given to a CloudSEN12-family model, in order (the 13 L2A reflectance bands
#: minus B10, as CloudSEN12 L2A models expect).
CLOUDSEN12_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08",
                                     "B8A", "B09", "B11", "B12")
#: Scene height and width are padded to multiples of this [pixels] before a local model
#: runs: CloudSEN12's UNets (and omnicloudmask) down-sample five times by 2, so any other
#: size fails in their skip concatenation (a site grid is 222 x 222 pixels).
CLOUDSEN12_SIZE_MULTIPLE = 32
#: CloudSEN12 labels: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow.
CLOUDSEN12_CLOUD: tuple[int, ...] = (1, 2)
CLOUDSEN12_SHADOW: tuple[int, ...] = (3,)


def scl_masks(scl: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Cloud and shadow masks from the Sen2Cor scene classification.

    Parameters
    ----------
    scl : xarray.DataArray
        SCL class codes [1], any shape.

    Returns
    -------
    (cloud, shadow) : tuple of xarray.DataArray
        bool, same shape: clouds are SCL 8, 9, 10; shadows SCL 3.
    """
    return scl.isin(list(SCL_CLOUD)), scl.isin(list(SCL_SHADOW))


def _per_scene(func: Callable[[np.ndarray], np.ndarray], stack: xr.DataArray,
               name: str) -> xr.DataArray:
    """Apply ``func`` (band, y, x) -> (y, x) to every time step, lazily."""
    import xarray as xr

    def run(block: np.ndarray) -> np.ndarray:  # block: (time, band, y, x)
        return np.stack([func(block[t]) for t in range(block.shape[0])])

    if stack.chunks is not None:  # one chunk over the core dims, time chunks kept
        stack = stack.chunk({"band": -1, "y": -1, "x": -1})

    return xr.apply_ufunc(
        run, stack, input_core_dims=[["band", "y", "x"]], output_core_dims=[["y", "x"]],
        exclude_dims=set(), dask="parallelized", output_dtypes=[np.uint8],
    ).rename(name)


def s2cloudless_masks(refl: xr.Dataset, scl: xr.DataArray | None = None, *,
                      threshold: float = 0.4, average_over: int = 4,
                      dilation_size: int = 2) -> tuple[xr.DataArray, xr.DataArray]:
    """Cloud mask from s2cloudless' shipped LightGBM model; shadows from SCL class 3.

    Parameters
    ----------
    refl : xarray.Dataset
        Reflectance [1] (0..1) with variables B01, B02, B04, B05, B08, B8A, B09, B11, B12
        on (time, y, x). NaN (nodata) pixels are treated as 0 and never flagged.
    scl : xarray.DataArray, optional
        SCL codes for the shadow mask (all False if None).
    threshold, average_over, dilation_size
        s2cloudless parameters: probability threshold [1], convolution disk radius and
        dilation disk radius [pixels] (the class's own defaults are 0.4, 1, 1).

    Returns
    -------
    (cloud, shadow) : tuple of xarray.DataArray
        bool (time, y, x).
    """
    import xarray as xr

    detector = _s2cloudless_detector(threshold, average_over, dilation_size)
    template = refl["B02"]
    layers = [refl[b] if b in refl else xr.zeros_like(template) for b in S2CLOUDLESS_BANDS]
    stack = xr.concat(layers, dim="band").transpose("time", "band", "y", "x")

    def predict(scene: np.ndarray) -> np.ndarray:  # (band, y, x) -> (y, x)
        data = np.nan_to_num(np.moveaxis(scene, 0, -1)[None].astype(np.float32), nan=0.0)
        valid = np.isfinite(scene).all(axis=0)
        return (detector.get_cloud_masks(data)[0].astype(bool) & valid).astype(np.uint8)

    cloud = _per_scene(predict, stack, "cloud").astype(bool)
    shadow = scl.isin(list(SCL_SHADOW)) if scl is not None else xr.zeros_like(cloud)
    return cloud, shadow.astype(bool)


@lru_cache(maxsize=4)
def _s2cloudless_detector(threshold: float, average_over: int, dilation_size: int) -> Any:
    # Built once per process and parameters: its constructor reads the LightGBM model file
    # (0.06-0.5 s), and a site's S2 stage asks again for every block of scenes. Prediction
    # only reads the booster, so blocks in flight on two threads may share it.
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(threshold=threshold, average_over=average_over,
                                dilation_size=dilation_size, all_bands=False)


class CloudModel(Protocol):
    """A CloudSEN12-style model: (band, y, x) reflectance -> (y, x) labels 0..3."""

    def __call__(self, scene: np.ndarray) -> np.ndarray: ...


def load_cloudsen12(weights: str | Path, *, device: str = "cpu") -> CloudModel:
    """Load a CloudSEN12-family model from local weights.

    Parameters
    ----------
    weights : str or Path
        A TorchScript file (``.pt``/``.pth``, e.g. an exported CloudSEN12 UNet) or an ONNX
        file (``.onnx``) taking (1, 12, H, W) float32 reflectance in :data:`CLOUDSEN12_BANDS`
        order and returning (1, 4, H, W) class scores (0 clear, 1 thick, 2 thin, 3 shadow).
    device : str, default "cpu"
        PyTorch device.

    Returns
    -------
    CloudModel
        Callable (band, y, x) -> (y, x) uint8 labels.

    Raises
    ------
    ConfigError
        Missing file or unsupported format.
    ImportError
        PyTorch / ONNX Runtime not installed (not needed for the other masks).
    """
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"CloudSEN12 weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".ts", ".onnx"):
        raise ConfigError(f"CloudSEN12 weights {path.name}: expected .pt/.pth (TorchScript) "
                          "or .onnx")
    model = LocalCloudModel(str(path), device)
    model.session()  # fail now (missing runtime, unreadable file), not in a Dask task
    return model


class LocalCloudModel:
    """A CloudSEN12-family model from a local weights file, picklable.

    Dask ships the per-scene function to its workers, so the model travels as its path: the
    runtime session (ONNX Runtime or TorchScript) is opened on first use in each process
    and never pickled.

    Parameters
    ----------
    path : str
        ``.onnx`` or TorchScript (``.pt``, ``.pth``, ``.ts``) weights.
    device : str, default "cpu"
        PyTorch device (TorchScript only).
    """

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path = path
        self.device = device
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["device"])

    def session(self) -> Any:
        """The open runtime session (opened on first call; shared by every model of the
        same file in this process while the file is unchanged)."""
        if self._session is None:
            st = os.stat(self.path)
            self._session = _open_session(self.path, self.device, st.st_mtime_ns, st.st_size)
        return self._session

    def __call__(self, scene: np.ndarray) -> np.ndarray:
        """(band, y, x) reflectance [1] -> (y, x) uint8 labels (argmax of the class scores).

        The scene is reflect-padded to multiples of :data:`CLOUDSEN12_SIZE_MULTIPLE` on the
        bottom and right for the network, and its labels cropped back.
        """
        # A network takes no NaN: no-data pixels go in as 0 and get some label, but they are
        # never valid downstream (a valid pixel has a value in every band after NBAR).
        rows, cols = scene.shape[-2:]
        m = CLOUDSEN12_SIZE_MULTIPLE
        pad = ((0, 0), (0, -rows % m), (0, -cols % m))
        x = np.pad(np.nan_to_num(scene, nan=0.0).astype(np.float32), pad, mode="reflect")[None]
        sess = self.session()
        if self.path.lower().endswith(".onnx"):
            name = sess.get_inputs()[0].name
            scores = np.asarray(sess.run(None, {name: x})[0])
        else:
            import torch

            with torch.no_grad():
                scores = sess(torch.from_numpy(x).to(self.device)).cpu().numpy()
        return scores.argmax(1)[0, :rows, :cols].astype(np.uint8)


@lru_cache(maxsize=4)
def _open_session(path: str, device: str, mtime_ns: int, size: int) -> Any:
    # Opening costs ~0.2 s (a 6.6 M-parameter UNet), and the S2 stage builds a model for
    # every block of scenes; the file's mtime and size in the key reopen a replaced file.
    # ONNX Runtime sessions and TorchScript modules may run from several threads.
    return _open_onnx(path) if path.lower().endswith(".onnx") else _open_torch(path, device)


def _open_onnx(path: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("cloud_mask='cloudsen12' with ONNX weights needs onnxruntime: "
                          "pip install onnxruntime (or gpp-cubes[cloudsen12])") from err
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _open_torch(path: str, device: str) -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError("cloud_mask='cloudsen12' with TorchScript weights needs "
                          "PyTorch: pip install torch") from err
    return torch.jit.load(path, map_location=device).eval()


def cloudsen12_masks(refl: xr.Dataset, model: CloudModel | str | Path
                     ) -> tuple[xr.DataArray, xr.DataArray]:
    """Cloud (thick + thin) and shadow masks from a CloudSEN12-family model.

    Parameters
    ----------
    refl : xarray.Dataset
        Reflectance [1] with the :data:`CLOUDSEN12_BANDS` on (time, y, x).
    model : CloudModel, str or Path
        A predictor, or local weights for :func:`load_cloudsen12`.

    Returns
    -------
    (cloud, shadow) : tuple of xarray.DataArray
        bool (time, y, x); nodata (NaN) pixels are never flagged.
    """
    import xarray as xr

    predictor = load_cloudsen12(model) if isinstance(model, str | Path) else model
    missing = [b for b in CLOUDSEN12_BANDS if b not in refl]
    if missing:
        raise ConfigError(f"cloud_mask='cloudsen12' needs bands {missing} in the cube")
    stack = xr.concat([refl[b] for b in CLOUDSEN12_BANDS], dim="band").transpose(
        "time", "band", "y", "x")

    def predict(scene: np.ndarray) -> np.ndarray:
        labels = np.asarray(predictor(scene), dtype=np.uint8)
        if labels.shape != scene.shape[1:]:
            raise ConfigError(f"CloudSEN12 model returned shape {labels.shape}, expected "
                              f"{scene.shape[1:]}")
        return np.where(np.isfinite(scene).all(axis=0), labels, 0).astype(np.uint8)

    labels = _per_scene(predict, stack, "cloudsen12")
    return labels.isin(list(CLOUDSEN12_CLOUD)), labels.isin(list(CLOUDSEN12_SHADOW))


def cloud_masks(method: str, refl: xr.Dataset, scl: xr.DataArray | None = None,
                model: Any = None) -> tuple[xr.DataArray, xr.DataArray]:
    """Dispatch to :func:`scl_masks`, :func:`s2cloudless_masks` or :func:`cloudsen12_masks`.

    Parameters
    ----------
    method : {"scl", "s2cloudless", "cloudsen12"}
    refl : xarray.Dataset
        Reflectance [1] (time, y, x).
    scl : xarray.DataArray, optional
        SCL codes (needed by "scl", used for shadows by "s2cloudless").
    model : CloudModel or path, optional
        For "cloudsen12".
    """
    if method == "scl":
        if scl is None:
            raise ConfigError("cloud_mask='scl' needs the SCL band")
        return scl_masks(scl)
    if method == "s2cloudless":
        return s2cloudless_masks(refl, scl)
    if method == "cloudsen12":
        if model is None:
            raise ConfigError("cloud_mask='cloudsen12' needs cloud_model= (local weights "
                              "file or a predictor); its weights cannot be downloaded here")
        return cloudsen12_masks(refl, model)
    raise ConfigError(f"unknown cloud_mask {method!r}: use 'scl', 's2cloudless' or "
                      "'cloudsen12'")
