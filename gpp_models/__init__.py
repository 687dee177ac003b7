"""gpp-models: JAX/Flax recurrent networks predicting daily GPP from gpp-cubes feature cubes."""

__version__ = "0.1.0"
