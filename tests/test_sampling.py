"""The reference sampler: the update rule against autograd and float64 finite differences, its
argument conventions, and its stationary statistics on targets with closed-form laws."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import hebm
from hebm.prior.philox import philox_noise

f64 = torch.float64


def problem(prior, B=6, seed=0, kernel=True, levels=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, prior.D, generator=g, dtype=f64)
    kw = dict(energy_scale=0.5 + torch.rand(B, generator=g, dtype=f64))
    if kernel:
        kw.update(u_next=torch.randn(B, prior.D, generator=g, dtype=f64),
                  alpha=0.2 + 0.7 * torch.rand(B, generator=g, dtype=f64),
                  sigma=0.4 + 0.5 * torch.rand(B, generator=g, dtype=f64))
    if levels:
        kw["t"] = torch.randint(0, prior.n_levels, (B,), generator=g)
    return u, kw


def fd_grad(prior, u, kw, h=1e-5):
    """Central finite differences of prior.log_density, float64, every coordinate."""
    B, D = u.shape
    eye = torch.eye(D, dtype=f64) * h
    plus = (u[:, None, :] + eye).reshape(B * D, D)
    minus = (u[:, None, :] - eye).reshape(B * D, D)
    rep = {k: (v.repeat_interleave(D, 0) if isinstance(v, torch.Tensor) and v.dim() >= 1 else v) for k, v in kw.items()}
    diff = prior.log_density(plus, **rep) - prior.log_density(minus, **rep)
    return (diff / (2 * h)).reshape(B, D)


@pytest.mark.parametrize("dims,levels", [((5, 3), False), ((3, 1, 4), True), ((6,), False)])
@pytest.mark.parametrize("kernel", [True, False])
def test_one_step_update(make_prior, dims, levels, kernel):
    prior = make_prior(dims, n_levels=3 if levels else None, scale=1.5)
    u, kw = problem(prior, kernel=kernel, levels=levels)
    B, D = u.shape
    g = torch.Generator().manual_seed(9)
    delta = 0.1 + 0.3 * torch.rand(B, generator=g, dtype=f64)
    c = torch.rand(B, generator=g, dtype=f64)
    eps = torch.randn(1, B, D, generator=g, dtype=f64)
    out = hebm.langevin_ref(prior, u, n_steps=1, step_size=delta, noise_scale=c, noise=eps, **kw)
    # gradient by autograd, written here independently of the sampler
    x = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior.log_density(x, **kw).sum(), x)
    want = u + (delta**2 / 2)[:, None] * grad + (c * delta)[:, None] * eps[0]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-13)
    # gradient by central finite differences
    grad_fd = fd_grad(prior, u, kw)
    torch.testing.assert_close(grad, grad_fd, rtol=1e-6, atol=1e-6)
    want_fd = u + (delta**2 / 2)[:, None] * grad_fd + (c * delta)[:, None] * eps[0]
    torch.testing.assert_close(out, want_fd, rtol=0, atol=1e-7)


def test_gradient_by_hand_plain_gaussian(make_prior):
    """Zero energy, kernel on: ∇log π = −u − a(a u − y)/σ² exactly."""
    prior = make_prior((4, 3), energy_hidden=None)
    u, kw = problem(prior)
    kw.pop("energy_scale")
    out = hebm.langevin_ref(prior, u, n_steps=1, step_size=0.3, noise_scale=0.0, noise=torch.zeros(1, *u.shape, dtype=f64), **kw)
    a, s = kw["alpha"][:, None], kw["sigma"][:, None]
    grad = -u - a * (a * u - kw["u_next"]) / s**2
    torch.testing.assert_close(out, u + 0.045 * grad, rtol=0, atol=1e-14)


def test_scalar_and_per_row_agree(make_prior):
    prior = make_prior((5, 3), n_levels=2)
    u, _ = problem(prior)
    B = u.shape[0]
    nxt = torch.randn(u.shape, dtype=f64, generator=torch.Generator().manual_seed(1))
    scal = dict(step_size=0.2, noise_scale=0.7, energy_scale=1.3, t=1, u_next=nxt, alpha=0.6, sigma=0.8)
    rows = {k: (torch.full((B,), float(v), dtype=f64) if k != "u_next" else v) for k, v in scal.items()}
    rows["t"] = torch.ones(B, dtype=torch.long)
    a = hebm.langevin_ref(prior, u, n_steps=3, seed=5, **scal)
    b = hebm.langevin_ref(prior, u, n_steps=3, seed=5, **rows)
    assert torch.equal(a, b)
    # 0-d tensors and one-element tensors count as scalars
    c = hebm.langevin_ref(prior, u, n_steps=3, seed=5, **{**scal, "step_size": torch.tensor(0.2, dtype=f64),
                                                          "alpha": torch.tensor([0.6], dtype=f64)})
    assert torch.equal(a, c)


def test_per_row_parameters_are_per_row(make_prior):
    """Row b of a batch with per-row parameters = row b run alone with scalar parameters."""
    prior = make_prior((5, 3), n_levels=3)
    u, kw = problem(prior, B=5, levels=True)
    step = torch.tensor([0.1, 0.2, 0.05, 0.3, 0.15], dtype=f64)
    ids = torch.tensor([3, 10, 11, 2, 7])
    batch = hebm.langevin_ref(prior, u, n_steps=4, step_size=step, seed=77, chain_ids=ids, **kw)
    for b in range(5):
        one = hebm.langevin_ref(prior, u[b : b + 1], n_steps=4, step_size=float(step[b]), seed=77,
                                chain_ids=ids[b : b + 1], energy_scale=float(kw["energy_scale"][b]),
                                t=int(kw["t"][b]), u_next=kw["u_next"][b : b + 1], alpha=float(kw["alpha"][b]),
                                sigma=float(kw["sigma"][b]))
        torch.testing.assert_close(one, batch[b : b + 1], rtol=0, atol=1e-12)


def test_list_input_returns_list(make_prior):
    prior = make_prior((5, 3, 2))
    u, kw = problem(prior)
    flat = hebm.langevin_ref(prior, u, n_steps=2, step_size=0.2, seed=1, **kw)
    parts = hebm.langevin_ref(prior, prior.split(u), n_steps=2, step_size=0.2, seed=1,
                              **{**kw, "u_next": prior.split(kw["u_next"])})
    assert isinstance(parts, list) and [p.shape for p in parts] == [torch.Size([6, d]) for d in (5, 3, 2)]
    assert torch.equal(torch.cat(parts, 1), flat)
    out, info = hebm.langevin_ref(prior, tuple(prior.split(u)), n_steps=1, step_size=0.2, seed=1, return_info=True)
    assert isinstance(out, list)


def test_input_not_modified(make_prior):
    prior = make_prior()
    u, kw = problem(prior)
    u0 = u.clone()
    hebm.langevin_ref(prior, u, n_steps=2, step_size=0.2, seed=1, **kw)
    assert torch.equal(u, u0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_equals_explicit_philox_noise(make_prior, dtype):
    prior = make_prior((5, 3), dtype=dtype)
    u, kw = problem(prior, B=7)
    u = u.to(dtype)
    kw = {k: v.to(dtype) for k, v in kw.items()}
    ids = torch.tensor([9, 0, 4, 100, 5, 6, 2**32 - 1])
    a = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.2, seed=2**40 + 3, chain_ids=ids, step_offset=4, **kw)
    eps = philox_noise(2**40 + 3, ids, 3, prior.D, step_offset=4).to(dtype)
    b = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.2, noise=eps, **kw)
    assert torch.equal(a, b)
    # default chain ids are 0 … B−1
    c = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.2, seed=1, **kw)
    d = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.2, noise=philox_noise(1, torch.arange(7), 3, prior.D).to(dtype), **kw)
    assert torch.equal(c, d)


def test_chain_ids_reproduce_a_chain_of_a_larger_batch(make_prior):
    prior = make_prior((4, 3))
    g = torch.Generator().manual_seed(0)
    u = torch.randn(40, prior.D, generator=g, dtype=f64)
    big = hebm.langevin_ref(prior, u, n_steps=5, step_size=0.3, seed=11)
    pick = torch.tensor([0, 17, 39])
    small = hebm.langevin_ref(prior, u[pick], n_steps=5, step_size=0.3, seed=11, chain_ids=pick)
    torch.testing.assert_close(small, big[pick], rtol=0, atol=1e-12)
    other = hebm.langevin_ref(prior, u[pick], n_steps=5, step_size=0.3, seed=11)
    assert not torch.allclose(other[1:], big[pick][1:])


def test_step_offset_continues_a_chain(make_prior):
    prior = make_prior((4, 3))
    u, kw = problem(prior)
    full = hebm.langevin_ref(prior, u, n_steps=5, step_size=0.25, seed=3, **kw)
    part = hebm.langevin_ref(prior, u, n_steps=2, step_size=0.25, seed=3, **kw)
    part = hebm.langevin_ref(prior, part, n_steps=3, step_size=0.25, seed=3, step_offset=2, **kw)
    torch.testing.assert_close(part, full, rtol=0, atol=1e-13)
    fresh = hebm.langevin_ref(prior, hebm.langevin_ref(prior, u, n_steps=2, step_size=0.25, seed=3, **kw),
                              n_steps=3, step_size=0.25, seed=3, **kw)
    assert not torch.allclose(fresh, full)


def test_return_info_log_density(make_prior):
    prior = make_prior((5, 3))
    u, kw = problem(prior)
    out, info = hebm.langevin_ref(prior, u, n_steps=4, step_size=0.2, seed=8, return_info=True, **kw)
    assert info["backend"] == "ref"
    ld = info["log_density"]
    assert ld.shape == (4, u.shape[0])
    state = u
    for k in range(4):
        torch.testing.assert_close(ld[k], prior.log_density(state, **kw), rtol=1e-12, atol=1e-12)
        state = hebm.langevin_ref(prior, state, n_steps=1, step_size=0.2, seed=8, step_offset=k, **kw)
    torch.testing.assert_close(state, out, rtol=0, atol=1e-12)
    # K = 0: the state is returned unchanged and the trace is empty
    same, info0 = hebm.langevin_ref(prior, u, n_steps=0, step_size=0.2, seed=8, return_info=True, **kw)
    assert torch.equal(same, u) and info0["log_density"].shape == (0, u.shape[0])


def test_noise_scale_zero_is_gradient_ascent(make_prior):
    prior = make_prior((5, 3), energy_hidden=None)
    u, _ = problem(prior, kernel=False)
    out = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.4, noise_scale=0.0, seed=0)
    torch.testing.assert_close(out, u * (1 - 0.08) ** 3, rtol=0, atol=1e-14)


def test_fused_ref_equals_reference(make_prior):
    prior = make_prior((5, 3), n_levels=3)
    u, kw = problem(prior, levels=True)
    a, ia = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.2, seed=4, return_info=True, **kw)
    b, ib = hebm.langevin_fused(prior, u, n_steps=3, step_size=0.2, seed=4, return_info=True, backend="ref", **kw)
    assert torch.equal(a, b) and torch.equal(ia["log_density"], ib["log_density"])
    assert ib["backend"] == "ref"
    c = hebm.langevin_fused(prior, prior.split(u), n_steps=3, step_size=0.2, seed=4, backend="ref", **kw)
    assert isinstance(c, list) and torch.equal(torch.cat(c, 1), a)


def test_fused_auto_reports_backend(make_prior):
    """'auto' runs something that exists (a fused backend or the reference) and says which."""
    prior = make_prior((5, 3), dtype=torch.float32)
    u, kw = problem(prior)
    kw = {k: v.float() for k, v in kw.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the one-line fallback warning, if any
        out, info = hebm.langevin_fused(prior, u.float(), n_steps=2, step_size=0.2, seed=4, return_info=True, **kw)
    assert info["backend"] in hebm.sampler.checks.BACKENDS and info["backend"] != "auto"
    ref = hebm.langevin_ref(prior, u.float(), n_steps=2, step_size=0.2, seed=4, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- z-space sampler
def test_z_space_sampler_one_step(make_prior):
    """langevin_z_ref: z ← z + δ²/2 ∇(F + log p_β [− ‖x − g(z̃)‖²/2σ_x²]) + cδε (g sees every layer)."""
    prior = make_prior((4, 3), scale=1.2)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, prior.D, generator=g, dtype=f64)
    eps = torch.randn(1, 5, prior.D, generator=g, dtype=f64)
    dec = torch.nn.Linear(prior.D, 6).double()
    x = torch.randn(5, 6, generator=g, dtype=f64)
    for post in (False, True):
        extra = dict(x=x, decoder=dec, sigma_x=0.3) if post else {}
        out = hebm.langevin_z_ref(prior, z, n_steps=1, step_size=0.1, noise=eps, **extra)
        zz = z.clone().requires_grad_(True)
        target = prior.energy(zz) + prior.log_p_beta(zz)
        if post:
            target = target - ((x - dec(zz)) ** 2).sum(1) / (2 * 0.09)
        (grad,) = torch.autograd.grad(target.sum(), zz)
        torch.testing.assert_close(out, z + 0.005 * grad + 0.1 * eps[0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- statistics
N_CHAINS = 4000


def _cpu_or_skip():
    from hebm.sampler import backends

    why = backends.unavailable("cpu")
    if why is not None:  # tests/test_cpu_backend.py fails loudly on this; here it is not the subject
        pytest.skip(f"backend 'cpu': {why}")


@pytest.fixture(params=["ref", "cpu"])
def sampler(request):
    """The analytic-law tests run on the reference and on the fused C++ backend (the other fused
    backends run the same laws in their own test files where they can run at this size)."""
    if request.param == "cpu":
        _cpu_or_skip()
        return lambda prior, u, **kw: hebm.langevin_fused(prior, u, backend="cpu", **kw)
    return hebm.langevin_ref


def _zero_last_layer(prior):
    with torch.no_grad():
        for f in prior.energies:
            f.layers[-1].weight.zero_()
    return prior


def assert_standard_normal(r: torch.Tensor, k: float = 4.5):
    """Rows of r are independent draws; each column should be N(0, 1)."""
    n = r.shape[0]
    mean, var = r.mean(0), r.var(0)
    assert float(mean.abs().max()) < k / math.sqrt(n), f"column means {mean}"
    assert float((var - 1).abs().max()) < k * math.sqrt(2 / n), f"column variances {var}"
    # pooled, tighter
    assert abs(float(r.mean())) < k / math.sqrt(r.numel())
    assert abs(float(r.var()) - 1) < k * math.sqrt(2 / r.numel())


@pytest.mark.parametrize("energy", ["none", "zero_last_layer"])
def test_zero_energy_stationary_law(make_prior, energy):
    """F ≡ 0: the Euler–Maruyama chain u' = (1 − δ²/2)u + δε has stationary law N(0, 1/(1 − δ²/4))."""
    prior = make_prior((3, 4), energy_hidden=None if energy == "none" else (6, 5), scale=1.5)
    if energy != "none":
        _zero_last_layer(prior)
    delta = 0.5
    u0 = torch.zeros(N_CHAINS, prior.D, dtype=f64)
    # from 0 the variance is v·(1 − 0.875^(2K)): 0.875^120 ≈ 1e-7
    out = hebm.langevin_ref(prior, u0, n_steps=60, step_size=delta, seed=1)
    v = 1 / (1 - delta**2 / 4)
    assert_standard_normal(out / math.sqrt(v))
    # the discretisation bias is resolved: variance 1 is excluded
    assert abs(float(out.var()) - 1) > 4 * math.sqrt(2 / out.numel())


