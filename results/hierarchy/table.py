"""RESULTS.md §9's tables from the runs' JSON outputs (nothing here computes a metric).

    python results/hierarchy/table.py DIR [DIR ...]

prints, for each DIR, the tables its runs have data for: what each layer carries (``hierarchy``; one
row per generator: a two-stage run's generator is its stage 1's, so it gets no row of its own),
the priors on one generator on the held-out FD protocol (``priors``), layer-wise controllable
synthesis (``control``).

A run directory holds ``summary_eval.json`` (``python -m hebm.evaluate summary``: the hierarchy
measures, FD on the held-out protocol in two feature networks, prior hole, f⁺ − f⁻) or, for a
screening run, ``hierarchy.json``; ``controllable.json`` for control runs;
``sample_longrun.json`` for long runs.  Runs are grouped by name without the ``_s<seed>`` suffix;
a cell is mean ± sample std (ddof 1) over the seeds.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

import numpy as np


def ms(vals, fmt="{:.2f}"):
    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    if not v:
        return "—"
    return (fmt + " ± " + fmt).format(np.mean(v), np.std(v, ddof=1)) if len(v) > 1 else fmt.format(v[0])


def per_layer(rows, fmt="{:.2f}"):
    L = len(rows[0])
    return "[" + ", ".join(ms([r[i] for r in rows], fmt) for i in range(L)) + "]"


def groups(roots, name):
    out: dict = {}
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "*", name))):
            run = os.path.dirname(path)
            with open(path) as f:
                out.setdefault(re.sub(r"_s\d+$", "", os.path.basename(run)), []).append((run, json.load(f)))
    return out


def _stage2(run: str) -> bool:
    """Whether ``run`` was trained on a frozen stage-1 run (``--init``): its generator is that run's."""
    p = os.path.join(run, "config.json")
    if not os.path.isfile(p):
        return False
    with open(p) as f:
        return bool(json.load(f).get("train", {}).get("init"))


def hierarchy(roots) -> str:
    lines = ["| generator (run) | seeds | class change when only this layer's ũ is resampled, z₁, z₂, z₃ | "
             "independent draws | linear probe of the digit (held-out), z₁, z₂, z₃ | probe chance | KL (nats) z₁, z₂, z₃ |"
             " meets the bar |", "|---|---|---|---|---|---|---|---|"]
    found = groups(roots, "summary_eval.json")
    for name, rs in groups(roots, "hierarchy.json").items():
        found.setdefault(name, [(run, {"hierarchy": h}) for run, h in rs])
    for name, rs in found.items():
        # a stage-2 run (--init) measures its stage-1 run's generator again: one row per generator
        rs = [(run, s) for run, s in rs if not _stage2(run)]
        hs = [s["hierarchy"] for _, s in rs if "hierarchy" in s]
        if not hs:
            continue
        meets = sum(bool(h["hierarchical"]) for h in hs)
        lines.append(f"| {name} | {len(hs)} | {per_layer([h['class_change'] for h in hs])} | "
                     f"{ms([h['class_change_independent'] for h in hs])} | {per_layer([h['probe'] for h in hs])} | "
                     f"{ms([h['probe_chance'] for h in hs])} | {per_layer([h['kl_per_layer'] for h in hs], '{:.1f}')} | "
                     f"{meets} of {len(hs)} |")
    return "\n".join(lines)


