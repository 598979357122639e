"""The fixed cost of one fused call, in steps of the chain (docs/design.md §5: ≤ 3 toy steps; the
Sampler's targets: ≤ 1 through the object, ≤ 2 through ``langevin_fused``).

On the toy problem at B = 64: ``t(K)`` is the median time of a call of K steps; one step costs
``s = (t(21) − t(1)) / 20`` and the call's fixed part is ``t(1) − s`` (argument checks, backend
choice, reading the prior, the op boundary, the output checks).  The row reports ``(t(1) − s) / s``
for each way in:

* ``fused`` — ``hebm.langevin_fused`` (reads the prior at every call);
* ``sampler`` — ``hebm.Sampler.run`` on a Sampler built once (what it read at build is reused);

each with the problem's own argument forms (numbers where it passes numbers) and with every
per-chain argument as a ``[B]`` tensor (``tensor_*``): every form takes the one path, so no form
should pay more than another.  For the backends behind the compiled op (cpu, cuda) a fifth way,
``op`` — ``torch.ops.hebm.langevin`` called with its arguments made once, no Python of hebm's
between calls — is the floor any Python front could reach: the op boundary and the kernel's own
per-call work.  All are measured in one process, their rounds interleaved."""
from __future__ import annotations

import statistics
import time

import pytest

import torch

import hebm
from benchmarks import providers as P

N_LONG = 21


FUSED = ("cpu", "cuda", "triton", "graph")


def _op_call(sampler, p, K):
    """The compiled op with the checked arguments of a K-step call, made once."""
    from hebm.sampler.backends import ops
    from hebm.sampler.checks import check_langevin_args

    a = check_langevin_args(p.prior, p.u, **dict(p.kwargs, n_steps=K))
    fn, args = ops._callable("langevin", "hebm"), [*ops._network_args(sampler._pack), *ops._LANGEVIN_VALUES(a)]
    return lambda: fn(*args, False, sampler.precision)


def test_fixed_cost(benchmark, bench, provider):
    if provider not in FUSED:
        pytest.skip(f"{provider}: the fixed cost is measured for the fused backends")
    p = hebm.standard_problem("toy", 64, device=bench.device)
    kw1 = dict(p.kwargs, n_steps=1)
    why = P.skip_reason(provider, p.prior, p.u, kw1)
    if why is not None:
        pytest.skip(f"{provider}: {why}")
    B = p.u.shape[0]
    # the same call with per-chain tensors where the problem passes numbers
    tensors = {k: torch.full((B,), float(v), dtype=p.u.dtype, device=p.u.device) for k, v in p.kwargs.items()
               if k in ("step_size", "noise_scale", "energy_scale", "alpha", "sigma") and isinstance(v, (int, float))}
    sampler = hebm.Sampler(p.prior, backend=provider, precision=bench.precision)

    def fn(door, K, form):
        kw = dict(p.kwargs, n_steps=K, **(tensors if form == "tensor" else {}))
        if door == "sampler":
            return lambda: sampler.run(p.u, **kw)
        return P.langevin_fn(provider, p.prior, p.u, kw, bench.precision)

    ways = [(door, form) for door in ("fused", "sampler") for form in ("number", "tensor")]
    fns = {w: (fn(w[0], 1, w[1]), fn(w[0], N_LONG, w[1])) for w in ways}
    if sampler.backend in ("cpu", "cuda"):  # the floor: the op alone, its arguments made once
        ways.append(("op", "number"))
        fns[("op", "number")] = tuple(_op_call(sampler, p, K) for K in (1, N_LONG))
    for f1, fk in fns.values():  # warm: builds, captures
        for f in (f1, fk, f1, fk):
            f()
    P.sync(bench.device)
    rounds = 15 if bench.quick else 200

    def timed(f):
        t0 = time.perf_counter()
        f()
        P.sync(bench.device)
        return time.perf_counter() - t0

    # interleaved, so drifts of a shared machine hit every way alike
    samples = {w: ([], []) for w in ways}
    for _ in range(rounds):
        for w in ways:
            samples[w][0].append(timed(fns[w][0]))
            samples[w][1].append(timed(fns[w][1]))
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(entry="fixed_cost", provider=provider, problem="toy", B=64, K=1, precision=bench.precision, flops=None,
                quick=bench.quick, K_long=N_LONG, sampler_backend=sampler.backend)
    for door, form in ways:
        t1, tk = (statistics.median(x) for x in samples[(door, form)])
        step = (tk - t1) / (N_LONG - 1)
        prefix = {"fused": "", "sampler": "sampler_", "op": "op_"}[door] + ("" if form == "number" else "tensor_")
        info.update({f"{prefix}t1_s": t1, f"{prefix}tK_s": tk, f"{prefix}step_s": step, f"{prefix}fixed_s": t1 - step,
                     f"{prefix}fixed_in_steps": (t1 - step) / step if step > 0 else None})
    benchmark.group = "fixed_cost toy B=64"
    benchmark.pedantic(fns[("fused", "number")][0], rounds=5 if bench.quick else 50, iterations=1, warmup_rounds=1)
    info["median_s"] = benchmark.stats.stats.median


