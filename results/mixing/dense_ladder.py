"""Supplement to study.py: would a denser ladder have rescued PT at energy_scale 16?

One PT run (``hebm.langevin_ref``, MALA inner steps, DEO swaps every 4 steps) of B = 64 chains as
4 groups × R = 16 rungs, β = [0] + 15 geometric values from 10⁻³ to 1, per-β step sizes adapted as
in study.py (fused MALA at energy scale β·λ, 300 Robbins–Monro steps to 0.574, median per β), 2,000
steps from N(0, I) with seed 100 (study.py's pilot seed, never a measured seed), in one call.
Prints and writes (results/mixing/dense_ladder.json) the swap rate of each neighbour pair, the
round trips, and where the cold chains end (‖u‖, F, inside the posterior's 99 % region).

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/dense_ladder.py     # ≈ 1 min
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hebm  # noqa: E402
from hebm.files import dump_json  # noqa: E402
from hebm.prior.philox import initial_noise  # noqa: E402
from study import PILOT_SEED, SWAP_EVERY, TARGET_ACCEPT, Study  # noqa: E402

LAM, R, B, K = 16.0, 16, 64, 2000


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python results/mixing/dense_ladder.py R/ts_s1/ckpt.pt  (the two-stage EBM of RESULTS.md §9, seed 1)")
    s = Study(sys.argv[1])
    G = B // R
    ladder = torch.cat([torch.zeros(1), torch.logspace(-3, 0, R - 1)])
    ids = torch.arange(B)
    u0 = initial_noise(PILOT_SEED, B, s.D, chain_ids=ids)
    _, info = hebm.langevin_fused(s.prior, u0, n_steps=300, step_size=s.delta, energy_scale=LAM * ladder.repeat(G),
                                  seed=PILOT_SEED, metropolis=True, adapt_steps=300, target_accept=TARGET_ACCEPT,
                                  backend="cpu", return_info=True, check="off")
    deltas = info["step_size"].view(G, R).median(0).values
    t0 = time.perf_counter()
    u, info = hebm.langevin_ref(s.prior, u0, n_steps=K, step_size=deltas.repeat(G), energy_scale=LAM, seed=PILOT_SEED,
                                temperatures=ladder, swap_every=SWAP_EVERY, metropolis=True, return_info=True, check="off")
    sec = time.perf_counter() - t0
    rate = (info["swap_accepted"].sum(0).double() / info["swap_attempts"].sum(0).double()).tolist()
    out = dict(energy_scale=LAM, R=R, groups=G, steps=K, ladder=ladder.tolist(), step_sizes=deltas.tolist(),
               swap_rate_per_pair=rate, round_trips=int(info["round_trips"].sum()), seconds=sec,
               accept_rate_by_slot=info["accept_rate"].view(G, R).mean(0).tolist(),
               cold=s.where(u[R - 1::R]), hottest_nonzero=s.where(u[1::R]))
    print({k: ([round(x, 4) for x in v] if isinstance(v, list) else v) for k, v in out.items()})
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dense_ladder.json"), "w") as fp:
        dump_json(out, fp)


if __name__ == "__main__":
    main()
