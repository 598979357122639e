"""RESULTS.md's tables from the experiment outputs (the JSON files the commands in RESULTS.md write).

    python results/tables.py [RUNS_DIR]          # markdown on stdout (default: results/experiments)

RUNS_DIR holds what RESULTS.md's commands wrote: ``anom_<data>_<prior>.json`` (+ the protocol's run
directories ``anom_<data>_<prior>/<prior>-holdout<h>-seed<s>/summary.json``), ``dig_<prior>_s<seed>/``
(``summary.json`` from hebm.train, ``summary_eval.json`` from ``hebm.evaluate summary``,
``ood_photos.json``, ``sample_longrun.json``) and ``mn_ebm_default/``.  Nothing here computes a
metric: it only reads and lays out.
"""
from __future__ import annotations

import json
import math
import os
import sys

PRIORS = ("gaussian", "ebm", "diffusion")
SHORT = {"gaussian": "gauss", "ebm": "ebm", "diffusion": "diff"}
HOLDOUTS = ("1", "4", "5", "7", "9")
PAPER = {"paper 1 (CVPR'23), MNIST": (0.470, 0.941, 0.964, 0.815, 0.796),
         "DAMC (published), MNIST": (0.684, 0.911, 0.939, 0.801, None)}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd


def fmt(m, sd=None, p=3):
    if m is None:
        return "—"
    return f"{m:.{p}f}" if sd is None else f"{m:.{p}f} ± {sd:.{p}f}"


