"""Each cell's forward pass against an independent NumPy implementation of its equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpp_models.config import ModelConfig
from gpp_models.models import build_model, concrete_impl, init_params
from gpp_models.recurrence import LAYERS, gru_kernel, reference_layer


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _cat(*arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64) for a in arrays], axis=-1)


def fused_params(cell: str, p: dict) -> dict:
    """(W_i [F, G*H], b [G*H], W_h [H, G*H], b_hn [H]) from either implementation's params."""
    if "input_kernel" in p:  # impl="fused"
        return {"W_i": p["input_kernel"], "b": p["bias"], "W_h": p["recurrent_kernel"],
                "b_hn": p.get("recurrent_bias")}
    c = p["cell"]  # stock Flax cells: one Dense per gate
    if cell == "rnn":
        return {"W_i": c["i"]["kernel"], "b": c["i"]["bias"], "W_h": c["h"]["kernel"]}
    if cell == "gru":
        return {"W_i": _cat(c["ir"]["kernel"], c["iz"]["kernel"], c["in"]["kernel"]),
                "b": _cat(c["ir"]["bias"], c["iz"]["bias"], c["in"]["bias"]),
                "W_h": _cat(c["hr"]["kernel"], c["hz"]["kernel"], c["hn"]["kernel"]),
                "b_hn": c["hn"]["bias"]}
    gates = "ifgo"
    return {"W_i": _cat(*(c[f"i{g}"]["kernel"] for g in gates)),
            "b": _cat(*(c[f"h{g}"]["bias"] for g in gates)),
            "W_h": _cat(*(c[f"h{g}"]["kernel"] for g in gates))}


def numpy_layer(cell: str, p: dict, x: np.ndarray) -> np.ndarray:
    """Textbook equations, one gate matrix at a time, a Python loop over time. x: (T, B, F)."""
    q = fused_params(cell, p)
    W_i = np.asarray(q["W_i"], np.float64)
    b = np.asarray(q["b"], np.float64)
    W_h = np.asarray(q["W_h"], np.float64)
    T, B, _ = x.shape
    H = W_h.shape[0]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    out = []
    blk = lambda M, k: M[..., k * H:(k + 1) * H]  # noqa: E731
    for t in range(T):
        xt = x[t]
        if cell == "rnn":
            h = np.tanh(xt @ W_i + b + h @ W_h)
        elif cell == "gru":
            b_hn = np.asarray(q["b_hn"], np.float64)
            r = sigmoid(xt @ blk(W_i, 0) + blk(b, 0) + h @ blk(W_h, 0))
            z = sigmoid(xt @ blk(W_i, 1) + blk(b, 1) + h @ blk(W_h, 1))
            n = np.tanh(xt @ blk(W_i, 2) + blk(b, 2) + r * (h @ blk(W_h, 2) + b_hn))
            h = (1 - z) * n + z * h
        else:
            i = sigmoid(xt @ blk(W_i, 0) + blk(b, 0) + h @ blk(W_h, 0))
            f = sigmoid(xt @ blk(W_i, 1) + blk(b, 1) + h @ blk(W_h, 1))
            g = np.tanh(xt @ blk(W_i, 2) + blk(b, 2) + h @ blk(W_h, 2))
            o = sigmoid(xt @ blk(W_i, 3) + blk(b, 3) + h @ blk(W_h, 3))
            c = f * c + i * g
            h = o * np.tanh(c)
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("impl", "init"), [("flax", "paper_uniform"), ("flax", "flax_default"),
                                            ("fused", "paper_uniform")])
def test_forward_equals_numpy_equations(cell: str, impl: str, init: str) -> None:
    cfg = ModelConfig(cell=cell, layers=2, units=6, init=init, impl=impl)
    params = init_params(cfg, jax.random.PRNGKey(3), n_features=4, window=12)
    # Random non-zero biases so every term of the equations is exercised.
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape) if leaf.ndim == 1 else leaf
              for leaf, k in zip(leaves, keys, strict=True)]
    params = jax.tree_util.tree_unflatten(tree, leaves)
    x = np.random.default_rng(0).normal(size=(12, 5, 4)).astype(np.float32)

    got = np.asarray(build_model(cfg).apply({"params": params}, jnp.asarray(x), train=False))

    h = x.astype(np.float64)
    for i in range(2):
        h = numpy_layer(cell, params[f"layer_{i}"], h)
    head = params["head"]
    want = h[-1] @ np.asarray(head["kernel"], np.float64)[:, 0] + float(head["bias"][0])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["flax", "fused"])
def test_paper_uniform_bounds(impl: str) -> None:
    cfg = ModelConfig(cell="lstm", layers=1, units=64, init="paper_uniform", impl=impl)
    p = fused_params("lstm", init_params(cfg, jax.random.PRNGKey(0), n_features=25,
                                         window=4)["layer_0"])
    w_i, w_h = np.asarray(p["W_i"]), np.asarray(p["W_h"])
    assert np.abs(w_i).max() <= 1 / np.sqrt(25) and np.abs(w_i).max() > 0.9 / np.sqrt(25)
    assert np.abs(w_h).max() <= 1 / np.sqrt(64) and np.abs(w_h).max() > 0.9 / np.sqrt(64)


