"""Recurrent layers as ``lax.scan`` with hand-written backward passes, tuned for XLA:CPU.

Each layer maps inputs ``x`` (time, batch, F) to hidden states (time, batch, H) with **one**
matmul per time step forward, ``[x_t, h_{t-1}] @ W`` with ``W`` of shape (F+H, G*H) (all gates,
input and recurrent kernels stacked), and two per step backward (``dz @ W.T`` and the kernel
gradient ``[x_t, h_{t-1}].T @ dz`` accumulated in the loop carry).

Why this layout (timings: benchmarks/bench_models.py and benchmarks/README.md):

* One (B, F+H) x (F+H, G*H) matmul per step runs near the machine's matmul peak; the small-K
  (F = 25) input matmul on its own does not, neither per step nor hoisted before the loop as
  a (T*B, F) x (F, G*H) matmul.
* Nothing of shape (time, batch, G*H) other than the saved gate activations is materialised:
  hoisting the input projection out of the loop, or stacking dz for one large kernel-gradient
  matmul after the loop, adds buffers of that size whose zero-fill, layout transposes and
  page faults cost more than the matmuls they replace.
* Gate activations are saved as separate (B, H) arrays, not one (B, 4H) array: XLA:CPU's
  loop fusions reading several column slices of one array run several times slower than on
  whole arrays.
* The first layer's input is data: ``input_grad=False`` skips the input rows of the
  backward matmul and returns a zero input gradient.
* Autodiff of a scan re-derives the activations and cannot share work between gates; here
  the backward step reuses the saved activations, and the sigmoids are computed through one
  ``tanh`` per step (``sigma(x) = 0.5 tanh(x/2) + 0.5``): on XLA:CPU ``tanh`` is a fast
  vectorised polynomial while ``logistic`` is several times slower.

Gate order: RNN (h); GRU (r, z, n) in PyTorch/Flax form; LSTM (i, f, g, o). The GRU's
candidate gate needs ``W_in x`` and ``W_hn h`` separately (n = tanh(W_in x + b_in +
r * (W_hn h + b_hn))), so its stacked kernel has four column blocks ``[r, z, n_x, n_h]`` with
zero blocks ``W[:F, n_h]`` and ``W[F:, n_x]`` (built by :func:`gru_kernel`); the 33 % extra
FLOPs still beat a separate small-K matmul. Equations: see :mod:`gpp_models.models`.

References
----------
Hochreiter, S. & Schmidhuber, J. (1997), Neural Computation 9(8). Cho, K. et al. (2014),
arXiv:1406.1078. Appleyard, J., Kocisky, T. & Blunsom, P. (2016), Optimizing performance of
recurrent neural networks on GPUs, arXiv:1604.01946 (gate fusion, combined matmuls).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _sigmoid(x: jax.Array) -> jax.Array:
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _zeros(batch: int, width: int, like: jax.Array) -> jax.Array:
    return jnp.zeros((batch, width), like.dtype)


def gru_kernel(w_i: jax.Array, w_h: jax.Array) -> jax.Array:
    """Stack ``w_i`` (F, 3H) and ``w_h`` (H, 3H) into (F+H, 4H), blocks [r, z, n_x, n_h]."""
    F, H = w_i.shape[0], w_h.shape[0]
    top = jnp.concatenate([w_i, jnp.zeros((F, H), w_i.dtype)], axis=1)
    bottom = jnp.concatenate([w_h[:, :2 * H], jnp.zeros((H, H), w_h.dtype), w_h[:, 2 * H:]],
                             axis=1)
    return jnp.concatenate([top, bottom], axis=0)


def _backward_kernel(w: jax.Array, F: int, input_grad: bool) -> jax.Array:
    # Without an input gradient (first layer: x is data) only the recurrent rows are needed.
    return w.T if input_grad else w[F:].T


def _backward_setup(w: jax.Array, gates: int, input_grad: bool
                    ) -> tuple[int, int, jax.Array]:
    """(H, F, backward kernel) of a stacked kernel ``w`` of shape (F+H, gates*H)."""
    H = w.shape[1] // gates
    F = w.shape[0] - H
    return H, F, _backward_kernel(w, F, input_grad)


def _scan_backward(step, init: tuple, xs, dhs: jax.Array, F: int, unroll: int,
                   input_grad: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Run a backward ``step`` over time, last step first; its carry ends with (dw, db).

    Returns the layer's gradients (dx, dw, db)."""
    carry, dx = jax.lax.scan(step, init, xs, reverse=True, unroll=unroll)
    return _input_grad(dx, dhs, F, input_grad), carry[-2], carry[-1]


