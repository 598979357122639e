"""The hierarchical latent prior: top-down Gaussian conditionals, the map T_β, the joint energy.

Latents ``z̃ = (z_1 … z_L)``, ``z_1`` nearest the data, ``z_L`` on top, ``d_i = dims[i-1]``.

* Gaussian hierarchy ``p_β``:  ``p(z_L) = N(0, I)``,  ``p(z_i | z_{i+1}) = N(μ_i, σ_i²)`` with
  ``(μ_i, ℓ_i) = g_i(z_{i+1})`` (one MLP with output ``2·d_i``) and ``σ_i = exp(s_c(ℓ_i)) + σ_min``,
  ``s_c(ℓ) = c·tanh(ℓ/c)`` a soft clamp (``sigma_clamp`` c; c = 0: none, ``s_0(ℓ) = ℓ``).
* Whitening map ``z̃ = T_β(ũ)``:  ``z_L = u_L``,  ``z_i = μ_i(z_{i+1}) + σ_i(z_{i+1}) ⊙ u_i``;
  under ``p_β``, ``ũ ~ N(0, I)``.
* Joint energy ``F(z̃; t) = Σ_i f_i(z_i; t)`` (``f`` is a *negative* energy: larger is likelier),
  which tilts the prior, ``p(z̃) ∝ exp(F(z̃)) p_β(z̃)``.
* ũ-space target (docs/design.md §2), per chain b:

      log π(u) = λ_b · F(T_β(u); t_b) − ½‖u‖² − [cond] ‖a_b·u − u_next‖² / (2 σ_b²)

Flat state ``u`` is ``[B, D]`` with the layers concatenated bottom-up (u_1 first).  Every method
also accepts a list of per-layer tensors and answers in the same structure.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .nn import MLP

Latents = Union[torch.Tensor, Sequence[torch.Tensor]]


class LayerStructure:
    """``L``, ``D`` and ``has_energy`` of anything with ``dims`` (per-layer widths) and
    ``energies`` (None or empty for a plain Gaussian prior): the prior and the kernels' packed
    descriptions of it answer these the same way."""

    @property
    def L(self) -> int:
        return len(self.dims)

    @property
    def D(self) -> int:
        return sum(self.dims)

    @property
    def has_energy(self) -> bool:
        return bool(self.energies)


class HierarchicalPrior(LayerStructure, nn.Module):
    """Top-down Gaussian prior ``p_β`` with an optional joint EBM tilt ``F = Σ f_i``.

    Args:
        dims: latent sizes ``d_1 … d_L`` (bottom → top), L ≥ 1.
        prior_hidden: hidden widths of each conditional MLP ``g_i: d_{i+1} → 2·d_i``.
        energy_hidden: hidden widths of each energy MLP ``f_i: d_i → 1``; ``None`` for the plain
            Gaussian prior (F ≡ 0).
        act / energy_act: activations of the conditionals / energies (``hebm.prior.nn`` names).
        bias: Linear layers with bias.
        spectral_norm: spectrally normalise the energies' Linear weights (as the authors do; the
            conditionals, i.e. ``p_β`` itself, are never normalised).
        n_levels: make the energies level-conditioned (paper 2: one conditional EBM per
            diffusion level, ``t ∈ {0 … n_levels−1}``).
        sigma_min: the floor in ``σ = exp(s_c(ℓ)) + σ_min`` (0.01 in the authors' code).
        sigma_clamp: c of the soft clamp ``s_c(ℓ) = c·tanh(ℓ/c)`` of the log σ outputs, which bounds
            ``σ ≤ e^c + σ_min`` (NVAE soft-clamps at c = 5).  Without it, where a conditional
            extrapolates, ``σ = exp(ℓ(z))`` can grow exponentially along a prior chain and the
            sampler diverges (RESULTS.md).  0: no clamp.
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        prior_hidden: Sequence[int] = (64,),
        energy_hidden: Optional[Sequence[int]] = (64, 64),
        act="gelu",
        energy_act=None,
        bias: bool = True,
        spectral_norm: bool = False,
        n_levels: Optional[int] = None,
        level_embed_dim: int = 32,
        sigma_min: float = 0.01,
        sigma_clamp: float = 0.0,
    ):
        super().__init__()
        dims = _sizes("dims", dims, allow_empty=False)
        prior_hidden = _sizes("prior_hidden", prior_hidden)
        energy_hidden = None if energy_hidden is None else _sizes("energy_hidden", energy_hidden)
        if not isinstance(sigma_min, (int, float)) or isinstance(sigma_min, bool) or not math.isfinite(sigma_min) \
                or sigma_min < 0:
            raise ValueError(f"sigma_min must be a finite number >= 0, got {sigma_min!r}")
        self.dims = tuple(dims)  # latent sizes d_1 … d_L (bottom → top)
        if not isinstance(sigma_clamp, (int, float)) or isinstance(sigma_clamp, bool) or not math.isfinite(sigma_clamp) \
                or sigma_clamp < 0:
            raise ValueError(f"sigma_clamp must be a finite number >= 0 (0: no clamp), got {sigma_clamp!r}")
        self.sigma_min = float(sigma_min)
        self.sigma_clamp = float(sigma_clamp)
        self._config = dict(
            dims=dims,
            prior_hidden=[int(h) for h in prior_hidden],
            energy_hidden=None if energy_hidden is None else [int(h) for h in energy_hidden],
            act=str(act),
            energy_act=None if energy_act is None else str(energy_act),
            bias=bool(bias),
            spectral_norm=bool(spectral_norm),
            n_levels=n_levels,
            level_embed_dim=int(level_embed_dim),
            sigma_min=float(sigma_min),
            sigma_clamp=float(sigma_clamp),
        )
        # conditionals[i] is g_{i+1}: z_{i+2} -> (mu_{i+1}, l_{i+1}) in 1-based paper indices.
        self.conditionals = nn.ModuleList(
            MLP([dims[i + 1], *prior_hidden, 2 * dims[i]], act, bias=bias) for i in range(len(dims) - 1)
        )
        if energy_hidden is None:
            if n_levels is not None:
                raise ValueError("n_levels needs energies: pass energy_hidden")
            self.energies = None
        else:
            self.energies = nn.ModuleList(
                MLP(
                    [d, *energy_hidden, 1],
                    energy_act if energy_act is not None else act,
                    bias=bias,
                    spectral_norm=spectral_norm,
                    n_levels=n_levels,
                    level_embed_dim=level_embed_dim,
                )
                for d in dims
            )
        self.n_levels = None if n_levels is None else int(n_levels)  # None: unconditional

    # ----------------------------------------------------------------- structure helpers
    def config(self) -> dict:
        return dict(self._config)

    def split(self, u: Latents) -> list[torch.Tensor]:
        """Flat ``[B, D]`` → per-layer list ``[u_1 … u_L]`` (lists pass through, checked)."""
        if isinstance(u, torch.Tensor):
            if u.dim() != 2 or u.shape[1] != self.D:
                raise ValueError(f"expected a latent tensor of shape [B, {self.D}] (D = sum{tuple(self.dims)}), got {tuple(u.shape)}")
            return list(torch.split(u, self.dims, dim=1))
        parts = list(u)
        if len(parts) != self.L or any(p.dim() != 2 or p.shape[1] != d for p, d in zip(parts, self.dims)):
            got = [tuple(p.shape) for p in parts]
            raise ValueError(f"expected {self.L} per-layer tensors of shapes [B, d_i] with d = {self.dims}, got {got}")
        return parts

    @staticmethod
    def cat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), dim=1)

    def _like(self, parts: list[torch.Tensor], template: Latents) -> Latents:
        return self.cat(parts) if isinstance(template, torch.Tensor) else parts

    @torch.no_grad()
    def neutralise_energies(self) -> None:
        """``F ≡ 0``: zero the last Linear (weight and bias) of every energy, so the tilted prior
        starts as ``p_β`` itself and a level-conditioned one as the plain prior chain
        (docs/design.md §2b).  At PyTorch's default init ``‖∇_u F‖`` is O(0.1–1) per chain and,
        in the diffusion's ``λ = 1/s_t, δ = √s_t`` parametrisation, moves a chain by ½∇F per step
        whatever s_t is — K such steps carry every level far off p_β before training starts.
        The hidden layers keep their random init, so the gradient reaches them once the last
        layer has moved.  Refused with spectral norm: a normalised layer has no zero."""
        if self.energies is None:
            raise ValueError("this prior has no energies to neutralise (energy_hidden=None)")
        for f in self.energies:
            last = f.layers[-1] if isinstance(f, MLP) else None
            if last is None:
                raise TypeError(f"neutralise_energies needs hebm.prior.nn.MLP energies, got {type(f).__name__}")
            if last.spectral_norm:
                raise ValueError("a spectrally normalised energy cannot start at F ≡ 0 (W/σ(W) has no zero): "
                                 "turn spectral norm off (--no-spectral-norm) or neutral init off (--no-neutral-init)")
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()

    def power_iteration(self, n_iter: int = 1) -> None:
        """One spectral-norm power iteration on every Linear (no-op without spectral norm)."""
        for m in self.modules():
            if isinstance(m, MLP):
                m.power_iteration(n_iter)

    # ----------------------------------------------------------------- the Gaussian hierarchy
    def conditional(self, i: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ_i, σ_i)`` of ``p(z_i | z_{i+1})`` for the 0-based layer index ``i < L-1``."""
        out = self.conditionals[i](z_above)
        mu, log_sigma = out.split(self.dims[i], dim=1)
        if self.sigma_clamp > 0:
            c = self.sigma_clamp
            log_sigma = c * torch.tanh(log_sigma / c)
        return mu, torch.exp(log_sigma) + self.sigma_min

    def T(self, u: Latents) -> Latents:
        """``z̃ = T_β(ũ)``, top-down: ``z_L = u_L``, ``z_i = μ_i(z_{i+1}) + σ_i(z_{i+1}) ⊙ u_i``."""
        us = self.split(u)
        zs = [None] * self.L
        zs[-1] = us[-1]
        for i in range(self.L - 2, -1, -1):
            mu, sigma = self.conditional(i, zs[i + 1])
            zs[i] = mu + sigma * us[i]
        return self._like(zs, u)

    def T_inv(self, z: Latents) -> Latents:
        """``ũ = T_β⁻¹(z̃)``: ``u_i = (z_i − μ_i(z_{i+1})) / σ_i(z_{i+1})``, ``u_L = z_L``."""
        zs = self.split(z)
        us = [None] * self.L
        us[-1] = zs[-1]
        for i in range(self.L - 1):
            mu, sigma = self.conditional(i, zs[i + 1])
            us[i] = (zs[i] - mu) / sigma
        return self._like(us, z)

    def log_p_beta_terms(self, z: Latents) -> torch.Tensor:
        """``[B, L]``: per layer ``log N(z_i; μ_i(z_{i+1}), σ_i²)`` (i < L) and ``log N(z_L; 0, I)``."""
        zs = self.split(z)
        log2pi = math.log(2 * math.pi)
        cols = []
        for i in range(self.L - 1):
            mu, sigma = self.conditional(i, zs[i + 1])
            r = (zs[i] - mu) / sigma
            cols.append(-(0.5 * (r.pow(2) + log2pi) + torch.log(sigma)).sum(1))
        cols.append(-0.5 * (zs[-1].pow(2) + log2pi).sum(1))
        return torch.stack(cols, 1)

    def log_p_beta(self, z: Latents) -> torch.Tensor:
        """``log p_β(z̃) = log N(z_L; 0, I) + Σ_{i<L} log N(z_i; μ_i, σ_i²)``, per row ``[B]``."""
        return self.log_p_beta_terms(z).sum(1)

    def log_p_conditionals(self, z: Latents) -> torch.Tensor:
        """``Σ_{i<L} log p(z_i | z_{i+1})`` per row — the part of ``log p_β`` with parameters."""
        zs = self.split(z)
        log2pi = math.log(2 * math.pi)
        out = zs[-1].new_zeros(zs[-1].shape[0])
        for i in range(self.L - 1):
            mu, sigma = self.conditional(i, zs[i + 1])
            r = (zs[i] - mu) / sigma
            out = out - (0.5 * (r.pow(2) + log2pi) + torch.log(sigma)).sum(1)
        return out

    @torch.no_grad()
    def sample_gaussian(self, n: int, *, generator: Optional[torch.Generator] = None, flat: bool = True) -> Latents:
        """Ancestral sample of the Gaussian hierarchy ``p_β`` (no EBM tilt)."""
        p = next(self.parameters(), None)  # L = 1 without energy has no parameters at all
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else (generator.device if generator is not None else "cpu")
        u = torch.randn(n, self.D, generator=generator, dtype=dtype, device=device)
        return self.T(u) if flat else self.T(self.split(u))

    # ----------------------------------------------------------------- the joint energy
    def energy_terms(self, z: Latents, t=None) -> torch.Tensor:
        """``[B, L]``: ``f_i(z_i; t)`` for every layer (zeros for the plain Gaussian prior)."""
        zs = self.split(z)
        if self.energies is None:
            return zs[0].new_zeros(zs[0].shape[0], self.L)
        if self.n_levels is None and t is not None:
            raise ValueError("t was given but this prior's energies are not level-conditioned (n_levels=None)")
        # an energy may be any module mapping [B, d_i] to [B, 1] (the reference runs it; the fused
        # kernels take hebm.prior.nn.MLP only): it receives t only when the prior is level-conditioned
        return torch.cat([f(zi, t) if t is not None or isinstance(f, MLP) else f(zi)
                          for f, zi in zip(self.energies, zs)], dim=1)

    def energy(self, z: Latents, t=None) -> torch.Tensor:
        """``F(z̃; t) = Σ_i f_i(z_i; t)`` per row ``[B]``."""
        return self.energy_terms(z, t).sum(1)

    # ----------------------------------------------------------------- the ũ-space target
    def log_density(self, u: Latents, *, energy_scale=1.0, t=None, u_next=None, alpha=None, sigma=None) -> torch.Tensor:
        """The Langevin target of docs/design.md §2, per row ``[B]`` (up to a constant):

            log π(u) = λ_b · F(T_β(u); t_b) − ½‖u‖² − [cond] ‖a_b·u − u_next‖² / (2 σ_b²)

        ``energy_scale`` (λ), ``alpha`` (a), ``sigma`` (σ): scalars or ``[B]`` tensors; the
        kernel term is present only when ``u_next`` is given (then ``alpha`` and ``sigma`` are
        required).
        """
        flat = u if isinstance(u, torch.Tensor) else self.cat(self.split(u))
        self.split(flat)  # shape check
        out = -0.5 * flat.pow(2).sum(1)
        if self.energies is not None:
            lam = _per_row(energy_scale, flat)
            out = out + lam * self.energy(self.T(flat), t)
        if u_next is not None:
            nxt = u_next if isinstance(u_next, torch.Tensor) else self.cat(self.split(u_next))
            if alpha is None or sigma is None:
                raise ValueError("u_next was given: the kernel term also needs alpha and sigma")
            a, s = _per_row(alpha, flat), _per_row(sigma, flat)
            out = out - (a[:, None] * flat - nxt).pow(2).sum(1) / (2 * s * s)
        return out


def _sizes(name: str, xs, *, allow_empty: bool = True) -> list[int]:
    """Layer sizes: positive integers (a float such as 3.7 would silently become 3: refused)."""
    try:
        xs = list(xs)
    except TypeError:
        raise TypeError(f"{name} must be a list of positive integers, got {xs!r}") from None
    out = []
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, numbers.Integral) and not (
                isinstance(x, torch.Tensor) and x.numel() == 1 and not x.dtype.is_floating_point):
            raise TypeError(f"{name} must be a list of positive integers, got {xs!r} ({x!r} is not an integer)")
        out.append(int(x))
    if (not out and not allow_empty) or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a {'non-empty ' if not allow_empty else ''}list of positive layer sizes, got {out}")
    return out


def _per_row(x, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``[B]`` parameter as a ``[B]`` tensor of ``like``'s dtype/device."""
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return x.expand(like.shape[0]) if x.dim() == 0 else x
