"""The fixed cost of one fused call, in steps of the chain (docs/design.md §5: ≤ 3 toy steps).

On the toy problem at B = 64: ``t(K)`` is the median time of a call of K steps; one step costs
``s = (t(21) − t(1)) / 20`` and the call's fixed part is ``t(1) − s`` (argument checks, backend
choice, the pack cache's checks, the op boundary, the output checks).  The row reports
``(t(1) − s) / s``; for ``cpu`` also the same call with its per-chain arguments as ``[B]`` tensors
instead of numbers (``tensor_*``): every form takes the one path, so no form pays more than another."""
from __future__ import annotations

import statistics
import time

import pytest

import torch

import hebm
from benchmarks import providers as P

N_LONG = 21


FUSED = ("cpu", "cuda", "triton", "graph")


def test_fixed_cost(benchmark, bench, provider):
    if provider not in FUSED:
        pytest.skip(f"{provider}: the fixed cost is measured for the fused backends")
    p = hebm.standard_problem("toy", 64, device=bench.device)
    kw1 = dict(p.kwargs, n_steps=1)
    why = P.skip_reason(provider, p.prior, p.u, kw1)
    if why is not None:
        pytest.skip(f"{provider}: {why}")
    f1 = P.langevin_fn(provider, p.prior, p.u, kw1, bench.precision)
    fk = P.langevin_fn(provider, p.prior, p.u, dict(p.kwargs, n_steps=N_LONG), bench.precision)
    for f in (f1, fk, f1, fk):  # warm: builds, packs, captures
        f()
    P.sync(bench.device)
    rounds = 15 if bench.quick else 200

    def timed(f):
        t0 = time.perf_counter()
        f()
        P.sync(bench.device)
        return time.perf_counter() - t0

    def measure():
        # interleaved, so drifts of a shared machine hit both alike
        t1s, tks = [], []
        for _ in range(rounds):
            t1s.append(timed(f1))
            tks.append(timed(fk))
        return statistics.median(t1s), statistics.median(tks)

    t1, tk = measure()
    step = (tk - t1) / (N_LONG - 1)
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(entry="fixed_cost", provider=provider, problem="toy", B=64, K=1, precision=bench.precision, flops=None,
                quick=bench.quick, t1_s=t1, tK_s=tk, K_long=N_LONG, step_s=step, fixed_s=t1 - step,
                fixed_in_steps=(t1 - step) / step if step > 0 else None)
    if provider == "cpu":
        # the same call with per-chain tensors where the problem passes numbers
        B = p.u.shape[0]
        tensors = {k: torch.full((B,), float(v), dtype=p.u.dtype) for k, v in p.kwargs.items()
                   if k in ("step_size", "noise_scale", "energy_scale", "alpha", "sigma") and isinstance(v, (int, float))}
        f1 = P.langevin_fn(provider, p.prior, p.u, dict(kw1, **tensors), bench.precision)
        fk = P.langevin_fn(provider, p.prior, p.u, dict(p.kwargs, n_steps=N_LONG, **tensors), bench.precision)
        for f in (f1, fk):
            f()
        g1, gk = measure()
        gstep = (gk - g1) / (N_LONG - 1)
        info.update(tensor_t1_s=g1, tensor_tK_s=gk, tensor_step_s=gstep, tensor_fixed_s=g1 - gstep,
                    tensor_fixed_in_steps=(g1 - gstep) / gstep if gstep > 0 else None)
        f1 = P.langevin_fn(provider, p.prior, p.u, kw1, bench.precision)
    benchmark.group = "fixed_cost toy B=64"
    benchmark.pedantic(f1, rounds=5 if bench.quick else 50, iterations=1, warmup_rounds=1)
    info["median_s"] = benchmark.stats.stats.median
