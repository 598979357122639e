"""The baselines a user would otherwise run: the plain PyTorch Langevin loop, and TorchEBM's.

``plain`` is the loop a researcher writes for the same model: the prior's networks as plain
tensors (weights read once, spectral norm and level biases already applied — what a careful user
would hoist out of the loop) run with ``torch.nn.functional``; per step one ``torch.autograd.grad``
of the u-space target, then ``u + (δ²/2)·∇ + c·δ·torch.randn_like(u)``.  No hebm code runs in the
loop (hebm's own ``ref`` is slower: it draws the counter-based Philox stream in pure PyTorch and
goes through the generic modules).  With an explicit ``noise`` tensor the same loop is checked
against the float64 reference before it is timed.

``torchebm`` runs TorchEBM's ``LangevinDynamics`` (Euler–Maruyama, ``x − η∇U + √(2η)·s·ε``) on
``U = −log π`` of the same plain networks, ``η = δ²/2``.  It takes one scalar step size, so the
peer provider runs the problems with every chain at the mean δ (the same work per step); its
drift is checked against the reference with the noise switched off.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from hebm.sampler.backends.pack import pack_prior

_ACTS = {
    0: lambda x, p: F.relu(x),
    1: lambda x, p: F.leaky_relu(x, p),
    2: lambda x, p: torch.tanh(x),
    3: lambda x, p: F.silu(x),
    4: lambda x, p: F.gelu(x),
    5: lambda x, p: F.gelu(x, approximate="tanh"),
    6: lambda x, p: F.softplus(x),
}


class PlainNets:
    """The prior's networks as plain weight tensors and functional ops."""

    def __init__(self, prior):
        pk = pack_prior(prior)
        self.dims = list(pk.dims)
        self.L = pk.L
        self.sigma_min = float(pk.sigma_min)
        self.clamp = float(pk.sigma_clamp)
        self.conds = [self._net(m) for m in pk.conditionals]
        self.energies = [self._net(m) for m in pk.energies]

    @staticmethod
    def _net(m):
        act = _ACTS[m.act_code]
        return [(w, b, act, float(m.act_param)) for w, b in zip(m.weights, m.biases)]

    @staticmethod
    def _mlp(net, x, t):
        for j, (w, b, act, p) in enumerate(net):
            x = F.linear(x, w) + (b[t] if b.shape[0] > 1 else b)
            if j < len(net) - 1:
                x = act(x, p)
        return x

    def T(self, u, t=None):
        us = list(torch.split(u, self.dims, dim=1))
        zs = [None] * self.L
        zs[-1] = us[-1]
        for i in range(self.L - 2, -1, -1):
            mu, ls = self._mlp(self.conds[i], zs[i + 1], t).split(self.dims[i], dim=1)
            if self.clamp > 0:
                ls = self.clamp * torch.tanh(ls / self.clamp)
            zs[i] = mu + (torch.exp(ls) + self.sigma_min) * us[i]
        return zs

    def log_density(self, u, *, energy_scale, t=None, u_next=None, alpha=None, sigma=None):
        out = -0.5 * (u * u).sum(1)
        if self.energies:
            zs = self.T(u, t)
            F_ = sum(self._mlp(f, z, t)[:, 0] for f, z in zip(self.energies, zs))
            out = out + energy_scale * F_
        if u_next is not None:
            out = out - ((alpha[:, None] * u - u_next) ** 2).sum(1) / (2 * sigma * sigma)
        return out


def _col(x, u):
    x = torch.as_tensor(x, dtype=u.dtype, device=u.device)
    return (x.expand(u.shape[0]) if x.dim() == 0 else x)[:, None]


def plain_langevin(nets: PlainNets, u, *, n_steps: int, step_size, noise_scale=1.0, energy_scale=1.0, t=None,
                   u_next=None, alpha=None, sigma=None, noise: Optional[torch.Tensor] = None, **_ignored):
    """K steps of the plain loop (``noise``: explicit ε ``[K, B, D]``; else ``torch.randn_like``)."""
    d = _col(step_size, u)
    half, amp = 0.5 * d * d, _col(noise_scale, u) * d
    lam = _col(energy_scale, u)[:, 0]
    a = None if alpha is None else _col(alpha, u)[:, 0]
    s = None if sigma is None else _col(sigma, u)[:, 0]
    tt = None if t is None else torch.as_tensor(t, device=u.device).expand(u.shape[0]).long()
    x = u.detach()
    for k in range(n_steps):
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            lp = nets.log_density(xg, energy_scale=lam, t=tt, u_next=u_next, alpha=a, sigma=s)
            (g,) = torch.autograd.grad(lp.sum(), xg)
        eps = noise[k] if noise is not None else torch.randn_like(x)
        x = (x.detach() + half * g + amp * eps).detach()
    return x


