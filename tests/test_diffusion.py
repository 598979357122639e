"""The ũ-space diffusion of paper 2: schedule against docs/papers.md B §3.2, forward moments, the
reverse targets' keyword arguments and the level loop."""
from __future__ import annotations

import math

import pytest
import torch

import hebm
from hebm import DiffusionSchedule
from hebm.prior.philox import philox_noise
from hebm.prior.philox import initial_noise

f64 = torch.float64

# docs/papers.md B §3.2, verbatim: a_0..a_T | σ_0..σ_T | σ̄_0..σ̄_T | s_t / e_l_step_size, t = 0..T−1
TABLE = {
    3: (".99995 .72213 .38627 .02278", ".0100 .6918 .9224 .9997", ".0100 .6918 .9603 1.0000", "0.479, 58.9, 96.0"),
    4: (".99995 .86371 .65579 .49746 .02255", ".0100 .5040 .7550 .8675 .9998", ".0100 .5041 .8242 .9595 1.0000",
        "0.254, 28.7, 62.0, 95.9"),
    5: (".99995 .91873 .78601 .67219 .57463 .02278", ".0100 .3949 .6182 .7404 .8184 .9997",
        ".0100 .3950 .6918 .8743 .9603 1.0000", "0.156, 15.1, 37.9, 58.6, 96.0"),
    6: (".99995 .94617 .85629 .77480 .70092 .63396 .02278", ".0100 .3237 .5165 .6322 .7132 .7734 .9997",
        ".0100 .3238 .5862 .7785 .8980 .9603 1.0000", "0.105, 8.64, 23.4, 39.6, 53.7, 96.0"),
}


def _nums(s):
    return [float(x) for x in s.replace(",", " ").split()]


def _half_ulp(s):
    """Half a unit in the last printed place of each entry."""
    out = []
    for x in s.replace(",", " ").split():
        dec = len(x.split(".")[1]) if "." in x else 0
        out.append(0.5 * 10.0**-dec)
    return out


@pytest.mark.parametrize("T", [3, 4, 5, 6])
def test_schedule_matches_paper_table(T):
    sch = DiffusionSchedule(T, base_step_size=1.0)
    a, sig, sbar, steps = TABLE[T]
    for got, want in ((sch.a, a), (sch.sigma, sig), (sch.sigma_bar, sbar)):
        assert got.shape == (T + 1,)
        torch.testing.assert_close(got, torch.tensor(_nums(want), dtype=f64), rtol=0, atol=2e-4)
    factor = sch.step_factor()
    assert factor.shape == (T,)
    for g, w, tol in zip(factor.tolist(), _nums(steps), _half_ulp(steps)):
        assert abs(g - w) <= tol * 1.01, (g, w)
    torch.testing.assert_close(sch.step_variance(), factor, rtol=1e-15, atol=0)


