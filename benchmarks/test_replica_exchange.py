"""Replica exchange in the kernels: what swap rounds cost (issue 32; the predictions and the
measurements are in benchmarks/NOTES.md, "Replica exchange in the kernels" and "… in the CUDA
kernel and the graph backend").

Rows on the toy problem (B = 64, K steps, top level t = 2 with its own λ and step size, no kernel
term: a ladder group shares its target), ladder R = 4 (β = 0.1, 0.3, 0.6, 1), seeded:

* ``cpu-plain`` / ``cpu-mala-plain`` — the same call without ``temperatures`` (ULA / MALA);
* ``cpu-pt`` / ``cpu-mala-pt`` — with the ladder, a swap round after every step (the most rounds
  a call can have); ``cpu-pt-m10``: a round every 10 steps;
* ``cpu-pt-info`` — ``cpu-pt`` with ``return_info=True`` (the swap statistics derived in Python
  from the kernel's swap record: one short host loop per round);
* ``ref-pt`` / ``ref-plain`` — the reference (eager autograd loop, a round in PyTorch ops);
* on a GPU the same rows for ``cuda-*`` and ``graph-*`` (the CPU rows are skipped there).

Correctness before timing: ``cpu-pt`` (``cuda-pt``, ``graph-pt``) makes the reference's swaps
(fp64, seeded).
"""
from __future__ import annotations

import pytest
import torch

import hebm

CPU_ROWS = ("cpu-plain", "cpu-pt", "cpu-pt-m10", "cpu-pt-info", "cpu-mala-plain", "cpu-mala-pt", "ref-plain", "ref-pt")
GPU_ROWS = tuple(f"{b}-{r}" for b in ("cuda", "graph") for r in ("plain", "pt", "pt-m10", "mala-plain", "mala-pt"))
ROWS = CPU_ROWS + GPU_ROWS
LADDER = [0.1, 0.3, 0.6, 1.0]


def _call(dtype=torch.float32, B=64, device="cpu"):
    p = hebm.standard_problem("toy", B, dtype=dtype, device=device)
    top = int((p.kwargs["t"] == 2).nonzero()[0])
    kw = dict(t=2, energy_scale=float(p.kwargs["energy_scale"][top]), step_size=float(p.kwargs["step_size"][top]))
    return p, kw


@pytest.mark.parametrize("row", ROWS)
def test_replica_exchange_cost(benchmark, bench, row):
    gpu_row = row in GPU_ROWS
    if gpu_row != (bench.device != "cpu"):
        pytest.skip(f"{row}: a {'GPU' if gpu_row else 'CPU'} row, this run is on {bench.device}")
    backend = row.split("-")[0]
    why = hebm.sampler.backends.unavailable(backend) if backend != "ref" else None
    if why is not None:
        pytest.skip(f"{row}: {why}")
    p, kw = _call(device=bench.device)
    K = bench.steps
    if row.endswith("-pt") and "mala" not in row and backend != "ref":  # correctness before timing: the reference's swaps, fp64
        p64, kw64 = _call(torch.float64, 16, bench.device)
        args = dict(n_steps=6, seed=5, temperatures=LADDER, return_info=True, **kw64)
        want, wi = hebm.langevin_ref(p64.prior, p64.u, **args)
        got, gi = hebm.langevin_fused(p64.prior, p64.u, backend=backend, **args)
        assert torch.equal(gi["swapped"], wi["swapped"]) and torch.equal(gi["replica"], wi["replica"])
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    call = dict(n_steps=K, seed=5, backend=backend, metropolis="mala" in row, **kw)
    if not row.endswith("plain"):
        call.update(temperatures=LADDER, swap_every=10 if row.endswith("m10") else 1,
                    return_info=row.endswith("info"))

    def fn():
        out = hebm.langevin_fused(p.prior, p.u, **call)
        if gpu_row:
            torch.cuda.synchronize()
        return out

    fn()
    benchmark.extra_info.update(entry="replica_exchange", row=row, problem="toy", B=64, K=K, R=len(LADDER),
                                device=bench.device)
    benchmark.group = "replica exchange toy B=64"
    rounds = bench.min_rounds if bench.quick or row.startswith("ref") else max(10, bench.min_rounds)
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