def plain_mala(nets: PlainNets, u, *, n_steps: int, step_size, energy_scale=1.0, t=None, u_next=None, alpha=None,
               sigma=None, reuse: bool = True, **_ignored):
    """K Metropolis-adjusted steps as a user writes them in PyTorch: the proposal, log π and its
    gradient at the proposal by autograd, the Hastings ratio, ``torch.rand`` for the test.
    ``reuse``: the accepted proposal's log π and gradient serve the next step (one evaluation a
    step, the fastest form); without it the loop evaluates the current state afresh each step
    too, as most published loops do (two evaluations a step)."""
    d = _col(step_size, u)
    half = 0.5 * d * d
    lam = _col(energy_scale, u)[:, 0]
    a = None if alpha is None else _col(alpha, u)[:, 0]
    s = None if sigma is None else _col(sigma, u)[:, 0]
    tt = None if t is None else torch.as_tensor(t, device=u.device).expand(u.shape[0]).long()

    def value_grad(x):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = nets.log_density(xg, energy_scale=lam, t=tt, u_next=u_next, alpha=a, sigma=s)
            (g,) = torch.autograd.grad(lp.sum(), xg)
        return lp.detach(), g

    x = u.detach()
    lp, g = value_grad(x)
    for _ in range(n_steps):
        if not reuse:
            lp, g = value_grad(x)
        prop = x + half * g + d * torch.randn_like(x)
        lpp, gp = value_grad(prop)
        log_alpha = (lpp - lp - ((x - prop - half * gp) ** 2).sum(1) / (2 * d[:, 0] ** 2)
                     + ((prop - x - half * g) ** 2).sum(1) / (2 * d[:, 0] ** 2))
        acc = torch.log(torch.rand_like(lp)) < log_alpha
        x = torch.where(acc[:, None], prop, x)
        lp, g = torch.where(acc, lpp, lp), torch.where(acc[:, None], gp, g)
    return x


def plain_reverse_diffusion(nets: PlainNets, schedule, u_T, *, n_steps: int, noise=None):
    """The reverse diffusion with the plain loop per level (``noise``: ``[T·K, B, D]``)."""
    u = u_T
    for j, t in enumerate(range(schedule.T - 1, -1, -1)):
        kw = schedule.langevin_kwargs(t, u)
        nz = None if noise is None else noise[j * n_steps:(j + 1) * n_steps]
        u = plain_langevin(nets, u, n_steps=n_steps, noise=nz, **kw)
    return u


# ------------------------------------------------------------------------------ TorchEBM
def torchebm_available() -> Optional[str]:
    """None if TorchEBM is importable, else why (the skip reason)."""
    try:
        import torchebm  # noqa: F401
        from torchebm.samplers import LangevinDynamics  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure: the peer provider is skipped
        return f"TorchEBM is not installed here ({type(e).__name__}); pip install torchebm to time the peer library"
    return None


def torchebm_sampler(nets: PlainNets, u, *, step_size, noise_scale=1.0, energy_scale=1.0, t=None, u_next=None,
                     alpha=None, sigma=None, **_ignored):
    """``(sampler, x0)``: TorchEBM's LangevinDynamics on ``U = −log π`` with η = mean(δ)²/2."""
    from torchebm.core import BaseModel
    from torchebm.samplers import LangevinDynamics

    lam = _col(energy_scale, u)[:, 0]
    a = None if alpha is None else _col(alpha, u)[:, 0]
    s = None if sigma is None else _col(sigma, u)[:, 0]
    tt = None if t is None else torch.as_tensor(t, device=u.device).expand(u.shape[0]).long()

    class Target(BaseModel):
        def forward(self, x):
            return -nets.log_density(x, energy_scale=lam, t=tt, u_next=u_next, alpha=a, sigma=s)

    d = float(_col(step_size, u).mean())
    c = float(_col(noise_scale, u).mean())
    sampler = LangevinDynamics(Target(dtype=u.dtype, device=u.device), step_size=0.5 * d * d,
                               noise_scale=max(c, 1e-30), dtype=u.dtype, device=u.device)
    return sampler, u.detach()


__all__ = ["plain_mala", "PlainNets", "plain_langevin", "plain_reverse_diffusion", "torchebm_available", "torchebm_sampler"]