def test_schedule_definition():
    """Recompute §3.2 from its definition with plain Python floats."""
    for T in range(1, 7):
        betas = [1e-4 + (0.02 - 1e-4) * k / 999 for k in range(1000)]
        idx = [0, 999] if T == 1 else [j * (1000 // (2 * (T - 1))) for j in range(T)] + [999]
        a = [math.sqrt(1 - betas[0])]
        for j in range(1, T + 1):
            a.append(math.prod(math.sqrt(1 - betas[k]) for k in range(idx[j - 1] + 1, idx[j] + 1)))
        sch = DiffusionSchedule(T, base_step_size=2e-3)
        torch.testing.assert_close(sch.a, torch.tensor(a, dtype=f64), rtol=1e-12, atol=1e-14)
        abar = [math.prod(a[: j + 1]) for j in range(T + 1)]
        torch.testing.assert_close(sch.a_bar, torch.tensor(abar, dtype=f64), rtol=1e-12, atol=1e-14)
        sbar = [math.sqrt(1 - x * x) for x in abar]
        sig = [math.sqrt(1 - x * x) for x in a]
        s = [2e-3 * sig[t + 1] ** 2 * sbar[t] / sbar[0] for t in range(T)]
        torch.testing.assert_close(sch.step_variance(), torch.tensor(s, dtype=f64), rtol=1e-10, atol=0)
        assert sch.is_recovery.tolist() == [1.0] * T + [0.0]


def test_cifar_example():
    s = DiffusionSchedule(3, base_step_size=3e-5).step_variance()
    for got, want in zip(s.tolist(), (1.44e-5, 1.77e-3, 2.88e-3)):
        half_ulp = 0.005 * 10.0 ** math.floor(math.log10(want))  # three significant digits printed
        assert abs(got - want) <= half_ulp, (got, want)
    assert DiffusionSchedule().T == 3  # the authors' default
    for bad in (0, 7):
        with pytest.raises(ValueError, match="T"):
            DiffusionSchedule(bad)
    with pytest.raises(ValueError, match="base_step_size"):
        DiffusionSchedule(3, base_step_size=0.0)


def test_q_sample_explicit_noise_and_moments():
    sch = DiffusionSchedule(4)
    g = torch.Generator().manual_seed(0)
    u0 = torch.randn(1, 3, generator=g, dtype=f64).expand(20000, 3)
    eps = torch.randn(20000, 3, generator=g, dtype=f64)
    for t in range(5):
        torch.testing.assert_close(sch.q_sample(u0, t, eps), sch.a_bar[t] * u0 + sch.sigma_bar[t] * eps, rtol=0, atol=1e-15)
    # per-row levels, random noise: moments per level
    t = torch.arange(20000) % 5
    torch.manual_seed(1)
    ut = sch.q_sample(u0, t)
    for lvl in range(5):
        x = ut[t == lvl]
        n = x.shape[0]
        m, sd = sch.a_bar[lvl] * u0[0], sch.sigma_bar[lvl]
        assert float(((x.mean(0) - m) / sd).abs().max()) < 4.5 / math.sqrt(n)
        assert float((x.var(0) / sd**2 - 1).abs().max()) < 4.5 * math.sqrt(2 / n)


def test_q_sample_pairs():
    sch = DiffusionSchedule(3)
    g = torch.Generator().manual_seed(2)
    N = 24000
    u0 = torch.randn(1, 2, generator=g, dtype=f64).expand(N, 2)
    t = torch.arange(N) % 3
    e1 = torch.randn(N, 2, generator=g, dtype=f64)
    e2 = torch.randn(N, 2, generator=g, dtype=f64)
    ut, un = sch.q_sample_pairs(u0, t, e1, e2)
    torch.testing.assert_close(ut, sch.q_sample(u0, t, e1), rtol=0, atol=0)
    a, s = sch.a[t + 1][:, None], sch.sigma[t + 1][:, None]
    torch.testing.assert_close(un, a * ut + s * e2, rtol=0, atol=1e-15)
    # marginal of u_{t+1} is q(u_{t+1} | u_0) = N(ā_{t+1} u_0, σ̄_{t+1}²)
    torch.manual_seed(3)
    _, un = sch.q_sample_pairs(u0, t)
    for lvl in range(3):
        x = un[t == lvl]
        n = x.shape[0]
        m, sd = sch.a_bar[lvl + 1] * u0[0], sch.sigma_bar[lvl + 1]
        assert float(((x.mean(0) - m) / sd).abs().max()) < 4.5 / math.sqrt(n)
        assert float((x.var(0) / sd**2 - 1).abs().max()) < 4.5 * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="level t"):
        sch.q_sample_pairs(u0, 3)  # pairs exist for t = 0 … T−1 only


def test_langevin_kwargs():
    sch = DiffusionSchedule(3, base_step_size=1e-3)
    B = 6
    y = torch.randn(B, 4, dtype=f64)
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    kw = sch.langevin_kwargs(t, y)
    s = sch.step_variance()[t]
    torch.testing.assert_close(kw["step_size"], s.sqrt(), rtol=1e-15, atol=0)
    torch.testing.assert_close(kw["energy_scale"], 1 / s, rtol=1e-15, atol=0)
    assert torch.equal(kw["t"], t)
    top = t == 2
    assert bool((kw["alpha"][top] == 0).all()) and bool((kw["u_next"][top] == 0).all())
    torch.testing.assert_close(kw["alpha"][~top], sch.a[t[~top] + 1], rtol=0, atol=0)
    torch.testing.assert_close(kw["sigma"], sch.sigma[t + 1], rtol=0, atol=0)
    assert torch.equal(kw["u_next"][~top], y[~top])
    # a batch entirely at the top level has no kernel term at all
    kw_top = sch.langevin_kwargs(2, y)
    assert "u_next" not in kw_top and "alpha" not in kw_top
    # alpha = 0 and u_next = 0 remove the kernel term from the target exactly
    torch.manual_seed(0)
    prior = hebm.HierarchicalPrior([4], energy_hidden=(5,), n_levels=3).double()
    u = torch.randn(B, 4, dtype=f64)
    full = prior.log_density(u, energy_scale=kw["energy_scale"], t=kw["t"], u_next=kw["u_next"], alpha=kw["alpha"],
                             sigma=kw["sigma"])
    no_kernel = prior.log_density(u, energy_scale=kw["energy_scale"], t=kw["t"])
    torch.testing.assert_close(full[top], no_kernel[top], rtol=0, atol=0)
    assert bool((full[~top] < no_kernel[~top]).all())


def _level_prior():
    g = torch.Generator().manual_seed(0)
    prior = hebm.HierarchicalPrior([3, 2], prior_hidden=(5,), energy_hidden=(6, 4), n_levels=3)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return prior.double()


def test_reverse_diffusion_levels_and_noise():
    """Seeded: ũ_T is stream 1, level j = T−1−t uses steps j·K … j·K+K−1 of stream 0; equal to
    explicit noise built from the stream, and to the level loop written out."""
    prior = _level_prior()
    sch = DiffusionSchedule(3, base_step_size=1e-2)
    B, K = 5, 4
    out, levels = hebm.reverse_diffusion(prior, sch, n_steps=K, batch=B, seed=21, return_levels=True)
    assert len(levels) == 4 and out.shape == (B, prior.D)
    uT = initial_noise(21, B, prior.D, dtype=f64)
    assert torch.equal(levels[0], uT)
    noise = philox_noise(21, torch.arange(B), 3 * K, prior.D).double()
    torch.testing.assert_close(hebm.reverse_diffusion(prior, sch, uT, n_steps=K, noise=noise), out, rtol=0, atol=1e-13)
    u = uT
    for j, t in enumerate((2, 1, 0)):
        kw = sch.langevin_kwargs(t, u)
        assert ("u_next" in kw) == (t < 2)
        u = hebm.langevin_ref(prior, u, n_steps=K, noise=noise[j * K : (j + 1) * K], **kw)
        torch.testing.assert_close(levels[j + 1], u, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="n_levels"):
        hebm.reverse_diffusion(hebm.HierarchicalPrior([2], energy_hidden=(3,)).double(), sch, uT[:, :2], n_steps=1, seed=0)
