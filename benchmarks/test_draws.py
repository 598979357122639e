"""Draws inside the call (``trace_every``, issue 32: "every m-th state and its log density, at ≤ 5 %
extra cost at m = 10 (toy, B = 64, cpu)").

On the toy problem at B = 64, K = 200 steps (``--bench-steps`` overrides), the problem's energies,
levels and kernel term with its step sizes × 0.75 (at its own δ, tuned for K = 60, one chain of 64
diverges within 200 steps), seeded noise, one call each way:

* ``plain`` — the call without ``return_info``;
* ``info`` — with ``return_info=True`` (the per-step log π trace: what a traced call also returns);
* ``traced`` — with ``return_info=True, trace_every=10``: the states after steps 10, 20, …, 200 and
  their log π recorded inside the kernel;
* ``split`` — the way without it: K/10 calls of 10 steps each (the state read between calls).

All four in one process, their rounds interleaved (a shared machine's drift hits each alike);
``extra_info`` carries each median (wall, and ``*_cpu_s`` the process's CPU time: the kernel runs
on the calling thread at this size, so on a shared machine CPU time is the cost and wall time
mostly the scheduler) and the ratios ``traced_over_info``, ``traced_over_plain``,
``split_over_plain`` (``cpu_*``: of CPU time) (benchmarks/NOTES.md, "Draws inside the call", has the prediction).
Correctness first: the traced call's final state is the untraced one's bit for bit, and the split
run's states are its draws.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

import hebm
from benchmarks import providers as P

M = 10
K_DEFAULT = 200


def test_draws_cost(benchmark, bench):
    if bench.device != "cpu":
        pytest.skip("the draws benchmark is the CPU kernel's (backend 'cpu')")
    why = hebm.sampler.backends.unavailable("cpu")
    if why is not None:
        pytest.skip(why)
    p = hebm.standard_problem("toy", 64)
    K = K_DEFAULT if bench.steps in (10, 60) else bench.steps  # the suite's default K is too short for m = 10
    kw = dict(p.kwargs, n_steps=K, step_size=0.75 * p.kwargs["step_size"])
    sampler = hebm.Sampler(p.prior, backend="cpu", precision=bench.precision)

    def split():
        u, states = p.u, []
        for k0 in range(0, K, M):
            u = sampler.run(u, **dict(kw, n_steps=M, step_offset=kw.get("step_offset", 0) + k0))
            states.append(u)
        return u, torch.stack(states)

    ways = {
        "plain": lambda: sampler.run(p.u, **kw),
        "info": lambda: sampler.run(p.u, return_info=True, **kw),
        "traced": lambda: sampler.run(p.u, return_info=True, trace_every=M, **kw),
        "split": split,
    }
    # correctness before timing
    out, info = ways["traced"]()
    assert torch.equal(out, ways["plain"]()) and info["draws"].shape == (K // M, 64, p.prior.D)
    assert torch.equal(split()[1], info["draws"])
    for f in ways.values():  # warm
        f()
    rounds = 10 if bench.quick else 60

    def timed(f):  # (wall, CPU time of the process: on a machine shared with other jobs the wall time
        t0, c0 = time.perf_counter(), time.process_time()  # mostly measures the scheduler)
        f()
        return time.perf_counter() - t0, time.process_time() - c0

    samples = {w: [] for w in ways}
    for _ in range(rounds):
        for w, f in ways.items():
            samples[w].append(timed(f))
    med = {w: statistics.median(t for t, _ in x) for w, x in samples.items()}
    cpu = {w: statistics.median(c for _, c in x) for w, x in samples.items()}
    extra = benchmark.extra_info
    extra.update(P.environment("cpu"))
    extra.update(entry="draws", problem="toy", B=64, K=K, trace_every=M, rounds=rounds, quick=bench.quick,
                 **{f"{w}_s": t for w, t in med.items()}, **{f"{w}_cpu_s": t for w, t in cpu.items()})
    for name, m in (("", med), ("cpu_", cpu)):  # the ratios, of wall and of CPU time
        extra.update({f"{name}traced_over_info": m["traced"] / m["info"], f"{name}traced_over_plain": m["traced"] / m["plain"],
                      f"{name}info_over_plain": m["info"] / m["plain"], f"{name}split_over_plain": m["split"] / m["plain"]})
    benchmark.group = "draws toy B=64"
    benchmark.pedantic(ways["traced"], rounds=3 if bench.quick else 20, iterations=1, warmup_rounds=1)
