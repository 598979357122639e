"""The prior p_β, the map T_β and the ũ-space target, against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import hebm
from hebm.sampler.backends import pack

DIMS = [(4,), (5, 3), (3, 1, 6), (7, 2, 5, 3)]


def rand_u(prior, B=11, seed=0):
    return torch.randn(B, prior.D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("sigma_min", [0.01, 0.0])
def test_round_trips(make_prior, dims, sigma_min):
    prior = make_prior(dims, sigma_min=sigma_min, scale=1.5)
    u = rand_u(prior)
    z = prior.T(u)
    torch.testing.assert_close(prior.T_inv(z), u, rtol=0, atol=1e-10)
    z2 = 2 * rand_u(prior, seed=1)
    torch.testing.assert_close(prior.T(prior.T_inv(z2)), z2, rtol=0, atol=1e-10)
    # list in, list out, same numbers
    zl = prior.T(prior.split(u))
    assert isinstance(zl, list) and [p.shape[1] for p in zl] == list(dims)
    torch.testing.assert_close(torch.cat(zl, 1), z, rtol=0, atol=0)


def test_T_by_hand(make_prior):
    """z_L = u_L, z_i = μ_i(z_{i+1}) + σ_i(z_{i+1}) ⊙ u_i with σ = exp(ℓ) + σ_min."""
    prior = make_prior((3, 2, 4), sigma_min=0.05)
    u = rand_u(prior, B=6)
    u1, u2, u3 = u[:, :3], u[:, 3:5], u[:, 5:]
    z3 = u3
    out = prior.conditionals[1](z3)
    z2 = out[:, :2] + (out[:, 2:].exp() + 0.05) * u2
    out = prior.conditionals[0](z2)
    z1 = out[:, :3] + (out[:, 3:].exp() + 0.05) * u1
    torch.testing.assert_close(prior.T(u), torch.cat([z1, z2, z3], 1), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dims", DIMS)
def test_log_p_beta_by_hand(make_prior, dims):
    prior = make_prior(dims)
    z = prior.T(rand_u(prior))
    zs = prior.split(z)
    want = Normal(0.0, 1.0).log_prob(zs[-1]).sum(1)
    for i in range(len(dims) - 1):
        out = prior.conditionals[i](zs[i + 1])
        mu, ell = out[:, : dims[i]], out[:, dims[i]:]
        want = want + Normal(mu, ell.exp() + 0.01).log_prob(zs[i]).sum(1)
    torch.testing.assert_close(prior.log_p_beta(z), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.log_p_conditionals(z), want - Normal(0.0, 1.0).log_prob(zs[-1]).sum(1),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", DIMS)
def test_change_of_variables(make_prior, dims):
    """log p_β(T(u)) + Σ_i Σ log σ_i(z_{i+1}) = log N(u; 0, I): T pushes N(0, I) onto p_β."""
    prior = make_prior(dims, scale=2.0)
    u = rand_u(prior)
    z = prior.T(u)
    zs = prior.split(z)
    logdet = torch.zeros(u.shape[0], dtype=torch.float64)
    for i in range(len(dims) - 1):
        logdet = logdet + prior.conditional(i, zs[i + 1])[1].log().sum(1)
    lhs = prior.log_p_beta(z) + logdet
    rhs = Normal(0.0, 1.0).log_prob(u).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)
    # the Jacobian of T is triangular with diagonal σ (checked with autograd on one row)
    J = torch.autograd.functional.jacobian(lambda x: prior.T(x[None])[0], u[0])
    torch.testing.assert_close(torch.linalg.slogdet(J).logabsdet, logdet[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", DIMS)
def test_log_density_by_hand(make_prior, dims):
    prior = make_prior(dims)
    B = 9
    g = torch.Generator().manual_seed(3)
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    nxt = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    lam = torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    a = torch.rand(B, generator=g, dtype=torch.float64)
    s = torch.rand(B, generator=g, dtype=torch.float64) + 0.3
    zs = prior.split(prior.T(u))
    F = sum(prior.energies[i](zs[i])[:, 0] for i in range(len(dims)))
    gauss = -0.5 * (u * u).sum(1)
    kern = ((a[:, None] * u - nxt) ** 2).sum(1) / (2 * s**2)
    torch.testing.assert_close(prior.log_density(u), F + gauss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.log_density(u, energy_scale=lam, u_next=nxt, alpha=a, sigma=s),
                               lam * F + gauss - kern, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.log_density(u, energy_scale=0.7, u_next=nxt, alpha=0.4, sigma=0.9),
                               0.7 * F + gauss - ((0.4 * u - nxt) ** 2).sum(1) / (2 * 0.81), rtol=1e-12, atol=1e-12)
    # list input gives the same
    torch.testing.assert_close(prior.log_density(prior.split(u)), F + gauss, rtol=0, atol=0)


def test_log_density_is_joint_prior_pulled_back(make_prior):
    """exp(F(T u)) N(u; 0, I) is the tilted joint prior in ũ-space:
    log π(u) = F(z) + log p_β(z) + log|det ∂T/∂u| − (D/2) log 2π's complement, z = T(u)."""
    prior = make_prior((4, 3, 2), scale=1.3)
    u = rand_u(prior)
    z = prior.T(u)
    zs = prior.split(z)
    logdet = sum(prior.conditional(i, zs[i + 1])[1].log().sum(1) for i in range(2))
    want = prior.energy(z) + prior.log_p_beta(z) + logdet + 0.5 * prior.D * math.log(2 * math.pi)
    torch.testing.assert_close(prior.log_density(u), want, rtol=1e-12, atol=1e-10)


