"""ESS per second: the samplers run as a user runs them for draws, and what their draws are worth.

Every sampler speed hebm reported before was time per step; samplers are judged by effective
sample size per second (Stan, BlackJAX).  This module runs each *row* (a sampler as a user would
call it) on one stationary target, records the state every ``every`` steps, and turns the traces
into bulk ESS, R-hat and ESS per second with :func:`hebm.evaluation.mixing.diagnostics`
(arviz-stats).  ``benchmarks/test_ess_per_second.py`` puts the rows side by side in one run.

**The target.**  For a standard problem (``hebm.standard_problem(name, B)``) it is the problem's
top diffusion level t = T − 1 = 2, the level whose rows have no recovery kernel (``alpha = 0``):
``log π(u) = λ·F(T(u); t) − ½‖u‖²`` with λ = 1/s_2 and the schedule's step δ = √s_2 (toy: λ =
10.42, δ = 0.310) — one target shared by every chain, so R-hat means something.  For a trained
checkpoint (``--ess-ckpt``) it is the ebm prior's long-run target at ``energy_scale`` λ with the
trained δ.

**Rows** (each one chain of B chains from ``initial_noise(seed, B, D)``, per seed):

* ``plain-ula`` — :func:`benchmarks.plain.plain_langevin` (autograd, ``torch.randn_like``), called
  for ``every`` steps at a time, the state cloned after each call;
* ``torchebm-ula`` — TorchEBM's ``LangevinDynamics`` at η = δ²/2 (the same update), called for
  ``every`` steps at a time with its own generator seeded as the plain loop's global one — the
  plain loop's chain exactly (its ``thin=…, return_trajectory=True`` in one call would save its
  per-call cost but cannot run in lockstep with the other rows);
* ``fused-ula`` — ``hebm.Sampler(prior, backend="cpu").run`` for ``every`` steps at a time,
  continued with ``step_offset`` (the seeded stream makes the segments one chain);
* ``fused-ula-fn`` — the same chain through ``hebm.langevin_fused`` (which reads the prior at
  every call: its fixed cost per call is ~2.5× the Sampler's, benchmarks/RESULTS.md);
* ``fused-ula-traced``, ``fused-mala-traced`` — the chain of ``fused-ula`` / ``fused-mala`` again,
  its kept stretch in **one** ``Sampler.run`` call that records every ``every``-th state inside
  the kernel (``trace_every``): what a user who wants the trace runs, with no per-segment fixed
  cost.  Its states are its segmented twin's bit for bit (the seeded streams, the same step
  counters); only the seconds differ.  It runs its one call at the first kept turn of the
  lockstep and none after;
* ``plain-mala`` / ``fused-mala`` — :func:`benchmarks.plain.plain_mala` (the accepted proposal's
  gradient reused) and the Sampler with ``metropolis=True``, both at the MALA step δ_M chosen on a
  pilot (:func:`mala_step`);
* ``pt-<backend>`` — parallel tempering, ``hebm.Sampler(prior, backend=<backend>).run(...,
  temperatures=LADDER, swap_every=SWAP_EVERY)``, ULA inner steps at δ: B/R ladder groups, the
  B/R cold chains (β = 1) traced.  The backend is the one parameter (``--ess-pt-backends``): ``ref``
  runs today; ``cpu`` is skipped with the backend's own reason until the kernel takes a ladder.

The ULA rows run the same update at the same δ, so their ESS per step must agree (within the
seeds' spread) and their ESS/s differ only by speed: :func:`summarize` reports the ratio of ESS
per step to ``plain-ula`` as the sanity check.

**Timing.**  Only the kept draws' steps are timed (``time.perf_counter`` around each segment
call, the state copy included); the burn-in (the first ``burn`` steps, the same number as kept,
docs/design.md §2d's "first half is warm-up") is run and discarded, untimed, and so are the
Samplers' construction and the MALA pilot.  The kept segments of all rows run in lockstep (one
segment of each row in turn, :func:`run_rows`), so on a shared machine every row sees the same
load and the ratios compare the same seconds.  Segmented calls put each call's fixed cost into the
measurement — for the fused rows ~1.5 toy steps per call through the Sampler and ~4 through
``langevin_fused`` on the AVX2 EPYC (benchmarks/RESULTS.md, issue 31), and more when the call
follows another row's segment (benchmarks/NOTES.md, "A call after a pause").  At ``every = 10``
that is part of what a user pays for segmented traces; the ``*-traced`` rows record the same
chains inside one call and pay it once.

**What is measured of the draws.**  Three projections of each traced state, the same for every
row: log π (float64, evaluated after the run by the plain networks — not the sampler's own), the
first coordinate u₀ and the norm ‖u‖.  Bulk ESS of each (rank-normalised split chains), their
minimum as the row's headline, R-hat (rank, max of bulk and folded) of each, ESS per second.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import hebm
from hebm.evaluation import mixing
from hebm.prior.philox import initial_noise

from .plain import PlainNets, plain_langevin, plain_mala, torchebm_available, torchebm_sampler

ULA_ROWS = ("plain-ula", "torchebm-ula", "fused-ula", "fused-ula-fn", "fused-ula-traced")
#: rows whose kept stretch is one call with draws recorded inside it (make_traced)
TRACED_ROWS = {"fused-ula-traced": "fused-ula", "fused-mala-traced": "fused-mala"}  # → the segmented twin
MALA_ROWS = ("plain-mala", "fused-mala", "fused-mala-traced")
BASE_ROWS = ULA_ROWS + MALA_ROWS
BASELINE = "plain-ula"
PROJECTIONS = ("log_pi", "u0", "norm")
#: parallel tempering: R = 4 rungs from the Gaussian (β = 0) to the target, DEO swaps every 4 steps
LADDER = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
SWAP_EVERY = 4
#: the MALA pilot: a seed never measured, Robbins–Monro adaptation toward TARGET_ACCEPT, the median δ
PILOT_SEED = 100
PILOT_STEPS = 500
TARGET_ACCEPT = 0.574


@dataclass
class Target:
    """One stationary target ``log π(u) = λ·F(T(u); t) − ½‖u‖²`` and the chains' shape."""
    name: str
    prior: torch.nn.Module
    batch: int
    step_size: float  # δ of the ULA rows (and of PT's inner steps)
    energy_scale: float  # λ
    t: Optional[int]  # the level of a level-conditioned prior (None otherwise)
    nets: PlainNets = field(init=False)
    nets64: PlainNets = field(init=False)

    def __post_init__(self):
        self.nets = PlainNets(self.prior)
        self.nets64 = PlainNets(copy.deepcopy(self.prior).double())

    @property
    def D(self) -> int:
        return int(sum(self.prior.dims))

    def kwargs(self, **extra) -> dict:
        kw = dict(energy_scale=self.energy_scale, **extra)
        if self.t is not None:
            kw["t"] = self.t
        return kw

    def log_pi64(self, u: torch.Tensor) -> torch.Tensor:
        """log π of states ``[..., D]`` in float64 by the plain networks (one function for every row)."""
        x = u.reshape(-1, self.D).double()
        t = None if self.t is None else torch.full((x.shape[0],), self.t, dtype=torch.long)
        with torch.no_grad():
            lp = self.nets64.log_density(x, energy_scale=torch.full((x.shape[0],), float(self.energy_scale),
                                                                    dtype=torch.float64), t=t)
        return lp.reshape(u.shape[:-1])

    def start(self, seed: int) -> torch.Tensor:
        return initial_noise(seed, self.batch, self.D).to(torch.float32)

    def describe(self) -> dict:
        return dict(target=self.name, B=self.batch, D=self.D, step_size=self.step_size,
                    energy_scale=self.energy_scale, level=self.t)


