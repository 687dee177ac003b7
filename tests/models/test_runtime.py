"""Importing gpp_models changes nothing in the process; ``configure_process`` does what it says.

Each check runs in a fresh interpreter: the test process's own JAX has long started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Records every attribute looked up on a loaded C library, so a mallopt call is seen.
PRELUDE = textwrap.dedent("""
    import ctypes, json, os, sys, warnings
    LOOKUPS = []

    class RecordingCDLL(ctypes.CDLL):
        def __getattr__(self, name):
            LOOKUPS.append(name)
            return super().__getattr__(name)

    ctypes.CDLL = RecordingCDLL
    # Third-party libraries may set filters or variables of their own when imported: take
    # the snapshot after them, so that only gpp_models' imports are compared.
    import flax, jax, matplotlib.figure, optax, optuna, orbax.checkpoint, pandas, xarray
    env_before, filters_before = dict(os.environ), list(warnings.filters)
""")

IMPORT_ONLY = PRELUDE + textwrap.dedent("""
    import gpp_models, gpp_models.train, gpp_models.pipeline
    from gpp_models import nrmse
    print(json.dumps({
        "env_unchanged": dict(os.environ) == env_before,
        "filters_unchanged": list(warnings.filters) == filters_before,
        "mallopt_looked_up": "mallopt" in LOOKUPS,
        "jax_num_cpu_devices": jax.config.jax_num_cpu_devices,
        "device_count": jax.device_count(),
    }))
""")

CONFIGURE = PRELUDE + textwrap.dedent("""
    import gpp_models.train
    from gpp_models.parallel import MAX_CPU_DEVICES, usable_cores
    from gpp_models.runtime import configure_process

    cfg = configure_process()
    ignored = any(f[0] == "ignore" and f[1] is not None
                  and f[1].match("Some donated buffers were not usable")
                  for f in warnings.filters)
    print(json.dumps({
        "malloc_tuned": cfg.malloc_tuned, "cpu_devices": cfg.cpu_devices,
        "expected_devices": min(usable_cores(), MAX_CPU_DEVICES),
        "device_count": jax.device_count(),
        "mallopt_looked_up": "mallopt" in LOOKUPS,
        "donation_warning_ignored": ignored,
        "xla_flags_unchanged": os.environ.get("XLA_FLAGS") == env_before.get("XLA_FLAGS"),
        "again": configure_process().cpu_devices,
    }))
""")


def _run(script: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "GPP_MODELS_CPU_DEVICES", "GPP_MODELS_MALLOC")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_leaves_the_process_alone() -> None:
    r = _run(IMPORT_ONLY)
    assert r["env_unchanged"] and r["filters_unchanged"], r
    assert not r["mallopt_looked_up"], r
    assert r["jax_num_cpu_devices"] in (-1, None), r  # JAX's default, not set by gpp_models
    assert r["device_count"] == 1, r  # JAX's default on CPU


def test_configure_process_tunes_malloc_and_devices() -> None:
    r = _run(CONFIGURE)
    assert r["cpu_devices"] == r["expected_devices"] == r["device_count"], r
    assert r["again"] == r["device_count"], r  # a second call keeps what the backend has
    assert r["donation_warning_ignored"] and r["xla_flags_unchanged"], r
    if sys.platform == "linux":
        assert r["mallopt_looked_up"] and r["malloc_tuned"], r


def test_core_count_matches_the_cube_builder() -> None:
    from gpp_cubes.batch import default_workers
    from gpp_models.parallel import usable_cores

    assert usable_cores() == default_workers()
