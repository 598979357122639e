"""MALA against ULA per step, side by side in one run (issue 23's cost claim: "MALA costs ≤ 1.15×
ULA in the fused CPU kernel, while the eager loop pays ≥ 1.4×").

Rows on the toy and small problems (B = 64, K steps, the problem's own step and energies):

* ``fused-ula`` / ``fused-mala`` — ``hebm.langevin_fused`` (backend "auto": the C++ kernel on the
  CPU), without and with ``metropolis=True``: the kernel evaluates every state once, so K
  adjusted steps cost K + 1 evaluations and a comparison each;
* ``plain-ula`` — the plain eager loop (:func:`benchmarks.plain.plain_langevin`);
* ``plain-mala`` — the same loop adjusted the fastest way a user writes it, the accepted
  proposal's log π and gradient reused (:func:`benchmarks.plain.plain_mala`);
* ``plain-mala-naive`` — the adjusted loop that evaluates the current state afresh each step
  too (two evaluations a step), as most published loops do.

Correctness before timing: ``fused-mala`` makes the reference's accept decisions (fp64, seeded)
on the first chains.  The ratios (MALA / ULA for each family) are read off the same run
(``python -m benchmarks.report``; benchmarks/NOTES.md has the prediction).
"""
from __future__ import annotations

import pytest
import torch

import hebm
from benchmarks.plain import PlainNets, plain_langevin, plain_mala

ROWS = ("fused-ula", "fused-mala", "plain-ula", "plain-mala", "plain-mala-naive")


@pytest.mark.parametrize("problem", ["toy", "small"])
@pytest.mark.parametrize("row", ROWS)
def test_metropolis_cost(benchmark, bench, row, problem):
    if bench.device != "cpu" and row.startswith("plain"):
        pytest.skip("the plain rows run on the CPU benchmark only")
    p = hebm.standard_problem(problem, 64, device=bench.device)
    K = bench.steps
    kw = {k: v for k, v in p.kwargs.items() if k not in ("n_steps", "seed", "noise_scale")}
    if row == "fused-mala":  # correctness before timing: the reference's decisions, fp64
        p64 = hebm.standard_problem(problem, 8, dtype=torch.float64)
        kw64 = {k: v for k, v in p64.kwargs.items() if k not in ("n_steps", "noise_scale")}
        want, wi = hebm.langevin_ref(p64.prior, p64.u, n_steps=4, metropolis=True, return_info=True, **kw64)
        got, gi = hebm.langevin_fused(p64.prior, p64.u, n_steps=4, metropolis=True, return_info=True,
                                      backend="cpu" if bench.device == "cpu" else "auto", **kw64)
        assert torch.equal(gi["accepted"], wi["accepted"])
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    nets = PlainNets(p.prior) if row.startswith("plain") else None
    fn = {
        "fused-ula": lambda: hebm.langevin_fused(p.prior, p.u, n_steps=K, seed=5, **kw),
        "fused-mala": lambda: hebm.langevin_fused(p.prior, p.u, n_steps=K, seed=5, metropolis=True, **kw),
        "plain-ula": lambda: plain_langevin(nets, p.u, n_steps=K, **kw),
        "plain-mala": lambda: plain_mala(nets, p.u, n_steps=K, **kw),
        "plain-mala-naive": lambda: plain_mala(nets, p.u, n_steps=K, reuse=False, **kw),
    }[row]
    fn()
    benchmark.extra_info.update(entry="metropolis", row=row, problem=problem, B=64, K=K)
    benchmark.group = f"metropolis {problem} B=64"
    benchmark.pedantic(fn, rounds=bench.min_rounds if bench.quick else max(5, bench.min_rounds), iterations=1)