def test_level_conditioned_energy(make_prior):
    prior = make_prior((3, 2), n_levels=4)
    u = rand_u(prior, B=5)
    t = torch.tensor([0, 3, 1, 1, 2])
    per_row = prior.log_density(u, t=t)
    for b in range(5):
        one = prior.log_density(u[b : b + 1], t=int(t[b]))
        torch.testing.assert_close(per_row[b : b + 1], one, rtol=1e-12, atol=1e-12)
    # the level only changes hidden biases: at fixed t the energy is a plain MLP
    f = prior.energies[0]
    x = u[:, :3]
    h = x
    extra = f.level_biases(2)
    for j, layer in enumerate(f.layers):
        h = torch.nn.functional.linear(h, layer.weight, layer.bias)
        if j < len(f.layers) - 1:
            h = torch.nn.functional.gelu(h + extra[j])
    torch.testing.assert_close(f(x, 2), h, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(prior.log_density(u, t=0), prior.log_density(u, t=3))
    with pytest.raises(ValueError, match=r"\bt\b"):
        prior.log_density(u)


def test_plain_gaussian_prior(make_prior):
    prior = make_prior((4, 2), energy_hidden=None)
    u = rand_u(prior)
    assert not prior.has_energy
    torch.testing.assert_close(prior.log_density(u, energy_scale=3.0), -0.5 * (u * u).sum(1), rtol=0, atol=0)
    assert torch.equal(prior.energy(prior.T(u)), torch.zeros(u.shape[0], dtype=torch.float64))


def test_parameterless_prior():
    """L = 1 without energy has no parameters at all; everything still works."""
    prior = hebm.HierarchicalPrior([3], energy_hidden=None)
    u = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(prior.T(u), u) and torch.equal(prior.T_inv(u), u)
    s = prior.sample_gaussian(5)
    assert s.shape == (5, 3)
    out = hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0)
    assert out.shape == u.shape and out.dtype == torch.float64


