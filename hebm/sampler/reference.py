"""The reference samplers: hebm's update rule, stated once, and the plain loops that run it.

The update rule (every backend implements exactly this; docs/design.md §2)::

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,        ε ~ N(0, I),   K = n_steps times,

    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

with δ = ``step_size``, c = ``noise_scale``, λ = ``energy_scale``, a = ``alpha``, σ = ``sigma``
(each a scalar or a per-chain ``[B]`` tensor; ``t`` an int or ``[B]`` integer levels),
``F = Σ_i f_i`` the joint energy and ``z̃ = T_β(ũ)`` the whitening map of the prior.  Paper 2
writes the step in variance form ``u + (s/2)∇ + √s ξ``: pass ``step_size = √s``.  The gradient
is exact reverse-mode autograd through ``T_β`` and the energies.

ε is the explicit ``noise[k]`` (``[K, B, D]``) or, given ``seed``, the counter-based
Philox4x32-10 stream of :mod:`hebm.prior.philox` at step ``step_offset + k`` for chain
``chain_ids[b]`` — so a chain's trajectory depends neither on its batch nor on the backend.

With ``metropolis=True`` (MALA, docs/design.md §2b) that step is a proposal (c = 1), kept or
refused by the Metropolis–Hastings test::

    u' = u + (δ²/2) · ∇log π(u) + δ · ε
    accept  ⇔  log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u),
               log q(a | b) = −‖a − b − (δ²/2)·∇log π(b)‖² / (2δ²)        (0 where δ = 0)

U the explicit ``uniforms[k]`` (``[K, B]``) or stream 2 of the same Philox generator
(:func:`hebm.prior.philox.philox_accept_uniform`); on a refusal the chain stays and the step counter
still advances; a NaN test refuses.  The chain then leaves π invariant exactly, at any δ.
``adapt_steps`` N > 0: during steps 0 … N−1 each chain's log δ moves toward the acceptance
``target_accept`` (:func:`adapt_step_size`), frozen after them (so steps N … K−1 are a valid
Markov chain for π); the adapted δ is returned in ``info["step_size"]``.

Replica exchange (parallel tempering, docs/design.md §2c), with ``temperatures`` = the ladder
0 ≤ β_1 ≤ … ≤ β_R = 1: the B chains form B/R ladder groups of R consecutive chains (group g is
chains g·R … g·R+R−1; chain b sits in slot r = b mod R and always runs at β_r), and chain b runs
the update rule above (ULA or MALA) on its tempered target::

    log π_b(u) = β_r · λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

— β multiplies the energy term only (λ included: the chain's energy scale is β·λ), so β = 0 is
exactly the Gaussian prior p_β (ũ ~ N(0, I), with the kernel term when there is one); the level t
and the kernel term are not tempered.  A group shares its target but for β (λ, t, u_next, a, σ
equal within it; step_size and noise_scale may differ, e.g. larger steps for hot chains).  After
every step whose counter ``step_offset + k + 1`` is a multiple of m = ``swap_every`` comes swap
round n = (step_offset + k + 1)/m − 1: in each group the neighbour pairs (r, r+1) of one parity p
(r ≡ p mod 2) propose to exchange their states, accepted when::

    log U_(r) < (β_(r+1) − β_r) · (E(u_r) − E(u_(r+1))),      E(u) = λ · F(T_β(u); t)

(the Gaussian and kernel terms cancel; a NaN test refuses).  p = n mod 2 for ``swap_schedule``
``"deo"`` (deterministic even/odd alternation, non-reversible); for ``"even_odd"`` p = 0 when
the group's coin is < ½, else 1 (the reversible variant).  U_(r) and the coin are the explicit
``swap_uniforms[n]`` (``[n_rounds, B]``: a pair's U at its lower chain g·R + r, the coin at the
group's last chain g·R + R − 1) or stream 3 of the Philox generator at the step counter
``step_offset + k`` of the step the round follows (:func:`hebm.prior.philox.philox_swap_uniforms`:
counter ``(r mod 2, c, k, 3)`` for a pair's U with c the lower chain's id, ``(2, c, k, 3)`` for the
coin with c the group's last chain's id).  Swaps move states (with MALA, log π and its gradient are
those of the new state at the chain's own β: the reference evaluates them afresh after a round),
never temperatures.  Each step and each swap leaves the product of the tempered targets invariant,
so the cold chains (slot R − 1, β = 1) sample π.  :func:`replica_exchange` runs it.

Three samplers, each one argument check and then its loop:

* :func:`langevin_ref` — K steps on the target above (both papers' prior chains);
* :func:`reverse_diffusion_ref` — paper 2's sampler: ũ_T ~ N(0, I), then for t = T−1 … 0,
  K steps on ``p̃(u_t | u_{t+1})`` started at ``u_{t+1}`` (docs/papers.md B §3.5);
* :func:`langevin_z_ref` — the authors' z-space sampler of paper 1, for comparison.

The fused backends (:func:`hebm.langevin_fused`) are tested against these.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import torch

from ..prior.hierarchical import HierarchicalPrior
from ..prior.philox import philox_accept_uniform, philox_normal, philox_swap_uniforms
from .checks import check_langevin_args, check_reverse_args, level_args, swap_rounds
from .record import LANGEVIN, REVERSE, Latents, LangevinArgs, ReverseArgs, describe, signature
from .results import check_result, finish


# ------------------------------------------------------------------------------ the pieces of a step
def target(prior: HierarchicalPrior, a: LangevinArgs) -> Callable[[torch.Tensor], torch.Tensor]:
    """``u ↦ log π(u)`` (``[B]``) of the call ``a``: λ·F(T_β(u); t) − ½‖u‖² − [u_next] ‖a·u − u_next‖²/(2σ²)
    (:meth:`hebm.HierarchicalPrior.log_density`), the function the update rule ascends."""
    return lambda x: prior.log_density(x, energy_scale=a.energy_scale, t=a.t, u_next=a.u_next, alpha=a.alpha,
                                       sigma=a.sigma)


def step_coefficients(a: LangevinArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(δ²/2, c·δ)`` as ``[B, 1]`` columns: the per-chain factors of the update rule."""
    return (0.5 * a.step_size * a.step_size)[:, None], (a.noise_scale * a.step_size)[:, None]


