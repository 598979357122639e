"""RESULTS.md §6's sweep table (mnist5k, stage 1 of seed 0): one row per run directory holding
``fd.json`` (``hebm.evaluate fd``) and ``summary.json`` (``hebm.train``), with the flags from
``config.json``.  Nothing here computes a metric.

    python results/priors/sweep_table.py results/priors/sweep
"""
import glob
import json
import os
import sys


def row(run):
    fd = json.load(open(os.path.join(run, "fd.json")))
    cfg = json.load(open(os.path.join(run, "config.json")))
    s = json.load(open(os.path.join(run, "summary.json"))) if os.path.isfile(os.path.join(run, "summary.json")) else {}
    m, t = cfg["model"], cfg["train"]
    knobs = (f"{m['prior']}, energies {m['energy_hidden']}, lr {t['lr_ebm']:g}, {t['steps']} it., K {t['langevin_steps']}"
             + (f", δ {t['langevin_step_size']:g}" if m["prior"] == "ebm" else f", s {m['diffusion_step']:g}")
             + ("" if m.get("neutral_init") else ", default init") + (f", l2 {t['energy_l2']:g}" if t.get("energy_l2") else "")
             + (f", lr decay {t['lr_ebm_decay']:g}" if t.get("lr_ebm_decay", 1) != 1 else "")
             + (f", betas {t['ebm_betas']}" if t["ebm_betas"] != [0.9, 0.999] and m["prior"] == "ebm" else ""))
    gap = s.get("eval_f_gap_per_level") or ([s["eval_f_gap"]] if "eval_f_gap" in s else [])
    gap = ", ".join(f"{g:+.2f}" for g in gap) if gap and all(abs(g) < 1e6 for g in gap) else ("diverged" if gap else "—")
    return (f"| {os.path.basename(run)} | {knobs} | {fd['fd']:.2f} ± {fd['fd_std']:.2f} | {100 * fd['gap_closed']:.0f} % | "
            f"{gap} |")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "results/priors/sweep"
    print("| run | settings (the rest: defaults) | FD (± over 3 sampling seeds) | gap closed | f⁺ − f⁻ at the end (nats; per level) |")
    print("|---|---|---|---|---|")
    for run in sorted(glob.glob(os.path.join(root, "*", "fd.json"))):
        print(row(os.path.dirname(run)))
