"""Session-scoped pytest fixtures for the demo world.

Import them in ``conftest.py`` (or a test module) with::

    from demo_fixtures import demo_world, served_demo  # noqa: F401

(pytest puts ``tests/`` on ``sys.path`` for its conftest; this is a local module, not a
package dependency).

``demo_world`` is generated once per test session into a directory shared by the
pytest-xdist workers of the session (an exclusive file lock makes one worker generate it and
the others wait and reuse it); ``served_demo`` serves it on 127.0.0.1 for the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpp_cubes.demo import DemoConfig, ServedWorld, World, generate_world, serve_world

#: The small world of the test suite: the four default sites (FI-Hyy with the tiles of two
#: UTM zones) over 2018-2020 with coarser revisits than the real missions, so generation
#: stays well under a minute on 2 cores.
TEST_CONFIG = DemoConfig(
    sites=("DE-Hai", "BE-Vie", "FI-Var", "FI-Hyy"), start="2018-01-01", end="2020-12-31", seed=0,
    s2_revisit_days=20, s1_revisit_days=24, modis_step_days=16,
)


def demo_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by all xdist workers of this session (pytest rotates it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The generated test demo world (:data:`TEST_CONFIG`)."""
    root = demo_cache_dir(tmp_path_factory) / f"gpp-demo-world-{TEST_CONFIG.digest()}"
    return generate_world(root, TEST_CONFIG)


@pytest.fixture(scope="session")
def served_demo(demo_world: World) -> Iterator[ServedWorld]:
    """The test demo world served on 127.0.0.1 (STAC API + Range file server)."""
    with serve_world(demo_world) as served:
        yield served
