"""Training throughput of the Flax RNN/GRU/LSTM against PyTorch on the same machine, same run.

Setting (docs/dependency-facts.md, "CPU training throughput"): sequence-to-one, batch 256,
90 time steps, 25 features, 2 layers x 128 units, dropout 0.2, MAE loss + Adam, one optimiser
step per call; windows are gathered from a (site, time, feature) array by index arithmetic in
both frameworks. Prints samples/s for

* JAX ``flax`` (gpp_models default: stock nn.SimpleCell / nn.GRUCell / nn.OptimizedLSTMCell,
  gates fused per step, driven by nn.RNN),
* JAX ``fused`` (input projection hoisted out of the scan, one-tanh gates, hand-written
  backward pass: gpp_models.recurrence),
* PyTorch ``torch.nn.RNN/GRU/LSTM`` with the same number of threads,

the JAX/PyTorch ratios (target >= 1.0) and the fraction of the machine's float32 matmul peak
(measured here with a 2048^2 matmul) reached by the default implementation's matmul FLOPs.
Frameworks are measured in alternating rounds and the best round counts, so load from other
processes on a shared machine hurts both alike.

Run: ``pip install -e .[bench] && python benchmarks/bench_models.py [--rounds 3] [--steps 8]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and "--threads" in sys.argv:
    # XLA reads its thread settings once, at backend start: set them before importing jax.
    _n = int(sys.argv[sys.argv.index("--threads") + 1])
    if _n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false").strip()
        for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[_var] = "1"

import jax
import jax.numpy as jnp
import numpy as np

from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.models import GATES
from gpp_models.train import create_train_state, train_step

B, T, F, H, L = 256, 90, 25, 128, 2
SITES, DAYS = 4, 1000


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best float32 matmul FLOP/s of JAX and NumPy on this machine [FLOP/s]."""
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    best = 0.0
    ja = jnp.asarray(a)
    f = jax.jit(lambda x: x @ x)
    f(ja).block_until_ready()
    for _ in range(reps):
        t0 = time.perf_counter()
        f(ja).block_until_ready()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def train_flops_per_sample(cell: str) -> float:
    """Matmul FLOPs of one training sample (forward + backward ~ 3x forward) [FLOP]."""
    g = GATES[cell]
    fwd = sum(T * 2 * ((F if i == 0 else H) + H) * g * H for i in range(L)) + 2 * H
    return 3.0 * fwd


class JaxBench:
    def __init__(self, cell: str, impl: str, unroll: int) -> None:
        self.cfg = TrainConfig(model=ModelConfig(cell=cell, layers=L, units=H, impl=impl,
                                                 unroll=unroll), window=T, batch_size=B)
        rng = np.random.default_rng(0)
        self.X = jnp.asarray(rng.normal(size=(SITES, DAYS, F)).astype(np.float32))
        self.Y = jnp.asarray(rng.normal(size=(SITES, DAYS)).astype(np.float32))
        self.s = rng.integers(0, SITES, (64, B)).astype(np.int32)
        self.t = rng.integers(T, DAYS, (64, B)).astype(np.int32)
        self.w = np.ones(B, np.float32)
        self.state = create_train_state(self.cfg, F)
        self.i = 0
        self.run(2)  # compile + warm up

    def run(self, steps: int) -> float:
        loss = None
        t0 = time.perf_counter()
        for _ in range(steps):
            k = self.i % 64
            self.state, loss = train_step(self.state, self.X, self.Y, self.s[k], self.t[k],
                                          self.w, model_cfg=self.cfg.model, window=T)
            self.i += 1
        loss.block_until_ready()
        return steps * B / (time.perf_counter() - t0)


class TorchBench:
    def __init__(self, cell: str) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(0)
        cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
        self.rnn = cls(F, H, num_layers=L, dropout=0.2)
        self.head = torch.nn.Linear(H, 1)
        self.drop = torch.nn.Dropout(0.2)
        params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(params, lr=1e-3)
        rng = np.random.default_rng(0)
        self.X = torch.from_numpy(rng.normal(size=(SITES, DAYS, F)).astype(np.float32))
        self.Y = torch.from_numpy(rng.normal(size=(SITES, DAYS)).astype(np.float32))
        self.s = torch.from_numpy(rng.integers(0, SITES, (64, B)))
        self.t = torch.from_numpy(rng.integers(T, DAYS, (64, B)))
        self.ar = torch.arange(-T + 1, 1)
        self.i = 0
        self.run(2)

    def run(self, steps: int) -> float:
        torch = self.torch
        t0 = time.perf_counter()
        for _ in range(steps):
            k = self.i % 64
            s, t = self.s[k], self.t[k]
            steps_idx = self.ar[:, None] + t[None, :]  # (T, B), time-major like the JAX side
            x = self.X[s[None, :], steps_idx]
            y = self.Y[s, t]
            out, _ = self.rnn(x)
            pred = self.head(self.drop(out[-1]))[:, 0]
            loss = torch.nn.functional.l1_loss(pred, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.i += 1
        return steps * B / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per round")
    ap.add_argument("--cells", default="rnn,gru,lstm")
    ap.add_argument("--unroll", type=int, default=ModelConfig().unroll)
    ap.add_argument("--no-fused", action="store_true", help="skip impl='fused'")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for both frameworks: 1 pins both to one thread (stable on a "
                         "shared machine); default: all cores")
    args = ap.parse_args()

    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if threads == 1:
        torch.set_num_interop_threads(1)
    peak = matmul_peak()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"threads {threads} (torch) / {threads} (XLA)")
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"setting: batch {B}, {T} steps, {F} features, {L} layers x {H} units, MAE + Adam\n")
    header = (f"{'cell':5} {'JAX flax':>10} {'JAX fused':>10} {'PyTorch':>10} "
              f"{'flax/torch':>10} {'fused/torch':>11} {'% peak':>7}")
    print(header + "\n" + "-" * len(header))
    for cell in args.cells.split(","):
        benches = {"flax": JaxBench(cell, "flax", args.unroll), "torch": TorchBench(cell)}
        if not args.no_fused:
            benches["fused"] = JaxBench(cell, "fused", args.unroll)
        best = dict.fromkeys(benches, 0.0)
        for _ in range(args.rounds):
            for name, bench in benches.items():
                best[name] = max(best[name], bench.run(args.steps))
        frac = best["flax"] * train_flops_per_sample(cell) / peak
        fused = best.get("fused", float("nan"))
        print(f"{cell:5} {best['flax']:10.0f} {fused:10.0f} {best['torch']:10.0f} "
              f"{best['flax'] / best['torch']:10.2f} {fused / best['torch']:11.2f} "
              f"{100 * frac:6.0f}%", flush=True)
    print("\nsamples/s (higher is better); ratios >= 1.0 mean JAX trains faster than PyTorch.")


if __name__ == "__main__":
    main()