def priors(root) -> str:
    lines = ["| prior (run) | seeds | FD vs held-out (MLP features) | its p_β | Recon (floor) | gap closed | "
             "FD (CNN features) | its p_β | Recon | gap closed | real held-out (MLP / CNN) | FD vs train (MLP) | "
             "held-out vs train (MLP) | prior hole z₁, z₂, z₃ (model) | f⁺ − f⁻ (nats; per level) | long run: min inside |",
             "|---|" * 1 + "---|" * 15]
    for name, rs in groups([root], "summary_eval.json").items():
        s = [x for _, x in rs]
        f2 = [x["fd_features2"] for x in s]
        holes = np.array([x["prior_hole_model"] for x in s]).mean(0)
        gaps = [x.get("f_gap_per_level") or ([x["f_gap"]] if "f_gap" in x else None) for x in s]
        gaps = [g for g in gaps if g]
        gap = "—" if not gaps else ", ".join(f"{np.mean([g[j] for g in gaps]):+.2f}" for j in range(len(gaps[0])))
        lrs = []
        for run, _ in rs:
            p = os.path.join(run, "sample_longrun.json")
            if os.path.isfile(p):
                with open(p) as f:
                    r = json.load(f)
                lrs.append((min(r["inside_fraction"]), r["stays_in_data_region"]))
        lr = "—" if not lrs else f"{min(x[0] for x in lrs):.2f} ({'stays' if all(x[1] for x in lrs) else 'leaves'})"
        lines.append(
            f"| {name} | {len(s)} | {ms([x['fd_fd'] for x in s])} | {ms([x['fd_fd_gaussian'] for x in s])} | "
            f"{ms([x['fd_fd_recon'] for x in s])} | {ms([100 * x['fd_gap_closed'] for x in s], '{:.0f}')} % | "
            f"{ms([x['fd'] for x in f2])} | {ms([x['fd_gaussian'] for x in f2])} | {ms([x['fd_recon'] for x in f2])} | "
            f"{ms([100 * x['gap_closed'] for x in f2], '{:.0f}')} % | {ms([x['fd_fd_data'] for x in s])} / "
            f"{ms([x['fd_data'] for x in f2])} | {ms([x['fd_fd_train'] for x in s])} | "
            f"{ms([x['fd_fd_heldout_vs_train'] for x in s])} | {', '.join(f'{h:.2f}' for h in holes)} | {gap} | {lr} |")
    return "\n".join(lines)


def control(root) -> str:
    lines = ["| run | seeds | layers (digit, thickness, slant) | digit % (chance, ignore-y) | thickness % (chance, "
             "ignore-y; by formula) | slant % (chance, ignore-y; by formula) | joint % (chance, ignore-y) | "
             "FD conditional | FD unconditional | real-image classifiers' acc. % |", "|---" * 10 + "|"]
    for name, rs in groups([root], "controllable.json").items():
        s = [x for _, x in rs]
        pc = lambda v: ms([100 * x for x in v], "{:.1f}")  # noqa: E731

        def cell(k):
            acc = pc([x["accuracy"][k] for x in s])
            base = f"{100 * np.mean([x['chance'][k] for x in s]):.0f}, {pc([x['ignore_y'][k]['mean'] for x in s])}"
            form = f"; {pc([x['formula'][k]['mean'] for x in s])}" if k in s[0].get("formula", {}) else ""
            return f"{acc} ({base}{form})"

        joint = f"{pc([x['joint_accuracy'] for x in s])} ({100 * np.mean([x['chance']['joint'] for x in s]):.0f}, " \
                f"{pc([x['ignore_y']['joint']['mean'] for x in s])})"
        clf = " / ".join(f"{100 * np.mean([x['classifier_accuracy'][k] for x in s]):.0f}" for k in s[0]["attributes"])
        lines.append(f"| {name} | {len(s)} | {', '.join(map(str, s[0]['attribute_layers']))} | {cell('digit')} | "
                     f"{cell('thickness')} | {cell('slant')} | {joint} | {ms([x['fd']['conditional'] for x in s])} | "
                     f"{ms([x['fd']['unconditional'] for x in s])} | {clf} |")
    return "\n".join(lines)


def main(dirs):
    for d in dirs:
        print(f"### {d}\n")
        for fn, marker in ((hierarchy, None), (priors, "summary_eval.json"), (control, "controllable.json")):
            if marker is not None and not glob.glob(os.path.join(d, "*", marker)):
                continue
            text = fn([d]) if fn is hierarchy else fn(d)
            if text.count("\n") >= 2:
                print(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