def _input_part(dxh: jax.Array, F: int, H: int) -> jax.Array | None:
    return dxh[:, :F] if dxh.shape[-1] == F + H else None


def _input_grad(dx: jax.Array | None, dhs: jax.Array, F: int, input_grad: bool) -> jax.Array:
    if input_grad:
        return dx
    return jnp.zeros((*dhs.shape[:-1], F), dhs.dtype)


# ---------------------------------------------------------------- Elman RNN
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def rnn_layer(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int = 1,
               input_grad: bool = True) -> jax.Array:
    """h_t = tanh([x_t, h_{t-1}] @ W + b); ``w`` (F+H, H), ``b`` (H,); returns (T, B, H)."""
    return _rnn_fwd(x, w, b, unroll, input_grad)[0]


def _rnn_fwd(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int, input_grad: bool):
    def step(h, xt):
        xh = jnp.concatenate([xt, h], axis=-1)
        h = jnp.tanh(xh @ w + b)
        return h, (h, xh)

    hs, xhs = jax.lax.scan(step, _zeros(x.shape[1], w.shape[1], x), x, unroll=unroll)[1]
    return hs, (hs, xhs, w)


def _rnn_bwd(unroll: int, input_grad: bool, res, dhs: jax.Array):
    hs, xhs, w = res
    H, F, w_t = _backward_setup(w, 1, input_grad)

    def step(carry, inp):
        dh_next, dw, db = carry
        dh_out, h, xh = inp
        dz = (dh_out + dh_next) * (1.0 - h * h)
        dxh = dz @ w_t
        return (dxh[:, -H:], dw + xh.T @ dz, db + dz.sum(0)), _input_part(dxh, F, H)

    init = (_zeros(dhs.shape[1], H, dhs), jnp.zeros_like(w), jnp.zeros((H,), w.dtype))
    return _scan_backward(step, init, (dhs, hs, xhs), dhs, F, unroll, input_grad)


rnn_layer.defvjp(_rnn_fwd, _rnn_bwd)


# ---------------------------------------------------------------- GRU
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def gru_layer(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int = 1,
               input_grad: bool = True) -> jax.Array:
    """GRU over ``x`` with the stacked kernel ``w`` = :func:`gru_kernel` (F+H, 4H) and bias
    ``b`` = [b_r, b_z, b_in, b_hn] (4H,); returns (T, B, H)."""
    return _gru_fwd(x, w, b, unroll, input_grad)[0]


def _gru_fwd(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int, input_grad: bool):
    H = w.shape[1] // 4

    def step(h, xt):
        xh = jnp.concatenate([xt, h], axis=-1)
        zz = xh @ w + b
        rz = _sigmoid(zz[:, :2 * H])
        hn = zz[:, 3 * H:]
        r, u = rz[:, :H], rz[:, H:]
        n = jnp.tanh(zz[:, 2 * H:3 * H] + r * hn)
        h = n + u * (h - n)
        return h, (h, (xh, r, u, n, hn))  # gates as separate arrays: see _lstm_fwd

    hs, saved = jax.lax.scan(step, _zeros(x.shape[1], H, x), x, unroll=unroll)[1]
    return hs, (saved, w)


def _gru_bwd(unroll: int, input_grad: bool, res, dhs: jax.Array):
    saved, w = res
    H, F, w_t = _backward_setup(w, 4, input_grad)

    def step(carry, inp):
        dh_next, dw, db = carry
        dh_out, (xh, r, u, n, hn) = inp
        dh = dh_out + dh_next
        dan = dh * (1.0 - u) * (1.0 - n * n)  # d pre-activation of n
        dz = jnp.concatenate([dan * hn * r * (1.0 - r), dh * (xh[:, F:] - n) * u * (1.0 - u),
                              dan, dan * r], axis=-1)
        dxh = dz @ w_t
        carry = (dxh[:, -H:] + dh * u, dw + xh.T @ dz, db + dz.sum(0))
        return carry, _input_part(dxh, F, H)

    init = (_zeros(dhs.shape[1], H, dhs), jnp.zeros_like(w), jnp.zeros((4 * H,), w.dtype))
    return _scan_backward(step, init, (dhs, saved), dhs, F, unroll, input_grad)