def step_noise(a: LangevinArgs, k: int) -> torch.Tensor:
    """ε of step k (``[B, D]``, u's dtype): ``noise[k]``, or stream 0 of the seed at step
    ``step_offset + k`` for each chain id."""
    if a.noise is not None:
        return a.noise[k]
    return philox_normal(a.seed, a.chain_ids, a.step_offset + k, a.D, device=a.u.device).to(a.u.dtype)


def step_uniform(a: LangevinArgs, k: int) -> torch.Tensor:
    """U of step k's Metropolis test (``[B]``, in (0, 1)): ``uniforms[k]``, or stream 2."""
    if a.uniforms is not None:
        return a.uniforms[k]
    return philox_accept_uniform(a.seed, a.chain_ids, a.step_offset + k, device=a.u.device).to(a.u.dtype)


def ref_step(target: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor, eps: torch.Tensor,
             half_d2: torch.Tensor, noise_amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the update rule, eager autograd: ``(u + (δ²/2)·∇log π(u) + c·δ·ε, log π(u))``.

    ``target`` maps ``[B, D]`` states to ``log π`` ``[B]``; ``half_d2``, ``noise_amp`` are the
    ``[B, 1]`` columns of :func:`step_coefficients`.  The single statement of
    the step: every reference loop below, the CUDA-graph backend (which captures it) and the
    ``compile`` benchmark provider call this.  No host synchronisation (CUDA-graph safe as long
    as ``target`` is).
    """
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = target(x)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return u + half_d2 * grad + noise_amp * eps, logp.detach()


def value_and_grad(target: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor):
    """``(log π(u), ∇log π(u))`` by eager autograd."""
    with torch.enable_grad():
        x = u.detach().requires_grad_(True)
        logp = target(x)
        (grad,) = torch.autograd.grad(logp.sum(), x)
    return logp.detach(), grad


def log_q(a: torch.Tensor, b: torch.Tensor, grad_b: torch.Tensor, half_d2: torch.Tensor,
          inv_2d2: torch.Tensor) -> torch.Tensor:
    """``log q(a | b) = −‖a − b − (δ²/2)∇log π(b)‖² / (2δ²)`` (``[B]``, without its constant);
    ``inv_2d2`` is ``1/(2δ²)``, 0 where δ = 0 (the proposal is then the state itself)."""
    return -(a - b - half_d2 * grad_b).pow(2).sum(1) * inv_2d2[:, 0]


def mala_step(target, u, logp, grad, eps, U, half_d2, delta, inv_2d2):
    """One Metropolis-adjusted step (the rule in the module docstring), eager autograd:
    ``(u, log π(u), ∇log π(u), accepted [B] bool, min(1, α) [B])`` after the step, given the
    state's own log π and gradient (a chain evaluates each state once)."""
    prop = u + half_d2 * grad + delta * eps
    logp_p, grad_p = value_and_grad(target, prop)
    log_alpha = logp_p - logp + log_q(u, prop, grad_p, half_d2, inv_2d2) - log_q(prop, u, grad, half_d2, inv_2d2)
    acc = torch.log(U) < log_alpha  # NaN refuses
    keep = acc[:, None]
    prob = torch.exp(torch.clamp(log_alpha, max=0.0)).nan_to_num(0.0)
    return (torch.where(keep, prop, u), torch.where(acc, logp_p, logp), torch.where(keep, grad_p, grad), acc, prob)


def _outside_inference_mode(a):
    """``a`` with its tensors made ordinary where they are inference tensors (a sampler called
    inside ``torch.inference_mode()``; autograd refuses inference tensors)."""
    repl = {f.name: v.clone() for f in dataclasses.fields(a)
            if isinstance(v := getattr(a, f.name), torch.Tensor) and v.is_inference()}
    return dataclasses.replace(a, **repl) if repl else a


def is_draw(a: LangevinArgs, k: int) -> bool:
    """Whether the state after step k of the call ``a`` is a draw (``trace_every`` = m: the step
    counter step_offset + k + 1 is a multiple of m)."""
    return bool(a.trace_every) and (a.step_offset + k + 1) % a.trace_every == 0


def langevin_loop(prior: HierarchicalPrior, a: LangevinArgs, *, trace: bool = False):
    """The K-step loop of :func:`langevin_ref` on checked arguments (no step adaptation:
    :func:`adapt_step_size` drives this loop for that): ``(u_K, log π trace [K, B] or None,
    accept stats)``, the stats ``[2, B]`` (accepted proposals, Σ min(1, α)) with ``metropolis``,
    else None.  With ``trace_every`` it appends its draws (:func:`is_draw`: the state after the
    step and its log π — with ULA the next step's, or one more evaluation after the last step)
    to ``a.draws``."""
    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        log_pi = target(prior, a)
        half_d2, noise_amp = step_coefficients(a)
        u, logs, stats = a.u.clone(), [], None
        states, state_logs = [], []
        if a.metropolis:
            delta = a.step_size[:, None]
            inv_2d2 = torch.where(delta > 0, 0.5 / (delta * delta), torch.zeros_like(delta))
            stats = a.u.new_zeros(2, a.B)
            if a.n_steps:
                logp, grad = value_and_grad(log_pi, u)
            for k in range(a.n_steps):
                if trace:
                    logs.append(logp)
                u, logp, grad, acc, prob = mala_step(log_pi, u, logp, grad, step_noise(a, k), step_uniform(a, k),
                                                     half_d2, delta, inv_2d2)
                stats[0] += acc
                stats[1] += prob
                if is_draw(a, k):
                    states.append(u)
                    state_logs.append(logp)
        else:
            for k in range(a.n_steps):
                u, logp = ref_step(log_pi, u, step_noise(a, k), half_d2, noise_amp)
                if trace:
                    logs.append(logp)
                if len(state_logs) < len(states):  # the last draw's log π: its state entered this step
                    state_logs.append(logp)
                if is_draw(a, k):
                    states.append(u)
            if len(state_logs) < len(states):
                state_logs.append(value_and_grad(log_pi, u)[0])
        # K = 0 gives an empty [0, B] trace (torch.stack refuses an empty list)
        log_density = (torch.stack(logs) if logs else a.u.new_zeros(0, a.B)) if trace else None
        if states:
            a.draws.append((torch.stack(states).detach(), torch.stack(state_logs)))
    return u.detach(), log_density, stats


def draws_info(prior: HierarchicalPrior, a: LangevinArgs) -> dict:
    """The ``info`` entries of a call with ``trace_every`` (from the draws its runs appended to
    ``a.draws``): ``"draws"`` ``[n, B, D]`` (a list of ``[n, B, d_i]`` when ``u`` came as layers),
    ``"draws_log_density"`` ``[n, B]`` (log π of each draw — the tempered one with a ladder —
    the number ``info["log_density"]`` reports for the state entering the next step), and
    ``"draw_steps"`` ``[n]`` int64 (the step counters after which they were taken:
    m, 2m, … from step_offset = 0).  Empty without ``trace_every``."""
    if not a.trace_every:
        return {}
    m, off = a.trace_every, a.step_offset
    parts = a.draws or []
    states = torch.cat([s for s, _ in parts]) if parts else a.u.new_zeros(0, a.B, a.D)
    logs = torch.cat([l for _, l in parts]) if parts else a.u.new_zeros(0, a.B)
    steps = torch.arange(off // m + 1, (off + a.n_steps) // m + 1, dtype=torch.long) * m
    assert states.shape[0] == steps.shape[0] == logs.shape[0], (states.shape, steps.shape, logs.shape)
    if a.as_list:
        states = list(torch.split(states, list(prior.dims), dim=2))
    return {"draws": states, "draws_log_density": logs, "draw_steps": steps}


def start_draws(a: LangevinArgs, return_info: bool, where: str) -> None:
    """A call with ``trace_every``: its draws are returned in ``info`` (so ``return_info`` is
    needed), collected in a fresh ``a.draws``."""
    if a.trace_every:
        if not return_info:
            raise ValueError(f"{where}: trace_every records draws into info['draws']; pass return_info=True")
        a.draws = []


def adapt_step_size(run, a: LangevinArgs, *, trace: bool = False):
    """Steps 0 … N−1 (N = ``a.adapt_steps``) one at a time, each chain's log δ moved after each
    toward ``a.target_accept`` by its acceptance probability min(1, α); then steps N … K−1 in
    one run at the frozen δ.  ``run(args) -> (u, log π trace or None, accept stats [2, B])`` is
    any backend's (the reference loop or a kernel), so every backend adapts by this one rule.

    ``a.adapt``:

    * ``"robbins_monro"`` (the default): ``log δ ← log δ + m^−0.6 · (α_m − ρ*)``; the frozen δ
      is the last;
    * ``"dual_averaging"`` (Nesterov's, as in Hoffman & Gelman's NUTS, per chain):
      ``H ← (1 − 1/(m + t₀))·H + (ρ* − α_m)/(m + t₀)``, ``log δ_m = μ − √m/γ · H``,
      ``log δ̄ ← m^−κ log δ_m + (1 − m^−κ) log δ̄``; μ = log(10·δ₀), γ = 0.05, t₀ = 10,
      κ = 0.75; the frozen δ is δ̄ (the average).

    Measured (RESULTS.md §8; 200 warm-up steps, the default digits priors and N(0, I)): both are
    equally reproducible across sampling seeds; dual averaging's δ̄ varies less across chains
    (3.5–6 % vs 5–7 %) but lands at 0.62–0.65 acceptance instead of 0.574 (the average lags
    behind the iterate after a short warm-up), Robbins–Monro at 0.568–0.574 — hence the default.

    Returns ``(u_K, log π trace [K, B] or None, accept stats of steps N … K−1, adapted δ [B])``."""
    N, rho = a.adapt_steps, a.target_accept
    log_d = torch.log(a.step_size.clamp_min(torch.finfo(a.u.dtype).tiny))
    mu, H, log_bar = log_d + math.log(10.0), torch.zeros_like(log_d), log_d.clone()
    u, logs = a.u, []
    for m in range(1, N + 1):
        part = a.steps(m - 1, m)
        part.u, part.step_size = u, torch.exp(log_d)
        u, logd, stats = run(part)
        alpha = stats[1]  # one step: min(1, α) itself
        if a.adapt == "dual_averaging":
            w = 1.0 / (m + 10.0)
            H = (1.0 - w) * H + w * (rho - alpha)
            log_d = mu - math.sqrt(m) / 0.05 * H
            eta = m ** -0.75
            log_bar = eta * log_d + (1.0 - eta) * log_bar
        else:
            log_d = log_d + m ** -0.6 * (alpha - rho)
            log_bar = log_d
        if trace:
            logs.append(logd)
    step = torch.exp(log_bar) if N else a.step_size
    rest = a.steps(N, a.n_steps)
    rest.u, rest.step_size, rest.adapt_steps = u, step, 0
    u, logd, stats = run(rest)
    if trace:
        logs.append(logd)
    return u, (torch.cat(logs) if trace else None), stats, step


# ------------------------------------------------------------------------------ replica exchange
def swap_energy(prior: HierarchicalPrior, a: LangevinArgs, u: torch.Tensor) -> torch.Tensor:
    """E(u) = λ·F(T_β(u); t) (``[B]``): the energy term the ladder tempers (0 without energies)."""
    with torch.no_grad():
        if prior.energies is None:
            return u.new_zeros(u.shape[0])
        return a.energy_scale * prior.energy(prior.T(u), a.t)


def swap_uniforms(a: LangevinArgs, n: int, k: int) -> torch.Tensor:
    """U of the swap round ``n`` of the call (after its step ``k``), ``[B]``: ``swap_uniforms[n]``,
    or stream 3 at the step counter ``step_offset + k``."""
    if a.swap_uniforms is not None:
        return a.swap_uniforms[n]
    R = a.temperatures.shape[0]
    return philox_swap_uniforms(a.seed, a.chain_ids, a.step_offset + k, R, device=a.u.device).to(a.u.dtype)


def swap_round(beta: torch.Tensor, E: torch.Tensor, U: torch.Tensor, round_index: int, schedule: str):
    """One swap round of every ladder group (the rule in the module docstring), for the ladder
    ``beta`` ``[R]``, energies ``E`` and uniforms ``U`` ``[B]`` (``round_index``: an int, or an
    int64 tensor of one element): ``(src, attempted, accepted)`` —
    ``src`` ``[B]`` the chain whose state each chain takes (``u ← u[src]``), ``attempted`` and
    ``accepted`` ``[G, R−1]`` per pair (r, r+1) of each group."""
    R = beta.shape[0]
    G = E.shape[0] // R
    Eg, Ug = E.view(G, R), U.view(G, R)
    if schedule == "deo":
        if isinstance(round_index, torch.Tensor):  # a CUDA graph's step counter lives on the device
            parity = (round_index.reshape(1) % 2).expand(G)
        else:
            parity = torch.full((G,), round_index % 2, dtype=torch.long, device=E.device)
    else:
        parity = (Ug[:, R - 1] >= 0.5).long()
    r = torch.arange(R - 1, device=E.device)
    attempted = (r % 2)[None, :] == parity[:, None]
    log_alpha = (beta[1:] - beta[:-1])[None, :] * (Eg[:, :-1] - Eg[:, 1:])
    accepted = attempted & (torch.log(Ug[:, :-1]) < log_alpha)  # NaN refuses
    return swap_sources(accepted), attempted, accepted


def swap_sources(accepted: torch.Tensor) -> torch.Tensor:
    """The chain whose state each chain takes after a round (``u ← u[src]``), from the accepted
    pairs ``[..., G, R−1]`` (bool): ``[..., G·R]``, indices into the batch."""
    *lead, G, R1 = accepted.shape
    R, dev = R1 + 1, accepted.device
    lower = torch.nn.functional.pad(accepted, (0, 1)).long()
    upper = torch.nn.functional.pad(accepted, (1, 0)).long()
    src = torch.arange(R, device=dev) + lower - upper + R * torch.arange(G, device=dev)[:, None]
    return src.reshape(*lead, G * R)


def replica_walk(src: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """The replicas' walk through a call's rounds, from each round's sources ``src`` ``[n, B]``
    (:func:`swap_sources`: ``u ← u[src[n]]``): ``(replica [B], round_trips [B])`` — the final
    permutation (``replica[b]``: the replica chain b holds) and, per replica, how often it went from
    the cold slot (R − 1) to the hot slot (0) and back, counted on arriving back (a replica that
    starts elsewhere first has to reach the cold slot).

    One numpy call a round, where following the labels round by round takes ~10 (a fifth of a toy
    call with a round after every step; benchmarks/NOTES.md): the permutation after every round is
    composed round by round; the visits to the two ends of each
    ladder are then events, sorted by replica and time, and a round trip is an arrival at the cold
    slot whose replica's previous event was a visit to the hot slot with a cold visit before it."""
    n, B = src.shape
    if n == 0 or R == 1:
        return np.arange(B), np.zeros(B, dtype=np.int64)
    held = np.empty((n, B), dtype=np.int64)  # held[k, b]: the replica chain b holds after round k
    cur = np.arange(B)
    for k in range(n):
        cur = held[k] = cur[src[k]]
    G = B // R
    # events in time order, then grouped by replica (a stable sort keeps each one's time order):
    # the cold replicas at the start, then after each round the replica in each group's cold slot
    # (kind 1) and in its hot slot (kind 2)
    ends = np.concatenate([held[:, R - 1::R], held[:, 0::R]], axis=1)  # [n, 2G]
    rep = np.concatenate([np.arange(R - 1, B, R), ends.ravel()])
    kind = np.concatenate([np.ones(G, dtype=np.int8), np.tile(np.repeat(np.array([1, 2], dtype=np.int8), G), n)])
    order = np.argsort(rep, kind="stable")
    rep, kind = rep[order], kind[order]
    # colds of the same replica strictly before each event
    colds = np.cumsum(kind == 1) - (kind == 1)
    first = np.r_[True, rep[1:] != rep[:-1]]
    colds = colds - colds[np.maximum.accumulate(np.where(first, np.arange(rep.size), 0))]
    trip = (~first[1:]) & (kind[1:] == 1) & (kind[:-1] == 2) & (colds[:-1] > 0)
    return cur.copy(), np.bincount(rep[1:][trip], minlength=B).astype(np.int64)


def swap_statistics(attempted: torch.Tensor, accepted: torch.Tensor, n_steps: int, dtype, *, energies=None,
                    trace: bool = False) -> dict:
    """The ``info`` entries of :func:`replica_exchange` from a call's rounds: ``attempted``,
    ``accepted`` ``[n_rounds, G, R−1]`` bool (pair (r, r+1) of group g in round n), ``energies``
    ``[n_rounds, B]`` (E entering each round; with ``trace``).  One statement of the bookkeeping
    for the reference's rounds and a kernel's swap record (:func:`swap_record_info`)."""
    n, G, R1 = attempted.shape
    R, dev = R1 + 1, attempted.device
    B = G * R
    src = swap_sources(accepted)
    replica, trips = replica_walk(src.cpu().numpy(), R)
    replica, trips_t = torch.from_numpy(replica).to(dev), torch.from_numpy(trips).to(dev)
    attempts, acc = attempted.long().sum(0), accepted.long().sum(0)
    info = dict(swap_attempts=attempts, swap_accepted=acc, swap_rate=acc.to(dtype) / attempts.to(dtype),
                replica=replica, round_trips=trips_t,
                round_trip_rate=trips_t.view(G, R).sum(1).to(dtype) / n_steps if n_steps else
                torch.full((G,), math.nan, dtype=dtype, device=dev))
    if trace:
        info["swap_energy"] = energies if energies is not None else torch.zeros(0, B, dtype=dtype, device=dev)
        info["swapped"] = src != torch.arange(B, device=dev)
    return info


def swap_codes(attempted: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """One round of a kernel's swap record from its pairs' ``attempted``, ``accepted`` ``[G, R−1]``:
    ``[B]``, a code at each pair's lower chain (1: proposed, 2: swapped, 0: neither; the cold slot 0)."""
    code = attempted.to(torch.float64) + accepted.to(torch.float64)
    return torch.nn.functional.pad(code, (0, 1)).reshape(-1)


def swap_record_info(a: LangevinArgs, record: torch.Tensor, *, trace: bool) -> dict:
    """:func:`swap_statistics` of a kernel's swap record ``[n_rounds, 2, B]`` (E = λF entering each
    round; a code at each pair's lower chain: 1 proposed, 2 swapped)."""
    R = a.temperatures.shape[0]
    n, G = record.shape[0], a.B // R
    code = record[:, 1].reshape(n, G, R)[:, :, :R - 1]
    return swap_statistics(code >= 1, code == 2, a.n_steps, a.u.dtype, energies=record[:, 0], trace=trace)


def tempered(a: LangevinArgs) -> LangevinArgs:
    """The steps of a ladder call without the ladder: chain b on its own target, energy scale
    β_(b mod R)·λ_b (the swap rounds are not part of it)."""
    G = a.B // a.temperatures.shape[0]
    return dataclasses.replace(a, energy_scale=a.energy_scale * a.temperatures.repeat(G), temperatures=None,
                               swap_uniforms=None)


def replica_exchange(run, prior: HierarchicalPrior, a: LangevinArgs, *, trace: bool = False, info: dict):
    """The K steps of a ladder call (``a.temperatures`` set): the runs of steps between swap
    rounds by ``run(args) -> (u, log π trace or None, accept stats or None)`` (the reference loop,
    :func:`langevin_loop`) on the tempered targets (energy scale β·λ per chain), each followed by
    a swap round (:func:`swap_round`).  Returns what ``run`` returns for the whole call and fills
    ``info``:

    * ``"swap_attempts"``, ``"swap_accepted"`` (``[G, R−1]`` int64, pair (r, r+1) of group g) and
      ``"swap_rate"`` (their ratio, NaN where a pair never proposed);
    * ``"replica"`` (``[B]`` int64): the final permutation — replica i is the state that started in
      chain i, and ``replica[b]`` is the one chain b holds now;
    * ``"round_trips"`` (``[B]`` int64, by replica): how often replica i went from the cold slot
      (R − 1) to the hot slot (0) and back (counted on arriving back; a replica that starts
      elsewhere first has to reach the cold slot); ``"round_trip_rate"`` (``[G]``): the group's
      round trips per step;
    * with ``trace``: ``"swap_energy"`` (``[n_rounds, B]``, E of each chain's state entering the
      round) and ``"swapped"`` (``[n_rounds, B]`` bool, both chains of every accepted pair)."""
    beta_ladder = a.temperatures
    R, B, K, m, off = beta_ladder.shape[0], a.B, a.n_steps, a.swap_every, a.step_offset
    G = B // R
    base = tempered(a)
    dev = a.u.device
    attempted, accepted, energies = [], [], []
    u, logs, stats, k0, n = a.u, [], None, 0, 0
    if K == 0:
        u, logd, stats = run(base)
        logs.append(logd)
    while k0 < K:
        k1 = min(K, ((off + k0) // m + 1) * m - off)  # the round after step k1 − 1, or the end of the call
        part = base.steps(k0, k1)
        part.u = u
        u, logd, st = run(part)
        logs.append(logd)
        stats = st if stats is None else stats + st
        if (off + k1) % m == 0:
            E = swap_energy(prior, a, u)
            src, att, acc = swap_round(beta_ladder, E, swap_uniforms(a, n, k1 - 1), (off + k1) // m - 1,
                                       a.swap_schedule)
            u = u[src]
            attempted.append(att)
            accepted.append(acc)
            energies.append(E)
            n += 1
        k0 = k1
    assert n == swap_rounds(K, off, m)
    if n:
        att, acc = torch.stack(attempted), torch.stack(accepted)
    else:
        att = acc = torch.zeros(0, G, max(R - 1, 0), dtype=torch.bool, device=dev)
    info.update(swap_statistics(att, acc, K, a.u.dtype, energies=torch.stack(energies) if n else None, trace=trace))
    return u, (torch.cat(logs) if trace else None), stats


def ladder_chain_ids(chain_ids: torch.Tensor, R: int) -> torch.Tensor:
    """The chain ids of ladder groups built around ``chain_ids`` ``[G]``: group g is chains
    g·R … g·R+R−1 with ids ``chain_ids[g]·R + r`` (distinct ids stay distinct, so no two chains
    share a noise stream)."""
    return (chain_ids.reshape(-1, 1) * R + torch.arange(R, device=chain_ids.device)).reshape(-1)


def cold_chains(x: torch.Tensor, R: int, dim: int = 0) -> torch.Tensor:
    """The cold chain (β_R = 1, the last slot) of every ladder group of R consecutive chains along
    ``dim`` of ``x`` (``[B, …]`` → ``[B/R, …]``)."""
    return x.unflatten(dim, (-1, R)).select(dim + 1, R - 1)


def with_replica_exchange(run, prior: HierarchicalPrior, a: LangevinArgs, *, trace: bool, info: dict):
    """``run`` itself without a ladder; with one, ``run`` driven by :func:`replica_exchange`
    (filling ``info``)."""
    if a.temperatures is None:
        return run
    return lambda p: replica_exchange(run, prior, p, trace=trace, info=info)


def precision_of(x: torch.Tensor) -> str:
    return "fp64" if x.dtype == torch.float64 else "fp32"


def langevin_ref(prior: HierarchicalPrior, u: Latents, *, return_info: bool = False, **arguments):
    """K steps of ũ-space Langevin, eager PyTorch autograd (the reference every backend matches):

        u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
        log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [u_next given] ‖a·u − u_next‖² / (2σ²)

    ``arguments``: the keywords of the call record (:data:`hebm.sampler.record.LANGEVIN`, listed below),
    checked by :func:`hebm.sampler.checks.check_langevin_args`.  ``return_info`` also returns
    ``{"backend", "precision", "log_density" [K, B]}`` (the target at the state entering each
    step) and, with ``metropolis``, ``"accepted"`` (``[B]`` int64, accepted proposals after the
    warm-up), ``"accept_rate"`` (``[B]``; NaN when no step follows the warm-up) and, when
    adapting, ``"step_size"`` (the adapted δ ``[B]``).  With ``temperatures`` (replica exchange,
    the module docstring) each chain runs at its slot's β and ``info`` adds the swap and
    round-trip statistics of :func:`replica_exchange`; ``log_density`` is then each chain's
    tempered target.  ``trace_every`` = m (needs ``return_info``) adds the draws of
    :func:`draws_info` — with a ladder, per chain slot: the state chain b holds after the step,
    before the swap round that may follow it, and its log π at the slot's β.

    Keywords:
    """
    a = check_langevin_args(prior, u, where="langevin_ref", **arguments)
    start_draws(a, return_info, "langevin_ref")
    pt = {}
    run = with_replica_exchange(lambda p: langevin_loop(prior, p, trace=return_info), prior, a, trace=return_info,
                                info=pt)
    out, logs, extra, stats = run_chain(run, a, trace=return_info)
    check_result(a, out, "langevin_ref", stats)
    info = {"backend": "ref", "precision": precision_of(out), "log_density": logs, **extra, **pt,
            **draws_info(prior, a)}
    return finish(prior, a, out, info, return_info)


langevin_ref.__signature__ = signature(LANGEVIN, ("prior",), (("return_info", False),))
langevin_ref.__doc__ += describe(LANGEVIN)


def run_chain(run, a: LangevinArgs, *, trace: bool):
    """The whole call on checked ``a`` by ``run(args) -> (u, log π trace or None, accept stats
    or None)`` (the reference loop or a backend's): with step adaptation through
    :func:`adapt_step_size`.  Returns ``(u_K, trace, info entries, accept stats)``: MALA's
    ``"accepted"``, ``"accept_rate"`` (after the warm-up: NaN when no step follows it — the rate of
    no proposals is undefined, not 0) and, when adapting, ``"step_size"``; the stats ``[2, B]`` of
    the steps after the warm-up (None without ``metropolis``)."""
    if a.adapt_steps:
        out, logs, stats, step = adapt_step_size(run, a, trace=trace)
    else:
        (out, logs, stats), step = run(a), None
    extra = {}
    if a.metropolis:
        kept = a.n_steps - a.adapt_steps
        rate = stats[0] / kept if kept else torch.full_like(stats[0], math.nan)
        extra = {"accepted": stats[0].round().long(), "accept_rate": rate}
        if step is not None:
            extra["step_size"] = step
    return out, logs, extra, stats


def reverse_loop(prior: HierarchicalPrior, schedule, r: ReverseArgs, *, run=langevin_loop, accepted=None):
    """The level loop of :func:`reverse_diffusion_ref` on checked arguments: ``[ũ_T, …, ũ_0]``.
    ``run(prior, level_args)`` runs one level's K steps (the reference loop, or a backend's:
    ``(u, trace, accept stats or None)``); ``accepted``: a list that gets each level's accepted
    proposals ``[B]`` with ``r.metropolis``."""
    u, levels = r.u, [r.u]
    for j in range(schedule.T):  # level t = T−1−j
        u, _, stats = run(prior, level_args(r, schedule, j, u))
        if accepted is not None and stats is not None:
            accepted.append(stats[0].round().long())
        levels.append(u)
    return levels


def reverse_diffusion_ref(prior: HierarchicalPrior, schedule, u_T: Optional[Latents] = None, *,
                          return_levels: bool = False, **arguments):
    """Paper 2's sampler in ũ-space (docs/papers.md B §3.5): ũ_T ~ N(0, I), then for
    t = T−1 … 0, K steps of the update rule on

        log p̃(u_t | u_{t+1}) = F(T_β(u_t), t)/s_t − ½‖u_t‖² − [t < T−1] ‖a_{t+1} u_t − u_{t+1}‖² / (2σ_{t+1}²)

    started at ``u_{t+1}``, i.e. ``step_size = √s_t``, ``energy_scale = 1/s_t``,
    ``alpha = a_{t+1}``, ``sigma = σ_{t+1}`` (:meth:`hebm.DiffusionSchedule.level_params`).

    ``arguments``: the keywords of :data:`hebm.sampler.record.REVERSE` (below).  The seeded stream's step
    counter runs across levels: level j = T−1−t uses steps ``j·K … j·K+K−1``; ũ_T, when not given,
    is ``batch`` chains of stream 1 of the same seed.  Returns ``ũ_0``, and with ``return_levels``
    also the list ``[ũ_T, …, ũ_0]``, in the structure of ``u_T`` (a tensor or a list of layers).
    ``metropolis``: every level's steps Metropolis-adjusted (:func:`langevin_ref`; ``uniforms``
    ``[T·K, B]`` with explicit noise, else stream 2 at the same step counter).

    Keywords:
    """
    r = check_reverse_args(prior, schedule, u_T, where="reverse_diffusion_ref", **arguments)
    levels = reverse_loop(prior, schedule, r)
    return finish_reverse(prior, schedule, r, levels, return_levels, "reverse_diffusion")


reverse_diffusion_ref.__signature__ = signature(REVERSE, ("prior", "schedule"), (("return_levels", False),))
reverse_diffusion_ref.__doc__ += describe(REVERSE)


def finish_reverse(prior: HierarchicalPrior, schedule, r: ReverseArgs, levels: list, return_levels: bool, what: str):
    """``ũ_0`` (and the levels) in the caller's structure, with the divergence check of the last level."""
    check_result(level_args(r, schedule, schedule.T - 1, levels[-2]), levels[-1], what)
    levels = [x.detach() for x in levels]
    as_layers = (lambda x: prior.split(x)) if r.as_list else (lambda x: x)
    out = as_layers(levels[-1])
    return (out, [as_layers(x) for x in levels]) if return_levels else out


def langevin_z_ref(
    prior: HierarchicalPrior,
    z: Latents,
    *,
    n_steps: int,
    step_size,
    noise_scale=1.0,
    x: Optional[torch.Tensor] = None,
    decoder=None,
    sigma_x: float = 0.3,
    seed: Optional[int] = None,
    noise: Optional[torch.Tensor] = None,
    return_info: bool = False,
    check: str = "warn",
):
    """The authors' z-space sampler of paper 1 (docs/papers.md B §2.3), for comparison: the same
    update rule on

        prior target      log p̃(z) = Σ_i f_i(z_i) + log p_β(z)
        posterior target  log p̃(z | x) = prior target − ‖x − g(z̃)‖² / (2 σ_x²)

    (posterior when ``x`` and ``decoder`` (the flat latents z̃ ``[B, D]`` → x) are given).  Same noise conventions as
    :func:`langevin_ref` (seeded Philox on z's flat layout, or explicit ``[K, B, D]``).
    """
    a = check_langevin_args(prior, z, n_steps=n_steps, step_size=step_size, noise_scale=noise_scale,
                            seed=seed, noise=noise, check=check)
    if (x is None) != (decoder is None):
        raise ValueError("the posterior target needs both x and decoder")
    if x is not None and (not isinstance(x, torch.Tensor) or x.shape[0] != a.B):
        raise ValueError(f"x must be a tensor with one row per chain ({a.B}), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def log_pi(zz):
        logp = prior.energy(zz) + prior.log_p_beta(zz)
        if x is not None:
            logp = logp - (x - decoder(zz)).flatten(1).pow(2).sum(1) / (2 * sigma_x**2)
        return logp

    with torch.inference_mode(False):
        a = _outside_inference_mode(a)
        half_d2, noise_amp = step_coefficients(a)
        zc, logs = a.u.clone(), []
        for k in range(a.n_steps):
            zc, logp = ref_step(log_pi, zc, step_noise(a, k), half_d2, noise_amp)
            logs.append(logp)
    check_result(a, zc, "langevin_z_ref")
    info = {"backend": "ref", "precision": precision_of(zc), "log_density": torch.stack(logs) if logs else None}
    return finish(prior, a, zc, info, return_info)


__all__ = ["cold_chains", "draws_info", "is_draw", "ladder_chain_ids", "start_draws", "adapt_step_size", "langevin_loop", "langevin_ref", "mala_step", "replica_exchange", "run_chain",
           "step_coefficients", "swap_codes", "tempered", "swap_energy", "swap_round", "swap_uniforms", "with_replica_exchange",
           "step_noise", "step_uniform", "swap_record_info", "swap_sources", "swap_statistics", "target", "langevin_z_ref", "ref_step", "reverse_diffusion_ref", "reverse_loop"]
