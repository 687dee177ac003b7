"""Training throughput of the Flax RNN/GRU/LSTM against PyTorch on the same machine, same run.

Setting (docs/dependency-facts.md, "CPU training throughput"): sequence-to-one, batch 256,
90 time steps, 25 features, 2 layers x 128 units, dropout 0.2, MAE loss + Adam, one optimiser
step per call; windows are gathered from a (site, time, feature) array by index arithmetic in
both frameworks. Prints samples/s for

* JAX ``fused`` (gpp_models default: gpp_models.recurrence, one stacked [x_t, h] @ W matmul
  per step and a hand-written backward pass; the batch split across the cores, one JAX CPU
  device per core, as the gpp training commands set up: gpp_models.parallel),
* JAX ``flax`` (stock nn.SimpleCell / nn.GRUCell / nn.OptimizedLSTMCell driven by nn.RNN),
* PyTorch ``torch.nn.RNN/GRU/LSTM`` (oneDNN kernels on CPU),

the JAX/PyTorch ratios of the default (issue 18's target: >= 1.2 for every cell) and the
fraction of the machine's float32 matmul peak (a 2048^2 matmul on the same cores, measured in
the same run, so under the same load) reached by the default's matmul FLOPs.

``--ensemble K`` adds a table: K members trained together, placed as ``gpp train --ensemble
K`` places them (gpp_models.parallel.ensemble_plan; on CPU whole members per core, in turn)
and vmapped with the batch split (the placement before issue 18), against K PyTorch models
trained one after another; same batches and steps (target: >= 1.5). The last line says which
layer implementation ``impl="auto"`` picks on this device and which the timed choice it makes
on GPUs would pick here (gpp_models.impl_choice.choose_impl; ``--no-impl-choice`` skips it).

Same threads: ``--threads N`` pins the whole process to N cores (``sched_setaffinity``) before
either framework starts, so XLA's and PyTorch's thread pools (``torch.set_num_threads(N)``)
see the same cores; XLA otherwise sizes its pool from all cores, and gpp_models asks JAX for
one CPU device per pinned core. Same allocator: gpp_models.runtime.configure_process (called
before either framework starts) tunes glibc malloc for the process (``--malloc tuned``, both
frameworks gain from it, PyTorch more); ``--malloc system`` keeps glibc's defaults for both.
Frameworks run
in alternating rounds; the table gives the median round (wall clock) and the ratio is also
printed on CPU time (less sensitive to other processes on a shared machine). The load
average is printed before and after: figures taken with load > cores are not comparable.

Run: ``pip install -e .[bench] && python benchmarks/bench_models.py --threads 1``
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _early_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6, help="optimiser steps per round")
    ap.add_argument("--cells", default="rnn,gru,lstm")
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--no-stock", action="store_true", help="skip impl='flax'")
    ap.add_argument("--threads", type=int, default=0,
                    help="cores for both frameworks (process pinned to them); default: all")
    ap.add_argument("--malloc", choices=("tuned", "system"), default="tuned",
                    help="glibc allocator settings for the whole process (both frameworks)")
    ap.add_argument("--ensemble", type=int, default=0, metavar="K",
                    help="also time K members trained together (placed as gpp train "
                         "--ensemble K does, and vmapped) against K PyTorch models trained "
                         "one after another")
    ap.add_argument("--no-impl-choice", action="store_true",
                    help="skip timing impl='auto''s candidates "
                         "(gpp_models.impl_choice.choose_impl)")
    return ap.parse_args(argv)


ARGS = _early_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    # Before jax/torch start their thread pools and pick their heaps.
    cores = sorted(os.sched_getaffinity(0))
    THREADS = min(ARGS.threads or len(cores), len(cores))
    os.sched_setaffinity(0, cores[:THREADS])
    if THREADS == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false").strip()
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(THREADS)
    if ARGS.malloc == "system":
        os.environ["GPP_MODELS_MALLOC"] = "system"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gpp_models.config import ModelConfig, TrainConfig  # noqa: E402
from gpp_models.impl_choice import choose_impl  # noqa: E402
from gpp_models.models import GATES  # noqa: E402
from gpp_models.parallel import (  # noqa: E402
    batch_mesh,
    ensemble_plan,
    place_members,
    replicate,
)
from gpp_models.runtime import configure_process  # noqa: E402
from gpp_models.step import create_train_state, train_step  # noqa: E402

# As the `gpp` training commands do, before JAX's backend starts: tuned allocator (unless
# --malloc system) and one JAX CPU device per (pinned) core.
MALLOC_TUNED = configure_process().malloc_tuned

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
    def __init__(self, cell: str, impl: str, unroll: int, ensemble: int = 1,
                 placement: str = "plan") -> None:
        self.cfg = TrainConfig(model=ModelConfig(cell=cell, layers=L, units=H, impl=impl,
                                                 unroll=unroll), window=T, batch_size=B,
                               ensemble=ensemble)
        rng = np.random.default_rng(0)
        self.X = jnp.asarray(rng.normal(size=(SITES, DAYS, F)).astype(np.float32))
        self.Y = jnp.asarray(rng.normal(size=(SITES, DAYS)).astype(np.float32))
        self.s = rng.integers(0, SITES, (64, B)).astype(np.int32)
        self.t = rng.integers(T, DAYS, (64, B)).astype(np.int32)
        self.w = np.ones(B, np.float32)
        # "plan": as gpp_models.train.train_and_evaluate (ensemble_plan: one member, the batch
        # split across the pinned cores; K members on CPU, whole members per core, in turn);
        # "vmap": the batch split, members vmapped (what gpp train did before issue 18).
        if placement == "plan":
            self.mesh, self.vmap = ensemble_plan(ensemble, B)
        else:
            self.mesh, self.vmap = batch_mesh(B), True
        self.X, self.Y = replicate((self.X, self.Y), self.mesh)
        self.state = place_members(create_train_state(self.cfg, F), self.mesh)
        self.i = 0
        self.run(2)  # compile + warm up

    def run(self, steps: int) -> tuple[float, float]:
        """Wall-clock and CPU seconds of ``steps`` optimiser steps."""
        loss = None
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            k = self.i % 64
            self.state, loss = train_step(self.state, self.X, self.Y, self.s[k], self.t[k],
                                          self.w, model_cfg=self.cfg.model, window=T,
                                          mesh=self.mesh, vmap_members=self.vmap)
            self.i += 1
        loss.block_until_ready()
        return time.perf_counter() - t0, time.process_time() - c0


class TorchBench:
    def __init__(self, cell: str, seed: int = 0) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(seed)
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

    def run(self, steps: int) -> tuple[float, float]:
        """Wall-clock and CPU seconds of ``steps`` optimiser steps."""
        torch = self.torch
        t0, c0 = time.perf_counter(), time.process_time()
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
        return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    args = ARGS
    import torch

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    load0 = os.getloadavg()
    peak = matmul_peak()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"{THREADS} core(s) pinned for both (torch threads {torch.get_num_threads()}), "
          f"malloc {'tuned' if MALLOC_TUNED else 'system'}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in load0)} "
          f"({os.cpu_count()} cores on the machine)")
    print(f"float32 matmul peak on {THREADS} core(s): {peak / 1e9:.1f} GFLOP/s")
    mesh = batch_mesh(B)
    print(f"JAX devices: {len(jax.devices())}; batch of {B} split over "
          f"{1 if mesh is None else mesh.size} of them (gpp_models.parallel)")
    print(f"setting: batch {B}, {T} steps, {F} features, {L} layers x {H} units, MAE + Adam, "
          f"{args.rounds} rounds x {args.steps} steps, median round\n")
    header = (f"{'cell':5} {'JAX fused':>10} {'JAX flax':>9} {'PyTorch':>8} "
              f"{'fused/torch':>11} {'(CPU time)':>10} {'flax/torch':>10} {'% peak':>7}")
    print(header + "\n" + "-" * len(header))
    for cell in args.cells.split(","):
        benches = {"fused": JaxBench(cell, "fused", args.unroll), "torch": TorchBench(cell)}
        if not args.no_stock:
            benches["flax"] = JaxBench(cell, "flax", args.unroll)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in benches}
        for _ in range(args.rounds):
            for name, bench in benches.items():
                times[name].append(bench.run(args.steps))
        wall = {k: args.steps * B / float(np.median([w for w, _ in v])) for k, v in times.items()}
        cpu = {k: args.steps * B / float(np.median([c for _, c in v])) for k, v in times.items()}
        frac = wall["fused"] * train_flops_per_sample(cell) / peak
        stock = wall.get("flax", float("nan"))
        print(f"{cell:5} {wall['fused']:10.0f} {stock:9.0f} {wall['torch']:8.0f} "
              f"{wall['fused'] / wall['torch']:11.2f} {cpu['fused'] / cpu['torch']:10.2f} "
              f"{stock / wall['torch']:10.2f} {100 * frac:6.0f}%", flush=True)
    if args.ensemble > 1:
        ensemble_table(args)
    if not args.no_impl_choice:
        impl_choice_line(args)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("samples/s (higher is better); ratios >= 1.0 mean JAX trains faster than PyTorch.")


def ensemble_table(args: argparse.Namespace) -> None:
    """K JAX members trained together against K PyTorch models trained one after another.

    JAX as ``gpp train --ensemble K`` places them (gpp_models.parallel.ensemble_plan) and, for
    comparison, vmapped with the batch split (the placement before issue 18). Same batches
    and steps for every member; samples/s counts every member's samples.
    """
    K = args.ensemble
    mesh, vmap = ensemble_plan(K, B)
    plan = ("one device" if mesh is None else
            f"{mesh.axis_names[0]} axis split over {mesh.size} devices") + (
        ", members vmapped" if vmap else ", members in turn")
    print(f"\nensembles: K = {K} members, {args.rounds} rounds x {args.steps} steps each, "
          f"median round (target: JAX K / PyTorch xK >= 1.5)\nJAX placement (ensemble_plan): "
          f"{plan}")
    header = (f"{'cell':5} {'JAX K':>7} {'JAX vmap':>8} {'PyTorch xK':>10} {'ratio':>6} "
              f"{'(CPU time)':>10} {'vmap/torch':>10} {'JAX K=1':>8} {'K/K=1':>6}")
    print(header + "\n" + "-" * len(header))
    for cell in args.cells.split(","):
        jax_k = JaxBench(cell, "fused", args.unroll, K)
        jax_v = JaxBench(cell, "fused", args.unroll, K, placement="vmap")
        jax_1 = JaxBench(cell, "fused", args.unroll)
        torch_k = [TorchBench(cell, seed=k) for k in range(K)]
        times: dict[str, list[tuple[float, float]]] = {"plan": [], "vmap": [], "torch": [],
                                                       "one": []}
        for _ in range(args.rounds):
            times["plan"].append(jax_k.run(args.steps))
            times["vmap"].append(jax_v.run(args.steps))
            runs = [m.run(args.steps) for m in torch_k]  # one model after the other
            times["torch"].append((sum(w for w, _ in runs), sum(c for _, c in runs)))
            times["one"].append(jax_1.run(args.steps))
        n = {"plan": K, "vmap": K, "torch": K, "one": 1}
        wall = {k: n[k] * args.steps * B / float(np.median([w for w, _ in v]))
                for k, v in times.items()}
        cpu = {k: n[k] * args.steps * B / float(np.median([c for _, c in v]))
               for k, v in times.items()}
        print(f"{cell:5} {wall['plan']:7.0f} {wall['vmap']:8.0f} {wall['torch']:10.0f} "
              f"{wall['plan'] / wall['torch']:6.2f} {cpu['plan'] / cpu['torch']:10.2f} "
              f"{wall['vmap'] / wall['torch']:10.2f} {wall['one']:8.0f} "
              f"{wall['plan'] / wall['one']:6.2f}", flush=True)


def impl_choice_line(args: argparse.Namespace) -> None:
    """What ``impl="auto"`` picks here (gpp_models.impl_choice.choose_impl), and what timing the
    candidates on this device, as it does on a GPU, would pick."""
    cell = args.cells.split(",")[-1]
    cfg = TrainConfig(model=ModelConfig(cell=cell, layers=L, units=H, impl="auto",
                                        unroll=args.unroll), window=T, batch_size=B,
                      ensemble=max(1, args.ensemble))
    _, here = choose_impl(cfg, F)
    _, timed = choose_impl(cfg, F, measure=True, steps=args.steps)
    secs = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in timed["seconds_per_step"].items())
    print(f"\nlayer implementation (impl='auto', {cell}, K = {cfg.ensemble}) on {here['device']}: "
          f"{here['chosen']} ({here['how']}); timed as on a GPU: {timed['chosen']} "
          f"({secs} per step)")


if __name__ == "__main__":
    main()