gru_layer.defvjp(_gru_fwd, _gru_bwd)


# ---------------------------------------------------------------- LSTM
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def lstm_layer(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int = 1,
               input_grad: bool = True) -> jax.Array:
    """LSTM over ``x`` with ``w`` (F+H, 4H) = [W_i; W_h], gates (i, f, g, o); returns (T, B, H)."""
    return _lstm_fwd(x, w, b, unroll, input_grad)[0]


def _lstm_fwd(x: jax.Array, w: jax.Array, b: jax.Array, unroll: int, input_grad: bool):
    H = w.shape[1] // 4
    # One tanh over all four gates: sigma(z) = 0.5 tanh(z/2) + 0.5 for i, f, o; tanh for g.
    scale = jnp.full((4 * H,), 0.5, w.dtype).at[2 * H:3 * H].set(1.0)
    shift = jnp.full((4 * H,), 0.5, w.dtype).at[2 * H:3 * H].set(0.0)

    def step(carry, xt):
        c_prev, h = carry
        xh = jnp.concatenate([xt, h], axis=-1)
        a = jnp.tanh((xh @ w + b) * scale) * scale + shift
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = f * c_prev + i * g
        h = o * jnp.tanh(c)
        # Gates saved as separate (B, H) arrays: the backward step's fusions then read
        # contiguous rows (column slices of a (B, 4H) array are several times slower there).
        return (c, h), (h, (xh, i, f, g, o, c_prev))

    zeros = _zeros(x.shape[1], H, x)
    hs, saved = jax.lax.scan(step, (zeros, zeros), x, unroll=unroll)[1]
    return hs, (saved, w)


def _lstm_bwd(unroll: int, input_grad: bool, res, dhs: jax.Array):
    saved, w = res
    H, F, w_t = _backward_setup(w, 4, input_grad)

    def step(carry, inp):
        dh_next, dc_next, dw, db = carry
        dh_out, (xh, i, f, g, o, c_prev) = inp
        tc = jnp.tanh(f * c_prev + i * g)  # recomputed: cheaper than saving tanh(c_t)
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1.0 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                              dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        dxh = dz @ w_t
        return (dxh[:, -H:], dc * f, dw + xh.T @ dz, db + dz.sum(0)), _input_part(dxh, F, H)

    zeros = _zeros(dhs.shape[1], H, dhs)
    init = (zeros, zeros, jnp.zeros_like(w), jnp.zeros((4 * H,), w.dtype))
    return _scan_backward(step, init, (dhs, saved), dhs, F, unroll, input_grad)


lstm_layer.defvjp(_lstm_fwd, _lstm_bwd)

LAYERS = {"rnn": rnn_layer, "gru": gru_layer, "lstm": lstm_layer}


# ---------------------------------------------------------------- reference
def reference_layer(cell: str, x: jax.Array, w_i: jax.Array, w_h: jax.Array, b: jax.Array,
                    b_hn: jax.Array | None = None) -> jax.Array:
    """The same recurrences written plainly, per gate, and differentiated by JAX (for tests).

    ``w_i`` (F, G*H), ``w_h`` (H, G*H), ``b`` (G*H,), ``b_hn`` (H,) for the GRU.
    """
    H = w_h.shape[0]
    sig = jax.nn.sigmoid

    def step(carry, xt):
        if cell == "rnn":
            h = jnp.tanh(xt @ w_i + b + carry @ w_h)
            return h, h
        gx, gh = xt @ w_i + b, carry[-1] @ w_h if cell == "lstm" else carry @ w_h
        if cell == "gru":
            r = sig(gx[:, :H] + gh[:, :H])
            z = sig(gx[:, H:2 * H] + gh[:, H:2 * H])
            n = jnp.tanh(gx[:, 2 * H:] + r * (gh[:, 2 * H:] + b_hn))
            h = (1 - z) * n + z * carry
            return h, h
        c, h = carry
        zz = gx + gh
        i, f, o = sig(zz[:, :H]), sig(zz[:, H:2 * H]), sig(zz[:, 3 * H:])
        c = f * c + i * jnp.tanh(zz[:, 2 * H:3 * H])
        h = o * jnp.tanh(c)
        return (c, h), h

    zeros = jnp.zeros((x.shape[1], H), x.dtype)
    return jax.lax.scan(step, (zeros, zeros) if cell == "lstm" else zeros, x)[1]