def standard_target(name: str, batch: int) -> Target:
    """The standard problem's top level (no kernel term) as a stationary target, δ = √s_t, λ = 1/s_t."""
    p = hebm.standard_problem(name, batch)
    top = p.schedule.T - 1
    lv = p.schedule.level_params(top)
    assert lv["alpha"] == 0.0, "the top level has no recovery kernel"
    return Target(name, p.prior, batch, float(lv["step_size"]), float(lv["energy_scale"]), top)


def checkpoint_target(path: str, batch: int, energy_scale: float = 1.0) -> Target:
    """A trained ebm prior's long-run target (``λ·F(T(u)) − ½‖u‖²``) at the trained δ."""
    from hebm.models import load_model

    model, _mcfg, tcfg, _ = load_model(path, "cpu")
    prior = model.sampling_prior.float().eval()
    for q in prior.parameters():
        q.requires_grad_(False)
    return Target(f"ckpt(λ={energy_scale:g})", prior, batch, float(tcfg.langevin_step_size), float(energy_scale),
                  None)


# ------------------------------------------------------------------------------ the MALA pilot
def mala_step(target: Target, *, steps: int = PILOT_STEPS) -> dict:
    """δ_M for the MALA rows: on seed ``PILOT_SEED`` (never measured), ``steps`` steps of the fused
    kernel's Robbins–Monro adaptation from δ toward acceptance ``TARGET_ACCEPT`` per chain, the
    median of the adapted δ; then ``steps`` steps at that δ give the acceptance it has."""
    S = hebm.Sampler(target.prior, backend="cpu")
    u = target.start(PILOT_SEED)
    u, info = S.run(u, n_steps=steps, step_size=target.step_size, seed=PILOT_SEED, metropolis=True,
                    adapt_steps=steps, target_accept=TARGET_ACCEPT, return_info=True, **target.kwargs())
    d = float(info["step_size"].median())
    _, info = S.run(u, n_steps=steps, step_size=d, seed=PILOT_SEED, step_offset=steps, metropolis=True,
                    return_info=True, **target.kwargs())
    return dict(mala_step_size=d, mala_pilot_accept=float(info["accept_rate"].mean()), mala_pilot_steps=steps,
                mala_pilot_seed=PILOT_SEED, mala_target_accept=TARGET_ACCEPT)


