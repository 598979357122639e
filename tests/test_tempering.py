"""hebm.sampler.tempering: a replica-exchange ladder chosen from the swaps it made (the
communication barrier of non-reversible parallel tempering), checked against an analytic barrier,
its fixed point, and on a real prior, where the equalised ladder's pairs reject alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hebm
import hebm.sampler.backends as backends
from hebm.sampler.tempering import communication_barrier, equalize_ladder, swap_rejection


def test_an_analytic_barrier_is_split_into_equal_parts():
    """Λ(β) = β² (local rate λ(β) = 2β): from a fine ladder's exact rejections r_i = β_{i+1}² − β_i²
    the equalised ladder of n rungs is β_k = √(k/(n−1)) (from β_1 = 0), and from β_1 = 0.2 it is
    √(0.04 + k·0.96/(n−1))."""
    for b0 in (0.0, 0.2):
        fine = np.linspace(b0, 1.0, 401)
        out = equalize_ladder(fine, np.diff(fine ** 2), n=6)
        want = np.sqrt(b0 ** 2 + np.arange(6) / 5 * (1 - b0 ** 2))
        np.testing.assert_allclose(out, want, atol=2e-5)
        np.testing.assert_allclose(communication_barrier(fine, np.diff(fine ** 2))[-1], 1 - b0 ** 2, rtol=1e-12)


def test_a_ladder_that_rejects_alike_is_its_own_fixed_point_and_no_barrier_spreads_evenly():
    ladder = [0.0, 0.1, 0.35, 0.7, 1.0]
    np.testing.assert_allclose(equalize_ladder(ladder, [0.3] * 4), ladder, atol=1e-9)
    np.testing.assert_allclose(equalize_ladder(ladder, [0.0] * 4), np.linspace(0, 1, 5), atol=0)
    # a pair that rejected nothing is a flat piece of the barrier: the rungs leave it
    out = equalize_ladder([0.0, 0.5, 1.0], [0.0, 0.4], n=3)
    assert out[0] == 0.0 and out[-1] == 1.0 and 0.5 < out[1] < 1.0


@pytest.mark.parametrize("bad,match", [
    (dict(temperatures=[0.5, 0.2, 1.0]), "must be increasing"),
    (dict(rejection=[0.1]), r"one rate per neighbour pair, \[R−1\] = \[2\]"),
    (dict(rejection=[0.1, float("nan")]), "must lie in"),
    (dict(n=1), "n must be >= 2"),
])
def test_bad_input_is_named(bad, match):
    kw = dict(temperatures=[0.0, 0.5, 1.0], rejection=[0.1, 0.2], **{})
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        equalize_ladder(**kw)


def test_the_rates_come_from_the_calls_info(make_prior):
    prior = make_prior((5, 3), dtype=torch.float64)
    u = torch.randn(12, prior.D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(step_size=0.1, seed=3, energy_scale=20.0, temperatures=[0.0, 0.3, 0.6, 1.0], swap_every=1,
              return_info=True)
    _, info = hebm.langevin_ref(prior, u, n_steps=8, **kw)
    r = swap_rejection(info)
    att, acc = info["swap_attempts"].sum(0), info["swap_accepted"].sum(0)
    np.testing.assert_allclose(r, (1 - acc.double() / att.double()).numpy())
    _, info = hebm.langevin_ref(prior, u, n_steps=1, **kw)  # one DEO round: the odd pair (1, 2) never proposed
    with pytest.raises(ValueError, match=r"pairs \[1\] never proposed"):
        swap_rejection(info)


@pytest.mark.skipif(backends.unavailable("cpu") is not None, reason="the C++ CPU extension is unavailable")
def test_on_a_prior_the_equalised_ladder_rejects_alike(make_prior):
    """MALA on a prior at λ = 40 with an evenly spaced ladder: the pairs' rejection rates differ
    (the barrier is steeper near β = 1); three rounds of equalisation, each on its own seed, then
    measured on fresh seeds, narrow their spread to well under the even ladder's (0.20–0.21 →
    0.077–0.084 measured, 2026-12-07; one round alone reached 0.14–0.15)."""
    prior = make_prior((5, 3), seed=1, dtype=torch.float64)

    def rejection(ladder, seed, G=128):
        R = len(ladder)
        u = torch.randn(G * R, prior.D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        _, info = hebm.langevin_fused(prior, u, backend="cpu", n_steps=600, step_size=0.3, seed=seed,
                                      energy_scale=40.0, metropolis=True, temperatures=ladder, swap_every=1,
                                      return_info=True)
        return swap_rejection(info)

    even = [0.0, 0.25, 0.5, 0.75, 1.0]
    before = [np.ptp(rejection(even, s)) for s in (11, 12)]
    new = even
    for s in (20, 21, 22):  # three rounds of adaptation, each on its own seed
        new = equalize_ladder(new, rejection(new, s))
    after = [np.ptp(rejection(new, s)) for s in (13, 14)]
    assert min(before) > 0.12 and max(after) < 0.6 * min(before), (before, after, new)
