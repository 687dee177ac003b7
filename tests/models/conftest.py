"""Shared fixtures: one small synthetic world (known truth) written through the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpp_models.runtime import configure_process
from gpp_models.testing import write_synthetic_world

# The model tests run in the process the `gpp` commands set up (tuned allocator, one JAX CPU
# device per core), as they did when importing gpp_models.train configured it.
configure_process()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with DE-Hai, BE-Vie, FI-Var per-site stores and ``features.zarr``."""
    out = tmp_path_factory.mktemp("world")
    write_synthetic_world(out, seed=1)
    return out


@pytest.fixture(scope="session")
def features(world: Path) -> Path:
    return world / "features.zarr"
