"""Run hebm.train configs one after another; print one JSON line of final metrics per config.

    python results/defaults/sweep.py results/defaults/sweep5.json OUTDIR > sweep5.jsonl

Each line: name, status (rc=3: the NaN guard stopped the run), wall seconds, the evaluations
(step, active units per layer, KL per layer in nats, f(z+) - f(z-)), the last reconstruction
loss.  Sweeps 1-4 ran before the soft clamp of log sigma existed (sigma_clamp = 0 then); pass
--sigma-clamp 0 to repeat them as they ran.  RESULTS.md "How the defaults were chosen" reads them.
"""
import json, subprocess, sys, time, os
configs = json.loads(open(sys.argv[1]).read())
out_root = sys.argv[2]
os.makedirs(out_root, exist_ok=True)
for name, flags in configs.items():
    out = os.path.join(out_root, name)
    cmd = [sys.executable, "-m", "hebm.train", "--out", out, "--quiet", "--overwrite"] + flags
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))] if os.path.exists(os.path.join(out, "metrics.jsonl")) else []
    evals = [(r_["step"], r_.get("active_units"), [round(x, 2) for x in r_.get("kl_per_layer", [])], round(r_.get("eval_f_gap", float("nan")), 3)) for r_ in rows if "active_units" in r_]
    last = [r_ for r_ in rows if "recon" in r_]
    status = "ok" if r.returncode == 0 else f"rc={r.returncode}"
    msg = r.stderr.strip().splitlines()[-1][:200] if r.returncode else ""
    print(json.dumps(dict(name=name, status=status, wall=round(wall, 1), evals=evals, recon=round(last[-1]["recon"], 2) if last else None, msg=msg)), flush=True)
