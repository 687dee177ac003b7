"""Fixtures of the S2 stage tests: a few hand-specified scenes (gpp_cubes.demo.scenes)."""

from __future__ import annotations

import pytest

from gpp_cubes.demo.scenes import Scene, write_scenes
from gpp_cubes.demo.scenes import sensing_time as when


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory):
    """Three scenes: two on one solar day in two 'tiles', one with baseline 04.00 and clouds."""
    root = tmp_path_factory.mktemp("mini")
    scenes = [
        Scene("S2A_20180601_T1", when("2018-06-01")),
        Scene("S2A_20180604_T1", when("2018-06-04"), scl={(50, 50): 9, (51, 50): 3},
              cloud_cover=60.0),
        Scene("S2B_20220710_T1", when("2022-07-10"), baseline="04.00"),
    ]
    return write_scenes(root, scenes)
