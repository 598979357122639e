"""Generator, inference network, the three prior types and their losses.

One :class:`HEBMModel` holds

* the top-down hierarchy ``p_β`` and (for ``ebm``) the joint energy ``F = Σ f_i``:
  ``self.prior``, a :class:`hebm.HierarchicalPrior`;
* the generator ``p(x | z_1) = N(g(z_1), σ_x² I)`` — an MLP with a tanh output, data in
  [-1, 1], fixed ``σ_x`` (0.3 as in the authors' code, PAPERS.md B §2.2); images shown are the
  mean ``g(z_1)``;
* the inference network ``q(z̃ | x) = Π_i N(z_i; m_i(x), s_i(x)²)``: a *bottom-up* MLP
  (``h_1 = B_1(x)``, ``h_i = B_i(h_{i−1})``, one Gaussian head per layer on ``h_i``), i.e. every
  layer is conditioned on x only through a deterministic bottom-up path (the ICCV'23 authors'
  ladder encoder, PAPERS.md B §4.1, without top-down merging);
* for ``diffusion`` (paper 2): ``self.dprior``, a level-conditioned ``HierarchicalPrior``
  (``n_levels = T``) whose conditionals ARE ``self.prior.conditionals`` (shared, frozen) and
  whose energies are new, plus the :class:`hebm.DiffusionSchedule`.

The losses (per minibatch, batch means; gradients are taken per parameter group by the trainer):

* ``gaussian`` — the negative ELBO
  ``−[log p(x|z_1) + log p_β(z̃) − log q(z̃|x)]`` at one reparametrised ``z̃ ~ q``.
* ``ebm``, variational scheme (default) — positives ``z̃⁺ ~ q(z̃|x)``; negatives ``z̃⁻ = T_β(u)``
  with ``u`` from ũ-space prior Langevin on ``F(T_β(u)) − ½‖u‖²`` started at ``N(0, I)``;
  * generator / encoder / conditionals: ``−[log p(x|z⁺_1) + log p_β(z̃⁺) + F(z̃⁺) − log q(z̃⁺|x)]
    + Σ log p(z⁻_i | z⁻_{i+1})`` — the ELBO of the tilted prior (PAPERS.md B §4.1) plus the
    negative phase of the conditionals (B §2.2; their positive phase is inside ``log p_β(z̃⁺)``);
  * energies: ``mean F(z̃⁻) − mean F(z̃⁺)``.
* ``ebm`` with ``posterior="langevin"`` (the MLE scheme of paper 1, B §2.2–2.3): positives by
  z-space posterior Langevin (``hebm.langevin_z_ref`` with x and the generator, from N(0, I),
  δ = 0.1), the generator on ``−log p(x|z⁺_1)``, the conditionals on
  ``−mean log p_cond(z⁺) + mean log p_cond(z⁻)``, the energies as above; the encoder is unused.
* ``diffusion`` — PAPERS.md B §3.4: ``u_0 = T_β⁻¹(z̃ ~ q)``, per-example level t, pairs by
  ``schedule.q_sample_pairs``, negatives by Langevin on ``p̃(u_t | u_{t+1})`` started at
  ``u_{t+1}``, loss ``mean[−(F(T(u⁺), t) − F(T(u⁻), t)) / s_t]``.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .diffusion import DiffusionSchedule
from .nn import MLP, as_activation
from .prior import HierarchicalPrior
from .philox import initial_noise
from .reference import langevin_ref, langevin_z_ref
from .sampling import langevin_fused, reverse_diffusion

PRIOR_TYPES = ("gaussian", "ebm", "diffusion")
LOG2PI = math.log(2 * math.pi)


class NonFiniteError(FloatingPointError):
    """A loss, energy or gradient became NaN/Inf (or absurdly large)."""


class Encoder(nn.Module):
    """Bottom-up inference network: ``h_1 = B_1(x)``, ``h_i = B_i(h_{i−1})``, heads → (m_i, s_i)."""

    def __init__(self, x_dim: int, dims, hidden, act="gelu", sigma_min: float = 1e-3):
        super().__init__()
        hidden = [int(h) for h in hidden]
        H = hidden[-1]
        self.dims = list(dims)
        self.sigma_min = sigma_min
        self.act = as_activation(act)
        self.blocks = nn.ModuleList([MLP([x_dim, *hidden], act)] + [MLP([H, H], act) for _ in dims[1:]])
        self.heads = nn.ModuleList(nn.Linear(H, 2 * d) for d in dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ``(mean, std)`` ``[B, D]`` (layers bottom-up)."""
        h = x
        mus, sigmas = [], []
        for block, head, d in zip(self.blocks, self.heads, self.dims):
            h = self.act(block(h))
            m, s = head(h).split(d, dim=1)
            mus.append(m)
            sigmas.append(F.softplus(s) + self.sigma_min)
        return torch.cat(mus, 1), torch.cat(sigmas, 1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r = (z - mu) / sigma
    return -(0.5 * (r * r + LOG2PI) + torch.log(sigma)).sum(1)


def run_langevin(prior: HierarchicalPrior, u: torch.Tensor, *, fused: bool, **kw) -> torch.Tensor:
    """``hebm.langevin_fused(backend="auto")`` with ``fused``, else ``hebm.langevin_ref``."""
    if fused:
        return langevin_fused(prior, u, backend="auto", **kw)
    return langevin_ref(prior, u, **kw)


def default_model_config(**kw) -> dict:
    cfg = dict(
        prior="ebm",
        x_dim=64,
        image_shape=[1, 8, 8],
        latent_dims=[16, 8, 4],
        enc_hidden=[256, 256],
        dec_hidden=[256, 256],
        prior_hidden=[128],
        energy_hidden=[64, 64],
        act="gelu",
        energy_act="gelu",
        spectral_norm=False,
        sigma_x=0.3,
        sigma_min=0.01,
        base_energy=False,  # diffusion: the init run had a joint EBM (its weights kept, unused)
        base_energy_hidden=None,
        base_energy_act=None,
        base_spectral_norm=False,
        T=3,
        diffusion_base_step=1e-3,
    )
    cfg.update(kw)
    return cfg


class HEBMModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        cfg = default_model_config(**cfg)
        if cfg["prior"] not in PRIOR_TYPES:
            raise ValueError(f"prior must be one of {', '.join(PRIOR_TYPES)}, got {cfg['prior']!r}")
        self.cfg = cfg
        self.kind = cfg["prior"]
        dims = [int(d) for d in cfg["latent_dims"]]
        self.dims = dims
        if self.kind == "diffusion":  # the frozen p_β of the stage-1 run
            eh = cfg["base_energy_hidden"] if cfg["base_energy"] else None
            ea, sn = cfg["base_energy_act"], cfg["base_spectral_norm"]
        else:
            eh = cfg["energy_hidden"] if self.kind == "ebm" else None
            ea, sn = cfg["energy_act"], cfg["spectral_norm"]
        self.prior = HierarchicalPrior(dims, prior_hidden=cfg["prior_hidden"], energy_hidden=eh, act=cfg["act"],
                                       energy_act=ea, spectral_norm=sn, sigma_min=cfg["sigma_min"])
        self.encoder = Encoder(cfg["x_dim"], dims, cfg["enc_hidden"], cfg["act"])
        self.decoder = nn.Sequential(MLP([dims[0], *cfg["dec_hidden"], cfg["x_dim"]], cfg["act"]), nn.Tanh())
        self.sigma_x = float(cfg["sigma_x"])
        self.dprior = None
        self.schedule = None
        if self.kind == "diffusion":
            self.dprior = HierarchicalPrior(
                dims, prior_hidden=cfg["prior_hidden"], energy_hidden=cfg["energy_hidden"], act=cfg["act"],
                energy_act=cfg["energy_act"], spectral_norm=cfg["spectral_norm"], n_levels=int(cfg["T"]),
                sigma_min=cfg["sigma_min"],
            )
            self.dprior.conditionals = self.prior.conditionals  # shared weights (frozen in stage 2)
            self.schedule = DiffusionSchedule(int(cfg["T"]), float(cfg["diffusion_base_step"]))

    # ------------------------------------------------------------------ parameter groups
    def generator_parameters(self) -> list[nn.Parameter]:
        """Generator, inference network and the conditionals of ``p_β``."""
        if self.kind == "diffusion":
            return []
        return [*self.encoder.parameters(), *self.decoder.parameters(), *self.prior.conditionals.parameters()]

    def energy_parameters(self) -> list[nn.Parameter]:
        if self.kind == "ebm":
            return list(self.prior.energies.parameters())
        if self.kind == "diffusion":
            return list(self.dprior.energies.parameters())
        return []

    @property
    def sampling_prior(self) -> HierarchicalPrior:
        return self.dprior if self.kind == "diffusion" else self.prior

    @property
    def D(self) -> int:
        return sum(self.dims)

    # ------------------------------------------------------------------ pieces
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Generator mean ``g(z_1)`` from flat latents ``[B, D]`` (or ``z_1`` alone)."""
        z1 = z[:, : self.dims[0]] if z.shape[1] != self.dims[0] else z
        return self.decoder(z1)

    def log_px(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(x; g(z_1), σ_x² I)`` per row."""
        r = (x - self.decode(z)) / self.sigma_x
        return -0.5 * (r * r).sum(1) - x.shape[1] * (math.log(self.sigma_x) + 0.5 * LOG2PI)

    def q_sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None, mean: bool = False):
        """Reparametrised ``z̃ ~ q(z̃|x)``; returns ``(z, log q(z|x), mu, sigma)``."""
        mu, sigma = self.encoder(x)
        if mean:
            z = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + sigma * eps
        return z, gaussian_log_prob(z, mu, sigma), mu, sigma

    def log_prior_unnorm(self, z: torch.Tensor) -> torch.Tensor:
        """Un-normalised ``log p(z̃)``: ``log p_β(z̃) + F(z̃)`` (``F ≡ 0`` for gaussian). For
        diffusion, ``log p_β(z̃) + F(z̃, 0)/s_0`` — the level-0 conditional EBM read as an
        estimate of the marginal (recovery likelihood), documented as an approximation."""
        out = self.prior.log_p_beta(z)
        if self.kind == "ebm":
            out = out + self.prior.energy(z)
        elif self.kind == "diffusion":
            s0 = float(self.schedule.step_variance(0))
            out = out + self.dprior.energy(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device)) / s0
        return out

    # ------------------------------------------------------------------ priors: sampling
    @torch.no_grad()
    def sample_latents(self, n: int, *, seed: int, n_steps: int, step_size: float, fused: bool = False,
                       chain_offset: int = 0, return_u: bool = False, return_levels: bool = False):
        """Latents from the model's prior: ancestral (gaussian), ũ-space Langevin from N(0, I)
        then T_β (ebm), or the reverse ũ-diffusion then T_β (diffusion).  Seeded, chain-exact."""
        p0 = next(self.parameters())
        ids = torch.arange(chain_offset, chain_offset + n, dtype=torch.long, device=p0.device)
        if self.kind == "diffusion":
            out = reverse_diffusion(self.dprior, self.schedule, n_steps=n_steps, batch=n, seed=seed, chain_ids=ids,
                                    backend="auto" if fused else "ref", return_levels=return_levels)
            u, levels = out if return_levels else (out, None)
            z = self.prior.T(u)
            if return_levels:
                return z, levels
            return (z, u) if return_u else z
        u = initial_noise(seed, n, self.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
        if self.kind == "ebm" and n_steps > 0:
            u = run_langevin(self.prior, u, fused=fused, n_steps=n_steps, step_size=step_size, seed=seed, chain_ids=ids)
        z = self.prior.T(u)
        return (z, u) if return_u else z

    @torch.no_grad()
    def sample(self, n: int, **kw) -> torch.Tensor:
        return self.decode(self.sample_latents(n, **kw))

    # ------------------------------------------------------------------ posterior
    def posterior_langevin(self, x: torch.Tensor, *, seed: int, n_steps: int, step_size: float) -> torch.Tensor:
        """z-space posterior Langevin (authors' MLE scheme), init N(0, I) from the seed."""
        g = torch.Generator(device=x.device).manual_seed(seed % 2**63)
        z0 = torch.randn(x.shape[0], self.D, generator=g, device=x.device, dtype=x.dtype)
        return langevin_z_ref(self.prior, z0, n_steps=n_steps, step_size=step_size, x=x, decoder=self.decoder,
                              sigma_x=self.sigma_x, seed=seed).detach()

    # ------------------------------------------------------------------ losses
    def loss_gaussian(self, x, generator) -> dict:
        z, logq, _, _ = self.q_sample(x, generator)
        rec = self.log_px(x, z)
        lpb = self.prior.log_p_beta(z)
        elbo = rec + lpb - logq
        return dict(loss_g=-elbo.mean(), elbo=elbo.mean().detach(), recon=-rec.mean().detach(),
                    kl=(logq - lpb).mean().detach())

    def loss_ebm(self, x, generator, *, lseed: int, chain_ids, n_steps: int, step_size: float, fused: bool,
                 posterior: str = "q", post_seed: int = 0, post_steps: int = 40, post_step_size: float = 0.1) -> dict:
        B = x.shape[0]
        # negatives: ũ-space prior Langevin from N(0, I), z⁻ = T(u)
        t0 = time.perf_counter()
        with torch.no_grad():
            u0 = initial_noise(lseed, B, self.D, chain_ids=chain_ids, device=x.device, dtype=x.dtype)
            u = run_langevin(self.prior, u0, fused=fused, n_steps=n_steps, step_size=step_size, seed=lseed,
                             chain_ids=chain_ids)
            z_neg = self.prior.T(u)
        ms = (time.perf_counter() - t0) * 1e3 / max(n_steps, 1)
        out = dict(langevin_ms=ms)
        if posterior == "q":
            z, logq, _, _ = self.q_sample(x, generator)
            rec = self.log_px(x, z)
            lpb = self.prior.log_p_beta(z)
            f_pos = self.prior.energy(z)
            loss_g = -(rec + lpb + f_pos - logq).mean() + self.prior.log_p_conditionals(z_neg).mean()
            z_pos = z.detach()
            out.update(recon=-rec.mean().detach(), kl=(logq - lpb).mean().detach())
        elif posterior == "langevin":
            t1 = time.perf_counter()
            z_pos = self.posterior_langevin(x, seed=post_seed, n_steps=post_steps, step_size=post_step_size)
            out["posterior_ms"] = (time.perf_counter() - t1) * 1e3 / max(post_steps, 1)
            rec = self.log_px(x, z_pos)
            loss_g = -rec.mean() - self.prior.log_p_conditionals(z_pos).mean() + self.prior.log_p_conditionals(z_neg).mean()
            out.update(recon=-rec.mean().detach())
        else:
            raise ValueError(f"posterior must be 'q' or 'langevin', got {posterior!r}")
        fn = self.prior.energy(z_neg)
        if posterior == "q":
            # loss_g already holds −mean f(z⁺) (z⁺ from q, not detached), whose gradient in the
            # energy parameters is exactly the positive phase of loss_e; so one backward of
            # loss_g + mean f(z⁻) yields both gradient sets (generator side: loss_g's; energy side:
            # loss_e's) with one energy pass on z⁺ instead of two.
            fp = f_pos.detach()
            loss_e = fn.mean() - fp.mean()
            joint = loss_g + fn.mean()
        else:  # loss_g does not touch the energies: the joint loss is the plain sum
            fp = self.prior.energy(z_pos)
            loss_e = fn.mean() - fp.mean()
            joint = loss_g + loss_e
        out.update(loss_g=loss_g, loss_e=loss_e, loss_joint=joint, f_pos=fp.mean().detach(), f_neg=fn.mean().detach())
        return out

    def loss_diffusion(self, x, generator, *, lseed: int, chain_ids, n_steps: int, fused: bool) -> dict:
        B = x.shape[0]
        T = self.schedule.T
        with torch.no_grad():
            z, _, _, _ = self.q_sample(x, generator)
            u0 = self.prior.T_inv(z)
            t = torch.randint(0, T, (B,), generator=generator, device=x.device)
            n1 = torch.randn(u0.shape, generator=generator, device=x.device, dtype=x.dtype)
            n2 = torch.randn(u0.shape, generator=generator, device=x.device, dtype=x.dtype)
            u_pos, u_next = self.schedule.q_sample_pairs(u0, t, noise=n1, noise_next=n2)
            kw = self.schedule.langevin_kwargs(t, u_next)
            t0 = time.perf_counter()
            u_neg = run_langevin(self.dprior, u_next, fused=fused, n_steps=n_steps, seed=lseed, chain_ids=chain_ids, **kw)
            ms = (time.perf_counter() - t0) * 1e3 / max(n_steps, 1)
            z_pos, z_neg = self.dprior.T(u_pos), self.dprior.T(u_neg)
            s = self.schedule.step_variance(t.cpu()).to(x.device, x.dtype)
        fp = self.dprior.energy(z_pos, t)
        fn = self.dprior.energy(z_neg, t)
        loss = (-(fp - fn) / s).mean()
        return dict(loss_e=loss, f_pos=fp.mean().detach(), f_neg=fn.mean().detach(), langevin_ms=ms)


__all__ = ["HEBMModel", "Encoder", "NonFiniteError", "PRIOR_TYPES", "default_model_config", "run_langevin", "gaussian_log_prob"]
