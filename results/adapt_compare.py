"""RESULTS.md §8: which step adaptation is stabler here: dual averaging vs Robbins–Monro, on the three default
digits models' priors (ũ-space chains from N(0, I)) and on N(0, I) (λ = 0); N = 200 warm-up
steps, 300 frozen steps, 256 chains, 4 sampling seeds per model.

    python results/adapt_compare.py [RUNS]       # RUNS holds dig_def_s{0,1,2}/ckpt.pt; writes RUNS/adapt_compare.json
"""
import os
import statistics
import sys

import torch

import hebm
from hebm.files import dump_json
from hebm.models import load_model


def main(runs: str) -> None:
    torch.set_num_threads(2)
    res = {}
    models = [(f"digits s{s}", load_model(os.path.join(runs, f"dig_def_s{s}", "ckpt.pt"), "cpu")[0].prior)
              for s in (0, 1, 2)]
    models.append(("N(0, I) (lambda = 0)", models[0][1]))
    for name, prior in models:
        lam = 0.0 if "N(0" in name else 1.0
        for rule in ("dual_averaging", "robbins_monro"):
            rates, dmeans, dcv = [], [], []
            for seed in range(4):
                u = hebm.initial_noise(100 + seed, 256, prior.D)
                _, info = hebm.langevin_fused(prior, u, n_steps=500, step_size=0.4, energy_scale=lam, seed=seed,
                                              metropolis=True, adapt_steps=200, adapt=rule, return_info=True)
                d = info["step_size"]
                rates.append(float(info["accept_rate"].mean()))
                dmeans.append(float(d.mean()))
                dcv.append(float(d.std() / d.mean()))
            r = res[(name, rule)] = dict(acc_mean=statistics.mean(rates), acc_sd=statistics.stdev(rates),
                                         delta_mean=statistics.mean(dmeans), delta_sd_over_seeds=statistics.stdev(dmeans),
                                         delta_cv_over_chains=statistics.mean(dcv))
            print(f"| {name} | {rule} | {r['acc_mean']:.3f} ± {r['acc_sd']:.3f} | {r['delta_mean']:.3f} ± "
                  f"{r['delta_sd_over_seeds']:.3f} | {r['delta_cv_over_chains']:.3f} |", flush=True)
    with open(os.path.join(runs, "adapt_compare.json"), "w") as f:
        dump_json({f"{k[0]}|{k[1]}": v for k, v in res.items()}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")  # (README main job, --seed S, in RUNS/dig_def_sS)
