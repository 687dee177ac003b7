"""Recurrences over pre-projected inputs as ``lax.scan`` with hand-written backward passes.

Each function maps ``xp`` (time, batch, G*H) — the inputs of *all* time steps already
multiplied by the input kernel and shifted by the bias, one large matmul done by the caller —
and the recurrent kernel ``w_h`` (H, G*H) to the hidden states (time, batch, H).

Why a custom VJP: differentiating a scan with JAX's autodiff accumulates the recurrent-kernel
gradient with one small (H x B) @ (B x G*H) matmul per time step inside the backward loop and
re-derives every activation. Here the backward scan only propagates dh (and dc) with one
matmul per step and saves the pre-activation gradients; the kernel gradient is then a single
(H x T*B) @ (T*B x G*H) matmul after the loop. Sigmoids are computed as
``0.5 * tanh(0.5 x) + 0.5`` with one ``tanh`` over all gates: on XLA:CPU ``tanh`` is a fast
vectorised polynomial while ``logistic`` is several times slower.

Equations: see :mod:`gpp_models.models`. Gate order: GRU (r, z, n), LSTM (i, f, g, o).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _prev(hs: jax.Array) -> jax.Array:
    """h_{t-1} for every t (zeros at t = 0)."""
    return jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)


def _kernel_grad(hs: jax.Array, dz: jax.Array) -> jax.Array:
    return jnp.einsum("tbh,tbg->hg", _prev(hs), dz)


def _gate_scale(tanh_gate: int, H: int, G: int) -> jax.Array:
    # 0.5 for sigmoid gates (sigma(x) = 0.5 tanh(x / 2) + 0.5), 1 for the tanh gate.
    s = jnp.full((G * H,), 0.5, jnp.float32)
    return s.at[tanh_gate * H:(tanh_gate + 1) * H].set(1.0)


# ---------------------------------------------------------------- Elman RNN
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rnn_scan(xp: jax.Array, w_h: jax.Array, unroll: int = 1) -> jax.Array:
    """Elman recurrence h_t = tanh(xp_t + h_{t-1} W_h); returns hs (T, B, H)."""
    return _rnn_fwd(xp, w_h, unroll)[0]


def _rnn_fwd(xp: jax.Array, w_h: jax.Array, unroll: int):
    def step(h, x):
        h = jnp.tanh(x + h @ w_h)
        return h, h

    h0 = jnp.zeros((*xp.shape[1:-1], w_h.shape[0]), xp.dtype)
    _, hs = jax.lax.scan(step, h0, xp, unroll=unroll)
    return hs, (hs, w_h)


def _rnn_bwd(unroll: int, res, dhs: jax.Array):
    hs, w_h = res
    w_t = w_h.T

    def step(dh_next, inp):
        dh_out, h = inp
        da = (dh_out + dh_next) * (1.0 - h * h)
        return da @ w_t, da

    _, da = jax.lax.scan(step, jnp.zeros_like(dhs[0]), (dhs, hs), reverse=True, unroll=unroll)
    return da, _kernel_grad(hs, da)


rnn_scan.defvjp(_rnn_fwd, _rnn_bwd)


# ---------------------------------------------------------------- GRU
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def gru_scan(xp: jax.Array, w_h: jax.Array, b_hn: jax.Array, unroll: int = 1) -> jax.Array:
    """GRU recurrence (PyTorch/Flax form) over xp = [x W_ir + b_r, x W_iz + b_z, x W_in + b_n]."""
    return _gru_fwd(xp, w_h, b_hn, unroll)[0]


def _gru_fwd(xp: jax.Array, w_h: jax.Array, b_hn: jax.Array, unroll: int):
    H = w_h.shape[0]

    def step(h, x):
        hp = h @ w_h
        rz = 0.5 * jnp.tanh(0.5 * (x[..., :2 * H] + hp[..., :2 * H])) + 0.5
        r, z = rz[..., :H], rz[..., H:]
        hn = hp[..., 2 * H:] + b_hn
        n = jnp.tanh(x[..., 2 * H:] + r * hn)
        h = n + z * (h - n)
        return h, (h, rz, n, hn)

    h0 = jnp.zeros((*xp.shape[1:-1], H), xp.dtype)
    _, (hs, rz, n, hn) = jax.lax.scan(step, h0, xp, unroll=unroll)
    return hs, (hs, rz, n, hn, w_h)


def _gru_bwd(unroll: int, res, dhs: jax.Array):
    hs, rz, n, hn, w_h = res
    H = w_h.shape[0]
    w_t = w_h.T
    h_prev = _prev(hs)

    def step(dh_next, inp):
        dh_out, h_p, rz_t, n_t, hn_t = inp
        dh = dh_out + dh_next
        r, z = rz_t[..., :H], rz_t[..., H:]
        dan = dh * (1.0 - z) * (1.0 - n_t * n_t)
        dar = dan * hn_t * r * (1.0 - r)
        daz = dh * (h_p - n_t) * z * (1.0 - z)
        dhn = dan * r
        d_hp = jnp.concatenate([dar, daz, dhn], axis=-1)
        dh_prev = dh * z + d_hp @ w_t
        return dh_prev, (jnp.concatenate([dar, daz, dan], axis=-1), d_hp)

    _, (dxp, d_hp) = jax.lax.scan(step, jnp.zeros_like(dhs[0]), (dhs, h_prev, rz, n, hn),
                                  reverse=True, unroll=unroll)
    dw = jnp.einsum("tbh,tbg->hg", h_prev, d_hp)
    db_hn = d_hp[..., 2 * H:].sum(axis=tuple(range(d_hp.ndim - 1)))
    return dxp, dw, db_hn


gru_scan.defvjp(_gru_fwd, _gru_bwd)


# ---------------------------------------------------------------- LSTM
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def lstm_scan(xp: jax.Array, w_h: jax.Array, unroll: int = 1) -> jax.Array:
    """LSTM recurrence over xp = x W_i + b (gates i, f, g, o); returns hs (T, B, H)."""
    return _lstm_fwd(xp, w_h, unroll)[0]


def _lstm_fwd(xp: jax.Array, w_h: jax.Array, unroll: int):
    H = w_h.shape[0]
    scale = _gate_scale(2, H, 4)
    shift = 0.5 - 0.5 * (scale == 1.0)  # 0.5 for sigmoid gates, 0 for g

    def step(carry, x):
        c, h = carry
        a = jnp.tanh((x + h @ w_h) * scale) * scale + shift  # [i, f, g, o] activated
        c = a[..., H:2 * H] * c + a[..., :H] * a[..., 2 * H:3 * H]
        tc = jnp.tanh(c)
        h = a[..., 3 * H:] * tc
        return (c, h), (h, a, c, tc)

    zeros = jnp.zeros((*xp.shape[1:-1], H), xp.dtype)
    _, (hs, acts, cs, tcs) = jax.lax.scan(step, (zeros, zeros), xp, unroll=unroll)
    return hs, (hs, acts, cs, tcs, w_h)


def _lstm_bwd(unroll: int, res, dhs: jax.Array):
    hs, acts, cs, tcs, w_h = res
    H = w_h.shape[0]
    w_t = w_h.T
    c_prev = _prev(cs)

    def step(carry, inp):
        dh_next, dc_next = carry
        dh_out, a, c_p, tc = inp
        i, f, g, o = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1.0 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_p * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        return (dz @ w_t, dc * f), dz

    zeros = jnp.zeros_like(dhs[0])
    _, dz = jax.lax.scan(step, (zeros, zeros), (dhs, acts, c_prev, tcs), reverse=True,
                         unroll=unroll)
    return dz, _kernel_grad(hs, dz)


lstm_scan.defvjp(_lstm_fwd, _lstm_bwd)


# ---------------------------------------------------------------- references
def reference_scan(cell: str, xp: jax.Array, w_h: jax.Array,
                   b_hn: jax.Array | None = None) -> jax.Array:
    """The same recurrences written plainly and differentiated by JAX (for tests)."""
    H = w_h.shape[0]
    sig = jax.nn.sigmoid

    def step(carry, x):
        if cell == "rnn":
            h = jnp.tanh(x + carry @ w_h)
            return h, h
        if cell == "gru":
            hp = carry @ w_h
            r = sig(x[..., :H] + hp[..., :H])
            z = sig(x[..., H:2 * H] + hp[..., H:2 * H])
            n = jnp.tanh(x[..., 2 * H:] + r * (hp[..., 2 * H:] + b_hn))
            h = (1 - z) * n + z * carry
            return h, h
        c, h = carry
        zz = x + h @ w_h
        i, f, o = sig(zz[..., :H]), sig(zz[..., H:2 * H]), sig(zz[..., 3 * H:])
        c = f * c + i * jnp.tanh(zz[..., 2 * H:3 * H])
        h = o * jnp.tanh(c)
        return (c, h), h

    zeros = jnp.zeros((*xp.shape[1:-1], H), xp.dtype)
    return jax.lax.scan(step, (zeros, zeros) if cell == "lstm" else zeros, xp)[1]
