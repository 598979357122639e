"""The ũ-space diffusion of paper 2: the recovery-likelihood schedule and the per-level targets.

Schedule (docs/papers.md B §3.2, the authors' ``_DiffusionSchedule``): β_k = linspace(1e-4, 0.02, 1000)
with 1.0 appended; levels idx = [0, d, 2d, …, (T−1)d, 999], d = 1000 // (2(T−1));

    a_0 = √(1 − β_0),   a_j = Π_{k=idx[j−1]+1}^{idx[j]} √(1 − β_k),   σ_j = √(1 − a_j²),
    ā_j = Π_{m≤j} a_m,  σ̄_j = √(1 − ā_j²),   is_recovery[j] = [j < T],
    s_t = base · σ_{t+1}² · σ̄_t / σ̄_0      (the Langevin variance step at level t = 0 … T−1).

Forward: ``q_sample(u, t) = ā_t u + σ̄_t ε``; pairs ``u_{t+1} = a_{t+1} u_t + σ_{t+1} ε'``.

Reverse model at level t (given ``ũ = u_{t+1}``):

    log p̃(u_t | ũ) = F(T_β(u_t), t)/s_t − ½‖u_t‖² − is_recovery[t+1] · ‖a_{t+1} u_t − ũ‖² / (2σ_{t+1}²)

i.e. hebm's Langevin target with ``energy_scale = 1/s_t``, ``alpha = a_{t+1}``,
``sigma = σ_{t+1}`` and ``step_size = √s_t`` (the authors' ``(s/2)∇ + √s ξ`` form).
For T = 1 (no halfway levels) the index set is [0, 999].
"""
from __future__ import annotations


from typing import Optional

import torch


