"""Supplement to study.py: would a denser ladder have rescued PT at energy_scale 16?

One PT run (``hebm.langevin_ref``, MALA inner steps, DEO swaps every 4 steps) of B = 64 chains as
4 groups × R = 16 rungs, β = [0] + 15 geometric values from 10⁻³ to 1, per-β step sizes adapted as
in study.py (fused MALA at energy scale β·λ, 300 Robbins–Monro steps to 0.574, median per β), 2,000
steps from N(0, I) with seed 100 (study.py's pilot seed, never a measured seed), in one call.
Prints and writes (``--out``, default results/mixing/dense_ladder.json) the swap rate of each
neighbour pair, the round trips, and where the cold chains end (‖u‖, F, inside the posterior's
99 % region).  ``--pt-backend cpu`` runs the swap rounds in the C++ kernel (the same decisions,
docs/design.md §2c), ``--scale`` the energy scale λ.

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/dense_ladder.py R/ts_s1/ckpt.pt     # ≈ 1 min
"""
import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm  # noqa: E402
from hebm.files import dump_json  # noqa: E402
from hebm.prior.philox import initial_noise  # noqa: E402
from study import PILOT_SEED, SWAP_EVERY, TARGET_ACCEPT, Study, first_ladder  # noqa: E402

R, B, K = 16, 64, 2000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt", help="a two-stage EBM run's checkpoint, e.g. R/ts_s1/ckpt.pt (RESULTS.md §9, seed 1)")
    p.add_argument("--scale", type=float, default=16.0, help="the energy scale λ (default 16)")
    p.add_argument("--pt-backend", default="ref", choices=("ref", "cpu"), help="where the swap rounds run")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "dense_ladder.json"))
    a = p.parse_args()
    LAM = a.scale
    s = Study(a.ckpt)
    G = B // R
    ladder = torch.tensor(first_ladder(R))
    ids = torch.arange(B)
    u0 = initial_noise(PILOT_SEED, B, s.D, chain_ids=ids)
    _, info = hebm.langevin_fused(s.prior, u0, n_steps=300, step_size=s.delta, energy_scale=LAM * ladder.repeat(G),
                                  seed=PILOT_SEED, metropolis=True, adapt_steps=300, target_accept=TARGET_ACCEPT,
                                  backend="cpu", return_info=True, check="off")
    deltas = info["step_size"].view(G, R).median(0).values
    t0 = time.perf_counter()
    run = hebm.langevin_ref if a.pt_backend == "ref" else functools.partial(hebm.langevin_fused, backend=a.pt_backend)
    u, info = run(s.prior, u0, n_steps=K, step_size=deltas.repeat(G), energy_scale=LAM, seed=PILOT_SEED,
                  temperatures=ladder, swap_every=SWAP_EVERY, metropolis=True, return_info=True, check="off")
    sec = time.perf_counter() - t0
    rate = (info["swap_accepted"].sum(0).double() / info["swap_attempts"].sum(0).double()).tolist()
    out = dict(ckpt=a.ckpt, pt_backend=a.pt_backend, energy_scale=LAM, R=R, groups=G, steps=K, ladder=ladder.tolist(), step_sizes=deltas.tolist(),
               swap_rate_per_pair=rate, round_trips=int(info["round_trips"].sum()), seconds=sec,
               accept_rate_by_slot=info["accept_rate"].view(G, R).mean(0).tolist(),
               cold=s.where(u[R - 1::R]), hottest_nonzero=s.where(u[1::R]))
    print({k: ([round(x, 4) for x in v] if isinstance(v, list) else v) for k, v in out.items()})
    with open(a.out, "w") as fp:
        dump_json(out, fp)


if __name__ == "__main__":
    main()
