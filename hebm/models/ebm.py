"""The joint latent-space EBM prior model (paper 1): ``p(z̃) ∝ exp(Σ_i f_i(z_i)) p_β(z̃)``, learned
jointly with its generator (variational or MLE scheme) or two-stage on a frozen one."""
from __future__ import annotations

import torch

from ..config import ModelConfig
from ..prior.philox import initial_noise
from ..sampler.checks import draw_count
from ..sampler.reference import cold_chains, ladder_chain_ids, langevin_z_ref
from . import base  # base.run_langevin, called through the module: the one seam that replaces the sampler
from .base import LatentModel, energy_penalty, kl_weight
from .inference import kl_penalty


class EBMModel(LatentModel):
    """The joint latent-space EBM prior ``p(z̃) ∝ exp(Σ_i f_i(z_i)) p_β(z̃)`` (paper 1)."""

    kind = "ebm"
    tilted = True
    learns_energies = True
    trains_chain_step = True
    two_stage_optional = True

    def posterior_draw(self, x, tcfg, *, seed: int) -> torch.Tensor:
        if tcfg.posterior == "langevin":
            return self.posterior_langevin(x, seed=seed, n_steps=tcfg.posterior_steps,
                                           step_size=tcfg.posterior_step_size)
        return super().posterior_draw(x, tcfg, seed=seed)

    def lower_layer_chain(self, step_size: float):
        return 1.0, step_size

    def long_run(self, u, *, K: int, seed: int, chain_ids, step_size: float, fused: bool, snapshots: int,
                 metropolis: bool, record, trace=None, trace_every: int = 0, temperatures=None, swap_every: int = 1,
                 swaps: dict = None):
        """With ``temperatures`` (replica exchange): ``u`` holds ladder groups of R consecutive
        chains, and everything handed on — log π, ``record``, ``trace``, the acceptance — is the
        cold chains' (slot R − 1); ``swaps`` (a dict) sums each segment's ``swap_attempts``,
        ``swap_accepted`` ``[G, R−1]`` and ``round_trips`` (counted within a segment)."""
        marks = sorted({int(round(K * (j + 1) / snapshots)) for j in range(snapshots)})
        R = len(temperatures) if temperatures else 1
        ladder = dict(temperatures=temperatures, swap_every=swap_every) if temperatures else {}

        def cold(x, dim=0):
            return cold_chains(x, R, dim) if temperatures else x

        # trace_every: the sampler records the states at its multiples inside each call (draws); the
        # chain, its log π and the snapshots are those of the untraced run (a draw only copies the state)
        logs, acceptance, done = [], [], 0
        for m in marks:
            draws = dict(trace_every=trace_every) if trace_every > 0 and draw_count(m - done, done, trace_every) else {}
            u, info = base.run_langevin(self.prior, u, fused=fused, n_steps=m - done, step_size=step_size, seed=seed,
                                   chain_ids=chain_ids, step_offset=done, return_info=True, check="raise",
                                   metropolis=metropolis, **draws, **ladder)
            log_density = cold(info["log_density"], 1)
            logs.append(log_density.mean(1))
            if trace is not None:
                trace(m, cold(u), log_density,
                      list(zip(info["draw_steps"].tolist(), cold(info["draws"], 1).unbind(0))) if draws else
                      [] if trace_every > 0 else None)
            if metropolis:  # one call per snapshot segment: its rate
                acceptance.append(float(cold(info["accept_rate"]).mean()))
            if temperatures and swaps is not None:
                for key in ("swap_attempts", "swap_accepted", "round_trips"):
                    swaps[key] = info[key] + swaps[key] if key in swaps else info[key]
            done = m
            record(cold(u), None)
        return torch.cat(logs), marks, acceptance

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, energy_hidden=cfg.energy_hidden, energy_act=cfg.energy_act,
                         spectral_norm=cfg.spectral_norm)
        self._two_stage = bool(cfg.two_stage)
        if cfg.neutral_init:
            self.prior.neutralise_energies()

    @property
    def two_stage(self) -> bool:
        return self._two_stage

    @property
    def stage2_prefixes(self) -> tuple:
        return ("prior.energies.",) if self._two_stage else ()

    def generator_parameters(self) -> list:
        return [] if self._two_stage else super().generator_parameters()

    def energy_parameters(self) -> list:
        return list(self.prior.energies.parameters())

    def log_prior_unnorm(self, z):
        return self.prior.log_p_beta(z) + self.prior.energy(z)

    def tilt_terms(self, z):
        return self.prior.energy_terms(z)

    @torch.no_grad()
    def sample_latents(self, n: int, *, seed: int, n_steps: int = 0, step_size: float = 0.0, fused: bool = False,
                       chain_offset: int = 0, return_u: bool = False, return_levels: bool = False, check: str = "warn"):
        """ũ-space Langevin from N(0, I) on ``F(T_β(u)) − ½‖u‖²``, then ``z̃ = T_β(u)``."""
        u = self._initial(n, seed, chain_offset)
        if n_steps > 0:
            ids = torch.arange(chain_offset, chain_offset + n, dtype=torch.long, device=u.device)
            u = base.run_langevin(self.prior, u, fused=fused, n_steps=n_steps, step_size=step_size, seed=seed, chain_ids=ids,
                             check=check)
        z = self.prior.T(u)
        return (z, u) if return_u else z

    def posterior_langevin(self, x, *, seed: int, n_steps: int, step_size: float) -> torch.Tensor:
        """z-space posterior Langevin (the authors' MLE scheme), init N(0, I) from the seed."""
        g = torch.Generator(device=x.device).manual_seed(seed % 2**63)
        z0 = torch.randn(x.shape[0], self.D, generator=g, device=x.device, dtype=x.dtype)
        return langevin_z_ref(self.prior, z0, n_steps=n_steps, step_size=step_size, x=x, decoder=self.decode,
                              sigma_x=self.sigma_x, seed=seed).detach()

    def chains(self, x, *, generator, seed: int, chain_ids, settings, fused: bool, labels=None) -> dict:
        """The negative samples ``z_neg`` (K prior steps from N(0, I)); with ``settings.temperatures``
        (replica exchange) each is the cold chain of a ladder group of R chains, and ``swap_rate``
        (the mean over the ladder's pairs) is logged beside the losses."""
        ladder = settings.temperatures
        R = len(ladder) if ladder else 1
        # a ladder: B groups of R chains, ids id·R + r (distinct ids stay distinct), the cold chains kept
        ids = ladder_chain_ids(chain_ids, R) if ladder else chain_ids
        pt = dict(temperatures=ladder, swap_every=settings.swap_every or 1, return_info=True) if ladder else {}
        with torch.no_grad():
            u0 = initial_noise(seed, ids.shape[0], self.D, chain_ids=ids, device=x.device, dtype=x.dtype)
            res = base.run_langevin(self.prior, u0, fused=fused, n_steps=settings.langevin_steps,
                                    step_size=settings.langevin_step_size, seed=seed, chain_ids=ids,
                                    metropolis=settings.metropolis, **pt)
            u, info = res if ladder else (res, None)
            out = dict(z_neg=self.prior.T(cold_chains(u, R) if ladder else u))
            if R > 1 and bool((info["swap_attempts"] > 0).any()):
                out["swap_rate"] = info["swap_accepted"].sum() / info["swap_attempts"].sum()
        if settings.posterior == "langevin":
            out["z_pos"] = self.posterior_langevin(x, seed=seed ^ 0x5EED, n_steps=settings.posterior_steps,
                                                   step_size=settings.posterior_step_size)
        return out

    def losses(self, x, chains: dict, *, generator, settings, step: int, labels=None) -> dict:
        z_neg = chains["z_neg"]
        fn = self.prior.energy(z_neg)
        if self._two_stage:
            # the energies alone (docs/papers.md B §2.5): positives from the frozen q, no generator loss
            with torch.no_grad():
                z_pos = self.posterior(x, generator).z
            fp = self.prior.energy(z_pos)
            out = dict(loss_e=fn.mean() - fp.mean() + energy_penalty(settings, fp, fn))
        elif settings.posterior == "langevin":
            z_pos = chains["z_pos"]
            rec = self.log_px(x, z_pos)
            loss_g = -rec.mean() - self.prior.log_p_conditionals(z_pos).mean() + self.prior.log_p_conditionals(z_neg).mean()
            fp = self.prior.energy(z_pos)
            loss_e = fn.mean() - fp.mean() + energy_penalty(settings, fp, fn)
            out = dict(loss_g=loss_g, loss_e=loss_e, recon=-rec.mean().detach())
        else:
            post = self.posterior(x, generator)
            rec, kl = self.elbo_parts(x, post)
            w = kl_weight(settings, step)
            # the prior term of the tilted-prior ELBO, KL(q ‖ p_β) − E_q F + log Z (its β-gradient is the
            # conditionals' negative phase), warmed up as one: a weight on the KL alone would leave
            # E_q F unopposed early on and drive q to wherever F is largest.  q_tilt="none" keeps q
            # and the generator off F (the EBM then tilts p_β toward the aggregate posterior).
            zq = post.z if settings.q_tilt == "ascend" else post.z.detach()
            fp = self.prior.energy(zq)
            pen = kl_penalty(self.prior, post, weight=w, free_bits=settings.free_bits)
            loss_g = -rec.mean() + pen + w * (self.prior.log_p_conditionals(z_neg).mean() - fp.mean())
            # loss_g holds −w·mean f(z⁺), whose gradient in the energy parameters is w times the
            # positive phase of the energies' loss mean f(z⁻) − mean f(z⁺): one backward of
            # loss_g + mean f(z⁻) (− (1−w)·mean f(z⁺) with z⁺ detached, while w < 1) gives both
            # gradient sets at once, one energy pass on z⁺ instead of two.
            joint = loss_g + fn.mean()
            if w < 1.0:
                joint = joint - (1.0 - w) * self.prior.energy(post.z.detach()).mean()
            if getattr(settings, "energy_l2", 0.0) > 0:  # the penalty on the energies only (z⁺ detached)
                joint = joint + energy_penalty(settings, self.prior.energy(post.z.detach()), fn)
            out = dict(loss_joint=joint, loss_g=loss_g.detach(), loss_e=(fn.mean() - fp.mean()).detach(),
                       recon=-rec.mean().detach(), kl=kl.sum(1).mean().detach(), kl_per_layer=kl.mean(0).detach(),
                       elbo=(rec - kl.sum(1)).mean().detach(), kl_weight=w)
        out.update(f_pos=fp.mean().detach(), f_neg=fn.mean().detach(), f_gap=(fp.mean() - fn.mean()).detach())
        if "swap_rate" in chains:  # (replica exchange: logged beside the losses)
            out["swap_rate"] = chains["swap_rate"]
        return out


    @torch.no_grad()
    def stationarity(self, x, *, n: int, seed: int, n_steps: int, step_size: float, fused: bool = False,
                     labels=None) -> dict:
        """``{"f_pos", "f_neg", "f_gap"}`` in nats: the mean energy of n posterior samples (z⁺ ~ q
        of random rows of ``x``) and of n prior chains run as in training (z⁻); the EBM loss's
        stationary point has ``f_gap = 0`` (F is linear in its last layer)."""
        g = torch.Generator(device=x.device).manual_seed(seed)
        idx = torch.randint(0, x.shape[0], (n,), generator=g, device=x.device)
        zp = torch.cat([self.posterior(x[idx][j: j + 512], g).z for j in range(0, n, 512)])
        zn = self.sample_latents(n, seed=seed + 7, n_steps=n_steps, step_size=step_size, fused=fused,
                                 chain_offset=10**6)
        fp, fn = float(self.prior.energy(zp).mean()), float(self.prior.energy(zn).mean())
        return dict(f_pos=fp, f_neg=fn, f_gap=fp - fn)


__all__ = ["EBMModel"]