def test_kernel_term_stationary_law(make_prior, sampler):
    """F ≡ 0 with the kernel: π ∝ N(u; 0, I) N(a u; y, σ²), precision P = 1 + a²/σ², mean a y/(σ² P);
    the discretised chain's stationary variance is δ²/(1 − (1 − δ²P/2)²), per-row a, σ, y."""
    prior = make_prior((3, 4), energy_hidden=None)
    g = torch.Generator().manual_seed(5)
    B, D = N_CHAINS, prior.D
    y = 2 * torch.randn(B, D, generator=g, dtype=f64)
    a = 0.3 + 0.6 * torch.rand(B, generator=g, dtype=f64)
    s = 0.5 + 0.5 * torch.rand(B, generator=g, dtype=f64)
    delta = 0.5
    out = sampler(prior, torch.zeros(B, D, dtype=f64), n_steps=80, step_size=delta, seed=2,
                  u_next=y, alpha=a, sigma=s)
    P = (1 + a**2 / s**2)[:, None]
    mean = a[:, None] * y / (s**2)[:, None] / P
    var = delta**2 / (1 - (1 - delta**2 * P / 2) ** 2)
    assert_standard_normal((out - mean) / var.sqrt())


@pytest.mark.parametrize("kind", ["linear", "relu_with_large_bias"])
def test_linear_energy_shifts_the_mean(make_prior, kind, sampler):
    """L = 1 (z = u), F(z) = w·z + b: π = N(λw, I); the discrete chain keeps mean λw exactly and has
    variance 1/(1 − δ²/4).  Per-row λ."""
    if kind == "linear":
        prior = make_prior((5,), energy_hidden=())
        w = prior.energies[0].layers[0].weight[0].clone()
    else:
        prior = make_prior((5,), energy_hidden=(6,), energy_act="relu")
        f = prior.energies[0]
        with torch.no_grad():
            f.layers[0].bias.fill_(100.0)  # pre-activations stay positive: relu is the identity
        w = (f.layers[1].weight @ f.layers[0].weight)[0].clone()
    g = torch.Generator().manual_seed(6)
    B = N_CHAINS
    lam = 1 + 3 * torch.rand(B, generator=g, dtype=f64)
    delta = 0.6
    out = sampler(prior, torch.zeros(B, 5, dtype=f64), n_steps=60, step_size=delta, seed=3, energy_scale=lam)
    if kind != "linear":  # the premise held along the way
        assert bool((f.layers[0](out) > 0).all())
    v = 1 / (1 - delta**2 / 4)
    assert_standard_normal((out - lam[:, None] * w) / math.sqrt(v))


