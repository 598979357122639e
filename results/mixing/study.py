"""Issue 32's "where it matters" measurement on one trained prior: class mixing of ULA, MALA and
parallel tempering (PT) on the two-stage mnist5k EBM prior ``R/ts_s1/ckpt.pt`` (RESULTS.md §9, seed 1)
at energy_scale λ ∈ {1, 4, 16}.

Run (single-threaded; ≈ 25 min on a loaded 2-vCPU EPYC)::

    cd <checkout> && PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/study.py \
        --ckpt R/ts_s1/ckpt.pt [--out results/mixing/ts_s1_study.json] [--quick]

``--quick`` is a smoke test (tiny step counts; its numbers mean nothing).

What it does, for each λ (the sampler's ``energy_scale``: target log π = λ·F(T(u)) − ½‖u‖²):

1. **Labels.**  The run's data (``hebm.data.run_data_for``) and the independent pixel MLP of
   ``hebm.evaluation.mixing.label_classifier`` (seed 0; held-out accuracy recorded) label the
   decode ``model.decode(model.prior.T(u))`` of every recorded state.  The aggregate posterior's
   99 % Gaussian region (``hebm.evaluation.samples.PosteriorRegion`` of q(z̃|x) on the training
   split, as ``hebm.sample`` builds it) says whether the recorded states lie where the data do;
   ‖u‖ and F of the final states are recorded too.
2. **Pilot (seed 100, never a measured seed)** choosing PT's ladder and step sizes: for a
   candidate ladder, each β's MALA step δ_β is adapted (fused cpu kernel, 16 chains per β at
   energy scale β·λ, 300 Robbins–Monro steps to acceptance 0.574, the median δ taken); a 400-step
   PT pilot gives each pair's swap rate.  Candidate 1 is [0, 0.1, 0.35, 1]; candidate 2 re-spaces
   it at equal cumulative swap rejection (one step of Syed et al. 2021's ladder update, the
   rejection Λ(β) interpolated linearly between the pilot's β); the candidate with the larger
   smallest swap rate is used (ties: candidate 1).
3. **Measured runs**, B = 64 chains from N(0, I) (``hebm.prior.philox.initial_noise``), in chunked
   calls continued with ``step_offset`` and the returned state (one chain, as
   ``EBMModel.long_run`` chunks it), a draw every ``every`` steps:

   * **PT**: ``hebm.langevin_ref`` (``--pt-backend ref``, the 2026-12-06 study) or the C++ kernel's
     swap rounds (``--pt-backend cpu``), 16 groups × R = 4 (``--groups``, ``--rungs``: with more
     rungs the first candidate ladder is β = 0 and R − 1 geometric values from 10⁻³ to 1, and
     ``--pilot-warm`` adapts the re-spaced ladder's steps from the first pilot's final states, so
     that the cold rungs' δ is adapted where the cold chains are, not on the way there),
     MALA inner steps at the pilot's per-β δ, ``swap_every`` = 4 (``--swap-every``), DEO schedule, K_PT steps,
     seeds 1, 2, 3.  Measured on the 16 cold chains (slot R − 1).  Round trips are counted over the
     whole run from the traced ``swapped`` rounds (the sampler's own counter restarts with every
     call; the reconstruction is checked against it on the pilot's single call).
   * **ULA** (``hebm.langevin_fused``, cpu backend, the trained δ = ``tcfg.langevin_step_size``)
     and **MALA** (same backend, ``metropolis=True``, ``adapt_steps`` = 500 from the trained δ,
     target 0.574; the adaptation precedes the trace), 64 chains, seed 1, twice: at **equal
     steps** (K_PT, every 10: equal gradient budget per chain) and at **equal wall time** (as
     many steps as PT's seed-1 sampler seconds buy at the pilot's measured per-step time; ≈ 300
     draws).
   * **Reference** for the class frequencies: MALA (fused, as above) for K_ref steps, 64 chains,
     seeds 11, 12, 13.

4. **Numbers** (over the second half of the draws; the first half is warm-up, as in
   docs/design.md §2d), from ``hebm.evaluation.mixing``: class switches per 1,000 steps per
   chain (a lower bound at the draw spacing), classes visited per chain, the class indicators'
   ESS (min over classes that change) — total, per chain, per second of sampler time (labelling
   excluded) and per 1,000 gradient evaluations (all chains: PT pays for its hot chains); ESS and
   rank R-hat of log π (at λ, i.e. β = 1); MALA's acceptance; PT's swap rates and round trips;
   the class frequencies.  Gradient evaluations: ULA one per step, MALA one per step plus one per
   call, PT-MALA one per step plus one per segment between swap rounds (the reference re-evaluates
   after a swap).

Output: ``--out`` (JSON, ``hebm.files.dump_json``); results/mixing/README.md is written by hand
from it.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import time

import numpy as np
import torch

import hebm
import hebm.data
from hebm.evaluation import mixing
from hebm.evaluation.samples import PosteriorRegion
from hebm.files import dump_json
from hebm.models import load_model
from hebm.prior.philox import initial_noise

RUNGS = 4  # R, the rungs of a ladder group (--rungs)
GROUPS = 16  # ladder groups (--groups): 16 cold chains
B = 64  # the ULA and MALA chains
SWAP_EVERY = 4
LADDER0 = [0.0, 0.1, 0.35, 1.0]


def first_ladder(R):
    """The pilot's first candidate: LADDER0 for four rungs, else β = 0 and R − 1 geometric values
    from 10⁻³ to 1 (dense_ladder.py's)."""
    if R == len(LADDER0):
        return list(LADDER0)
    return [0.0] + [float(b) for b in np.geomspace(1e-3, 1.0, R - 1)]


def deo_parity(counter: int, m: int) -> int:
    """The DEO schedule's parity of the swap round at step counter ``counter`` (a multiple of the
    interval ``m``): pairs (r, r+1) with r ≡ parity (mod 2) propose."""
    return (counter // m - 1) % 2


def chosen_pilot(study: dict, lam: float) -> dict:
    """The pilot candidate a study JSON chose at energy scale ``lam``: its ladder and step sizes."""
    pilot = study["scales"][f"{lam:g}"]["pilot"]
    return next(c for c in pilot["candidates"] if c["ladder"] == pilot["chosen"])


PILOT_SEED = 100
PT_SEEDS = (1, 2, 3)
REF_SEEDS = (11, 12, 13)
ADAPT = 500
TARGET_ACCEPT = 0.574


class Study:
    def __init__(self, ckpt: str, pt_backend: str = "ref", rungs: int = RUNGS, groups: int = GROUPS,
                 swap_every: int = SWAP_EVERY):
        torch.set_num_threads(1)
        self.pt_backend = pt_backend
        self.m = swap_every  # steps between swap rounds
        self.R, self.G, self.B_pt = rungs, groups, rungs * groups  # PT: G groups × R rungs
        self.pilot_state = None  # the last pilot_pt's final states (a warm start for the next adaptation)
        self.model, self.mcfg, self.tcfg, _ = load_model(ckpt, "cpu")
        self.model.eval()
        self.prior = self.model.sampling_prior
        self.D = self.model.D
        self.delta = float(self.tcfg.langevin_step_size)
        self.classify, self.n_classes, self.clf_acc = mixing.label_classifier(self.tcfg, seed=0)
        data = hebm.data.run_data_for(self.tcfg)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            zq = torch.cat([self.model.posterior(data.train.x[j: j + 500], g).z for j in range(0, len(data.train.x), 500)])
        self.region = PosteriorRegion(zq)
        self.label_seconds = 0.0

    @torch.no_grad()
    def label(self, u):
        t0 = time.perf_counter()
        y = torch.as_tensor(self.classify(self.model.decode(self.prior.T(u)))).cpu()
        self.label_seconds += time.perf_counter() - t0
        return y

    @torch.no_grad()
    def log_pi(self, u, lam):
        return self.prior.log_density(u, energy_scale=lam).detach().cpu()

    @torch.no_grad()
    def where(self, u):
        z = self.prior.T(u)
        return dict(u_norm_median=float(u.norm(dim=1).median()), F_median=float(self.prior.energy(z).median()),
                    inside_posterior_region=self.region.inside(z))

    # ------------------------------------------------------------------ summaries
    def summarise(self, labels, logpi, *, every, seconds, grads, n_chains, steps, extra=None):
        """Numbers over the second half of the draws; ``seconds``/``grads``: of the whole trace,
        taken pro rata for the kept half."""
        n = labels.shape[0]
        h = n // 2
        lab, lp = labels[h:], logpi[h:]
        frac = (lab.shape[0] - 1) / max(n - 1, 1)
        sec, gr = seconds * frac, grads * frac
        cs = mixing.class_switches(lab, every=every)
        ie = mixing.indicator_ess(lab, self.n_classes)
        dg = mixing.diagnostics(lp, seconds=sec, every=every)
        ess = ie["min"]
        freq = np.bincount(lab.flatten().numpy(), minlength=self.n_classes) / lab.numel()
        out = dict(steps=steps, every=every, draws_kept=int(lab.shape[0]), chains=n_chains,
                   seconds_kept=sec, grad_evals_kept=gr,
                   switches_per_1000_steps=cs["switches_per_1000_steps"],
                   classes_visited_mean=float(np.mean(cs["classes_visited"])),
                   classes_visited=cs["classes_visited"],
                   class_ess_min=ess, class_ess_per_class=ie["per_class"],
                   class_rhat_max=ie["rhat_max"], class_rhat_ok=ie["rhat_ok"],
                   class_ess_min_per_chain=None if ess is None else ess / n_chains,
                   class_ess_per_s=None if ess is None else ess / sec,
                   class_ess_per_1000_grads=None if ess is None else 1000.0 * ess / gr,
                   logpi_rhat=dg["rhat"], logpi_ess_bulk=dg["ess_bulk"], logpi_mean=dg["mean"],
                   class_freq=freq.tolist())
        out.update(extra or {})
        return out

    # ------------------------------------------------------------------ ULA / MALA (fused)
    def run_fused(self, lam, seed, K, every, *, mala):
        ids = torch.arange(B)
        u = initial_noise(seed, B, self.D, chain_ids=ids)
        kw = dict(backend="cpu", energy_scale=lam, seed=seed, chain_ids=ids, return_info=True, check="warn")
        off, delta, extra = 0, self.delta, {}
        if mala:
            kw["metropolis"] = True
            t0 = time.perf_counter()
            u, info = hebm.langevin_fused(self.prior, u, n_steps=ADAPT, step_size=delta, adapt_steps=ADAPT,
                                          target_accept=TARGET_ACCEPT, **kw)
            extra["adapt_seconds"] = time.perf_counter() - t0
            delta = info["step_size"].detach()
            extra.update(step_size_median=float(delta.median()), step_size_min=float(delta.min()),
                         step_size_max=float(delta.max()))
            off = ADAPT
        labels, logpi, secs, accepted = [self.label(u)], [self.log_pi(u, lam)], [], []
        calls = K // every
        for c in range(calls):
            t0 = time.perf_counter()
            u, info = hebm.langevin_fused(self.prior, u, n_steps=every, step_size=delta, step_offset=off, **kw)
            secs.append(time.perf_counter() - t0)
            off += every
            if mala:
                accepted.append(info["accepted"])
            labels.append(self.label(u))
            logpi.append(self.log_pi(u, lam))
        grads_per_chain = calls * (every + 1 if mala else every)
        if mala:
            acc = torch.stack(accepted)
            extra["accept_rate_kept"] = float(acc[calls // 2:].sum() / (B * every * (calls - calls // 2)))
        extra["backend"] = info["backend"]
        extra["final_state"] = self.where(u)
        return self.summarise(torch.stack(labels), torch.stack(logpi), every=every, seconds=sum(secs),
                              grads=B * grads_per_chain, n_chains=B, steps=K, extra=extra)

    # ------------------------------------------------------------------ PT (reference)
    def pt_call(self, u, lam, seed, n, off, ladder, deltas):
        kw = dict(n_steps=n, step_size=deltas.repeat(self.G), energy_scale=lam, seed=seed, step_offset=off,
                  temperatures=ladder, swap_every=self.m, metropolis=True, return_info=True, check="warn")
        if self.pt_backend == "ref":
            return hebm.langevin_ref(self.prior, u, **kw)
        return hebm.langevin_fused(self.prior, u, backend=self.pt_backend, **kw)

    def pt_grads(self, off, n):
        """Gradient evaluations of a PT-MALA call of ``n`` steps, all chains: one per step, plus the
        first state's; the reference re-evaluates after each segment between swap rounds, the cpu
        kernel re-weights (and evaluates once more after the last step when a round follows it)."""
        if self.pt_backend == "ref":
            return self.B_pt * (n + self.segments(off, n, self.m))
        return self.B_pt * (n + 1 + (1 if (off + n) % self.m == 0 else 0))

    @staticmethod
    def segments(off, n, m):
        """Runs of steps between swap rounds (every ``m`` steps) in a call of ``n`` steps from counter ``off``."""
        k0, parts = 0, 0
        while k0 < n:
            k1 = min(n, ((off + k0) // m + 1) * m - off)
            parts += 1
            k0 = k1
        return parts

    class Trips:
        """Round trips of replicas (cold slot → hot slot → cold slot, counted on arriving back, the
        rule of ``hebm.sampler.reference.replica_exchange``) over many calls, from each round's
        ``swapped`` trace; DEO parity p = round index mod 2 (a swapped chain in slot r ≡ p pairs
        with r + 1, else with r − 1)."""

        def __init__(self, R, G, m):
            self.R, self.G, self.B_pt, self.m = R, G, R * G, m
            self.rep = torch.arange(self.B_pt)
            slot = self.rep % self.R
            self.label = (slot == self.R - 1).long()
            self.trips = torch.zeros(self.B_pt, dtype=torch.long)

        def update(self, swapped, off, n):
            rounds = [c for c in range(off + 1, off + n + 1) if c % self.m == 0]
            assert len(rounds) == swapped.shape[0]
            slot = torch.arange(self.B_pt) % self.R
            for c, sw in zip(rounds, swapped):
                p = deo_parity(c, self.m)
                src = torch.arange(self.B_pt) + torch.where(sw, torch.where(slot % 2 == p, 1, -1), 0)
                self.rep = self.rep[src]
                rg = self.rep.view(self.G, self.R)
                hot, cold = rg[:, 0], rg[:, self.R - 1]
                self.label[hot] = torch.where(self.label[hot] == 1, 2, self.label[hot])
                self.trips[cold] += (self.label[cold] == 2).long()
                self.label[cold] = 1

    def run_pt(self, lam, seed, K, every, ladder, deltas):
        ids = torch.arange(self.B_pt)
        u = initial_noise(seed, self.B_pt, self.D, chain_ids=ids)
        cold = torch.arange(self.R - 1, self.B_pt, self.R)
        labels, logpi, secs = [self.label(u[cold])], [self.log_pi(u[cold], lam)], []
        att = torch.zeros(self.G, self.R - 1, dtype=torch.long)
        acc_sw, acc_mh, grads = torch.zeros_like(att), [], 0
        trips = self.Trips(self.R, self.G, self.m)
        off = 0
        for c in range(K // every):
            t0 = time.perf_counter()
            u, info = self.pt_call(u, lam, seed, every, off, ladder, deltas)
            secs.append(time.perf_counter() - t0)
            att += info["swap_attempts"]
            acc_sw += info["swap_accepted"]
            acc_mh.append(info["accepted"])
            trips.update(info["swapped"], off, every)
            grads += self.pt_grads(off, every)
            off += every
            labels.append(self.label(u[cold]))
            logpi.append(self.log_pi(u[cold], lam))
        calls = K // every
        acc = torch.stack(acc_mh)[calls // 2:].sum(0).double() / (every * (calls - calls // 2))
        extra = dict(ladder=[float(b) for b in ladder], step_sizes=[float(d) for d in deltas], swap_every=self.m,
                     swap_rate_per_pair=(acc_sw.sum(0).double() / att.sum(0).double()).tolist(),
                     round_trips_total=int(trips.trips.sum()), round_trips_per_group_per_1000_steps=
                     1000.0 * float(trips.trips.sum()) / self.G / K,
                     accept_rate_by_slot=acc.view(self.G, self.R).mean(0).tolist(), final_state_cold=self.where(u[cold]))
        return self.summarise(torch.stack(labels), torch.stack(logpi), every=every, seconds=sum(secs), grads=grads,
                              n_chains=self.G, steps=K, extra=extra)

    # ------------------------------------------------------------------ pilot
    def adapt_ladder_steps(self, lam, ladder, u=None):
        """Each rung's MALA δ (median over its G chains), adapted at energy scale β·λ from ``u``
        (default: N(0, I) with the pilot seed)."""
        ids = torch.arange(self.B_pt)
        if u is None:
            u = initial_noise(PILOT_SEED, self.B_pt, self.D, chain_ids=ids)
        beta = torch.tensor(ladder).repeat(self.G)
        _, info = hebm.langevin_fused(self.prior, u, n_steps=300, step_size=self.delta, energy_scale=lam * beta,
                                      seed=PILOT_SEED, metropolis=True, adapt_steps=300, target_accept=TARGET_ACCEPT,
                                      backend="cpu", return_info=True, check="warn")
        return info["step_size"].detach().view(self.G, self.R).median(0).values

    def pilot_pt(self, lam, ladder, deltas, n=400):
        ids = torch.arange(self.B_pt)
        u = initial_noise(PILOT_SEED, self.B_pt, self.D, chain_ids=ids)
        t0 = time.perf_counter()
        u, info = self.pt_call(u, lam, PILOT_SEED, n, 0, torch.tensor(ladder), deltas)
        sec = time.perf_counter() - t0
        self.pilot_state = u
        trips = self.Trips(self.R, self.G, self.m)
        trips.update(info["swapped"], 0, n)
        assert torch.equal(trips.trips, info["round_trips"]), "round-trip reconstruction disagrees with the sampler"
        rate = (info["swap_accepted"].sum(0).double() / info["swap_attempts"].sum(0).double()).tolist()
        return dict(ladder=list(ladder), step_sizes=deltas.tolist(), swap_rate_per_pair=rate, seconds=sec,
                    seconds_per_step=sec / n, round_trips=int(info["round_trips"].sum()),
                    accept_rate_by_slot=info["accept_rate"].view(self.G, self.R).mean(0).tolist())

    @staticmethod
    def respace(ladder, rates):
        rej = np.clip(1.0 - np.asarray(rates, dtype=float), 1e-3, None)
        lam_cum = np.concatenate([[0.0], np.cumsum(rej)])
        targets = np.linspace(0.0, lam_cum[-1], len(ladder))
        new = np.interp(targets, lam_cum, np.asarray(ladder, dtype=float))
        new[0], new[-1] = 0.0, 1.0
        return [float(b) for b in new]

    def fused_step_seconds(self, lam, mala, delta, n=500):
        u = initial_noise(PILOT_SEED, B, self.D)
        t0 = time.perf_counter()
        hebm.langevin_fused(self.prior, u, n_steps=n, step_size=delta, energy_scale=lam, seed=PILOT_SEED,
                            metropolis=mala, backend="cpu", check="off")
        return (time.perf_counter() - t0) / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="R/ts_s1/ckpt.pt: the two-stage EBM of RESULTS.md §9, seed 1")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "ts_s1_study.json"))
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    p.add_argument("--k-pt", type=int, default=3000, help="PT steps (and the equal-steps ULA/MALA runs)")
    p.add_argument("--every", type=int, default=10, help="steps between draws at K_PT")
    p.add_argument("--k-ref", type=int, default=100000, help="steps of each reference MALA run")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny step counts")
    p.add_argument("--pt-backend", default="ref", choices=("ref", "cpu"),
                   help="where PT runs: the reference (the 2026-12-06 study) or the C++ kernel's swap rounds")
    p.add_argument("--rungs", type=int, default=RUNGS, help="R, rungs per ladder group (default 4: [0, .1, .35, 1]; "
                   "more: β = 0 and geometric from 1e-3 to 1)")
    p.add_argument("--groups", type=int, default=GROUPS, help="ladder groups, i.e. measured cold chains (default 16)")
    p.add_argument("--pilot-warm", action="store_true",
                   help="adapt the re-spaced ladder's step sizes from the first pilot's final states, not from N(0, I)")
    p.add_argument("--swap-every", type=int, default=SWAP_EVERY,
                   help=f"PT's steps between swap rounds (default {SWAP_EVERY}; 1: a round after every step)")
    a = p.parse_args()
    if a.quick:
        a.k_pt, a.every, a.k_ref = 80, 8, 400
    t_start = time.perf_counter()
    s = Study(a.ckpt, a.pt_backend, a.rungs, a.groups, a.swap_every)
    out = dict(ckpt=a.ckpt, command="PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/study.py"
               + (" --quick" if a.quick else "") + f" --pt-backend {a.pt_backend} --scales {' '.join(f'{x:g}' for x in a.scales)}"
               + f" --k-pt {a.k_pt} --every {a.every} --k-ref {a.k_ref} --rungs {a.rungs} --groups {a.groups}"
               + (" --pilot-warm" if a.pilot_warm else "") + f" --swap-every {a.swap_every}", pt_backend=a.pt_backend, torch=torch.__version__, platform=platform.platform(),
               threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               classifier_heldout_acc=s.clf_acc, trained_step_size=s.delta, B=B, R=s.R, groups=s.G, B_pt=s.B_pt, swap_every=a.swap_every, pilot_warm=a.pilot_warm, K_pt=a.k_pt, every=a.every,
               K_ref=a.k_ref, scales={})
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    for lam in a.scales:
        print(f"== energy_scale {lam:g}", flush=True)
        res = out["scales"][f"{lam:g}"] = {}
        # pilot: ladder and per-β steps (seed 100)
        lad0 = first_ladder(s.R)
        d0 = s.adapt_ladder_steps(lam, lad0)
        p0 = s.pilot_pt(lam, lad0, d0, n=40 if a.quick else 400)
        lad1 = s.respace(lad0, p0["swap_rate_per_pair"])
        d1 = s.adapt_ladder_steps(lam, lad1, u=s.pilot_state if a.pilot_warm else None)
        p1 = s.pilot_pt(lam, lad1, d1, n=40 if a.quick else 400)
        pick = p1 if min(p1["swap_rate_per_pair"]) > min(p0["swap_rate_per_pair"]) else p0
        res["pilot"] = dict(candidates=[p0, p1], chosen=pick["ladder"])
        print("  pilot", [(c["ladder"], [round(r, 3) for r in c["swap_rate_per_pair"]]) for c in (p0, p1)], flush=True)
        ladder, deltas = torch.tensor(pick["ladder"]), torch.tensor(pick["step_sizes"])
        # PT, seeds 1-3
        res["pt"] = {}
        for seed in PT_SEEDS:
            r = res["pt"][str(seed)] = s.run_pt(lam, seed, a.k_pt, a.every, ladder, deltas)
            print(f"  PT seed {seed}: {r['seconds_kept'] * 2:.1f}s  ess {r['class_ess_min']}  sw {r['switches_per_1000_steps']:.3f}"
                  f"  swap {[round(x, 3) for x in r['swap_rate_per_pair']]}  trips {r['round_trips_total']}", flush=True)
        pt_seconds = res["pt"][str(PT_SEEDS[0])]["seconds_kept"] * 2
        # equal steps and equal wall time, seed 1
        for mala, name in ((False, "ula"), (True, "mala")):
            res[name + "_equal_steps"] = s.run_fused(lam, 1, a.k_pt, a.every, mala=mala)
            t_step = s.fused_step_seconds(lam, mala, s.delta if not mala else res[name + "_equal_steps"]["step_size_median"])
            k_wall = max(a.k_pt, int(pt_seconds / t_step))
            ev = max(a.every, k_wall // (a.k_pt // a.every))
            k_wall = (k_wall // ev) * ev
            r = res[name + "_equal_wall"] = s.run_fused(lam, 1, k_wall, ev, mala=mala)
            r["pilot_seconds_per_step"] = t_step
            print(f"  {name}: equal steps ess {res[name + '_equal_steps']['class_ess_min']}; equal wall K={k_wall}"
                  f" {r['seconds_kept'] * 2:.1f}s ess {r['class_ess_min']} sw {r['switches_per_1000_steps']:.3f}", flush=True)
        # reference: long MALA, 3 seeds
        res["reference_mala"] = {}
        for seed in REF_SEEDS:
            ev = a.k_ref // 200
            r = res["reference_mala"][str(seed)] = s.run_fused(lam, seed, a.k_ref, ev, mala=True)
            print(f"  ref seed {seed}: freq {np.round(r['class_freq'], 3).tolist()} rhat {r['logpi_rhat']:.3f}", flush=True)
        # the target's comparisons
        ref = np.array([res["reference_mala"][str(sd)]["class_freq"] for sd in REF_SEEDS])
        ptf = np.array([res["pt"][str(sd)]["class_freq"] for sd in PT_SEEDS])
        tv = mixing.total_variation
        inside = bool(np.all((ptf.mean(0) >= ref.min(0) - 1e-12) & (ptf.mean(0) <= ref.max(0) + 1e-12)))
        pt1, mala = res["pt"][str(PT_SEEDS[0])], res["mala_equal_wall"]

        def ratio(x, y):
            return None if x is None or y is None or y == 0 else x / y

        res["compare"] = dict(
            pt_over_mala_ess_per_s=ratio(pt1["class_ess_per_s"], mala["class_ess_per_s"]),
            pt_over_mala_ess_per_1000_grads=ratio(pt1["class_ess_per_1000_grads"],
                                                  res["mala_equal_steps"]["class_ess_per_1000_grads"]),
            pt_over_mala_ess_per_chain_equal_steps=ratio(pt1["class_ess_min_per_chain"],
                                                         res["mala_equal_steps"]["class_ess_min_per_chain"]),
            ref_freq_mean=ref.mean(0).tolist(), ref_freq_min=ref.min(0).tolist(), ref_freq_max=ref.max(0).tolist(),
            pt_freq_mean=ptf.mean(0).tolist(), pt_freq_within_ref_seed_range=inside,
            tv_pt_mean_vs_ref_mean=tv(ptf.mean(0), ref.mean(0)),
            tv_ref_seeds_vs_ref_mean=[tv(x, ref.mean(0)) for x in ref],
            tv_pt_seeds_vs_ref_mean=[tv(x, ref.mean(0)) for x in ptf])
        print("  compare", {k: v for k, v in res["compare"].items() if not k.endswith(("_mean", "_min", "_max"))},
              flush=True)
    out["label_seconds"] = s.label_seconds
    out["total_seconds"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fp:
        dump_json(out, fp)
    print("wrote", a.out, f"in {out['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
