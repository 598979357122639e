"""What every latent-variable model shares (:class:`LatentModel`: encoder and inference network,
decoder, the hierarchy ``p_β``), the Gaussian prior model (:class:`GaussianModel`, the
hierarchical VAE), and the helpers the other kinds build on: the sampler call of their chains
(:func:`run_langevin`) and the loss terms they share (:func:`energy_penalty`, :func:`kl_weight`).
The package docstring (:mod:`hebm.models`) states every kind's learning signal."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..prior.hierarchical import HierarchicalPrior
from ..prior.philox import initial_noise
from ..sampler.dispatch import langevin_fused
from ..sampler.reference import langevin_ref
from .inference import LOG2PI, BottomUpInference, Posterior, TopDownInference, kl_penalty
from .networks import ConvDecoder, ConvEncoder, LadderConvDecoder, LadderMLPDecoder, MLPDecoder, MLPEncoder


class NonFiniteError(FloatingPointError):
    """A loss, energy or gradient became NaN/Inf (or absurdly large)."""



def run_langevin(prior: HierarchicalPrior, u: torch.Tensor, *, fused, **kw) -> torch.Tensor:
    """``hebm.langevin_fused(backend="auto")`` with ``fused``, else ``hebm.langevin_ref``.  ``fused``
    may be the trainer's samplers (a dict prior → :class:`hebm.Sampler`, refreshed after every change
    of the weights): a prior among them runs on its Sampler."""
    if fused:
        sampler = fused.get(prior) if isinstance(fused, dict) else None
        if sampler is not None:
            return sampler.run(u, **kw)
        return langevin_fused(prior, u, backend="auto", **kw)
    return langevin_ref(prior, u, **kw)


class LatentModel(nn.Module):
    """The shared parts: encoder + inference network, decoder, the hierarchy ``p_β``.

    What differs between the prior types is said by the class (the entry points ask it, they
    do not branch on the name): ``kind`` (the ``--prior`` name), ``tilted`` (a prior other than
    p_β: an energy tilts it), ``learns_energies``, ``trains_chain_step`` (``--langevin-step-size``
    sets its prior chain's δ), ``two_stage_only`` / ``two_stage_optional`` (whether ``--init``
    is required / allowed), ``has_levels`` (a reverse diffusion's levels), ``serves_as_stage1``,
    ``ignored_settings``, and the methods below."""

    kind = ""
    has_levels = False  # a diffusion: its reverse chain passes through levels worth drawing
    tilted = False
    learns_energies = False
    trains_chain_step = False
    two_stage_only = False
    two_stage_optional = False
    serves_as_stage1 = True  # a trained run of this type can be frozen under a two-stage prior
    #: training settings this kind has no use for, each with why: given anyway they are refused by
    #: name (hebm.training.settings) rather than ignored without a word
    ignored_settings: dict = {}

    @classmethod
    def is_two_stage(cls, init) -> bool:
        """Whether a run of this type with ``--init`` = ``init`` trains on a frozen stage 1."""
        return cls.two_stage_only or (cls.two_stage_optional and bool(init))

    @classmethod
    def stage1_settings(cls, base: dict) -> dict:
        """Model settings a two-stage run of this type takes from its stage-1 run's config."""
        return {}

    def posterior_draw(self, x, tcfg, *, seed: int) -> torch.Tensor:
        """A posterior sample for scoring: z ~ q(z | x) (the EBM with ``--posterior langevin``:
        its posterior Langevin chain)."""
        return self.posterior(x, torch.Generator(device=x.device).manual_seed(seed)).z

    def lower_layer_chain(self, step_size: float):
        """``(tilt scale, δ)`` of the chain that redraws the lower layers of z given the upper
        ones (hebm.evaluate's LLR): None when the prior draws them exactly (no tilt)."""
        return None

    def long_run(self, u, *, K: int, seed: int, chain_ids, step_size: float, fused: bool, snapshots: int,
                 metropolis: bool, record, trace=None, trace_every: int = 0, temperatures=None, swap_every: int = 1,
                 swaps: dict = None):
        """Paper 1's long-run chain from ``u``: ``(log π per step, snapshot steps, acceptance per
        segment)``, ``record(u, t)`` called at each snapshot.  ``trace(step, u, log π [n, B], draws)``,
        when given, is called after every sampler call with the state after ``step`` steps, the
        per-chain log π of the call's n steps and ``draws``: with ``trace_every`` > 0 (the ebm) the
        ``(step, state)`` after each of its multiples within the call, recorded inside the sampler
        (``trace_every`` of the call record: the chain, its log π and the snapshots are the same bit
        for bit), else None."""
        raise ValueError("--long-run needs an ebm or diffusion checkpoint (the gaussian prior is sampled exactly)")

    def __init__(self, cfg: ModelConfig, *, energy_hidden=None, energy_act=None, spectral_norm=False):
        super().__init__()
        self.cfg = cfg
        dims = [int(d) for d in cfg.latent_dims]
        self.dims = dims
        self.prior = HierarchicalPrior(dims, prior_hidden=cfg.prior_hidden, energy_hidden=energy_hidden, act=cfg.act,
                                       energy_act=energy_act, spectral_norm=spectral_norm, sigma_min=cfg.sigma_min,
                                       sigma_clamp=cfg.sigma_clamp)
        width = int(cfg.enc_hidden[-1])
        ladder = cfg.generator == "ladder"
        if cfg.arch == "conv":
            self.encoder = ConvEncoder(cfg.image_shape, cfg.channels, width, cfg.act)
            self.decoder = (LadderConvDecoder(dims, cfg.image_shape, cfg.channels, cfg.act) if ladder else
                            ConvDecoder(dims[0], cfg.image_shape, cfg.channels, cfg.act))
        else:
            self.encoder = MLPEncoder(cfg.x_dim, cfg.enc_hidden, cfg.act)
            self.decoder = (LadderMLPDecoder(dims, cfg.dec_hidden, cfg.x_dim, cfg.act) if ladder else
                            MLPDecoder(dims[0], cfg.dec_hidden, cfg.x_dim, cfg.act))
        self.ladder = ladder
        inf = TopDownInference if cfg.inference == "topdown" else BottomUpInference
        self.inference = inf(self.encoder.out_dim, dims, width, cfg.act)
        self.sigma_x = float(cfg.sigma_x)

    # ------------------------------------------------------------------ parameter groups
    #: names (prefixes) of the parameters a two-stage run learns afresh; everything else comes from
    #: the stage-1 checkpoint (``--init``) and stays frozen, bit for bit
    stage2_prefixes: tuple = ()

    @property
    def two_stage(self) -> bool:
        """True when this model trains only new energies on a frozen stage-1 model."""
        return False

    def generator_parameters(self) -> list:
        return [*self.encoder.parameters(), *self.inference.parameters(), *self.decoder.parameters(),
                *self.prior.conditionals.parameters()]

    def energy_parameters(self) -> list:
        return []

    @property
    def sampling_prior(self) -> HierarchicalPrior:
        """The prior the Langevin samplers run on."""
        return self.prior

    @property
    def D(self) -> int:
        return sum(self.dims)

    def power_iteration(self) -> None:
        self.sampling_prior.power_iteration()

    # ------------------------------------------------------------------ pieces
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Generator mean from flat latents ``[B, D]``: ``g(z̃)`` (the ladder: every layer reaches
        the image) or ``g(z_1)`` (the bottom layer alone)."""
        return self.decoder(z if self.ladder else z[:, : self.dims[0]])

    def log_px(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(x; g(z_1), σ_x² I)`` per row."""
        r = (x - self.decode(z)) / self.sigma_x
        return -0.5 * (r * r).sum(1) - x.shape[1] * (math.log(self.sigma_x) + 0.5 * LOG2PI)

    def posterior(self, x: torch.Tensor, generator=None, mean: bool = False) -> Posterior:
        """A draw of ``q(z̃ | x)`` (``mean=True``: every layer at its conditional mean)."""
        return self.inference(self.encoder(x), self.prior, generator=generator, mean=mean)

    def log_prior_unnorm(self, z: torch.Tensor) -> torch.Tensor:
        """The model's un-normalised ``log p(z̃)`` (``log p_β`` here)."""
        return self.prior.log_p_beta(z)

    def tilt_terms(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, L]``: the tilt ``log p(z̃) − log p_β(z̃)`` (up to a constant) layer by layer, in nats
        of the model's prior (0 for the Gaussian prior)."""
        return z.new_zeros(z.shape[0], len(self.dims))

    def tilt(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z̃) − log p_β(z̃)`` up to a constant (0 for the Gaussian prior)."""
        return self.tilt_terms(z).sum(1)

    def elbo_parts(self, x, post: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_px(x, post.z), post.kl

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latents(self, n: int, *, seed: int, n_steps: int = 0, step_size: float = 0.0, fused: bool = False,
                       chain_offset: int = 0, return_u: bool = False, return_levels: bool = False, check: str = "warn"):
        """Latents ``z̃`` from the model's prior (ancestral here), seeded and chain-exact."""
        u = self._initial(n, seed, chain_offset)
        z = self.prior.T(u)
        return (z, u) if return_u else z

    def _initial(self, n, seed, chain_offset):
        p0 = next(self.parameters())
        ids = torch.arange(chain_offset, chain_offset + n, dtype=torch.long, device=p0.device)
        return initial_noise(seed, n, self.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)

    @torch.no_grad()
    def sample(self, n: int, **kw) -> torch.Tensor:
        return self.decode(self.sample_latents(n, **kw))

    @torch.no_grad()
    def sample_base(self, n: int, *, seed: int, chain_offset: int = 0) -> torch.Tensor:
        """Decodes of ancestral samples of this generator's Gaussian prior ``p_β`` (whatever prior
        the model adds on top): ``g(T_β(ũ))``, ``ũ`` the seeded N(0, I) draws the model's own
        chains start from, so base and model samples are coupled chain by chain."""
        return self.decode(self.prior.T(self._initial(n, seed, chain_offset)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, *, generator=None) -> torch.Tensor:
        """``g(z̃)`` with ``z̃ ~ q(z̃ | x)``: decodes of the aggregate posterior (the Recon floor)."""
        return self.decode(self.posterior(x, generator).z)

    # ------------------------------------------------------------------ learning
    def stationarity(self, x, *, n: int, seed: int, n_steps: int, step_size: float, fused: bool = False, labels=None):
        """The energy-based prior's stationarity (f⁺ − f⁻ in nats); None for a prior without energies."""
        return None

    def chains(self, x, *, generator, seed: int, chain_ids, settings, fused: bool, labels=None) -> dict:
        """The sampler runs of one iteration (no gradient): nothing for the Gaussian prior."""
        return {}

    def losses(self, x, chains: dict, *, generator, settings, step: int, labels=None) -> dict:
        post = self.posterior(x, generator)
        rec, kl = self.elbo_parts(x, post)
        pen = kl_penalty(self.prior, post, weight=kl_weight(settings, step), free_bits=settings.free_bits)
        return dict(loss_g=-rec.mean() + pen, elbo=(rec - kl.sum(1)).mean().detach(), recon=-rec.mean().detach(),
                    kl=kl.sum(1).mean().detach(), kl_per_layer=kl.mean(0).detach())


def energy_penalty(settings, f_pos: torch.Tensor, f_neg: torch.Tensor) -> torch.Tensor:
    """``α·mean(F(z⁺)² + F(z⁻)²)`` (``settings.energy_l2`` = α; Du & Mordatch 2019): the EBM loss
    ``mean F(z⁻) − mean F(z⁺)`` is invariant to a constant and unbounded in F's scale; the penalty
    keeps F's magnitude — and the sharpness of what the prior chains must follow — in check."""
    a = float(getattr(settings, "energy_l2", 0.0) or 0.0)
    if a <= 0:
        return f_pos.new_zeros(())
    return a * (f_pos.pow(2).mean() + f_neg.pow(2).mean())


def kl_weight(settings, step: int) -> float:
    w = int(getattr(settings, "kl_warmup", 0) or 0)
    return 1.0 if w <= 0 else min(1.0, (step + 1) / w)


class GaussianModel(LatentModel):
    """The hierarchical VAE: Gaussian top-down prior ``p_β``, no tilt."""

    kind = "gaussian"
    ignored_settings = {"metropolis": "a gaussian prior has no Langevin chains in training to adjust (it is sampled "
                                      "exactly)",
                        "energy_l2": "a gaussian prior has no energies to penalise",
                        "temperatures": "a gaussian prior has no Langevin chains in training to temper (it is sampled exactly)",
                        "swap_every": "a gaussian prior has no Langevin chains in training to temper"}


__all__ = ["GaussianModel", "LatentModel", "NonFiniteError", "energy_penalty", "kl_weight", "run_langevin"]
