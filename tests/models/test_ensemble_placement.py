"""Ensemble members placed on devices train exactly as each member trained alone.

With two CPU devices (a subprocess asks for them before JAX starts), K = 4 members are split
two per device, each device running its members one after another on the whole batch
(:func:`gpp_models.parallel.ensemble_plan`). Member k must be the model that a run of one
member with seed ``seed + k`` on one device gives: same initial parameters, same dropout
masks, same batches; only float summation order may differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from gpp_models.config import ModelConfig, TrainConfig
    from gpp_models.parallel import MEMBER_AXIS, ensemble_plan, place_members, replicate
    from gpp_models.runtime import configure_process
    from gpp_models.step import create_train_state, train_step

    configure_process()
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(3, 200, 6)).astype(np.float32))
    Y = jnp.asarray(rng.normal(size=(3, 200)).astype(np.float32))
    batches = [(rng.integers(0, 3, 48).astype(np.int32), rng.integers(12, 200, 48).astype(np.int32),
                (rng.random(48) > 0.2).astype(np.float32)) for _ in range(3)]
    out = {"devices": len(jax.devices())}
    for cell in ("lstm",):  # the placement is the same for every cell
        cfg = TrainConfig(model=ModelConfig(cell=cell, layers=2, units=9, dropout=0.3),
                          window=12, batch_size=48, ensemble=4, seed=5)
        mesh, vmap_members = ensemble_plan(4, 48)
        state = place_members(create_train_state(cfg, 6), mesh)
        Xr, Yr = replicate((X, Y), mesh)
        kw = {"model_cfg": cfg.model, "window": 12}
        losses = []
        for s, t, w in batches:
            state, loss = train_step(state, Xr, Yr, s, t, w, mesh=mesh,
                                     vmap_members=vmap_members, **kw)
            losses.append(np.asarray(loss))
        diffs, loss_diffs, moved = [], [], []
        for k in range(4):  # member k alone: seed 5 + k, one device, no batch split
            alone = create_train_state(cfg.replace(ensemble=1, seed=5 + k), 6)
            start = jax.tree_util.tree_map(np.asarray, alone.params)  # state is donated
            alone_losses = []
            for s, t, w in batches:
                alone, loss = train_step(alone, X, Y, s, t, w, **kw)
                alone_losses.append(float(loss[0]))
            d = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(np.asarray(a)[k] - b[0]))),
                                       state.params, alone.params)
            m = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(np.asarray(a) - b))),
                                       alone.params, start)
            diffs.append(max(jax.tree_util.tree_leaves(d)))
            moved.append(min(jax.tree_util.tree_leaves(m)))
            loss_diffs.append(max(abs(float(l[k]) - a) for l, a in zip(losses, alone_losses)))
        out[cell] = {
            "mesh_axes": None if mesh is None else list(mesh.axis_names),
            "mesh_size": None if mesh is None else int(mesh.size), "vmap": vmap_members,
            "state_devices": len(state.params["head"]["kernel"].sharding.device_set),
            "shard_rows": sorted({s.data.shape[0] for s in
                                  state.params["head"]["kernel"].addressable_shards}),
            "max_param_diff": max(diffs), "max_loss_diff": max(loss_diffs),
            "min_param_change": min(moved),
            "members_differ": float(np.max(np.abs(np.diff(np.asarray(
                state.params["head"]["kernel"]), axis=0)))),
        }
    m3, v3 = ensemble_plan(3, 48)
    out["plan_3"] = [None if m3 is None else list(m3.axis_names), v3]
    print(json.dumps(out))
""")


def test_members_on_devices_equal_members_trained_alone() -> None:
    env = {**os.environ, "GPP_MODELS_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["devices"] == 2
    for cell in ("lstm",):
        c = r[cell]
        # The member split really ran: two devices, two members each, one after another.
        assert c["mesh_axes"] == ["member"] and c["mesh_size"] == 2 and not c["vmap"], c
        assert c["state_devices"] == 2 and c["shard_rows"] == [2], c
        assert c["min_param_change"] > 1e-4, c  # three Adam steps moved every leaf
        assert c["members_differ"] > 1e-3, c  # different seeds, different members
        # Each member is the model trained alone, up to float32 summation order.
        assert c["max_param_diff"] < 1e-5, c
        assert c["max_loss_diff"] < 1e-5, c
    # 3 members do not share 2 devices evenly: the batch is split instead, members in turn.
    assert r["plan_3"] == [["batch"], False]
