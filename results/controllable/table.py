"""RESULTS.md §7's tables from ``evaluate controllable``'s JSON outputs (nothing here computes a metric).

    python results/controllable/table.py results/controllable [PREFIX ...]

One row per run directory (``controllable.json`` + ``config.json``), or, for names ending in
``_s<seed>``, mean ± std over the seeds of a group.
"""
import glob
import json
import os
import re
import sys

import numpy as np


def ms(v, pct=False):
    v = np.asarray(v, dtype=float) * (100 if pct else 1)
    f = "{:.1f}" if pct else "{:.2f}"
    return (f + " ± " + f).format(v.mean(), v.std()) if len(v) > 1 else f.format(v[0])


def main(root, prefixes):
    groups = {}
    for j in sorted(glob.glob(os.path.join(root, "*", "controllable.json"))):
        run = os.path.dirname(j)
        name = os.path.basename(run)
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        groups.setdefault(re.sub(r"_s\d+$", "", name), []).append(run)
    print("| runs | seeds | layers (digit, thickness, slant) | iterations, lr | digit acc. % | thickness acc. % | "
          "slant acc. % | joint % | FD conditional | FD unconditional | real-image classifiers' acc. % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for g, runs in groups.items():
        rs = [json.load(open(os.path.join(r, "controllable.json"))) for r in runs]
        cfg = json.load(open(os.path.join(runs[0], "config.json")))["train"]
        acc = {k: [r["accuracy"][k] for r in rs] for k in rs[0]["accuracy"]}
        clf = {k: np.mean([r["classifier_accuracy"][k] for r in rs]) * 100 for k in rs[0]["classifier_accuracy"]}
        print(f"| {g} | {len(rs)} | {', '.join(map(str, rs[0]['attribute_layers']))} | {cfg['steps']}, {cfg['lr_ebm']:g} | "
              f"{ms(acc['digit'], True)} | {ms(acc['thickness'], True)} | {ms(acc['slant'], True)} | "
              f"{ms([r['joint_accuracy'] for r in rs], True)} | {ms([r['fd']['conditional'] for r in rs])} | "
              f"{ms([r['fd']['unconditional'] for r in rs])} | "
              f"{' / '.join(f'{v:.0f}' for v in clf.values())} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/controllable", sys.argv[2:])
