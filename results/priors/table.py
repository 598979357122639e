"""RESULTS.md §6's tables from the runs' JSON outputs (nothing here computes a metric).

    python results/priors/table.py results/priors/mnist5k [results/priors/digits]

Each run directory holds ``summary_eval.json`` (``python -m hebm.evaluate summary``: FD of the
model's prior, of the same generator's Gaussian prior p_β and of its Recon, per sampling seed;
prior hole per layer; f⁺ − f⁻ in nats) and, for energy-based priors, ``sample_longrun.json``.
Runs are grouped by name without the ``_s<seed>`` suffix; a row is mean ± std over the seeds
(each seed's FD being the mean over its sampling seeds).
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

import numpy as np


def gap_closed(base: float, prior: float, floor: float) -> float:
    den = base - floor
    return (base - prior) / den if den > 0 else float("nan")


def load(run: str) -> dict:
    with open(os.path.join(run, "summary_eval.json")) as f:
        s = json.load(f)
    out = dict(fd=s["fd_fd"], fd_gaussian=s["fd_fd_gaussian"], fd_recon=s["fd_fd_recon"],
               hole_gauss=s["prior_hole_gaussian"], hole_model=s["prior_hole_model"], active=s["active_units"],
               kl=s["kl_per_layer"], prior=s["prior"])
    out["closed"] = gap_closed(out["fd_gaussian"], out["fd"], out["fd_recon"])
    if "f_gap_per_level" in s:
        out["gap"] = s["f_gap_per_level"]
    elif "f_gap" in s:
        out["gap"] = [s["f_gap"]]
    lr = os.path.join(run, "sample_longrun.json")
    if os.path.isfile(lr):
        with open(lr) as f:
            r = json.load(f)
        out["longrun"] = (min(r["inside_fraction"]), r["stays_in_data_region"])
    wall = [line.split()[1] for line in open(run + ".log") if line.startswith("train_wall_s")] \
        if os.path.isfile(run + ".log") else []
    out["wall"] = float(wall[-1]) if wall else float("nan")
    return out


def ms(vals, fmt="{:.2f}"):
    v = [x for x in vals if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    return (fmt + " ± " + fmt).format(np.mean(v), np.std(v)) if len(v) > 1 else fmt.format(v[0])


#: row labels and order (run names without the seed suffix)
LABELS = {"gauss": "Gaussian p_β (stage 1)", "ts": "two-stage joint EBM",
          "df_s3e-3": "diffusion EBM, T = 3, s = 3·10⁻³ (the default)", "df": "diffusion EBM, T = 3, s = 3·10⁻⁵ (the authors')",
          "df_noneutral": "… s = 3·10⁻⁵, PyTorch's default init (paired)", "joint": "joint-trained EBM (its own generator)"}
LABELS.update({f"dfT{t}": f"diffusion EBM, T = {t}, s = 3·10⁻⁵" for t in range(1, 7)})


def table(root: str) -> str:
    groups: dict = {}
    for d in sorted(glob.glob(os.path.join(root, "*", "summary_eval.json"))):
        run = os.path.dirname(d)
        name = re.sub(r"_s\d+$", "", os.path.basename(run))
        groups.setdefault(name, []).append(load(run))
    lines = ["| prior (same generator unless noted) | seeds | FD | its p_β's FD | Recon (floor) | gap closed | "
             "prior hole z₁, z₂, z₃ (model) | f⁺ − f⁻ (nats; per level) | long run: min inside | train wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = list(LABELS)
    for name, rs in sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        holes = np.array([r["hole_model"] for r in rs]).mean(0)
        gaps = [r["gap"] for r in rs if "gap" in r]
        gap = "—" if not gaps else ", ".join(f"{np.mean([g[j] for g in gaps]):+.2f}" for j in range(len(gaps[0])))
        lrs = [r["longrun"] for r in rs if "longrun" in r]
        lr = "—" if not lrs else f"{min(x[0] for x in lrs):.2f} ({'stays' if all(x[1] for x in lrs) else 'leaves'})"
        lines.append(f"| {LABELS.get(name, name)} | {len(rs)} | {ms([r['fd'] for r in rs])} | {ms([r['fd_gaussian'] for r in rs])} | "
                     f"{ms([r['fd_recon'] for r in rs])} | {ms([100 * r['closed'] for r in rs], '{:.0f}')} % | "
                     f"{', '.join(f'{h:.2f}' for h in holes)} | {gap} | {lr} | {ms([r['wall'] for r in rs], '{:.0f}')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for root in sys.argv[1:] or ["results/priors/mnist5k"]:
        print(f"### {root}\n")
        print(table(root))
        print()
