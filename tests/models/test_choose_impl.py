"""``impl="auto"``: the layer implementation is chosen for the device and recorded.

On CPU the fused layers are taken without timing; with ``measure=True`` (what GPUs get) each
candidate trains a few steps and the faster wins. The timer is injected so that the choice
can be checked on this CPU-only machine in both directions; one test uses the real clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import open_cube, prepare
from gpp_models.impl_choice import choose_impl
from gpp_models.models import IMPLS
from gpp_models.train import train_and_evaluate

TINY = TrainConfig(model=ModelConfig(cell="gru", layers=1, units=4, impl="auto"), window=6,
                   batch_size=8)


def test_cpu_takes_fused_without_timing_and_given_impls_stay() -> None:
    cfg, record = choose_impl(TINY, 3)
    assert cfg.model.impl == "fused" and cfg.model.cell == "gru"
    assert record["how"] == "platform" and record["requested"] == "auto"
    assert record["device"].startswith("cpu:") and "seconds_per_step" not in record
    cfg, record = choose_impl(TINY.replace(impl="flax"), 3, measure=True)
    assert cfg.model.impl == "flax" and record["how"] == "given"
    # A resumed run keeps its choice whatever a new measurement would say.
    cfg, record = choose_impl(TINY, 3, measure=True, previous={"chosen": "flax"})
    assert cfg.model.impl == "flax" and record["how"] == "resumed"


@pytest.mark.parametrize("faster", IMPLS)
def test_timed_choice_takes_the_faster_candidate(faster: str) -> None:
    ran: list[str] = []

    def timer(impl: str, run) -> float:  # runs the real steps, reports planted durations
        run()
        ran.append(impl)
        return 0.3 if impl == faster else 0.9

    cfg, record = choose_impl(TINY, 3, measure=True, steps=3, timer=timer)
    assert sorted(ran) == sorted(IMPLS)  # every candidate trained its steps
    assert cfg.model.impl == faster and record["chosen"] == faster and record["how"] == "timed"
    assert record["seconds_per_step"] == pytest.approx(
        {impl: (0.1 if impl == faster else 0.3) for impl in IMPLS})
    # Cached for the process: a second call (a tuning trial) does not time again.
    choose_impl(TINY, 3, measure=True, steps=3, timer=timer)
    assert len(ran) == len(IMPLS)


def test_timed_choice_with_the_wall_clock_on_cpu() -> None:
    cfg, record = choose_impl(TINY.replace(cell="lstm", ensemble=2), 3, measure=True, steps=2)
    seconds = record["seconds_per_step"]
    assert set(seconds) == set(IMPLS) and all(s > 0 for s in seconds.values())
    assert cfg.model.impl == min(seconds, key=seconds.__getitem__)


def test_training_records_the_choice(tmp_path: Path, features: Path) -> None:
    cube = open_cube(features)
    prepared = prepare(cube, window=30, fit_years=[2016, 2017], select_years=[2018],
                       test_years=[2019, 2020])
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4, impl="auto"), window=30,
                      epochs=1, ensemble=2)
    result = train_and_evaluate(cfg, tmp_path / "run", prepared)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["impl_choice"]["requested"] == "auto"
    assert meta["impl_choice"]["chosen"] == "fused" == meta["train_config"]["model"]["impl"]
    assert result.config.model.impl == "fused" and result.extra["impl_choice"]["how"] == "platform"
    assert "members" in meta["ensemble_placement"]
