"""A whole reverse diffusion (paper 2): ũ_T ~ N(0, I) from the seeded stream, then T levels of
K Langevin steps each, on the standard problem's level-conditioned prior and schedule."""
from __future__ import annotations

import pytest

import hebm
from benchmarks import providers as P

SEED = 7


def test_reverse_diffusion(benchmark, bench, problem_name, batch, provider):
    if bench.quick and problem_name != "toy":
        pytest.skip("--bench-quick runs the reverse diffusion on toy only")
    p = hebm.standard_problem(problem_name, batch, device=bench.device)
    K = bench.steps
    why = P.skip_reason(provider, p.prior, p.u, dict(p.kwargs, n_steps=K))
    if provider == "torchebm":
        why = "TorchEBM has no reverse-diffusion sampler (its LangevinDynamics is timed on the Langevin segment)"
    if why is not None:
        pytest.skip(f"{provider}: {why}")
    benchmark.group = f"reverse_diffusion {problem_name} B={batch}"
    n = min(batch, P.N_CHECK_ROWS)
    flops = 4.0 * batch * p.n_params() * K * p.schedule.T

    def check(out):
        # the first n chains of the seeded reverse diffusion: the same for every provider and every
        # B >= n (the prior depends on the problem's name only, u_T and the noise on seed and chain id)
        gold, ref32 = P.cached_gold(("reverse_diffusion", problem_name, K, n, SEED),
                                    lambda: P.diffusion_gold(p, K, n, SEED))
        if provider == "plain":  # the plain loop with the reference's u_T and noise (it draws torch.randn when timed)
            out = P.plain_diffusion_check(p, K, n, SEED)
        return P.tolerance_check(out[:n], gold, ref32, bench.precision,
                                 f"reverse_diffusion {provider} {problem_name} B={batch}")

    P.run_entry(benchmark, bench, entry="reverse_diffusion", provider=provider, problem=problem_name, batch=batch,
                fn=P.reverse_diffusion_fn(provider, p.prior, p.schedule, K, batch, SEED, bench.precision),
                check=check, flops=flops)