def test_linear_energy_through_T(make_prior, sampler):
    """L = 2 with linear μ(z_2) = A z_2 + b and constant σ: z_1 = μ + σ ⊙ u_1, z_2 = u_2.  With
    F = w_1·z_1 + w_2·z_2 the ũ-space gradient is constant, (σ⊙w_1, Aᵀw_1 + w_2): mean λ·that."""
    prior = make_prior((4, 3), prior_hidden=(), energy_hidden=(), scale=1.0)
    d1 = 4
    cond = prior.conditionals[0].layers[0]
    with torch.no_grad():
        cond.weight[d1:].zero_()  # ℓ = const: σ independent of z_2
    A = cond.weight[:d1]
    sig = cond.bias[d1:].exp() + prior.sigma_min
    w1 = prior.energies[0].layers[0].weight[0]
    w2 = prior.energies[1].layers[0].weight[0]
    grad = torch.cat([sig * w1, A.T @ w1 + w2])
    lam, delta = 2.5, 0.6
    out = sampler(prior, torch.zeros(N_CHAINS, 7, dtype=f64), n_steps=60, step_size=delta, seed=4,
                  energy_scale=lam)
    v = 1 / (1 - delta**2 / 4)
    assert_standard_normal((out - lam * grad) / math.sqrt(v))


def test_odd_sizes_fp32_seeded(make_prior):
    """D = 97, B = 33, fp32, seeded: three steps equal the update rule written out with the
    Philox stream and autograd."""
    prior = make_prior((60, 37), prior_hidden=(19,), energy_hidden=(23, 13), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(33, 97, generator=g)
    nxt = torch.randn(33, 97, generator=g)
    delta = 0.05 + 0.1 * torch.rand(33, generator=g)
    kw = dict(u_next=nxt, alpha=0.8, sigma=0.6, energy_scale=1.7)
    out = hebm.langevin_ref(prior, u, n_steps=3, step_size=delta, seed=99, **kw)
    eps = philox_noise(99, torch.arange(33), 3, 97)
    x = u
    for k in range(3):
        xx = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(prior.log_density(xx, **kw).sum(), xx)
        x = x + (delta**2 / 2)[:, None] * grad + delta[:, None] * eps[k]
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
