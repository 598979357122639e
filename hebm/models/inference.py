"""The inference networks ``q(z̃ | x)`` — top-down (LVAE's precision-weighted merge, the default)
and mean-field bottom-up — the :class:`Posterior` they draw, and the KL terms of the losses."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..prior.hierarchical import HierarchicalPrior
from ..prior.nn import MLP, as_activation

LOG2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r = (z - mu) / sigma
    return -(0.5 * (r * r + LOG2PI) + torch.log(sigma)).sum(1)


def gaussian_kl(mu_q, s_q, mu_p, s_p) -> torch.Tensor:
    """``KL(N(μ_q, s_q²) ‖ N(μ_p, s_p²))`` summed over the last dimension, per row."""
    r = s_q / s_p
    return (torch.log(s_p / s_q) + 0.5 * (r * r + ((mu_q - mu_p) / s_p) ** 2 - 1.0)).sum(-1)



@dataclass
class Posterior:
    """One draw of ``q(z̃ | x)``: the flat sample ``z`` ``[B, D]``; per layer the analytic
    ``kl`` ``[B, L]`` (each layer against its prior conditional given the sampled layer above);
    ``mean`` — each layer's conditional mean given the sampled layers above (the Rao–Blackwellised
    ``E_q[z_i | x]`` estimate the active-units metric uses), flat ``[B, D]``; ``log_q_layers``
    ``[B, L]``, each layer's log density under its q factor at the sample; ``std`` ``[B, D]`` each
    layer's conditional standard deviation."""

    z: torch.Tensor
    kl: torch.Tensor
    mean: torch.Tensor
    log_q_layers: torch.Tensor
    std: torch.Tensor

    @property
    def log_q(self) -> torch.Tensor:
        return self.log_q_layers.sum(1)


class _Inference(nn.Module):
    def __init__(self, feat_dim: int, dims, width: int, act, sigma_min: float = 1e-3):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.sigma_min = float(sigma_min)
        self.act = as_activation(act)
        self.blocks = nn.ModuleList([MLP([feat_dim, width], act)] + [MLP([width, width], act) for _ in self.dims[1:]])
        self.heads = nn.ModuleList(nn.Linear(width, 2 * d) for d in self.dims)

    def bottom_up(self, h) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (bottom-up) the Gaussian terms ``(μ̂_i, σ̂_i)`` of the deterministic pass."""
        out = []
        for block, head, d in zip(self.blocks, self.heads, self.dims):
            h = self.act(block(h))
            m, s = head(h).split(d, dim=1)
            out.append((m, F.softplus(s) + self.sigma_min))
        return out


class TopDownInference(_Inference):
    """``q(z_L|x) Π_i q(z_i | z_{i+1}, x)``, LVAE's precision-weighted merge of the bottom-up term
    ``N(μ̂_i, σ̂_i²)`` with the prior conditional ``N(μ_p, σ_p²) = p(z_i | z_{i+1})``:
    ``σ_q⁻² = σ̂_i⁻² + σ_p⁻²``, ``μ_q = σ_q² (μ̂_i σ̂_i⁻² + μ_p σ_p⁻²)``."""

    def forward(self, h, prior: HierarchicalPrior, *, generator=None, mean: bool = False) -> Posterior:
        terms = self.bottom_up(h)
        L = len(self.dims)
        zs, kls, means, logq, stds = [None] * L, [None] * L, [None] * L, [None] * L, [None] * L
        for i in range(L - 1, -1, -1):
            mh, sh = terms[i]
            if i == L - 1:  # the top layer: the bottom-up term itself, against p(z_L) = N(0, I)
                mp, sp = torch.zeros_like(mh), torch.ones_like(sh)
                mq, sq = mh, sh
            else:
                mp, sp = prior.conditional(i, zs[i + 1])
                pq, pp = sh.pow(-2), sp.pow(-2)
                var = 1.0 / (pq + pp)
                mq, sq = var * (mh * pq + mp * pp), var.sqrt()
            if mean:
                z = mq
            else:
                z = mq + sq * torch.randn(mq.shape, generator=generator, device=mq.device, dtype=mq.dtype)
            zs[i], means[i], stds[i] = z, mq, sq
            kls[i] = gaussian_kl(mq, sq, mp, sp)
            logq[i] = gaussian_log_prob(z, mq, sq)
        return Posterior(torch.cat(zs, 1), torch.stack(kls, 1), torch.cat(means, 1), torch.stack(logq, 1),
                         torch.cat(stds, 1))


class BottomUpInference(_Inference):
    """Mean-field ``q(z̃ | x) = Π_i N(z_i; μ̂_i(x), σ̂_i(x)²)`` (the bottom-up pass alone)."""

    def forward(self, h, prior: HierarchicalPrior, *, generator=None, mean: bool = False) -> Posterior:
        terms = self.bottom_up(h)
        mu = torch.cat([m for m, _ in terms], 1)
        sd = torch.cat([s for _, s in terms], 1)
        z = mu if mean else mu + sd * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        zs, mus, sds = prior.split(z), prior.split(mu), prior.split(sd)
        L = len(self.dims)
        kls, logq = [None] * L, [None] * L
        for i in range(L):
            if i == L - 1:
                mp, sp = torch.zeros_like(zs[i]), torch.ones_like(zs[i])
            else:
                mp, sp = prior.conditional(i, zs[i + 1])
            kls[i] = gaussian_kl(mus[i], sds[i], mp, sp)
            logq[i] = gaussian_log_prob(zs[i], mus[i], sds[i])
        return Posterior(z, torch.stack(kls, 1), mu, torch.stack(logq, 1), sd)


def prior_fit(prior: HierarchicalPrior, post: Posterior) -> torch.Tensor:
    """``[B, L]``: ``KL(q_i ‖ p(z_i | z_{i+1}))`` with q and the samples held fixed — as a function
    of the conditionals' parameters its gradient is their positive phase (the KL's own gradient
    in them)."""
    zs, ms, ss = prior.split(post.z.detach()), prior.split(post.mean.detach()), prior.split(post.std.detach())
    out = [gaussian_kl(ms[i], ss[i], *prior.conditional(i, zs[i + 1])) for i in range(prior.L - 1)]
    out.append(torch.zeros_like(out[0]) if out else post.z.new_zeros(post.z.shape[0]))
    return torch.stack(out, 1)


def kl_penalty(prior: HierarchicalPrior, post: Posterior, *, weight: float = 1.0, free_bits: float = 0.0) -> torch.Tensor:
    """``weight · Σ_i max(λ, mean_batch KL_i)``: free bits per layer (Kingma et al. 2016) for the
    inference network.  A clamped layer's KL also loses its gradient in the conditionals, their
    positive phase — without it the negative phase of an EBM prior (which enters log Z) would push
    p_β away from every sample unopposed; so it is put back (value unchanged, gradient only)."""
    per_layer = post.kl.mean(0)
    if free_bits <= 0:
        return weight * per_layer.sum()
    clamped = (per_layer < free_bits).to(per_layer.dtype).detach()
    pen = torch.clamp(per_layer, min=free_bits).sum()
    if bool(clamped.any()):
        fit = (prior_fit(prior, post).mean(0) * clamped).sum()
        pen = pen + fit - fit.detach()
    return weight * pen


__all__ = ["BottomUpInference", "LOG2PI", "Posterior", "TopDownInference", "gaussian_kl", "gaussian_log_prob",
           "kl_penalty", "prior_fit"]
