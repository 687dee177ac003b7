"""gpp-models: JAX/Flax recurrent networks predicting daily GPP from gpp-cubes feature cubes."""

__version__ = "0.1.0"

# Public API, imported lazily so `import gpp_models` (and the CLI) does not pull in JAX.
_EXPORTS = {
    "ModelConfig": "gpp_models.config",
    "TrainConfig": "gpp_models.config",
    "open_cube": "gpp_models.data",
    "prepare": "gpp_models.data",
    "build_model": "gpp_models.models",
    "train_and_evaluate": "gpp_models.train",
    "load_run": "gpp_models.train",
    "tune": "gpp_models.tune",
    "evaluate_runs": "gpp_models.evaluate",
    "nrmse": "gpp_models.evaluate",
    "predict_gpp": "gpp_models.predict",
    "predict_run": "gpp_models.predict",
    "permutation_importance": "gpp_models.explain",
    "explain_run": "gpp_models.explain",
    "all_figures": "gpp_models.figures",
    "write_report": "gpp_models.report",
    "run_pipeline": "gpp_models.pipeline",
    "write_synthetic_world": "gpp_models.testing",
    "configure_process": "gpp_models.runtime",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:  # PEP 562 lazy attributes
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gpp_models' has no attribute {name!r}")
