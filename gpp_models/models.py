"""Stacked Flax recurrent networks (Elman RNN, GRU, LSTM) for sequence-to-one GPP regression.

Two implementations of the same equations with the same number of parameters.
``impl="fused"`` runs each layer as one ``lax.scan`` with a hand-written backward pass
(:mod:`gpp_models.recurrence`): one ``[x_t, h_{t-1}] @ W`` matmul per step with all gates
and both kernels stacked, the kernel gradient accumulated in the backward loop, and the gate
activations saved as separate arrays. ``impl="flax"`` drives Flax's stock cells
(``nn.SimpleCell``, ``nn.GRUCell``, ``nn.OptimizedLSTMCell``) with ``nn.RNN``; it is kept as
the reference the fused layers are tested against (forward and gradients); on XLA:CPU the
fused layers train at least as fast as the stock cells, the more gates the larger the gain
(benchmarks/bench_models.py). ``impl="auto"`` is resolved by training for its device
(:func:`gpp_models.impl_choice.choose_impl`); unresolved it builds the ``fused`` layers
(:func:`concrete_impl`). Inputs are
time-major ``(time, batch, feature)`` so the scan slices without transposes. The network's
input is data: no gradient flows to it (``stop_gradient``), which lets the first fused layer
skip its input gradient.

Equations (x_t input, h_{t-1} previous state, sigma the logistic function):

* RNN:  h_t = tanh(W_i x_t + b + W_h h_{t-1})
* GRU:  r = sigma(W_ir x + b_r + W_hr h),  z = sigma(W_iz x + b_z + W_hz h),
  n = tanh(W_in x + b_n + r * (W_hn h + b_hn)),  h_t = (1 - z) n + z h_{t-1}
  (Cho et al. 2014 in the PyTorch/Flax form; the separate r/z recurrent biases of PyTorch
  are redundant with b_r, b_z and omitted)
* LSTM: [i, f, g, o] = W_i x + b + W_h h;  c_t = sigma(f) c + sigma(i) tanh(g);
  h_t = sigma(o) tanh(c_t)  (Hochreiter & Schmidhuber 1997, no peepholes)

References
----------
Montero, D. et al. (2024), section 2.2. Cho, K. et al. (2014), arXiv:1406.1078.
Hochreiter, S. & Schmidhuber, J. (1997), Neural Computation 9(8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpp_cubes.paper import SEQUENCE_LENGTH
from gpp_models.config import ModelConfig
from gpp_models.recurrence import LAYERS, gru_kernel

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
Initializer = Callable[..., jax.Array]


def uniform_fan_in() -> Initializer:
    """U[-1/sqrt(n), 1/sqrt(n)] with n the fan-in (first axis) of the kernel.

    The paper writes U[-sqrt(n), sqrt(n)]; see :class:`gpp_models.config.ModelConfig`.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        bound = 1.0 / jnp.sqrt(jnp.asarray(shape[0], jnp.float32))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def blockwise_orthogonal(blocks: int) -> Initializer:
    """Orthogonal [H, H] per gate block, concatenated to [H, blocks*H] (Flax's cell default)."""
    ortho = nn.initializers.orthogonal()

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        keys = jax.random.split(key, blocks)
        h = shape[0]
        return jnp.concatenate([ortho(k, (h, h), dtype) for k in keys], axis=-1)

    return init


