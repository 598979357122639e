"""RESULTS.md §6's anomaly table from ``evaluate anomaly --train`` JSON outputs (nothing computed here
but means).

    python results/priors/anomaly_table.py results/priors/anomaly/anom_mn_gauss.json results/priors/anomaly/anom_mn_ts1.json
"""
import json
import sys

import numpy as np


def main(paths):
    print("| prior | seeds | " + " | ".join(f"held-out {h}" for h in (1, 4, 5, 7, 9)) + " | mean |")
    print("|---|---|" + "---|" * 6)
    extra = []
    for p in paths:
        r = json.load(open(p))
        name = r["prior"] + (" two-stage" if r.get("two_stage") and r["prior"] == "ebm" else "")
        cells, means = [], []
        for h in ("1", "4", "5", "7", "9"):
            t = r["table"].get(h)
            if not t:
                cells.append("—")
                continue
            v = [x for x in t["values"] if x == x]
            cells.append(f"{np.mean(v):.3f}" + (f" ± {np.std(v):.3f}" if len(v) > 1 else ""))
            means.append(np.mean(v))
            for d in t.get("details") or []:
                if d and r["prior"] != "gaussian":
                    extra.append((name, h, d))
        print(f"| {name} | {r['seeds']} | " + " | ".join(cells) + f" | {np.mean(means):.3f} |")
    if extra:
        print()
        print("| prior | runs | AUPRC (mean over runs) | same generator without the tilt | tilt − no tilt, per run: min … max | "
              "std over test images: log p(x|z) | log p_β | tilt | corr(tilt, rest) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in dict.fromkeys(n for n, _, _ in extra):
            ds = [d for n, _, d in extra if n == name]
            diff = [d["auprc"] - d["auprc_base"] for d in ds]
            m = lambda f: float(np.mean([f(d) for d in ds]))  # noqa: E731
            print(f"| {name} | {len(ds)} | {m(lambda d: d['auprc']):.3f} | {m(lambda d: d['auprc_base']):.3f} | "
                  f"{min(diff):+.3f} … {max(diff):+.3f} | {m(lambda d: d['terms']['log_px']['std']):.1f} | "
                  f"{m(lambda d: d['terms']['log_p_beta']['std']):.2f} | {m(lambda d: d['terms']['tilt']['std']):.2f} | "
                  f"{m(lambda d: d['corr_tilt_rest']):+.2f} |")

if __name__ == "__main__":
    main(sys.argv[1:])
