"""Attribute-conditioned chains (hebm.models.controllable) against unconditional ones, side by side.

The prior is the mnist5k default model's (three layers 16-8-4, conditionals 128 wide, energies
[64, 64], GELU) with attribute heads [64, 64] — digit on z₃, thickness and slant on z₁ — merged
into one MLP per layer (docs/controllable.md); every chain gets its own attribute values (40
combinations drawn at random), all in one call.  Rows, one K-step call each:

* ``uncond`` — the fused sampler on the prior alone (``langevin_fused(backend="auto")``);
* ``cond-one`` — the same merged prior with one value combination for every chain (what an
  unconditional network of the merged size costs);
* ``cond``   — the fused sampler on the merged conditional prior, per-chain values;
* ``plain``  — what a user would otherwise write for the conditional chain: autograd through
  ``prior.log_density`` plus the heads ``G(T(u), y)``, ``torch.randn_like`` noise.

Correctness first: ``cond`` equals ``hebm.langevin_ref`` on the merged prior to the parity rule's
order before it is timed.  The claim (issue 22): chains with *different* attribute values in one
batch at the speed of unconditional chains — cond vs cond-one (per-chain values cost nothing
beyond one value for all), and cond vs uncond (what the heads' extra units cost), beside plain.
"""
from __future__ import annotations

import pytest
import torch

import hebm
from hebm.models.controllable import AttributeHeads, combination_index, conditional_prior
from hebm.prior.hierarchical import HierarchicalPrior

ROWS = ("uncond", "cond-one", "cond", "plain")


def _setup(B: int):
    g = torch.Generator().manual_seed(0)
    prior = HierarchicalPrior([16, 8, 4], prior_hidden=[128], energy_hidden=[64, 64], sigma_clamp=5.0)
    heads = AttributeHeads([16, 8, 4], ["digit", "thickness", "slant"], [2, 0, 0], [64, 64], "gelu")
    with torch.no_grad():
        for p in list(prior.parameters()) + list(heads.parameters()):
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / max(1, p.shape[-1]) ** 0.5)
    for p in list(prior.parameters()) + list(heads.parameters()):
        p.requires_grad_(False)
    y = torch.stack([torch.randint(0, n, (B,), generator=g) for n in heads.n_values], 1)
    u = hebm.initial_noise(3, B, prior.D)
    return prior, heads, conditional_prior(prior, heads), y, u


def _plain(prior, heads, u, y, K, delta):
    x = u.clone()
    for _ in range(K):
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            lp = prior.log_density(xg) + heads(prior.T(xg), y)
            (gr,) = torch.autograd.grad(lp.sum(), xg)
        x = (x.detach() + 0.5 * delta * delta * gr + delta * torch.randn_like(x)).detach()
    return x


@pytest.mark.parametrize("B", [64, 256], ids=["B64", "B256"])
@pytest.mark.parametrize("row", ROWS)
def test_conditional_chains(benchmark, bench, row, B):
    if bench.device != "cpu" and row == "plain":
        pytest.skip("the plain row runs on the CPU benchmark only")
    if bench.quick and B != 64:
        pytest.skip("--bench-quick: B = 64 only")
    prior, heads, cp, y, u = _setup(B)
    t = combination_index(y, heads.n_values)
    K, delta = bench.steps, 0.2
    if row == "cond":  # correctness before timing
        want = hebm.langevin_ref(cp, u, n_steps=K, step_size=delta, seed=5, t=t)
        got = hebm.langevin_fused(cp, u, n_steps=K, step_size=delta, seed=5, t=t)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    fn = {
        "uncond": lambda: hebm.langevin_fused(prior, u, n_steps=K, step_size=delta, seed=5),
        "cond-one": lambda: hebm.langevin_fused(cp, u, n_steps=K, step_size=delta, seed=5, t=t[:1].expand(B)),
        "cond": lambda: hebm.langevin_fused(cp, u, n_steps=K, step_size=delta, seed=5, t=t),
        "plain": lambda: _plain(prior, heads, u, y, K, delta),
    }[row]
    fn()
    _, info = hebm.langevin_fused(cp, u, n_steps=1, step_size=delta, seed=5, t=t, return_info=True)
    benchmark.extra_info.update(row=row, B=B, K=K, backend=info["backend"])
    benchmark.pedantic(fn, rounds=bench.min_rounds if bench.quick else max(3, bench.min_rounds), iterations=1)