def tanh_sigmoid(x: jax.Array) -> jax.Array:
    """The logistic function as 0.5 tanh(x/2) + 0.5: same values, but XLA:CPU evaluates tanh
    with a fast vectorised polynomial while ``logistic`` costs several times more."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


class Dropout16(nn.Module):
    """Inverted dropout drawing 16 random bits per element (``nn.Dropout`` draws 32).

    Elements are dropped with probability ``round(rate * 65536) / 65536`` (0.2 -> 0.199997)
    and the kept ones scaled by 1 / (1 - rate). Half the random bits of ``nn.Dropout``: on
    XLA:CPU the threefry generator is a noticeable share of a training step.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        n = x.size
        bits = jax.random.bits(self.make_rng("dropout"), ((n + 1) // 2,), jnp.uint32)
        u16 = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(-1)[:n].reshape(x.shape)
        keep = u16 >= jnp.uint16(round(self.rate * 65536))
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


def _inits(config: ModelConfig) -> tuple[Initializer, Initializer]:
    if config.init == "paper_uniform":
        return uniform_fan_in(), uniform_fan_in()
    return nn.initializers.lecun_normal(), blockwise_orthogonal(GATES[config.cell])


FLAX_CELLS = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
IMPLS = ("fused", "flax")  # the layer implementations "auto" chooses between


def concrete_impl(config: ModelConfig) -> str:
    """The layer implementation a network of ``config`` is built with: ``config.impl``, with
    an unresolved ``auto`` meaning ``fused`` (training resolves ``auto`` by device first)."""
    return "fused" if config.impl == "auto" else config.impl


class RecurrentLayer(nn.Module):
    """One recurrent layer over a time-major sequence; returns (outputs, last hidden state).

    Parameters of the ``fused`` layer: ``input_kernel`` [F, G*H], ``bias`` [G*H],
    ``recurrent_kernel`` [H, G*H] (plus ``recurrent_bias`` [H] for the GRU); the recurrence
    runs in :mod:`gpp_models.recurrence` (``lax.scan`` with a hand-written backward pass).
    The ``flax`` layer drives the stock Flax cell with ``nn.RNN``.
    """

    config: ModelConfig
    input_grad: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        k_init, r_init = _inits(cfg)
        if concrete_impl(cfg) == "flax":
            # Stock cells hold one [H, H] recurrent kernel per gate.
            r_cell = r_init if cfg.init == "paper_uniform" else nn.initializers.orthogonal()
            extra = {} if cfg.cell == "rnn" else {"gate_fn": tanh_sigmoid}
            cell = FLAX_CELLS[cfg.cell](features=cfg.units, kernel_init=k_init,
                                        recurrent_kernel_init=r_cell, name="cell", **extra)
            carry, ys = nn.RNN(cell, time_major=True, return_carry=True, unroll=cfg.unroll)(x)
            last = carry[1] if cfg.cell == "lstm" else carry
            return ys, last
        H = cfg.units
        width = GATES[cfg.cell] * H
        w_i = self.param("input_kernel", k_init, (x.shape[-1], width))
        b = self.param("bias", nn.initializers.zeros_init(), (width,))
        w_h = self.param("recurrent_kernel", r_init, (H, width))
        if cfg.cell == "gru":
            b_hn = self.param("recurrent_bias", nn.initializers.zeros_init(), (H,))
            w, b = gru_kernel(w_i, w_h), jnp.concatenate([b, b_hn])
        else:
            # Stacked [W_i; W_h]: one (B, F+H) x (F+H, G*H) matmul per step.
            w = jnp.concatenate([w_i, w_h], axis=0)
        ys = LAYERS[cfg.cell](x.astype(w.dtype), w, b, cfg.unroll, self.input_grad)
        return ys, ys[-1]


class GPPRecurrentNet(nn.Module):
    """Stacked recurrent layers, dropout after each, and a dense head to one GPP value.

    Call with ``x`` of shape (time, batch, feature) [standardised predictors]; returns
    (batch,) predictions [g C m-2 d-1]. Pass ``train=True`` and a ``dropout`` rng to train.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        cfg = self.config
        h = jax.lax.stop_gradient(x)  # predictors are data (and the first layer needs no dx)
        last = h[-1]
        for i in range(cfg.layers):
            ys, last = RecurrentLayer(cfg, input_grad=i > 0, name=f"layer_{i}")(h)
            if i < cfg.layers - 1:
                h = Dropout16(cfg.dropout)(ys, deterministic=not train)
        last = Dropout16(cfg.dropout)(last, deterministic=not train)
        k_init = uniform_fan_in() if cfg.init == "paper_uniform" else nn.initializers.lecun_normal()
        return nn.Dense(1, kernel_init=k_init, name="head")(last)[..., 0]


def build_model(config: ModelConfig) -> GPPRecurrentNet:
    """The network for ``config`` (a pure description; parameters come from ``init``)."""
    return GPPRecurrentNet(config)


def init_params(config: ModelConfig, rng: jax.Array, n_features: int,
                window: int = SEQUENCE_LENGTH) -> Any:
    """Initial parameters for inputs of ``n_features`` predictors."""
    x = jnp.zeros((window, 1, n_features), jnp.float32)
    return build_model(config).init({"params": rng}, x, train=False)["params"]
