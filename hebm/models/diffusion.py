"""The latent-space hierarchical EBM diffusion model (paper 2): a T-level ũ-space diffusion whose
reverse conditionals are EBMs, trained two-stage on a frozen model."""
from __future__ import annotations

import math

import torch

from ..config import ModelConfig
from ..prior.diffusion import DiffusionSchedule
from ..prior.hierarchical import HierarchicalPrior
from ..sampler.dispatch import reverse_diffusion
from . import base  # base.run_langevin, called through the module: the one seam that replaces the sampler
from .base import LatentModel


class DiffusionModel(LatentModel):
    """Paper 2: a T-level ũ-space diffusion whose reverse conditionals are EBMs, on a frozen
    trained model (``self.prior`` its p_β; ``self.dprior`` shares those conditionals and holds the
    level-conditioned energies)."""

    kind = "diffusion"
    serves_as_stage1 = False
    has_levels = True
    tilted = True
    learns_energies = True
    two_stage_only = True
    ignored_settings = {"energy_l2": "the diffusion's recovery-likelihood loss takes no energy penalty",
                        "temperatures": "the diffusion's per-level chains take no temperature ladder (replica exchange "
                                        "runs the ebm prior's chains)",
                        "swap_every": "the diffusion's per-level chains take no temperature ladder"}

    @classmethod
    def stage1_settings(cls, base: dict) -> dict:
        # its p_β model keeps the stage-1 run's energies (unused), so their shapes
        return dict(base_prior=base["prior"], base_energy_hidden=base.get("energy_hidden"),
                    base_energy_act=base.get("energy_act"), base_spectral_norm=bool(base.get("spectral_norm")))

    def lower_layer_chain(self, step_size: float):
        # the level-0 marginal: F/s_0 (its tilt already carries 1/s_0), sampled with the level-0 step √s_0
        return 1.0, math.sqrt(float(self.schedule.step_variance(0)))

    def long_run(self, u, *, K: int, seed: int, chain_ids, step_size: float, fused: bool, snapshots: int,
                 metropolis: bool, record, trace=None, trace_every: int = 0, temperatures=None, swap_every: int = 1,
                 swaps: dict = None):
        if temperatures:
            raise ValueError("temperatures: the diffusion's long run changes target at every level; replica exchange "
                             "runs the ebm prior's long run")
        if trace_every:
            raise ValueError("trace_every: the diffusion's long run is traced once per level (its K steps)")
        sch, logs, acceptance, marks = self.schedule, [], [], []
        n = u.shape[0]
        for j, t in enumerate(range(sch.T - 1, -1, -1)):
            kw = sch.langevin_kwargs(t, u)
            u, info = base.run_langevin(self.dprior, u, fused=fused, n_steps=K, seed=seed, chain_ids=chain_ids,
                                   step_offset=j * K, return_info=True, check="raise", metropolis=metropolis, **kw)
            logs.append(info["log_density"].mean(1))
            if trace is not None:
                trace((j + 1) * K, u, info["log_density"])
            if metropolis:
                acceptance.append(float(info["accept_rate"].mean()))
            marks.append((j + 1) * K)
            record(u, torch.full((n,), t, dtype=torch.long, device=u.device))
        return torch.cat(logs), marks, acceptance

    def __init__(self, cfg: ModelConfig):
        base_energy = cfg.base_prior == "ebm"
        super().__init__(cfg, energy_hidden=cfg.base_energy_hidden if base_energy else None,
                         energy_act=cfg.base_energy_act, spectral_norm=cfg.base_spectral_norm)
        self.dprior = HierarchicalPrior(self.dims, prior_hidden=cfg.prior_hidden, energy_hidden=cfg.energy_hidden,
                                        act=cfg.act, energy_act=cfg.energy_act, spectral_norm=cfg.spectral_norm,
                                        n_levels=int(cfg.T), sigma_min=cfg.sigma_min, sigma_clamp=cfg.sigma_clamp)
        self.dprior.conditionals = self.prior.conditionals  # shared weights (frozen in stage 2)
        self.schedule = DiffusionSchedule(int(cfg.T), float(cfg.diffusion_step))
        if cfg.neutral_init:
            self.dprior.neutralise_energies()

    stage2_prefixes = ("dprior.",)

    @property
    def two_stage(self) -> bool:
        return True  # paper 2 is two-stage only

    def generator_parameters(self) -> list:
        return []  # stage 2: everything but the level energies is frozen

    def energy_parameters(self) -> list:
        return list(self.dprior.energies.parameters())

    @property
    def sampling_prior(self) -> HierarchicalPrior:
        return self.dprior

    def tilt_terms(self, z):
        s0 = float(self.schedule.step_variance(0))
        return self.dprior.energy_terms(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device)) / s0

    def log_prior_unnorm(self, z):
        """The model's level-0 marginal, un-normalised: ``log p_β(z̃) + F(z̃, 0)/s_0`` (in the
        recovery-likelihood parametrisation the level-t EBM is the log marginal at level t; the
        ũ-space density ``exp(F(T(u), 0)/s_0) N(u; 0, I)`` pulled back to z̃)."""
        return self.prior.log_p_beta(z) + self.tilt(z)

    @torch.no_grad()
    def sample_latents(self, n: int, *, seed: int, n_steps: int = 0, step_size: float = 0.0, fused: bool = False,
                       chain_offset: int = 0, return_u: bool = False, return_levels: bool = False, check: str = "warn"):
        """ũ_T ~ N(0, I), the reverse diffusion (K = n_steps per level), then ``z̃ = T_β(ũ_0)``."""
        p0 = next(self.parameters())
        ids = torch.arange(chain_offset, chain_offset + n, dtype=torch.long, device=p0.device)
        out = reverse_diffusion(self.dprior, self.schedule, n_steps=n_steps, batch=n, seed=seed, chain_ids=ids,
                                backend="auto" if fused else "ref", return_levels=return_levels, check=check)
        u, levels = out if return_levels else (out, None)
        z = self.prior.T(u)
        if return_levels:
            return z, levels
        return (z, u) if return_u else z

    def chains(self, x, *, generator, seed: int, chain_ids, settings, fused: bool, labels=None) -> dict:
        B, T = x.shape[0], self.schedule.T
        with torch.no_grad():
            z = self.posterior(x, generator).z
            u0 = self.prior.T_inv(z)
            t = torch.randint(0, T, (B,), generator=generator, device=x.device)
            n1 = torch.randn(u0.shape, generator=generator, device=x.device, dtype=x.dtype)
            n2 = torch.randn(u0.shape, generator=generator, device=x.device, dtype=x.dtype)
            u_pos, u_next = self.schedule.q_sample_pairs(u0, t, noise=n1, noise_next=n2)
            kw = self.schedule.langevin_kwargs(t, u_next)
            u_neg = base.run_langevin(self.dprior, u_next, fused=fused, n_steps=settings.langevin_steps, seed=seed,
                                 chain_ids=chain_ids, metropolis=settings.metropolis, **kw)
            return dict(z_pos=self.dprior.T(u_pos), z_neg=self.dprior.T(u_neg), t=t)

    def losses(self, x, chains: dict, *, generator, settings, step: int, labels=None) -> dict:
        t = chains["t"]
        s = self.schedule.step_variance(t.cpu()).to(x.device, x.dtype)
        # the level-t model's energy is F(·, t)/s_t: its values and gaps are reported in those nats
        fp = self.dprior.energy(chains["z_pos"], t) / s
        fn = self.dprior.energy(chains["z_neg"], t) / s
        gap = (fp - fn).detach()
        per_level = [float(gap[t == j].mean()) if bool((t == j).any()) else float("nan") for j in range(self.schedule.T)]
        return dict(loss_e=(fn - fp).mean(), f_pos=fp.mean().detach(), f_neg=fn.mean().detach(),
                    f_gap=gap.mean(), f_gap_per_level=per_level)

    @torch.no_grad()
    def stationarity(self, x, *, n: int, seed: int, n_steps: int, step_size: float = 0.0, fused: bool = False,
                     labels=None) -> dict:
        """Per level t, the recovery-likelihood loss's stationarity in nats of the level's energy
        F(·, t)/s_t: ``f_pos_per_level`` the mean over n training pairs ``(u_t⁺, u_{t+1})`` built
        from ``u_0 = T_β⁻¹(z̃ ~ q)`` of ``F(T(u_t⁺), t)/s_t``, ``f_neg_per_level`` the same at the
        level-t chains started at ``u_{t+1}`` (as in training), ``f_gap_per_level`` their
        difference (0 at the stationary point); ``f_gap`` the mean over levels."""
        g = torch.Generator(device=x.device).manual_seed(seed)
        idx = torch.randint(0, x.shape[0], (n,), generator=g, device=x.device)
        z = torch.cat([self.posterior(x[idx][j: j + 512], g).z for j in range(0, n, 512)])
        u0 = self.prior.T_inv(z)
        ids = torch.arange(10**6, 10**6 + n, dtype=torch.long, device=x.device)
        fps, fns = [], []
        for t in range(self.schedule.T):
            n1 = torch.randn(u0.shape, generator=g, device=x.device, dtype=x.dtype)
            n2 = torch.randn(u0.shape, generator=g, device=x.device, dtype=x.dtype)
            u_pos, u_next = self.schedule.q_sample_pairs(u0, t, noise=n1, noise_next=n2)
            kw = self.schedule.langevin_kwargs(t, u_next)
            u_neg = base.run_langevin(self.dprior, u_next, fused=fused, n_steps=n_steps, seed=seed + 7 + t, chain_ids=ids, **kw)
            s_t = float(self.schedule.step_variance(t))
            tt = torch.full((n,), t, dtype=torch.long, device=x.device)
            fps.append(float(self.dprior.energy(self.dprior.T(u_pos), tt).mean()) / s_t)
            fns.append(float(self.dprior.energy(self.dprior.T(u_neg), tt).mean()) / s_t)
        gaps = [p - q for p, q in zip(fps, fns)]
        return dict(f_pos_per_level=fps, f_neg_per_level=fns, f_gap_per_level=gaps, f_gap=sum(gaps) / len(gaps))


__all__ = ["DiffusionModel"]
