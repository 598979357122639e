"""Run hebm.train configs one after another; print one JSON line of final metrics per config.

    python results/defaults/sweep.py results/defaults/clamped-runs-q1-q6.json OUTDIR > clamped-runs-q1-q6.jsonl

Each line: name, status (rc=3: the NaN guard stopped the run), wall seconds, the evaluations
(step, active units per layer, KL per layer in nats, f(z+) - f(z-)), the last reconstruction
loss.  Each ``NAME.json`` holds the flags of a group of runs (named by their run letters, which
RESULTS.md's tables use) and ``NAME.jsonl`` their results: ``unclamped-runs-*`` ran before the
soft clamp of log sigma existed (sigma_clamp = 0 then; pass --sigma-clamp 0 to repeat them as
they ran), ``clamped-runs-q1-q6`` with it.  RESULTS.md "How the defaults were chosen" reads them.
"""
import json
import os
import subprocess
import sys
import time

from hebm.files import json_text


def main(config_path: str, out_root: str) -> None:
    configs = json.loads(open(config_path).read())
    os.makedirs(out_root, exist_ok=True)
    for name, flags in configs.items():
        out = os.path.join(out_root, name)
        cmd = [sys.executable, "-m", "hebm.train", "--out", out, "--quiet", "--overwrite"] + flags
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        path = os.path.join(out, "metrics.jsonl")
        rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
        evals = [(row["step"], row.get("active_units"), [round(x, 2) for x in row.get("kl_per_layer", [])],
                  None if row.get("eval_f_gap") is None else round(row["eval_f_gap"], 3))
                 for row in rows if "active_units" in row]
        last = [row for row in rows if "recon" in row]
        status = "ok" if r.returncode == 0 else f"rc={r.returncode}"
        msg = r.stderr.strip().splitlines()[-1][:200] if r.returncode else ""
        print(json_text(dict(name=name, status=status, wall=round(wall, 1), evals=evals,
                             recon=round(last[-1]["recon"], 2) if last else None, msg=msg)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
