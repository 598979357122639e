"""RESULTS.md §10's OOD table from ``hebm.evaluate ood`` JSON files (nothing here computes a metric).

    python results/detection/ood_table.py DIR

DIR holds ``<run>_<ood-data>.json`` (``python -m hebm.evaluate --ckpt R/<run>/ckpt.pt --json
DIR/<run>_<ood-data>.json ood --ood-data <ood-data>``); runs are grouped by name without the
``_s<seed>`` suffix, a cell is mean ± sample std (ddof 1) of the AUROC over the seeds.  Columns: the
score chosen on each run's validation slice (and which), L>0 (the likelihood-based score), and
the LLR^{>k} and prior^{>k} scores for every k, both LLR forms.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
from collections import Counter

import numpy as np


def ms(v):
    v = [float(x) for x in v]
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def main(root):
    runs: dict = {}
    for p in sorted(glob.glob(os.path.join(root, "*.json"))):
        with open(p) as f:
            r = json.load(f)
        name = re.sub(r"_s\d+$", "", os.path.basename(os.path.dirname(r["ckpt"])))
        runs.setdefault((r["ood_data"], name), []).append(r)
    cols: list = []
    for rs in runs.values():
        for row in rs[0]["rows"]:
            s = row["score"]
            if (s == "L>0" or s.startswith(("LLR", "prior", "energy"))) and s not in cols:
                cols.append(s)
    lines = ["| OOD data | prior (run) | seeds | chosen on validation: AUROC (scores) | " + " | ".join(cols) + " |",
             "|---" * (4 + len(cols)) + "|"]
    for (data, name), rs in sorted(runs.items()):
        scores = [row["score"] for row in rs[0]["rows"]]
        auc = {s: [next(x["auroc"] for x in r["rows"] if x["score"] == s) for r in rs] for s in scores}
        chosen = [next(x for x in r["rows"] if x["chosen"]) for r in rs]
        picked = ", ".join(f"{k} ×{n}" for k, n in Counter(c["score"] for c in chosen).items())
        cells = [ms(auc[c]) if c in auc else "—" for c in cols]
        lines.append(f"| {data} | {name} | {len(rs)} | {ms([c['auroc'] for c in chosen])} ({picked}) | "
                     + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