def test_ancestral_sampling_moments(make_prior):
    """sample_gaussian = T(N(0, I)); for L = 1 that is N(0, I) itself."""
    prior = make_prior((3, 2), energy_hidden=None)
    g = torch.Generator().manual_seed(0)
    z = prior.sample_gaussian(7, generator=g)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(7, prior.D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(z, prior.T(u), rtol=0, atol=0)
    z_list = prior.sample_gaussian(7, generator=torch.Generator().manual_seed(0), flat=False)
    assert isinstance(z_list, list) and len(z_list) == 2


@pytest.mark.parametrize("act", ["relu", "leaky_relu:0.1", "tanh", "silu", "gelu", "gelu_tanh", "softplus"])
def test_activations(act):
    from hebm.prior.nn import Activation

    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    name, _, p = act.partition(":")
    ref = {
        "relu": lambda v: v.clamp_min(0),
        "leaky_relu": lambda v: torch.where(v > 0, v, float(p or 0.2) * v),
        "tanh": torch.tanh,
        "silu": lambda v: v / (1 + torch.exp(-v)),
        "gelu": lambda v: 0.5 * v * (1 + torch.erf(v / math.sqrt(2))),
        "gelu_tanh": lambda v: 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
        "softplus": lambda v: torch.where(v > 20, v, torch.log1p(torch.exp(v))),
    }[name]
    torch.testing.assert_close(Activation(act)(x), ref(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="activation"):
        Activation("swish2")


def test_spectral_norm():
    """With spectral norm the energies' effective weights have largest singular value ≈ 1 after
    power iteration; the conditionals (p_β itself) are not normalised (the authors' choice)."""
    torch.manual_seed(0)
    prior = hebm.HierarchicalPrior([6, 4], prior_hidden=(8,), energy_hidden=(10, 10), spectral_norm=True)
    prior.power_iteration(50)
    energy_layers = [m for f in prior.energies for m in f.layers]
    assert energy_layers and all(m.spectral_norm for m in energy_layers)
    for m in energy_layers:
        s = torch.linalg.matrix_norm(m.effective_weight().detach(), ord=2)
        assert abs(float(s) - 1) < 1e-4
    for g in prior.conditionals:
        for m in g.layers:
            assert not m.spectral_norm and m.effective_weight() is m.weight


@pytest.mark.parametrize("n_levels", [None, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_pack_reproduces_networks(make_prior, n_levels, bias):
    """The slot tensors and the layout table (what the compiled kernels read), evaluated by hand,
    give every MLP's output; so does the torch form (pack.unpack) the Triton buffer is built from."""
    prior = make_prior((5, 3, 2), n_levels=n_levels, spectral_norm=True, act="silu", bias=bias)
    pk = pack.of(prior)
    net = pk.network
    mods = list(prior.conditionals) + list(prior.energies)
    assert len(net.mlps) == 3 * len(mods) and len(net.layout) % pack.LAY_NCOLS == 0 and net.D == 10
    torch_form = pack.unpack(pk).all_mlps()
    g = torch.Generator().manual_seed(0)
    for m_idx, mod in enumerate(mods):
        first, n_layers, code = net.mlps[3 * m_idx: 3 * m_idx + 3]
        assert code == mod.act.code
        x = torch.randn(4, mod.widths[0], generator=g, dtype=torch.float64)
        for level in range(net.n_levels):
            h, h2 = x, x
            for j in range(n_layers):
                row = net.layout[(first + j) * pack.LAY_NCOLS:(first + j + 1) * pack.LAY_NCOLS]
                fan_in, fan_out, w_slot, b_slot, rows, lv_slot, lv_col = row
                W = pk.values[w_slot].double()
                assert W.shape == (fan_out, fan_in) and (b_slot >= 0) == bias
                b = pk.values[b_slot].double() if b_slot >= 0 else 0.0
                if lv_slot >= 0:
                    b = b + pk.values[lv_slot].double()[level, lv_col:lv_col + fan_out]
                h = h @ W.T + b
                m = torch_form[m_idx]
                h2 = h2 @ m.weights[j].double().T + m.biases[j].double()[min(level, rows - 1)]
                if j < n_layers - 1:
                    h, h2 = torch.nn.functional.silu(h), torch.nn.functional.silu(h2)
            want = mod(x, level) if mod.n_levels is not None else mod(x)
            torch.testing.assert_close(h, want, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(h2, want, rtol=1e-12, atol=1e-12)
