"""A Langevin chain segment: the standard problem (docs/design.md §5), K steps, every provider.

    p = hebm.standard_problem(name, B);  langevin(p.prior, p.u, **p.kwargs)
"""
from __future__ import annotations

import pytest

import hebm
from benchmarks import providers as P


def test_langevin(benchmark, bench, problem_name, batch, provider):
    p = hebm.standard_problem(problem_name, batch, device=bench.device)
    kw = dict(p.kwargs, n_steps=bench.steps)
    why = P.skip_reason(provider, p.prior, p.u, kw)
    if why is not None:
        pytest.skip(f"{provider}: {why}")
    benchmark.group = f"langevin {problem_name} B={batch}"
    n = min(batch, P.N_CHECK_ROWS)
    flops = 4.0 * batch * p.n_params() * bench.steps

    def check(out):
        what = f"langevin {provider} {problem_name} B={batch}"
        if provider == "torchebm":  # its own noise: the drift is checked, the noise switched off
            got, gold, ref32 = P.torchebm_check(p, kw, n)
            return P.tolerance_check(got, gold, ref32, bench.precision, what)
        # the same gold for every provider of the cell: computed once (u, t and u_next depend on B)
        gold, ref32 = P.cached_gold(("langevin", problem_name, batch, bench.steps, n),
                                    lambda: P.langevin_gold(p, kw, n))
        if provider == "plain":  # torch.randn noise when timed: checked with the seeded stream as explicit noise
            out = P.plain_check(p, kw, n)
        return P.tolerance_check(out[:n], gold, ref32, bench.precision, what)

    P.run_entry(benchmark, bench, entry="langevin", provider=provider, problem=problem_name, batch=batch,
                fn=P.langevin_fn(provider, p.prior, p.u, kw, bench.precision), check=check, flops=flops)
