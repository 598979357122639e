"""The test harness: the one prior factory, sampler keywords, and the parity rule every fused
backend is held to.

A backend passes when its fp32 result is within ``2×`` PyTorch's own fp32 error of the float64
reference (plus a small absolute floor for cases where the fp32 reference happens to be exact),
for the same explicit noise or seed — the flash-attention / mamba convention.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence, Union

import torch

import hebm
from hebm import HierarchicalPrior


def make_prior(
    dims: Sequence[int] = (7, 13),
    *,
    prior_hidden: Sequence[int] = (17,),
    energy_hidden: Optional[Sequence[int]] = (19, 11),
    act: str = "gelu",
    energy_act: Optional[str] = None,
    bias: bool = True,
    spectral_norm: bool = False,
    n_levels: Optional[int] = None,
    sigma_min: float = 0.01,
    sigma_clamp: float = 0.0,
    seed: int = 0,
    scale: float = 1.0,
    dtype=torch.float32,
    device="cpu",
) -> HierarchicalPrior:
    """A random prior with deliberately odd sizes; weights uniform in ±scale/√fan_in, drawn in
    float64 from a private generator (independent of the global RNG state), frozen, eval mode."""
    g = torch.Generator().manual_seed(seed)
    prior = HierarchicalPrior(dims, prior_hidden=prior_hidden, energy_hidden=energy_hidden, act=act,
                              energy_act=energy_act, bias=bias, spectral_norm=spectral_norm,
                              n_levels=n_levels, sigma_min=sigma_min, sigma_clamp=sigma_clamp)
    with torch.no_grad():
        for p in prior.parameters():
            bound = scale / max(1, p.shape[-1]) ** 0.5
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound)
    prior.power_iteration(3)
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior.to(device=device, dtype=dtype).eval()


def attribute_prior(prior: HierarchicalPrior, names: Sequence[str], layers: Sequence[int], hidden: Sequence[int],
                    seed: int = 0) -> HierarchicalPrior:
    """``prior`` coupled with random attribute heads (hebm.models.controllable): the merged, level-
    conditioned prior whose ``t`` is each chain's combination of attribute values."""
    from hebm.models.controllable import AttributeHeads, conditional_prior

    act = prior.energies[0].act.spec() if prior.energies is not None else "gelu"
    heads = AttributeHeads(prior.dims, names, layers, hidden, act).to(next(prior.parameters()).dtype)
    g = torch.Generator().manual_seed(seed + 101)
    with torch.no_grad():
        for p in heads.parameters():
            bound = 1.0 / max(1, p.shape[-1]) ** 0.5
            p.copy_(((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound).to(p.dtype))
    cp = conditional_prior(prior, heads)
    for p in cp.parameters():
        p.requires_grad_(False)
    return cp.eval()


def make_kwargs(prior: HierarchicalPrior, B: int, *, n_steps: int = 5, per_row: bool = True, kernel: bool = True,
                seed: Optional[int] = None, explicit_noise: bool = True, data_seed: int = 1, device="cpu",
                dtype=torch.float32) -> tuple[torch.Tensor, dict]:
    """Initial state and sampler keywords: per-row or scalar parameters, kernel term on/off."""
    g = torch.Generator().manual_seed(data_seed)
    D = prior.D
    u = torch.randn(B, D, generator=g, dtype=torch.float64)
    kw: dict = dict(n_steps=n_steps)
    if per_row:
        kw["step_size"] = (0.05 + 0.2 * torch.rand(B, generator=g, dtype=torch.float64))
        kw["energy_scale"] = (0.5 + torch.rand(B, generator=g, dtype=torch.float64))
        kw["noise_scale"] = torch.rand(B, generator=g, dtype=torch.float64)
    else:
        kw["step_size"] = 0.15
        kw["energy_scale"] = 1.3
    if prior.n_levels is not None:
        kw["t"] = torch.randint(0, prior.n_levels, (B,), generator=g) if per_row else prior.n_levels - 1
    if kernel:
        kw["u_next"] = torch.randn(B, D, generator=g, dtype=torch.float64)
        if per_row:
            kw["alpha"] = 0.3 + 0.6 * torch.rand(B, generator=g, dtype=torch.float64)
            kw["sigma"] = 0.4 + 0.6 * torch.rand(B, generator=g, dtype=torch.float64)
        else:
            kw["alpha"], kw["sigma"] = 0.7, 0.8
    if explicit_noise:
        kw["noise"] = torch.randn(n_steps, B, D, generator=g, dtype=torch.float64)
    else:
        kw["seed"] = 12345 if seed is None else seed
    return to(u, dtype, device), {k: to(v, dtype, device) for k, v in kw.items()}


def to(x, dtype, device):
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point:
            return x.to(device=device, dtype=dtype)
        return x.to(device)
    return x


def on(kw: dict, dtype, device) -> dict:
    return {k: to(v.cpu() if isinstance(v, torch.Tensor) else v, dtype, device) for k, v in kw.items()}


Runner = Union[str, Callable]


def run_backend(runner: Runner, prior, u, kw, *, precision: str = "fp32"):
    """``(out, info)`` of one sampler call by a backend name (through ``hebm.langevin_fused``)
    or by a runner callable ``runner(prior, u, kw, precision) -> (out, info)``."""
    if isinstance(runner, str):
        return hebm.langevin_fused(prior, u, backend=runner, precision=precision, return_info=True, **kw)
    return runner(prior, u, kw, precision)


def parity(prior: HierarchicalPrior, u: torch.Tensor, kw: dict, backend: Runner, *, rel: float = 2.0,
           atol: float = 1e-5, precision: str = "fp32", device=None, check_trace: bool = True) -> dict:
    """Run ``backend`` in fp32 and compare with the float64 reference; assert the 2× rule.

    Returns the errors, for reporting.
    """
    device = device or u.device
    prior64 = copy.deepcopy(prior).to(device="cpu", dtype=torch.float64)
    u64 = u.detach().cpu().double()
    gold, info64 = hebm.langevin_ref(prior64, u64, return_info=True, **on(kw, torch.float64, "cpu"))
    prior32 = copy.deepcopy(prior).to(device="cpu", dtype=torch.float32)
    ref32 = hebm.langevin_ref(prior32, u64.float(), **on(kw, torch.float32, "cpu"))
    priord = copy.deepcopy(prior).to(device=device, dtype=torch.float32)
    out, info = run_backend(backend, priord, u.to(device=device, dtype=torch.float32), on(kw, torch.float32, device),
                            precision=precision)
    if isinstance(backend, str):
        assert info["backend"] == backend, info["backend"]
    assert out.shape == gold.shape and out.dtype == torch.float32
    scale = max(1.0, float(gold.abs().max()))
    err_ref = float((ref32.double() - gold).abs().max())
    err = float((out.detach().cpu().double() - gold).abs().max())
    bound = rel * err_ref + atol * scale
    assert err <= bound, f"{backend}: max error {err:.3e} vs fp32 reference error {err_ref:.3e} (bound {bound:.3e})"
    res = {"err": err, "err_ref": err_ref}
    if check_trace and info.get("log_density") is not None:
        ld = info["log_density"].detach().cpu().double()
        g_ld = info64["log_density"]
        ld_scale = max(1.0, float(g_ld.abs().max()))
        ld_err = float((ld - g_ld).abs().max())
        assert ld_err <= 1e-3 * ld_scale, f"{backend}: log_density trace error {ld_err:.3e}"
        res["log_density_err"] = ld_err
    return res
