"""Does a ladder's swap acceptance depend on the digit classes of the two states it would exchange?

The open question of results/mixing/README.md ("a swap round after every step"): on seed 3 at
λ = 16 every neighbour pair of the 16-rung ladder swaps ≥ 40 % of the time, yet the ladder makes
only ~4 round trips per group in 3,000 steps.  The hypothesis: swaps between two states of
*different* classes are accepted far less often than swaps between two states of one class, so
the pairs' average rates hide a barrier that a replica carrying a class must cross.  The test
could come out either way: if same-class and different-class proposals are accepted alike, the
hypothesis is wrong.

What it does: PT as study.py runs it (the study JSON's chosen ladder and per-rung MALA steps, its
swap interval and groups; fused cpu kernel, DEO), ``--warm`` steps from N(0, I) with PT seed 1,
then ``--steps`` more with a draw after every step (``trace_every=1``: the states each slot holds
before the swap round that follows the step).  Every draw is decoded and labelled by study.py's
classifier.  For every round and every proposing neighbour pair (r, r+1) it records whether the
swap was accepted and whether the two states shared a class, and reports, per pair, the
acceptance of same-class and different-class proposals and how many there were.

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/swap_by_class.py --ckpt R/ts_tanh_s3/ckpt.pt \\
        --study results/mixing/ts_tanh_s3_study_pt_cpu_r16_m1.json --scale 16 --out results/mixing/swap_by_class_s3_l16.json
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
from study import Study, chosen_pilot, deo_parity  # noqa: E402

SEED = 1  # study.py's first PT seed


def pair_outcomes(labels: torch.Tensor, swapped: torch.Tensor, R: int, first_round: int, m: int):
    """Per proposing pair of every round: (lower slot r, same class?, accepted?).

    ``labels`` [n, B]: the class of the state each chain slot holds before round k;
    ``swapped`` [n, B]: the round's exchanges (both chains of an accepted pair marked);
    round k has counter ``first_round + k·m``; the pairs that propose follow study.deo_parity."""
    n, B = labels.shape
    slot = torch.arange(B) % R
    rows = []
    for k in range(n):
        p = deo_parity(first_round + k * m, m)
        low = torch.nonzero((slot % 2 == p) & (slot + 1 < R)).flatten()
        same = labels[k, low] == labels[k, low + 1]
        acc = swapped[k, low]
        rows.append(torch.stack([slot[low], same.long(), acc.long()], 1))
    return torch.cat(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--study", required=True, help="a study.py JSON of the same checkpoint (its chosen ladder and steps)")
    p.add_argument("--scale", type=float, default=16.0)
    p.add_argument("--warm", type=int, default=1500)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    st = json.load(open(a.study))
    chosen = chosen_pilot(st, a.scale)
    s = Study(a.ckpt, "cpu", st["R"], st["groups"], st.get("swap_every", 4))
    ladder, deltas = torch.tensor(chosen["ladder"]), torch.tensor(chosen["step_sizes"])
    u = initial_noise(SEED, s.B_pt, s.D, chain_ids=torch.arange(s.B_pt))
    t0 = time.perf_counter()
    u, _ = s.pt_call(u, a.scale, SEED, a.warm, 0, ladder, deltas)
    _, info = hebm.langevin_fused(s.prior, u, n_steps=a.steps, step_size=deltas.repeat(s.G), energy_scale=a.scale,
                                  seed=SEED, step_offset=a.warm, temperatures=ladder, swap_every=s.m, metropolis=True,
                                  trace_every=s.m, return_info=True, backend="cpu", check="warn")
    sampler_s = time.perf_counter() - t0
    draws = info["draws"]  # [n, B, D]: one per swap round
    labels = torch.cat([s.label(d) for d in draws]).view(draws.shape[0], s.B_pt)
    rows = pair_outcomes(labels, info["swapped"], s.R, a.warm + s.m, s.m).numpy()
    per_pair = []
    for r in range(s.R - 1):
        x = rows[rows[:, 0] == r]
        # the pairs and parities read from the trace agree with the sampler's own swap counts
        assert len(x) == int(info["swap_attempts"][:, r].sum()) and int(x[:, 2].sum()) == int(info["swap_accepted"][:, r].sum()), \
            f"pair {r}: the reconstruction of proposals and acceptances disagrees with the sampler's counts"
        cell = {}
        for name, same in (("same_class", 1), ("different_class", 0)):
            y = x[x[:, 1] == same]
            cell[name] = dict(proposals=int(len(y)), accepted=int(y[:, 2].sum()),
                              rate=None if len(y) == 0 else float(y[:, 2].mean()))
        per_pair.append(dict(pair=[r, r + 1], beta=[float(ladder[r]), float(ladder[r + 1])], **cell))
        print(f"pair {r:2d}-{r + 1:2d}  β {float(ladder[r]):.3f}-{float(ladder[r + 1]):.3f}  "
              + "  ".join(f"{k} {c['rate']} (n {c['proposals']})" for k, c in cell.items()), flush=True)
    cls = labels.view(-1, s.G, s.R)  # [n, G, R]
    by_slot = [np.bincount(cls[:, :, r].flatten().numpy(), minlength=s.n_classes).tolist() for r in range(s.R)]
    out = dict(ckpt=a.ckpt, study=a.study, scale=a.scale, seed=SEED, warm=a.warm, steps=a.steps, swap_every=s.m,
               R=s.R, groups=s.G, ladder=chosen["ladder"], sampler_seconds=sampler_s, per_pair=per_pair,
               class_counts_by_slot=by_slot, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               command="PYTHONPATH=. OMP_NUM_THREADS=1 python results/mixing/swap_by_class.py " + " ".join(sys.argv[1:]))
    with open(a.out, "w") as fp:
        dump_json(out, fp)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