def _python_control() -> int:
    """A pure-Python function of ~15 µs (no torch, no hebm): what the machine alone does to a call."""
    d = {}
    for i in range(300):
        d[i] = 2 * i
    return sum(d.values())


def test_call_after_a_pause(benchmark, bench):
    """A call that follows a pause, against the same call back to back (cpu, toy B = 64).

    A user's loop calls the sampler between other work, and the ESS/s study runs its rows in
    lockstep, so each fused call follows a stretch of something else. On the 2-vCPU VMs a call
    after a pause ran several times slower than back to back (benchmarks/RESULTS.md, 2026-12-08).
    This row measures by how much, for ``Sampler.run`` (1 and 10 steps) and for a pure-Python
    control that touches neither torch nor hebm: if the control slows as much, the machine does
    it, not hebm. Each call is timed back to back, after a 5 ms sleep, after 5 ms of
    busy-waiting (the core kept awake), after 5 ms of the op alone (hebm's kernel and weights
    kept warm) and after streaming a 16 MB array for 5 ms (the caches evicted): if the kind of
    pause matters, the caches do."""
    if bench.device != "cpu":
        pytest.skip("the pause is measured on the CPU")
    p = hebm.standard_problem("toy", 64)
    sampler = hebm.Sampler(p.prior, backend="cpu")
    if sampler.backend != "cpu":
        pytest.skip(f"cpu: {sampler.backend} ran instead (the cpu kernel is not built)")
    calls = {"python_control": _python_control,
             "sampler_1_step": lambda: sampler.run(p.u, **dict(p.kwargs, n_steps=1)),
             "sampler_10_steps": lambda: sampler.run(p.u, **dict(p.kwargs, n_steps=10))}

    def for_5_ms(work):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.005:
            work()

    op = _op_call(sampler, p, 1)
    big = torch.ones(2**22, dtype=torch.float32)  # 16 MB
    # back to back: the third of three calls in a row; after a pause: the call that ends the pause
    before = {"back_to_back": lambda f: (f(), f()), "after_sleep": lambda f: time.sleep(0.005),
              "after_busy": lambda f: for_5_ms(lambda: None), "after_op": lambda f: for_5_ms(op),
              "after_stream": lambda f: for_5_ms(big.sum)}
    rounds = 10 if bench.quick else 100
    times = {(c, b): [] for c in calls for b in before}
    for f in calls.values():  # warm
        for _ in range(5):
            f()
    for _ in range(rounds):  # interleaved, as test_fixed_cost
        for c, f in calls.items():
            for b, pre in before.items():
                pre(f)
                t0 = time.perf_counter()
                f()
                times[(c, b)].append(time.perf_counter() - t0)
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(entry="call_after_a_pause", provider="cpu", problem="toy", B=64, pause_s=0.005, rounds=rounds,
                quick=bench.quick, flops=None)
    for (c, b), xs in times.items():
        info[f"{c}_{b}_s"] = statistics.median(xs)
    for c in calls:
        base = info[f"{c}_back_to_back_s"]
        for b in ("after_sleep", "after_busy", "after_op", "after_stream"):
            info[f"{c}_{b}_ratio"] = info[f"{c}_{b}_s"] / base
    benchmark.group = "call after a pause, toy B=64"
    benchmark.pedantic(calls["sampler_1_step"], rounds=3 if bench.quick else 20, iterations=1, warmup_rounds=1)
