"""The latent-variable models: generator, inference network, and the three prior types with their
learning signals (docs/papers.md B §2, §3, §4.1).

Every model holds

* the top-down hierarchy ``p_β(z̃) = p(z_L) Π_i p(z_i | z_{i+1})`` and, for ``ebm``, its joint tilt
  ``F = Σ_i f_i`` (``self.prior``, a :class:`hebm.HierarchicalPrior`; spectral norm, when asked,
  on the energies only);
* the generator ``p(x | z_1) = N(g(z_1), σ_x² I)`` (data in [-1, 1], fixed σ_x = 0.3 as the
  authors; images shown are the mean g(z_1)), an MLP or a DCGAN-like deconvolution net;
* the inference network ``q(z̃ | x)`` — by default *top-down* (:class:`TopDownInference`, LVAE's
  precision-weighted merge): a deterministic bottom-up pass ``d_1 = B_1(h(x)), d_i = B_i(d_{i−1})``
  gives per-layer Gaussian "likelihood" terms ``N(μ̂_i, σ̂_i²)``; sampling goes top-down,
  ``q(z_L | x) = N(μ̂_L, σ̂_L²)`` and ``q(z_i | z_{i+1}, x) ∝ N(μ̂_i, σ̂_i²) · p(z_i | z_{i+1})``, so a
  layer the data says nothing about falls back to its prior conditional instead of collapsing
  to N(0, I); the KL of every layer is analytic given the sampled layer above.  The mean-field
  bottom-up ``q(z_i | x)`` (:class:`BottomUpInference`) stays as an option (it collapses z_2, z_3:
  RESULTS.md).

The learning signals (batch means; parameter groups "generator" = encoder, inference, decoder,
conditionals; "energies"):

* ``gaussian`` — the negative ELBO ``−log p(x|z_1) + Σ_i KL_i``, with KL warm-up (weight β rising
  from 0 to 1) and free bits (a layer's mean KL below λ nats is not penalised).
* ``ebm``, variational (default): positives ``z̃⁺ ~ q(z̃|x)``, negatives ``z̃⁻ = T_β(u)`` from
  ũ-space prior Langevin on ``F(T_β(u)) − ½‖u‖²`` started at N(0, I) (both papers' short-run
  scheme in the whitened space);
  generator side ``−log p(x|z⁺_1) + Σ KL_i − F(z̃⁺) + Σ log p(z⁻_i | z⁻_{i+1})`` — the ELBO of the
  tilted prior (B §4.1) plus the negative phase of the conditionals, which enter log Z (B §2.2);
  energies ``mean F(z̃⁻) − mean F(z̃⁺)``, whose stationary point is E_q F = E_p F (logged as
  ``f_gap = f_pos − f_neg``).
* ``ebm`` with ``posterior="langevin"`` — the MLE scheme of paper 1 (B §2.2–2.3): positives by
  z-space posterior Langevin from N(0, I).
* ``ebm`` two-stage (``two_stage``, ``--init``) — the authors' two-stage scheme (B §2.5) on a frozen
  trained model: only the energies learn, ``mean F(z̃⁻) − mean F(z̃⁺)`` with ``z̃⁺ ~ q(z̃|x)`` of the
  frozen inference network and ``z̃⁻`` from the ũ-space prior chain; the EBM tilts p_β toward the
  aggregate posterior of that one generator (so priors are compared on the same generator).
* ``diffusion`` — paper 2 (B §3.4), two-stage on a frozen trained model: ``u_0 = T_β⁻¹(z̃ ~ q)``,
  a random level t per example, pairs by ``schedule.q_sample_pairs``, negatives by Langevin on
  ``p̃(u_t | u_{t+1})`` started at ``u_{t+1}``, loss ``mean[−(F(T(u⁺), t) − F(T(u⁻), t)) / s_t]``;
  the level-t model's energy is ``F/s_t``, so its energies and gaps are reported in nats of F/s_t.
  Its prior density (for scores) is the model's level-0 marginal ``exp(F(z̃, 0)/s_0) p_β(z̃)``
  (the recovery-likelihood parametrisation: the level-t EBM models the marginal at level t).

Sampling (``chains``) and the losses (``losses``) are separate calls, so the trainer times the
samplers from outside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_state_checked
from .config import PRIOR_TYPES, ModelConfig, TrainConfig, build
from .controllable import controllable_class
from .diffusion import DiffusionSchedule
from .nn import MLP, as_activation
from .philox import initial_noise
from .prior import HierarchicalPrior
from .reference import langevin_ref, langevin_z_ref
from .dispatch import langevin_fused, reverse_diffusion

LOG2PI = math.log(2 * math.pi)


class NonFiniteError(FloatingPointError):
    """A loss, energy or gradient became NaN/Inf (or absurdly large)."""


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    r = (z - mu) / sigma
    return -(0.5 * (r * r + LOG2PI) + torch.log(sigma)).sum(1)


def gaussian_kl(mu_q, s_q, mu_p, s_p) -> torch.Tensor:
    """``KL(N(μ_q, s_q²) ‖ N(μ_p, s_p²))`` summed over the last dimension, per row."""
    r = s_q / s_p
    return (torch.log(s_p / s_q) + 0.5 * (r * r + ((mu_q - mu_p) / s_p) ** 2 - 1.0)).sum(-1)


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


# ---------------------------------------------------------------------------------- encoders, decoders
def _conv_geometry(shape) -> tuple[int, int, int]:
    C, H, W = (int(v) for v in shape)
    if H != W or H not in (28, 32):
        raise ValueError(f"the conv encoder/decoder take 28x28 or 32x32 images, got {C}x{H}x{W}; use --arch mlp")
    return C, H, H // 4


class MLPEncoder(nn.Module):
    """``h(x)``: an MLP with the activation after every layer."""

    def __init__(self, x_dim: int, hidden, act):
        super().__init__()
        self.net = MLP([x_dim, *hidden], act)
        self.act = as_activation(act)
        self.out_dim = int(hidden[-1])

    def forward(self, x):
        return self.act(self.net(x))


class ConvEncoder(nn.Module):
    """``h(x)`` for 28×28 / 32×32 images (DCGAN-like): two 4×4 stride-2 convolutions
    (C → c → 2c, spatial /4), flatten, one Linear to ``out_dim``."""

    def __init__(self, image_shape, channels: int, out_dim: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        self.shape = (C, H, H)
        c = int(channels)
        self.convs = nn.ModuleList([nn.Conv2d(C, c, 4, 2, 1), nn.Conv2d(c, 2 * c, 4, 2, 1)])
        self.fc = nn.Linear(2 * c * h0 * h0, out_dim)
        self.act = as_activation(act)
        self.out_dim = int(out_dim)

    def forward(self, x):
        h = x.reshape(-1, *self.shape)
        for conv in self.convs:
            h = self.act(conv(h))
        return self.act(self.fc(h.flatten(1)))


class MLPDecoder(nn.Module):
    """``g(z_1) = tanh(MLP(z_1))``, flat images."""

    def __init__(self, z_dim: int, hidden, x_dim: int, act):
        super().__init__()
        self.net = MLP([z_dim, *hidden, x_dim], act)

    def forward(self, z1):
        return torch.tanh(self.net(z1))


class ConvDecoder(nn.Module):
    """``g(z_1)`` for 28×28 / 32×32 images (DCGAN-like): Linear to 2c × H/4 × W/4, two 4×4
    stride-2 transposed convolutions (2c → c → C), tanh; flat output."""

    def __init__(self, z_dim: int, image_shape, channels: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        c = int(channels)
        self.h0, self.c = h0, c
        self.fc = nn.Linear(z_dim, 2 * c * h0 * h0)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ConvTranspose2d(c, C, 4, 2, 1)])
        self.act = as_activation(act)

    def forward(self, z1):
        h = self.act(self.fc(z1)).reshape(-1, 2 * self.c, self.h0, self.h0)
        h = self.act(self.deconvs[0](h))
        return torch.tanh(self.deconvs[1](h)).flatten(1)


def ladder_entries(L: int, stages: int) -> list[int]:
    """The stage (0 = the first, coarsest or deepest) at which each latent layer enters a ladder
    generator of ``stages`` stages, bottom-up: z_L enters at stage 0 and passes every later
    stage, z_1 at the last (the finest scale, the shallowest path to the image), the layers
    between spread over the stages between (VLAE's ladder; NVAE injects every group at its own
    resolution the same way).  ``[entry of z_1, …, entry of z_L]``."""
    if L == 1:
        return [0]
    last = stages - 1
    return [round(last * (L - 1 - i) / (L - 1)) for i in range(L)]


class _Ladder(nn.Module):
    """What the ladder generators share: the per-layer weights ``fade`` ``[L]`` their injections
    are multiplied by (a buffer, so a checkpoint decodes as it was trained), 1 after training's
    progressive warm-up (:meth:`progressive`)."""

    def _init_fade(self, L: int):
        self.register_buffer("fade", torch.ones(L))

    @torch.no_grad()
    def progressive(self, step: int, per_layer: int) -> None:
        """pro-VLAE's progressive ladder (Li et al., ICLR 2020), the top layer first: z_L alone for
        ``per_layer`` iterations, then z_{L−1} fades in linearly over the next ``per_layer``, then
        z_{L−2}, …; so the deepest path learns the most abstract factor before the shallower
        paths can take it (``per_layer`` = 0: every layer at full weight)."""
        L = self.fade.numel()
        for i in range(L):
            phase = L - 1 - i  # 0 for the top layer
            w = 1.0 if per_layer <= 0 or phase == 0 else min(1.0, max(0.0, (step + 1 - phase * per_layer) / per_layer))
            self.fade[i] = w


class LadderMLPDecoder(_Ladder):
    """``g(z̃)`` with every latent layer reaching the image, MLP form (flat data): the stream starts
    from ``z_L`` and passes ``len(hidden) + 1`` Linear layers; ``z_i`` joins the stream at the
    layer :func:`ladder_entries` gives it (a Linear of its own added to that layer's
    pre-activation), so the top layer has the deepest path to the image and ``z_1`` the
    shallowest (it enters at the output layer with the default two hidden layers and three
    latent layers).  ``tanh`` output, flat images."""

    def __init__(self, dims, hidden, x_dim: int, act):
        super().__init__()
        self.dims = [int(d) for d in dims]
        widths = [*(int(h) for h in hidden), int(x_dim)]
        self.entry = ladder_entries(len(self.dims), len(widths))
        self.layers = nn.ModuleList(nn.Linear(widths[j - 1], widths[j]) for j in range(1, len(widths)))
        self.inject = nn.ModuleList(nn.Linear(d, widths[e], bias=(i == len(self.dims) - 1))
                                    for i, (d, e) in enumerate(zip(self.dims, self.entry)))
        self.act = as_activation(act)
        self._init_fade(len(self.dims))

    def forward(self, z):
        zs = z.split(self.dims, dim=1)
        h = None
        for j in range(len(self.layers) + 1):
            pre = None if j == 0 else self.layers[j - 1](h)
            for i, e in enumerate(self.entry):
                if e == j:
                    a = self.inject[i](zs[i]) * self.fade[i]
                    pre = a if pre is None else pre + a
            h = torch.tanh(pre) if j == len(self.layers) else self.act(pre)
        return h


class LadderConvDecoder(_Ladder):
    """``g(z̃)`` for 28×28 / 32×32 images with every latent layer reaching the image at its own
    scale (VLAE's ladder generator, NVAE's per-resolution groups): ``z_L`` → Linear → a 2c × H/4
    map (the coarsest: the layout); a 4×4 stride-2 transposed convolution to c × H/2, where the
    middle layers join (each a Linear to a c × H/2 map, added); another to c/2 × H, the finest
    map, which ``z_1`` *modulates* (a Linear to a per-channel scale and shift, FiLM / StyleGAN's
    fine styles); a 3×3 convolution to C channels, tanh; flat output.

    Why z₁ modulates rather than paints (RESULTS.md §9): added as a full-resolution map, z₁ could
    draw any image as a sum of 16 pixel templates — it carried the digit's class (resampling it
    alone changed the class 44 % of the time) and its prior draws left pixel noise on every
    sample; as a per-channel scale and shift of the finest features it can change how the
    strokes the layers above laid out are drawn (thickness, contrast) but not where they are."""

    def __init__(self, dims, image_shape, channels: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        c = int(channels)
        self.dims = [int(d) for d in dims]
        self.maps = [(2 * c, h0), (c, 2 * h0), (max(c // 2, 1), 4 * h0)]  # (channels, side) per stage
        self.entry = ladder_entries(len(self.dims), len(self.maps))
        # the finest stage is modulated (FiLM) unless the ladder has one layer, which must draw the layout itself
        self.film = [e == len(self.maps) - 1 and len(self.dims) > 1 for e in self.entry]
        self.inject = nn.ModuleList(nn.Linear(d, 2 * self.maps[e][0] if film else self.maps[e][0] * self.maps[e][1] ** 2)
                                    for d, e, film in zip(self.dims, self.entry, self.film))
        self.ups = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 4, 2, 1),
                                  nn.ConvTranspose2d(c, self.maps[2][0], 4, 2, 1)])
        self.out = nn.Conv2d(self.maps[2][0], C, 3, 1, 1)
        self.act = as_activation(act)
        self._init_fade(len(self.dims))

    def forward(self, z):
        zs = z.split(self.dims, dim=1)
        h = None
        for j, (ch, side) in enumerate(self.maps):
            pre = None if j == 0 else self.ups[j - 1](h)
            for i, e in enumerate(self.entry):
                if e != j:
                    continue
                a = self.inject[i](zs[i]) * self.fade[i]
                if self.film[i]:
                    scale, shift = a.reshape(-1, 2 * ch, 1, 1).chunk(2, 1)
                    pre = pre * (1 + scale) + shift
                else:
                    a = a.reshape(-1, ch, side, side)
                    pre = a if pre is None else pre + a
            h = self.act(pre)
        return torch.tanh(self.out(h)).flatten(1)


# ---------------------------------------------------------------------------------- inference
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


# ---------------------------------------------------------------------------------- the models
class LatentModel(nn.Module):
    """The shared parts: encoder + inference network, decoder, the hierarchy ``p_β``.

    What differs between the prior types is said by the class (the entry points ask it, they
    do not branch on the name): ``kind`` (the ``--prior`` name), ``tilted`` (a prior other than
    p_β: an energy tilts it), ``learns_energies``, ``trains_chain_step`` (``--langevin-step-size``
    sets its prior chain's δ), ``two_stage_only`` / ``two_stage_optional`` (whether ``--init``
    is required / allowed), ``has_levels`` (a reverse diffusion's levels), ``serves_as_stage1``, and the methods below."""

    kind = ""
    has_levels = False  # a diffusion: its reverse chain passes through levels worth drawing
    tilted = False
    learns_energies = False
    trains_chain_step = False
    two_stage_only = False
    two_stage_optional = False
    serves_as_stage1 = True  # a trained run of this type can be frozen under a two-stage prior

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
                 metropolis: bool, record):
        """Paper 1's long-run chain from ``u``: ``(log π per step, snapshot steps, acceptance per
        segment)``, ``record(u, t)`` called at each snapshot."""
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
                 metropolis: bool, record):
        marks = sorted({int(round(K * (j + 1) / snapshots)) for j in range(snapshots)})
        logs, acceptance, done = [], [], 0
        for m in marks:
            u, info = run_langevin(self.prior, u, fused=fused, n_steps=m - done, step_size=step_size, seed=seed,
                                   chain_ids=chain_ids, step_offset=done, return_info=True, check="raise",
                                   metropolis=metropolis)
            logs.append(info["log_density"].mean(1))
            if metropolis:
                acceptance.append(float(info["accept_rate"].mean()))
            done = m
            record(u, None)
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
            u = run_langevin(self.prior, u, fused=fused, n_steps=n_steps, step_size=step_size, seed=seed, chain_ids=ids,
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
        with torch.no_grad():
            u0 = initial_noise(seed, x.shape[0], self.D, chain_ids=chain_ids, device=x.device, dtype=x.dtype)
            u = run_langevin(self.prior, u0, fused=fused, n_steps=settings.langevin_steps,
                             step_size=settings.langevin_step_size, seed=seed, chain_ids=chain_ids,
                             metropolis=settings.metropolis)
            out = dict(z_neg=self.prior.T(u))
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

    @classmethod
    def stage1_settings(cls, base: dict) -> dict:
        # its p_β model keeps the stage-1 run's energies (unused), so their shapes
        return dict(base_prior=base["prior"], base_energy_hidden=base.get("energy_hidden"),
                    base_energy_act=base.get("energy_act"), base_spectral_norm=bool(base.get("spectral_norm")))

    def lower_layer_chain(self, step_size: float):
        # the level-0 marginal: F/s_0 (its tilt already carries 1/s_0), sampled with the level-0 step √s_0
        return 1.0, math.sqrt(float(self.schedule.step_variance(0)))

    def long_run(self, u, *, K: int, seed: int, chain_ids, step_size: float, fused: bool, snapshots: int,
                 metropolis: bool, record):
        sch, logs, acceptance, marks = self.schedule, [], [], []
        n = u.shape[0]
        for j, t in enumerate(range(sch.T - 1, -1, -1)):
            kw = sch.langevin_kwargs(t, u)
            u, info = run_langevin(self.dprior, u, fused=fused, n_steps=K, seed=seed, chain_ids=chain_ids,
                                   step_offset=j * K, return_info=True, check="raise", metropolis=metropolis, **kw)
            logs.append(info["log_density"].mean(1))
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
            u_neg = run_langevin(self.dprior, u_next, fused=fused, n_steps=settings.langevin_steps, seed=seed,
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
            u_neg = run_langevin(self.dprior, u_next, fused=fused, n_steps=n_steps, seed=seed + 7 + t, chain_ids=ids, **kw)
            s_t = float(self.schedule.step_variance(t))
            tt = torch.full((n,), t, dtype=torch.long, device=x.device)
            fps.append(float(self.dprior.energy(self.dprior.T(u_pos), tt).mean()) / s_t)
            fns.append(float(self.dprior.energy(self.dprior.T(u_neg), tt).mean()) / s_t)
        gaps = [p - q for p, q in zip(fps, fns)]
        return dict(f_pos_per_level=fps, f_neg_per_level=fns, f_gap_per_level=gaps, f_gap=sum(gaps) / len(gaps))


MODELS = {"gaussian": GaussianModel, "ebm": EBMModel, "diffusion": DiffusionModel}
assert set(MODELS) == set(PRIOR_TYPES)


def build_model(cfg: ModelConfig) -> LatentModel:
    """The model of a run from its :class:`hebm.config.ModelConfig` (with attribute heads when
    ``cfg.attributes`` is set: :mod:`hebm.controllable`)."""
    cls = MODELS[cfg.prior]
    if cfg.attributes:
        cls = controllable_class(cls)
    return cls(cfg)


def load_model(path: str, device="cpu"):
    """``(model, ModelConfig, TrainConfig, checkpoint)`` from a ``ckpt.pt`` written by ``hebm.train``
    (loaded with ``weights_only=True`` and verified: :func:`hebm.checkpoint.load_checkpoint`)."""
    ck = load_checkpoint(path, map_location=device)
    try:
        mcfg = build(ModelConfig, ck["model_config"])
        tcfg = build(TrainConfig, ck["train_config"])
        model = build_model(mcfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} holds an unusable config ({e})") from None
    load_state_checked(model, ck["model"], path)
    model.to(device).eval()
    return model, mcfg, tcfg, ck


__all__ = ["BottomUpInference", "ConvDecoder", "ConvEncoder", "DiffusionModel", "EBMModel", "GaussianModel",
           "LatentModel", "MLPDecoder", "MLPEncoder", "NonFiniteError", "Posterior", "TopDownInference", "build_model",
           "gaussian_kl", "gaussian_log_prob", "kl_penalty", "load_model", "run_langevin"]