def anomaly(root, data):
    out = [f"| prior ({data}) | " + " | ".join(f"held-out {h}" for h in HOLDOUTS) + " | mean |",
           "|---" * (len(HOLDOUTS) + 2) + "|"]
    for prior in PRIORS:
        d = load(os.path.join(root, f"anom_{data}_{SHORT[prior]}.json"))
        if d is None:
            continue
        cells, means = [], []
        for h in HOLDOUTS:
            t = d["table"].get(h)
            if t is None:
                cells.append("—")
                continue
            m, sd = mean_std(t["values"])
            means.append(m)
            cells.append(fmt(m, sd))
        out.append(f"| hebm {prior} ({d['seeds']} seeds) | " + " | ".join(cells) + f" | {fmt(mean_std(means)[0])} |")
    if data == "mn":
        for name, vals in PAPER.items():
            out.append(f"| {name} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in vals) + " | |")
    return "\n".join(out)


def last_level_gaps(run):
    """The diffusion's per-level f⁺ − f⁻ of the last training-log row that has them (None if
    none): ``metrics_last.json``, what the repository keeps of a finished run's ``metrics.jsonl``
    (its last row, and its last row with per-level gaps)."""
    d = load(os.path.join(run, "metrics_last.json"))
    row = None if d is None else d.get("last_with_f_gap_per_level")
    return row["f_gap_per_level"] if row else None


def anomaly_health(root, data):
    """Active units per layer and f+ - f- of every protocol run (the models behind the AUPRCs)."""
    out = ["| prior | runs | active units per layer (min … max over runs) | KL per layer, mean (nats) | "
           "f⁺ − f⁻ (mean, largest magnitude) |", "|---|---|---|---|---|"]
    for prior in PRIORS:
        base = os.path.join(root, f"anom_{data}_{SHORT[prior]}")
        if not os.path.isdir(base):
            continue
        sums = [load(os.path.join(base, r, "summary.json")) for r in sorted(os.listdir(base))]
        sums = [s for s in sums if s]
        if not sums:
            continue
        L = len(sums[0]["active_units"])
        au = [f"{min(s['active_units'][i] for s in sums)}…{max(s['active_units'][i] for s in sums)}" for i in range(L)]
        kl = [fmt(mean_std([s["kl_per_layer"][i] for s in sums])[0], p=2) for i in range(L)]
        gaps = [s["eval_f_gap"] for s in sums if "eval_f_gap" in s]
        gap = f"{fmt(mean_std(gaps)[0])}, {max(abs(g) for g in gaps):.3f}" if gaps else "no energy"
        levels = [r for r in (last_level_gaps(os.path.join(base, d)) for d in sorted(os.listdir(base))) if r]
        if levels:  # diffusion: the per-level gaps of the last training row (metrics.jsonl)
            per = [mean_std([r[t] for r in levels])[0] for t in range(len(levels[0]))]
            worst = max(abs(g) for r in levels for g in r)
            gap = f"per level [{', '.join(fmt(g) for g in per)}], {worst:.3f} (last training row)"
        out.append(f"| {prior} | {len(sums)} | [{', '.join(au)}] | [{', '.join(kl)}] | {gap} |")
    return "\n".join(out)


def digits(root, seeds=(0, 1, 2)):
    out = ["| prior | active units | KL per layer (nats) | f⁺ − f⁻ | prior hole, p_β (per layer) | "
           "prior hole, model prior | FD vs train (± over seeds) | held-out ELBO |",
           "|---|---|---|---|---|---|---|---|"]
    for prior in PRIORS:
        rows = []
        for s in seeds:
            d = os.path.join(root, f"dig_{SHORT[prior]}_s{s}")
            tr, ev = load(os.path.join(d, "summary.json")), load(os.path.join(d, "summary_eval.json"))
            if tr and ev:
                rows.append((tr, ev))
        if not rows:
            continue
        L = len(rows[0][0]["active_units"])

        def per_layer(get, p=2):
            return "[" + ", ".join(fmt(*mean_std([get(r, i) for r in rows]), p=p) for i in range(L)) + "]"

        au = "[" + ", ".join("/".join(str(r[0]["active_units"][i]) for r in rows) for i in range(L)) + "]"
        kl = per_layer(lambda r, i: r[0]["kl_per_layer"][i])
        gaps = [r[0].get("eval_f_gap") for r in rows]
        gap = fmt(*mean_std(gaps)) if any(g is not None for g in gaps) else "no energy"
        levels = [g for g in (last_level_gaps(os.path.join(root, f"dig_{SHORT[prior]}_s{s}")) for s in seeds) if g]
        if levels:  # diffusion: per level, from the last training row
            gap = "per level [" + ", ".join(fmt(mean_std([g[t] for g in levels])[0]) for t in range(len(levels[0]))) + "]"
        hole_g = per_layer(lambda r, i: r[1]["prior_hole_gaussian"][i])
        hole_m = per_layer(lambda r, i: r[1]["prior_hole_model"][i]) if prior != "gaussian" else "= p_β"
        fd = fmt(*mean_std([r[1]["fd_fd"] for r in rows]), p=2)
        elbo = fmt(*mean_std([r[1]["heldout_elbo"] for r in rows]), p=1)
        out.append(f"| {prior} ({len(rows)} seeds) | {au} | {kl} | {gap} | {hole_g} | {hole_m} | {fd} | {elbo} |")
    floor = [load(os.path.join(root, f"dig_gauss_s{s}", "summary_eval.json")) for s in seeds]
    floor = [f["fd_fd_heldout_vs_train"] for f in floor if f]
    if floor:
        out.append(f"\nFD of the held-out images vs the training set, same features: {fmt(*mean_std(floor), p=2)} — a "
                   f"reference, not a floor: FD's small-sample bias grows as n shrinks, and the held-out set is 10 % of "
                   f"the data, the sample rows 1,000 images")
    return "\n".join(out)


def ood(root, seeds=(0, 1, 2)):
    out = ["| prior | form | score | AUROC | AUPRC | FPR80 |", "|---|---|---|---|---|---|"]
    for prior in PRIORS:
        runs = [load(os.path.join(root, f"dig_{SHORT[prior]}_s{s}", "ood_photos.json")) for s in seeds]
        runs = [r for r in runs if r]
        if not runs:
            continue
        for j, row in enumerate(runs[0]["rows"]):
            vals = {k: mean_std([r["rows"][j][k] for r in runs]) for k in ("auroc", "auprc", "fpr80")}
            out.append(f"| {prior} | {row['form']} | {row['score']} | " + " | ".join(fmt(*vals[k]) for k in
                                                                                  ("auroc", "auprc", "fpr80")) + " |")
    return "\n".join(out)


def longrun(root):
    out = ["| run | K | log π first → last (min, max) | mean energy first → last | inside the posterior's 99 % "
           "region first → last | stays in the data region |", "|---|---|---|---|---|---|"]
    for name in ("dig_ebm_s0", "dig_diff_s0", "mn_ebm_default"):
        d = load(os.path.join(root, name, "sample_longrun.json"))
        if not d:
            continue
        out.append(f"| {name} | {d['K']} | {d['log_density_first']:.1f} → {d['log_density_last']:.1f} "
                   f"({d['log_density_min']:.1f}, {d['log_density_max']:.1f}) | {d['mean_energy'][0]:.3f} → "
                   f"{d['mean_energy'][-1]:.3f} | {d['inside_fraction'][0]:.2f} → {d['inside_fraction'][-1]:.2f} | "
                   f"{'yes' if d['stays_in_data_region'] else 'no'} |")
    return "\n".join(out)


def main(root):
    for title, text in (("Anomaly AUPRC, mnist5k", anomaly(root, "mn")),
                        ("Models behind the mnist5k AUPRCs", anomaly_health(root, "mn")),
                        ("Anomaly AUPRC, digits", anomaly(root, "dig")),
                        ("Models behind the digits AUPRCs", anomaly_health(root, "dig")),
                        ("Digits default runs", digits(root)),
                        ("LLR OOD (digits vs photos)", ood(root)),
                        ("Long runs", longrun(root))):
        print(f"### {title}\n\n{text}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments"))