def test_dropout_only_in_training() -> None:
    cfg = ModelConfig(cell="gru", layers=2, units=8, dropout=0.5)
    params = init_params(cfg, jax.random.PRNGKey(0), n_features=3, window=10)
    x = jnp.ones((10, 4, 3))
    m = build_model(cfg)
    a = m.apply({"params": params}, x, train=False)
    b = m.apply({"params": params}, x, train=False)
    c = m.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_hand_written_backward_equals_autodiff(cell: str) -> None:
    rng = np.random.default_rng(1)
    T, B, F, H = 9, 3, 4, 5
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    x = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
    w_i = jnp.asarray(0.5 * rng.normal(size=(F, G * H)), jnp.float32)
    w_h = jnp.asarray(0.5 * rng.normal(size=(H, G * H)), jnp.float32)
    b = jnp.asarray(rng.normal(size=G * H), jnp.float32)
    b_hn = jnp.asarray(rng.normal(size=H), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32)  # cotangent of every h_t

    def fused(x, w_i, w_h, b, b_hn):
        if cell == "gru":
            return LAYERS[cell](x, gru_kernel(w_i, w_h), jnp.concatenate([b, b_hn]))
        return LAYERS[cell](x, jnp.concatenate([w_i, w_h]), b)

    args = (x, w_i, w_h, b, b_hn)
    got = jax.grad(lambda *a: jnp.sum(fused(*a) * ct), range(5))(*args)
    want = jax.grad(lambda *a: jnp.sum(reference_layer(cell, *a) * ct), range(5))(*args)
    np.testing.assert_allclose(fused(*args), reference_layer(cell, *args), atol=1e-5)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5)
    if cell != "gru":  # b_hn is the GRU's only
        assert not np.any(np.asarray(got[4]))


def stock_to_fused(cell: str, stock: dict) -> dict:
    """The fused layer's parameters (same values) from a stock Flax cell's, layer by layer."""
    out = {}
    for name, p in stock.items():
        if not name.startswith("layer_"):
            out[name] = p
            continue
        q = fused_params(cell, p)
        out[name] = {"input_kernel": q["W_i"], "bias": q["b"], "recurrent_kernel": q["W_h"]}
        if cell == "gru":
            out[name]["recurrent_bias"] = q["b_hn"]
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), out)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fused_default_equals_stock_flax_cells(cell: str) -> None:
    """The default (fused) network equals Flax's stock cells: outputs and every gradient."""
    stock_cfg = ModelConfig(cell=cell, layers=2, units=8, impl="flax", init="flax_default")
    fused_cfg = ModelConfig(cell=cell, layers=2, units=8, init="flax_default")
    assert fused_cfg.impl == "auto" and concrete_impl(fused_cfg) == "fused"  # built fused
    stock = init_params(stock_cfg, jax.random.PRNGKey(5), n_features=3, window=11)
    leaves, tree = jax.tree_util.tree_flatten(stock)  # non-zero biases
    keys = jax.random.split(jax.random.PRNGKey(6), len(leaves))
    stock = jax.tree_util.tree_unflatten(tree, [
        leaf + 0.3 * jax.random.normal(k, leaf.shape) if leaf.ndim == 1 else leaf
        for leaf, k in zip(leaves, keys, strict=True)])
    fused = stock_to_fused(cell, stock)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(11, 6, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=6), jnp.float32)
    drop = {"dropout": jax.random.PRNGKey(7)}  # same masks: dropout is shared code

    def loss(cfg, params, train):
        pred = build_model(cfg).apply({"params": params}, x, train=train,
                                      rngs=drop if train else None)
        return jnp.mean((pred - y) ** 2), pred  # smooth: no sign ties in the head bias

    for train in (False, True):
        (l_s, p_s), g_s = jax.value_and_grad(loss, argnums=1, has_aux=True)(stock_cfg, stock,
                                                                             train)
        (l_f, p_f), g_f = jax.value_and_grad(loss, argnums=1, has_aux=True)(fused_cfg, fused,
                                                                             train)
        np.testing.assert_allclose(p_f, p_s, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(l_f, l_s, atol=1e-6)
        want = stock_to_fused(cell, g_s)
        assert jax.tree_util.tree_structure(g_f) == jax.tree_util.tree_structure(want)
        for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(g_f),
                                jax.tree_util.tree_leaves(want), strict=True):
            assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4,
                                       err_msg=jax.tree_util.keystr(path))


def test_dropout16_rate_and_scale() -> None:
    from gpp_models.models import Dropout16

    x = jnp.ones((90, 256, 13))  # odd size: the last 16-bit draw is discarded
    y = np.asarray(Dropout16(0.2).apply({}, x, deterministic=False,
                                        rngs={"dropout": jax.random.PRNGKey(0)}))
    dropped = np.mean(y == 0)
    # Binomial sd for n = 299 520 draws is 0.0007: a 5 sd band around 0.2.
    assert abs(dropped - 0.2) < 0.0037, dropped
    np.testing.assert_allclose(y[y != 0], 1 / 0.8, rtol=1e-6)
    np.testing.assert_array_equal(Dropout16(0.2).apply({}, x, deterministic=True), x)