def pt_pilot(target: Target, backend: str, *, steps: int = 400) -> dict:
    """Swap rates of the ladder (seed ``PILOT_SEED``, not timed)."""
    S = hebm.Sampler(target.prior, backend=backend)
    _, info = S.run(target.start(PILOT_SEED), n_steps=steps, step_size=target.step_size, seed=PILOT_SEED,
                    temperatures=list(LADDER), swap_every=SWAP_EVERY, return_info=True, **target.kwargs())
    return dict(pt_ladder=list(LADDER), pt_swap_every=SWAP_EVERY, pt_pilot_swap_rate=info["swap_rate"].mean(0).tolist(),
                pt_pilot_steps=steps)


# ------------------------------------------------------------------------------ rows
def row_skip_reason(row: str, target: Target) -> Optional[str]:
    if row == "torchebm-ula":
        return torchebm_available()
    if row.startswith("pt-"):
        backend = row[3:]
        try:
            hebm.Sampler(target.prior, backend=backend)._backend_for(False, ("temperatures",))
        except hebm.BackendUnavailable as e:
            return f"parallel tempering on backend {backend!r}: {e}"
        except ValueError as e:
            return f"parallel tempering on backend {backend!r}: {e}"
    return None


@dataclass
class Chain:
    """One row's run for one seed: the kept states ``[draws, chains, D]`` and the seconds they took."""
    states: torch.Tensor
    seconds: float
    burn_seconds: float


def fused_keywords(row: str, target: Target, mala_step_size: Optional[float]) -> dict:
    """The Sampler keywords of a fused row: the target's, with MALA's test and δ_M for a ``*-mala*``
    row, else ULA's δ."""
    step = dict(metropolis=True, step_size=mala_step_size) if "-mala" in row else dict(step_size=target.step_size)
    return {**step, **target.kwargs()}


