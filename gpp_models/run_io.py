"""A trained run read back for prediction: from its directory alone, or checked against its cube.

:func:`gpp_models.train.train_and_evaluate` writes ``config.json`` into the run directory with
the training configuration, the predictor names in order (``predictors``), their
standardisation (``standardizer``: mean and standard deviation per predictor over the fitting
years, in the predictors' units) and the target scaling (``target_scaling``: ``y_mean`` and
``y_std`` of the fitting samples' GPP [g C m-2 d-1]). With these a run maps a predictor cube
to GPP without the cube it was trained on (:func:`load_model`), so a run can be archived or
moved alone.

When the training cube is there, the run is rebuilt from it as ``gpp evaluate`` does
(:func:`gpp_models.train.load_run`) and the statistics it gives now must equal the recorded
ones: a cube rebuilt or edited since training would otherwise change the scaling silently.
Runs written before ``target_scaling`` was recorded still need their training cube.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gpp_cubes.errors import InputFormatError
from gpp_models.config import TrainConfig
from gpp_models.data import Standardizer, recorded_scaling
from gpp_models.step import create_train_state
from gpp_models.train import TrainResult, load_run

#: The keys of ``config.json`` that let a run predict without its training cube.
SCALING_KEYS = ("predictors", "standardizer", "target_scaling")


@dataclass(frozen=True)
class TrainedModel:
    """What prediction needs of a run: network, predictors, their scaling, GPP's scaling.

    Attributes
    ----------
    config : TrainConfig
        The run's configuration (the split as resolved on the training cube).
    params : pytree
        Best parameters, leading ensemble axis K.
    predictors : tuple of str
        Predictor names in the order the network reads them.
    scaler : Standardizer
        Predictor statistics of the fitting years [predictor units].
    y_mean, y_std : float
        GPP scaling of the fitting samples [g C m-2 d-1].
    workdir : Path or None
        Run directory (None for an in-memory run).
    scaling_from : str
        Where the scaling was read: ``"training cube <path>"`` (checked against the recorded
        values when the run records them) or ``"config.json"`` (the run alone).
    """

    config: TrainConfig
    params: Any
    predictors: tuple[str, ...]
    scaler: Standardizer
    y_mean: float
    y_std: float
    workdir: Path | None
    scaling_from: str

    @property
    def members(self) -> int:
        """Ensemble members K."""
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    @classmethod
    def from_result(cls, result: TrainResult) -> TrainedModel:
        """The model of a trained or loaded run, checked against its recorded scaling.

        Raises
        ------
        gpp_cubes.errors.InputFormatError
            The run records a scaling or predictor list that differs from what its training
            cube gives now (the cube changed since training); names the run and the cube.
        """
        prep = result.prepared
        model = cls(config=result.config, params=result.params,
                    predictors=tuple(prep.cube.predictors), scaler=prep.scaler,
                    y_mean=float(prep.y_mean), y_std=float(prep.y_std),
                    workdir=Path(result.workdir) if result.workdir else None,
                    scaling_from=f"training cube {prep.cube.source}")
        if model.workdir is not None and (model.workdir / "config.json").exists():
            _check_recorded(model, _read_meta(model.workdir), prep.cube.source)
        return model


def _read_meta(workdir: Path) -> dict[str, Any]:
    cfg_path, best_dir = workdir / "config.json", workdir / "best"
    if not cfg_path.exists() or not best_dir.exists():
        raise InputFormatError(f"{workdir}: not a finished training run (config.json/best/)")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise InputFormatError(f"{cfg_path}: not JSON ({err})") from err


def _check_recorded(model: TrainedModel, meta: dict[str, Any], cube: str) -> None:
    """Raise when the recorded parts of ``meta`` differ from ``model`` (re-derived now)."""
    close = lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    changed = []
    if "predictors" in meta and tuple(map(str, meta["predictors"])) != model.predictors:
        changed.append("predictor list")
    if "standardizer" in meta and "predictor list" not in changed:
        st = meta["standardizer"]
        if not (close(st["mean"], model.scaler.mean) and close(st["std"], model.scaler.std)):
            changed.append("predictor standardisation")
    if "target_scaling" in meta:
        ts = meta["target_scaling"]
        if not close([ts["y_mean"], ts["y_std"]], [model.y_mean, model.y_std]):
            changed.append("GPP scaling")
    if changed:
        raise InputFormatError(
            f"run {model.workdir}: the {' and '.join(changed)} recorded in its config.json "
            f"differ from what its training cube {cube} gives now: the cube changed since "
            "training. Pass the cube it was trained on with --training-features")


def load_model(workdir: str | Path, training_features: str | Path | None = None
               ) -> TrainedModel:
    """Load a run for prediction, with or without its training cube.

    Parameters
    ----------
    workdir : path
        Run directory of ``gpp train`` / ``gpp tune`` (``WORKDIR/run``).
    training_features : path, optional
        The cube the run was trained on, when it moved since training (default: the path
        recorded in ``config.json``).

    Returns
    -------
    TrainedModel
        From the training cube when it is there (checked against the recorded scaling),
        else from ``config.json`` alone.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        Not a finished run; the training cube changed since training; or the run records no
        target scaling (written before runs carried it) and its training cube is not found
        (all name the run).
    """
    workdir = Path(workdir)
    meta = _read_meta(workdir)
    recorded_cube = Path(str(meta.get("features", "")))
    if training_features is not None or (str(recorded_cube) and recorded_cube.exists()):
        return TrainedModel.from_result(load_run(workdir, training_features))
    missing = [k for k in SCALING_KEYS if k not in meta]
    if missing:
        raise InputFormatError(
            f"run {workdir}: its config.json records no {', '.join(missing)} (written before "
            f"runs carried their scaling), so prediction needs its training cube, and "
            f"{recorded_cube} is not found; pass it with --training-features")
    config = TrainConfig.from_dict(meta["train_config"])
    predictors, scaler, y_mean, y_std = recorded_scaling(meta)
    template = create_train_state(config, len(predictors)).params
    abstract = ocp.utils.to_shape_dtype_struct
    params = ocp.StandardCheckpointer().restore(
        (workdir / "best").absolute(), jax.tree_util.tree_map(abstract, template))
    return TrainedModel(config=config, params=params, predictors=predictors, scaler=scaler,
                        y_mean=y_mean, y_std=y_std, workdir=workdir,
                        scaling_from=f"{workdir / 'config.json'}")
