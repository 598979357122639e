"""Golden outputs: the same calls on two trees, compared bit for bit.

    python -m benchmarks.golden write OUT.pt      # on the tree before a change
    python -m benchmarks.golden compare OUT.pt    # on the tree after it: every output bit-identical?

The calls (public API only, so any tree runs them): ``langevin_ref`` and ``langevin_fused``
(backend "cpu") on the standard problems toy and small (level-conditioned, kernel term on, seeded),
on a spectrally normalised prior without levels (explicit noise, trace), in float64, with the
Metropolis test and with step adaptation, and without biases; ``reverse_diffusion_ref`` and ``reverse_diffusion``
(backend "cpu", one fused call) with all levels returned.  A refactoring of the sampler's plumbing
must leave every one of them the same bits on the same machine (the kernels' arithmetic is not
promised across machines: docs/design.md §2).
"""
from __future__ import annotations

import sys

import torch

import hebm


def _spectral_prior(dtype=torch.float32):
    g = torch.random.get_rng_state()
    torch.manual_seed(11)
    try:
        prior = hebm.HierarchicalPrior((5, 3, 2), prior_hidden=(17,), energy_hidden=(19, 13), act="silu",
                                       spectral_norm=True, sigma_clamp=5.0)
    finally:
        torch.random.set_rng_state(g)
    prior = prior.to(dtype)
    for q in prior.parameters():
        q.requires_grad_(False)
    return prior


def outputs() -> dict:
    out = {}
    for name in ("toy", "small"):
        p = hebm.standard_problem(name, 33, seed=3)
        kw = dict(p.kwargs, n_steps=20)
        out[f"{name}/ref"] = hebm.langevin_ref(p.prior, p.u, **kw)
        out[f"{name}/cpu"] = hebm.langevin_fused(p.prior, p.u, backend="cpu", **kw)
        mala = dict(kw, metropolis=True, adapt_steps=5)
        for who, fn in (("ref", hebm.langevin_ref), ("cpu", lambda *a, **k: hebm.langevin_fused(*a, backend="cpu", **k))):
            u, info = fn(p.prior, p.u, return_info=True, **mala)
            out[f"{name}/mala-{who}"] = u
            out[f"{name}/mala-{who}/step_size"] = info["step_size"]
            out[f"{name}/mala-{who}/accepted"] = info["accepted"]
        for who, fn in (("ref", hebm.reverse_diffusion_ref),
                        ("cpu", lambda *a, **k: hebm.reverse_diffusion(*a, backend="cpu", **k))):
            u0, levels = fn(p.prior, p.schedule, n_steps=10, batch=33, seed=5, return_levels=True)
            out[f"{name}/reverse-{who}"] = torch.stack(levels)
    for dtype in (torch.float32, torch.float64):
        prior = _spectral_prior(dtype)
        g = torch.Generator().manual_seed(2)
        u = torch.randn(21, prior.D, generator=g, dtype=torch.float64).to(dtype)
        noise = torch.randn(7, 21, prior.D, generator=g, dtype=torch.float64).to(dtype)
        kw = dict(n_steps=7, step_size=0.2, noise=noise, energy_scale=0.7)
        tag = "sn-" + str(dtype).split(".")[-1]
        for who, fn in (("ref", hebm.langevin_ref), ("cpu", lambda *a, **k: hebm.langevin_fused(*a, backend="cpu", **k))):
            x, info = fn(prior, u, return_info=True, **kw)
            out[f"{tag}/{who}"] = x
            out[f"{tag}/{who}/trace"] = info["log_density"]
    # no biases, levels: the bias tables are 0 + the level rows
    g = torch.random.get_rng_state()
    torch.manual_seed(12)
    try:
        prior = hebm.HierarchicalPrior((4, 3), prior_hidden=(9,), energy_hidden=(11,), bias=False, n_levels=3,
                                       act="gelu_tanh")
    finally:
        torch.random.set_rng_state(g)
    for q in prior.parameters():
        q.requires_grad_(False)
    u = torch.randn(9, prior.D, generator=torch.Generator().manual_seed(4))
    kw = dict(n_steps=6, step_size=0.3, t=torch.tensor([0, 1, 2] * 3), seed=9)
    out["nobias/ref"] = hebm.langevin_ref(prior, u, **kw)
    out["nobias/cpu"] = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    return out


def main(argv) -> int:
    if len(argv) != 2 or argv[0] not in ("write", "compare"):
        print(__doc__)
        return 2
    got = outputs()
    if argv[0] == "write":
        torch.save(got, argv[1])
        print(f"{len(got)} outputs written to {argv[1]}")
        return 0
    want = torch.load(argv[1])
    bad = [k for k in want if k not in got or not torch.equal(got[k], want[k])]
    for k in want:
        print(f"{'same bits' if k not in bad else 'DIFFERENT'}  {k}")
    print(f"{len(want) - len(bad)} of {len(want)} outputs bit-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
