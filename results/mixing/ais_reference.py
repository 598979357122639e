"""An independent reference for the class weights of a sharpened prior: annealed importance
sampling (AIS, Neal 2001) along the tempering path that the ladders use.

study.py judges PT's cold-chain class frequencies against long MALA runs.  At λ ≥ 4 those runs
switch class about once per 10,000 steps, so their frequencies are the weights of the basins
their starting points fell into, not the target's; R̂ of log π does not see it when the modes'
log π agree.  AIS needs no chain to cross a barrier: each particle starts from the exact β = 0
distribution (N(0, I): the energy term is the only thing tempered, so β = 0 is p_β in ũ-space)
and carries an importance weight, so a mode that a chain cannot reach is still weighted by its
mass.  Its class weights Σ w·1{class}/Σ w are consistent as the particles grow; the weights'
effective sample size (Σw)²/Σw² says how far to trust them, and three seeds give the spread.

The path: β_k = (k/K)², k = 0 … K (dense near β = 0, where the pilots' swap rates say the
path changes fastest per unit β).  Per temperature: the weight gains λ(β_k − β_{k−1})·F(T(u))
at the current state, then ``--mala-steps`` MALA steps (hebm's fused cpu kernel) at energy scale
β_k·λ leave p_k invariant.  The MALA step δ(β) is interpolated in β from a study JSON's chosen
ladder and step sizes (``--study``: the pilot's, seed 100, never a measured seed).

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/ais_reference.py --ckpt R/tsb_s1/ckpt.pt \\
        --study results/mixing/ts_tanh_s1_study_pt_cpu_r16.json --scales 4 16 --out results/mixing/ais_ts_tanh_s1.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm  # noqa: E402
from hebm.files import dump_json  # noqa: E402
from hebm.prior.philox import initial_noise  # noqa: E402
from study import Study, chosen_pilot  # noqa: E402

SEEDS = (21, 22, 23)  # neither study.py's PT (1–3), reference (11–13) nor pilot (100) seeds


def ais(s: Study, lam: float, seed: int, n: int, K: int, m: int, ladder, deltas) -> dict:
    ids = torch.arange(n)
    u = initial_noise(seed, n, s.D, chain_ids=ids)
    betas = (torch.arange(K + 1, dtype=torch.float64) / K) ** 2
    step = np.interp(betas.numpy(), np.asarray(ladder, dtype=float), np.asarray(deltas, dtype=float))
    logw = torch.zeros(n, dtype=torch.float64)
    accepted = 0.0
    t0 = time.perf_counter()
    for k in range(1, K + 1):
        with torch.no_grad():
            logw += lam * float(betas[k] - betas[k - 1]) * s.prior.energy(s.prior.T(u)).double()
        u, info = hebm.langevin_fused(s.prior, u, n_steps=m, step_size=float(step[k]), energy_scale=lam * float(betas[k]),
                                      seed=seed, step_offset=(k - 1) * m, chain_ids=ids, metropolis=True,
                                      return_info=True, backend="cpu", check="warn")
        accepted += float(info["accepted"].double().mean()) / m  # "accepted" counts the call's m steps
    seconds = time.perf_counter() - t0
    w = torch.softmax(logw, 0)
    labels = s.label(u)
    weights = np.bincount(labels.numpy(), weights=w.numpy(), minlength=s.n_classes)
    return dict(seed=seed, particles=n, temperatures=K, mala_steps=m, seconds=seconds,
                weight_ess=float(1.0 / (w ** 2).sum()), log_w_range=float(logw.max() - logw.min()),
                accept_rate=accepted / K, class_weight=weights.tolist(),
                unweighted_class_freq=(np.bincount(labels.numpy(), minlength=s.n_classes) / n).tolist(),
                final_state=s.where(u))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="the prior's run checkpoint (study.py's --ckpt)")
    p.add_argument("--study", required=True, help="a study.py JSON of the same checkpoint: its pilots' ladders and steps")
    p.add_argument("--scales", type=float, nargs="+", default=[4.0, 16.0])
    p.add_argument("--particles", type=int, default=256)
    p.add_argument("--temperatures", type=int, default=2000, help="K, the path's temperatures after β = 0")
    p.add_argument("--mala-steps", type=int, default=2, help="MALA steps per temperature")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.study) as fp:
        study = json.load(fp)
    s = Study(a.ckpt)
    out = dict(ckpt=a.ckpt, study=a.study, particles=a.particles, temperatures=a.temperatures,
               mala_steps=a.mala_steps, path="beta_k = (k/K)^2", date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               classifier_heldout_acc=s.clf_acc, scales={})
    for lam in a.scales:
        chosen = chosen_pilot(study, lam)
        runs = [ais(s, lam, seed, a.particles, a.temperatures, a.mala_steps, chosen["ladder"], chosen["step_sizes"])
                for seed in SEEDS]
        cw = np.array([r["class_weight"] for r in runs])
        out["scales"][f"{lam:g}"] = dict(runs=runs, class_weight_mean=cw.mean(0).tolist(),
                                         class_weight_min=cw.min(0).tolist(), class_weight_max=cw.max(0).tolist())
        for r in runs:
            print(f"λ {lam:g} seed {r['seed']}: weight ESS {r['weight_ess']:.1f} of {r['particles']}, "
                  f"acc {r['accept_rate']:.2f}, {r['seconds']:.0f}s, class weights {np.round(r['class_weight'], 3).tolist()}",
                  flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fp:
        dump_json(out, fp)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