def make_step(row: str, target: Target, seed: int, *, every: int, mala_step_size: Optional[float] = None
              ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``step(u, step_offset) → u`` after ``every`` steps of ``row`` (one segment call)."""
    kw = target.kwargs()
    d = target.step_size
    if row == "plain-ula":
        return lambda u, off: plain_langevin(target.nets, u, n_steps=every, step_size=d, **kw)
    if row == "plain-mala":
        return lambda u, off: plain_mala(target.nets, u, n_steps=every, step_size=mala_step_size, **kw)
    if row == "torchebm-ula":
        sampler, _ = torchebm_sampler(target.nets, target.start(seed), step_size=d, **kw)
        g = torch.Generator().manual_seed(seed)  # the plain loop's stream: the same chain
        return lambda u, off: sampler.sample(x=u, n_steps=every, generator=g)
    if row in ("fused-ula", "fused-mala", *TRACED_ROWS):  # (a traced row's burn-in: its twin's segments)
        S = hebm.Sampler(target.prior, backend="cpu")
        fkw = fused_keywords(row, target, mala_step_size)
        return lambda u, off: S.run(u, n_steps=every, seed=seed, step_offset=off, **fkw)
    if row == "fused-ula-fn":
        return lambda u, off: hebm.langevin_fused(target.prior, u, n_steps=every, step_size=d, seed=seed,
                                                  step_offset=off, backend="cpu", **kw)
    if row.startswith("pt-"):
        S = hebm.Sampler(target.prior, backend=row[3:])
        return lambda u, off: S.run(u, n_steps=every, step_size=d, seed=seed, step_offset=off,
                                    temperatures=list(LADDER), swap_every=SWAP_EVERY, **kw)
    raise ValueError(f"unknown row {row!r}")


def make_traced(row: str, target: Target, seed: int, *, every: int, mala_step_size: Optional[float] = None
                ) -> Callable:
    """``run(u, step_offset, n) → (u after n steps, the states after every ``every``-th step
    [n / every, B, D])``: one call, the draws recorded inside it (``trace_every``), of the chain
    its segmented twin (:data:`TRACED_ROWS`) runs."""
    if row not in TRACED_ROWS:
        raise ValueError(f"{row!r} is not a traced row")
    S = hebm.Sampler(target.prior, backend="cpu")
    fkw = fused_keywords(row, target, mala_step_size)

    def run(u, off, n):
        out, info = S.run(u, n_steps=n, seed=seed, step_offset=off, trace_every=every, return_info=True, **fkw)
        return out, info["draws"]
    return run


class Runner:
    """One row's chain for one seed, advanced one segment (``every`` steps) at a time; the kept
    segments' call and state copy are timed.  The plain rows draw ``torch.randn_like`` from the
    global generator: each holds its own state of it (seeded with ``seed``; swapped in and out
    outside the timed region), so rows run in lockstep do not share a stream and ``plain-ula`` is
    TorchEBM's chain (same generator, same seed, same update)."""

    def __init__(self, row: str, target: Target, seed: int, *, every: int, mala_step_size: Optional[float] = None,
                 keep: int = 0):
        self.row, self.every, self.keep = row, every, (keep // every) * every  # (what the segments run)
        self.step = make_step(row, target, seed, every=every, mala_step_size=mala_step_size)
        self.traced = (make_traced(row, target, seed, every=every, mala_step_size=mala_step_size)
                       if row in TRACED_ROWS else None)
        self.kept_traced = False
        self.u, self.offset = target.start(seed), 0
        self.cold = slice(len(LADDER) - 1, None, len(LADDER)) if row.startswith("pt-") else slice(None)
        self.rng = None
        if row.startswith("plain-"):
            saved = torch.get_rng_state()
            torch.manual_seed(seed)
            self.rng = torch.get_rng_state()
            torch.set_rng_state(saved)
        self.states, self.seconds, self.burn_seconds = [], 0.0, 0.0

    def segment(self, keep: bool) -> None:
        if keep and self.traced is not None:
            if not self.kept_traced:  # the whole kept stretch, one call, at the first kept turn
                t0 = time.perf_counter()
                u, draws = self.traced(self.u, self.offset, self.keep)
                self.states.extend(draws[:, self.cold].clone().unbind(0))
                self.seconds += time.perf_counter() - t0
                self.u, self.offset, self.kept_traced = u, self.offset + self.keep, True
            return
        if self.rng is not None:
            saved = torch.get_rng_state()
            torch.set_rng_state(self.rng)
        t0 = time.perf_counter()
        u = self.step(self.u, self.offset)
        if keep:
            self.states.append(u[self.cold].clone())
        dt = time.perf_counter() - t0
        if self.rng is not None:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(saved)
        self.u, self.offset = u, self.offset + self.every
        if keep:
            self.seconds += dt
        else:
            self.burn_seconds += dt

    def chain(self) -> Chain:
        return Chain(torch.stack(self.states), self.seconds, self.burn_seconds)


def run_rows(rows, target: Target, seed: int, *, burn: int, keep: int, every: int,
             mala_step_size: Optional[float] = None) -> dict:
    """One seed of every row: each row's burn-in on its own (untimed), then the kept segments in
    **lockstep** — one segment of each row in turn — so the load of a shared machine falls on every
    row alike and a ratio compares the same seconds."""
    runners = {r: Runner(r, target, seed, every=every, mala_step_size=mala_step_size, keep=keep) for r in rows}
    for r in runners.values():
        for _ in range(burn // every):
            r.segment(False)
    for _ in range(keep // every):
        for r in runners.values():
            r.segment(True)
    return {name: r.chain() for name, r in runners.items()}


def run_row(row: str, target: Target, seed: int, *, burn: int, keep: int, every: int,
            mala_step_size: Optional[float] = None) -> Chain:
    """One seed of one row on its own."""
    return run_rows([row], target, seed, burn=burn, keep=keep, every=every, mala_step_size=mala_step_size)[row]


# ------------------------------------------------------------------------------ numbers
def chain_numbers(chain: Chain, target: Target, *, every: int) -> dict:
    """Bulk / tail ESS, R-hat and ESS/s of each projection, and their worst (module docstring)."""
    s = chain.states  # [draws, chains, D]
    traces = {"log_pi": target.log_pi64(s), "u0": s[..., 0].double(), "norm": s.double().norm(dim=-1)}
    out = dict(seconds=chain.seconds, burn_seconds=chain.burn_seconds, draws=int(s.shape[0]), chains=int(s.shape[1]))
    for k, tr in traces.items():
        d = mixing.diagnostics(tr, seconds=chain.seconds, every=every)
        out.update({f"{k}_ess_bulk": d["ess_bulk"], f"{k}_ess_tail": d["ess_tail"], f"{k}_rhat": d["rhat"],
                    f"{k}_mean": d["mean"], f"{k}_iat_steps": d["iat_steps"]})
    ess = min(out[f"{k}_ess_bulk"] for k in PROJECTIONS)
    steps = s.shape[0] * every
    out.update(ess_bulk_min=ess, rhat_max=max(out[f"{k}_rhat"] for k in PROJECTIONS),
               ess_per_s=ess / chain.seconds if chain.seconds > 0 else float("nan"),
               # per step of the whole batch of B chains (the unit every row pays for; PT's ESS is
               # of its B/R cold chains only)
               ess_per_1k_steps=1000.0 * ess / steps,
               seconds_per_step=chain.seconds / steps)
    return out


def _mean_sd(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def summarize(per_seed: dict, seeds) -> dict:
    """``per_seed[row]`` = [numbers of each seed] → per row: means and sample std (ddof 1) over
    seeds of ESS/s, ESS per step, R-hat, and the ratios to ``plain-ula`` of the same seed (the
    rows of a seed ran one after another, so a ratio compares the same minutes of a shared machine)."""
    base = per_seed.get(BASELINE)
    out = {}
    for row, nums in per_seed.items():
        r = {"seeds": list(seeds), "per_seed": nums}
        for key in ("ess_per_s", "ess_bulk_min", "rhat_max", "ess_per_1k_steps", "seconds_per_step", "seconds"):
            r[f"{key}_mean"], r[f"{key}_sd"] = _mean_sd([n[key] for n in nums])
        for k in PROJECTIONS:
            r[f"{k}_ess_per_s_mean"], r[f"{k}_ess_per_s_sd"] = _mean_sd([n[f"{k}_ess_bulk"] / n["seconds"] for n in nums])
        if base is not None:
            ratios = [n["ess_per_s"] / b["ess_per_s"] for n, b in zip(nums, base)]
            r["ratio_ess_per_s_vs_plain_mean"], r["ratio_ess_per_s_vs_plain_sd"] = _mean_sd(ratios)
            r["ratio_ess_per_s_vs_plain_per_seed"] = ratios
            r["ratio_time_per_step_vs_plain_mean"], _ = _mean_sd(
                [b["seconds_per_step"] / n["seconds_per_step"] for n, b in zip(nums, base)])
            r["ratio_ess_per_step_vs_plain_mean"], r["ratio_ess_per_step_vs_plain_sd"] = _mean_sd(
                [n["ess_per_1k_steps"] / b["ess_per_1k_steps"] for n, b in zip(nums, base)])
        out[row] = r
    return out


def study(target: Target, rows, seeds, *, burn: int, keep: int, every: int, pt_backends=(), pilot_steps=None,
          log=None) -> dict:
    """Every row for every seed, seed by seed, the rows in lockstep (:func:`run_rows`; their order
    rotated each seed), then :func:`summarize`.  ``log(str)``: progress lines; ``pilot_steps``: the MALA
    pilot's (default :data:`PILOT_STEPS`); PT's swap-rate pilot runs only at the default."""
    info = dict(target.describe(), burn=burn, keep=keep, every=every)
    if any(r in MALA_ROWS for r in rows):
        info.update(mala_step(target, steps=pilot_steps or PILOT_STEPS))
    for b in pt_backends:
        if f"pt-{b}" in rows:
            info.update(pt_ladder=list(LADDER), pt_swap_every=SWAP_EVERY)
            if pilot_steps is None:
                info.update(pt_pilot(target, b))
            break
    per_seed = {r: [] for r in rows}
    for i, seed in enumerate(seeds):
        order = list(rows[i % len(rows):]) + list(rows[:i % len(rows)])
        chains = run_rows(order, target, seed, burn=burn, keep=keep, every=every,
                          mala_step_size=info.get("mala_step_size"))
        for row in order:
            nums = chain_numbers(chains[row], target, every=every)
            per_seed[row].append(nums)
            if log:
                log(f"ess {target.name} B={target.batch} seed {seed} {row}: {nums['seconds']:.2f} s, "
                    f"ESS min {nums['ess_bulk_min']:.0f}, {nums['ess_per_s']:.0f}/s, R-hat {nums['rhat_max']:.3f}")
    # keep the rows' order as given (the seed-major order is only for timing)
    per_seed = {r: per_seed[r] for r in rows}
    return dict(info=info, rows=summarize(per_seed, seeds))


__all__ = ["BASE_ROWS", "BASELINE", "LADDER", "MALA_ROWS", "PROJECTIONS", "SWAP_EVERY", "TRACED_ROWS", "Target", "ULA_ROWS",
           "chain_numbers", "checkpoint_target", "make_step", "mala_step", "row_skip_reason", "run_row",
           "standard_target", "study", "summarize"]
