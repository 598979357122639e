"""Replica exchange in the CPU kernel: what swap rounds cost (issue 32; the prediction and the
measurement are in benchmarks/NOTES.md, "Replica exchange in the kernels").

Rows on the toy problem (B = 64, K steps, top level t = 2 with its own λ and step size, no kernel
term: a ladder group shares its target), ladder R = 4 (β = 0.1, 0.3, 0.6, 1), seeded:

* ``cpu-plain`` / ``cpu-mala-plain`` — the same call without ``temperatures`` (ULA / MALA);
* ``cpu-pt`` / ``cpu-mala-pt`` — with the ladder, a swap round after every step (the most rounds
  a call can have); ``cpu-pt-m10``: a round every 10 steps;
* ``cpu-pt-info`` — ``cpu-pt`` with ``return_info=True`` (the swap statistics derived in Python
  from the kernel's swap record: one short host loop per round);
* ``ref-pt`` / ``ref-plain`` — the reference (eager autograd loop, a round in PyTorch ops).

Correctness before timing: ``cpu-pt`` makes the reference's swaps (fp64, seeded).
"""
from __future__ import annotations

import pytest
import torch

import hebm

ROWS = ("cpu-plain", "cpu-pt", "cpu-pt-m10", "cpu-pt-info", "cpu-mala-plain", "cpu-mala-pt", "ref-plain", "ref-pt")
LADDER = [0.1, 0.3, 0.6, 1.0]


def _call(dtype=torch.float32, B=64):
    p = hebm.standard_problem("toy", B, dtype=dtype)
    top = int((p.kwargs["t"] == 2).nonzero()[0])
    kw = dict(t=2, energy_scale=float(p.kwargs["energy_scale"][top]), step_size=float(p.kwargs["step_size"][top]))
    return p, kw


@pytest.mark.parametrize("row", ROWS)
def test_replica_exchange_cost(benchmark, bench, row):
    if bench.device != "cpu":
        pytest.skip("the ladder runs in the CPU kernel only (the GPU backends refuse it)")
    p, kw = _call()
    K = bench.steps
    if row == "cpu-pt":  # correctness before timing: the reference's swaps, fp64
        p64, kw64 = _call(torch.float64, 16)
        args = dict(n_steps=6, seed=5, temperatures=LADDER, return_info=True, **kw64)
        want, wi = hebm.langevin_ref(p64.prior, p64.u, **args)
        got, gi = hebm.langevin_fused(p64.prior, p64.u, backend="cpu", **args)
        assert torch.equal(gi["swapped"], wi["swapped"]) and torch.equal(gi["replica"], wi["replica"])
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    backend = "ref" if row.startswith("ref") else "cpu"
    call = dict(n_steps=K, seed=5, backend=backend, metropolis="mala" in row, **kw)
    if not row.endswith("plain"):
        call.update(temperatures=LADDER, swap_every=10 if row.endswith("m10") else 1,
                    return_info=row.endswith("info"))

    def fn():
        return hebm.langevin_fused(p.prior, p.u, **call)

    fn()
    benchmark.extra_info.update(entry="replica_exchange", row=row, problem="toy", B=64, K=K, R=len(LADDER))
    benchmark.group = "replica exchange toy B=64"
    rounds = bench.min_rounds if bench.quick or row.startswith("ref") else max(10, bench.min_rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