class DiffusionSchedule:
    """The T-level schedule; all coefficient arrays are float64 tensors on the CPU."""

    def __init__(self, T: int = 3, base_step_size: float = 3e-5):
        T = int(T)
        if not 1 <= T <= 6:
            raise ValueError(f"T must be in 1..6 (the authors' schedule), got {T}")
        if not base_step_size > 0:
            raise ValueError(f"base_step_size must be > 0, got {base_step_size}")
        self.T = T
        self.base_step_size = float(base_step_size)
        betas = torch.cat([torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), torch.ones(1, dtype=torch.float64)])
        if T == 1:
            idx = [0, 999]
        else:
            d = 1000 // (2 * (T - 1))
            idx = [j * d for j in range(T)] + [999]
        self.idx = idx
        sqrt_alphas = torch.sqrt(1.0 - betas)
        a = [sqrt_alphas[0]]
        for j in range(1, T + 1):
            a.append(torch.prod(sqrt_alphas[idx[j - 1] + 1 : idx[j] + 1]))
        self.a = torch.stack(a)  # [T+1]
        self.sigma = torch.sqrt(1.0 - self.a**2)
        self.a_bar = torch.cumprod(self.a, 0)
        self.sigma_bar = torch.sqrt(1.0 - self.a_bar**2)
        self.is_recovery = torch.tensor([1.0] * T + [0.0], dtype=torch.float64)
        # the reverse model's per-level sampler parameters, float64 [T] (level t = index):
        # δ = √s_t, λ = 1/s_t, a = a_{t+1}·is_recovery[t+1] (0 at the top level: no kernel), σ = σ_{t+1}
        s = self.step_variance()
        self._step_size = torch.sqrt(s)
        self._energy_scale = 1.0 / s
        self._alpha = self.a[1:] * self.is_recovery[1:]
        self._sigma = self.sigma[1:]

    # ------------------------------------------------------------------ coefficients
    def step_factor(self) -> torch.Tensor:
        """``s_t / base`` for t = 0 … T−1 (the authors' ``c_t_square``, which is not squared)."""
        return self.sigma[1:] ** 2 * self.sigma_bar[:-1] / self.sigma_bar[0]

    def step_variance(self, t=None) -> torch.Tensor:
        """``s_t`` for level(s) ``t`` (all levels when None)."""
        s = self.base_step_size * self.step_factor()
        return s if t is None else s[_levels(t, self.T)]

    # ------------------------------------------------------------------ forward process
    def q_sample(self, u0: torch.Tensor, t, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``u_t = ā_t u_0 + σ̄_t ε`` (per-row ``t`` allowed)."""
        t = _levels(t, self.T + 1, u0)
        noise = torch.randn_like(u0) if noise is None else noise
        ab = self.a_bar.to(u0)[t].reshape(-1, 1) if t.dim() else self.a_bar.to(u0)[t]
        sb = self.sigma_bar.to(u0)[t].reshape(-1, 1) if t.dim() else self.sigma_bar.to(u0)[t]
        return ab * u0 + sb * noise

    def q_sample_pairs(self, u0: torch.Tensor, t, noise=None, noise_next=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u_t, u_{t+1})`` with ``u_{t+1} = a_{t+1} u_t + σ_{t+1} ε'`` (independent noises)."""
        t = _levels(t, self.T, u0)
        u_t = self.q_sample(u0, t, noise)
        noise_next = torch.randn_like(u0) if noise_next is None else noise_next
        a = self.a.to(u0)[t + 1]
        s = self.sigma.to(u0)[t + 1]
        if t.dim():
            a, s = a.reshape(-1, 1), s.reshape(-1, 1)
        return u_t, a * u_t + s * noise_next

    # ------------------------------------------------------------------ reverse targets
    def level_params(self, t: int) -> dict:
        """The sampler parameters of the reverse step at level ``t`` (Python floats, computed in
        float64): ``step_size = √s_t``, ``energy_scale = 1/s_t``, ``alpha = a_{t+1}`` (0 at the top
        level t = T−1, which has no recovery kernel), ``sigma = σ_{t+1}``.  The one place these are
        derived; every backend's fused reverse diffusion reads them from here."""
        t = int(_levels(t, self.T))
        return dict(t=t, step_size=float(self._step_size[t]), energy_scale=float(self._energy_scale[t]),
                    alpha=float(self._alpha[t]), sigma=float(self._sigma[t]))

    def langevin_kwargs(self, t, u_next: torch.Tensor) -> dict:
        """Keyword arguments of ``langevin_ref`` for the reverse step at level(s) ``t`` (per-row
        levels allowed): :meth:`level_params` gathered per row, in ``u_next``'s dtype.

        Rows at the top level (t = T−1, no recovery kernel) get ``alpha = 0`` and a zero
        ``u_next`` row, which removes the kernel term and its gradient for those rows exactly,
        so one call serves a batch of mixed levels.
        """
        B = u_next.shape[0]
        t = _levels(t, self.T, u_next)
        tt = t.expand(B) if t.dim() == 0 else t
        idx = tt.cpu()
        dev, dt = u_next.device, u_next.dtype
        rec = self.is_recovery[idx + 1]
        kw = dict(
            step_size=self._step_size[idx].to(dev).to(dt),
            energy_scale=self._energy_scale[idx].to(dev).to(dt),
            t=tt.to(dev),
        )
        if bool((rec > 0).any()):
            kw.update(u_next=u_next * rec.to(dev).to(dt)[:, None], alpha=self._alpha[idx].to(dev).to(dt),
                      sigma=self._sigma[idx].to(dev).to(dt))
        return kw

    def table(self) -> dict:
        return dict(
            a=self.a.tolist(),
            sigma=self.sigma.tolist(),
            sigma_bar=self.sigma_bar.tolist(),
            step_factor=self.step_factor().tolist(),
        )

    def __repr__(self) -> str:
        return f"DiffusionSchedule(T={self.T}, base_step_size={self.base_step_size:g})"


def _levels(t, n: int, like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An int or ``[B]`` integer tensor of levels, checked to lie in [0, n)."""
    if isinstance(t, torch.Tensor):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must be an integer level or an integer tensor, got dtype {t.dtype}")
        tt = t.long()
    else:
        if isinstance(t, float) and not float(t).is_integer():
            raise TypeError(f"t must be an integer level, got {t}")
        tt = torch.tensor(int(t), dtype=torch.long)
    if tt.numel() and (int(tt.min()) < 0 or int(tt.max()) >= n):
        raise ValueError(f"level t must lie in [0, {n - 1}], got values in [{int(tt.min())}, {int(tt.max())}]")
    if like is not None and tt.dim() == 1 and tt.shape[0] != like.shape[0]:
        raise ValueError(f"t has {tt.shape[0]} rows but the latents have {like.shape[0]}")
    if like is not None:
        tt = tt.to(like.device)
    return tt


__all__ = ["DiffusionSchedule"]

