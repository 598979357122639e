"""Turn pytest-benchmark JSON into hebm's tables, plots and roofline summary.

    pytest benchmarks --benchmark-json=bench.json
    python -m benchmarks.report --json bench.json --out bench-report/

(bench.json is rewritten after every cell: the report can be drawn while the run goes on, or
from a run cut short; its header then says the run is incomplete.)

Prints (and writes ``OUT/report.md``, ready to paste into benchmarks/RESULTS.md):

* per sampler entry point (Langevin segment, reverse diffusion): median time of every provider
  per problem and B; each fused backend's speed-up over the *fastest eager provider* of that cell
  (``plain`` — the loop a user writes —, TorchEBM, hebm's ``ref``, ``compile``; the column says
  which won) and over ``graph`` (CUDA-graph replay of the reference step); the FLOP floor of
  docs/design.md §5 (4·B·params FLOPs a step at the device's peak: H100/H200 fp32 67 TFLOP/s,
  TF32 ≈ 400 TFLOP/s; on a CPU the torch.mm rate measured in the same run) and the §5 verdict;
* the fixed cost of a fused call in toy steps (§5: ≤ 3);
* the training iteration per prior type (plain, ref, fused);
* a roofline-style summary: achieved GFLOP/s of each provider against that peak;

and draws ``OUT/speedup_<entry>.png`` (speed-up over ref vs batch, one panel per problem).
Times are medians of the timed rounds (synchronised, warm; first-call/compile time apart).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from typing import Optional

# FLOP/s peaks of known GPUs (docs/design.md §5: fp32 FMA 67 TFLOP/s; TF32 ≈ 400 TFLOP/s)
GPU_PEAKS = {
    "H100": {"fp32": 67e12, "tf32": 400e12},
    "H200": {"fp32": 67e12, "tf32": 400e12},
}
PROVIDER_ORDER = ("plain", "torchebm", "ref", "compile", "graph", "cpu", "triton", "cuda", "auto")
EAGER = ("plain", "torchebm", "ref", "compile")
FUSED = ("cpu", "triton", "cuda")


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def rows_of(data: dict) -> list[dict]:
    out = []
    for b in data.get("benchmarks", []):
        e = dict(b.get("extra_info", {}))
        if "entry" not in e:
            continue
        e["median_s"] = b["stats"]["median"]
        e["min_s"] = b["stats"]["min"]
        e["rounds"] = b["stats"]["rounds"]
        out.append(e)
    return out


def peak_flops(rows: list[dict]) -> tuple[Optional[float], str]:
    """(peak FLOP/s, where it came from) for this run's device and precision."""
    if not rows:
        return None, "no results"
    r0 = rows[0]
    prec = r0.get("precision", "fp32")
    if r0.get("device") == "cuda":
        for key, peaks in GPU_PEAKS.items():
            if key in str(r0.get("device_name", "")):
                return peaks.get(prec, peaks["fp32"]), f"{key} {prec} peak, docs/design.md §5"
    mm = [r for r in rows if r["entry"] == "mm"]
    if mm:
        best = max(r["flops"] / r["median_s"] for r in mm)
        return best, f"torch.mm fp32 measured in this run ({mm[0]['problem']})"
    return None, "unknown device and no mm benchmark in this run"


def _ms(s: Optional[float]) -> str:
    if s is None:
        return "—"
    return f"{s * 1e3:.3g}" if s * 1e3 < 100 else f"{s * 1e3:.0f}"


def _x(v: Optional[float]) -> str:
    return "—" if v is None else (f"{v:.2f}×" if v < 10 else f"{v:.0f}×" if v >= 100 else f"{v:.1f}×")


def _providers(rs) -> list[str]:
    seen = {r["provider"] for r in rs}
    return [p for p in PROVIDER_ORDER if p in seen] + sorted(seen - set(PROVIDER_ORDER))


def _problem_key(p):
    order = {"toy": 0, "small": 1, "large": 2}
    return (order.get(p, 9), p)


def fastest_eager(c: dict) -> tuple[Optional[str], Optional[float]]:
    eager = {p: t for p, t in c.items() if p in EAGER}
    if not eager:
        return None, None
    return min(eager.items(), key=lambda kv: kv[1])


def sampler_table(rows: list[dict], entry: str, peak: Optional[float]) -> str:
    rs = [r for r in rows if r["entry"] == entry]
    if not rs:
        return ""
    provs = _providers(rs)
    fused = [p for p in provs if p in FUSED]
    cells = defaultdict(dict)
    flops = {}
    for r in rs:
        cells[(r["problem"], r["B"])][r["provider"]] = r["median_s"]
        flops[(r["problem"], r["B"])] = r.get("flops")
    K = rs[0].get("K")
    head = ["problem", "B"] + [f"{p} ms" for p in provs] + ["fastest eager"]
    head += [f"{p} vs fastest eager" for p in fused] + [f"{p} vs graph" for p in fused if "graph" in provs]
    head += ["FLOP floor ms", "§5 target (best fused)"]
    lines = [f"### {entry} (K = {K} steps{' per level' if entry == 'reverse_diffusion' else ''}; median ms; "
             f"speed-up = the eager (or graph) time / the fused time)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(cells, key=lambda k: (_problem_key(k[0]), k[1])):
        c = cells[key]
        fe, te = fastest_eager(c)
        row = [key[0], str(key[1])] + [_ms(c.get(p)) for p in provs] + [fe or "—"]
        row += [_x(te / c[p]) if te and c.get(p) else "—" for p in fused]
        gr = c.get("graph")
        row += [_x(gr / c[p]) if gr and c.get(p) else "—" for p in fused if "graph" in provs]
        f = flops.get(key)
        floor = f / peak if (f and peak) else None
        row += [_ms(floor), target(c, key, floor, rs[0].get("device"))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def target(c: dict, key, floor: Optional[float], device: Optional[str]) -> str:
    """docs/design.md §5 verdict for the best fused provider of one cell, against the fastest
    eager provider ("—" when none ran)."""
    fused = {p: t for p, t in c.items() if p in FUSED}
    _, te = fastest_eager(c)
    if not fused or not te:
        return "—"
    best, tb = min(fused.items(), key=lambda kv: kv[1])
    vs_eager = te / tb
    near_floor = floor is not None and tb <= 2 * floor
    if device == "cuda":
        vs_graph = c["graph"] / tb if c.get("graph") else None
        ok = (vs_eager >= 100 and vs_graph is not None and vs_graph >= 10) or near_floor
    else:
        ok = (vs_eager >= 30) if key == ("toy", 64) else (near_floor and vs_eager >= 1)
    return f"{'met' if ok else 'MISSED'} ({best}, {_x(vs_eager)})"


def fixed_cost_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r["entry"] == "fixed_cost"]
    if not rs:
        return ""
    lines = ["### Fixed cost of a call (toy, B = 64; targets: ≤ 1 step through a Sampler, ≤ 2 through "
             "langevin_fused, §5 ≤ 3)", "",
             "| provider, way in | t(K=1) µs | t(K=21) µs | one step µs | fixed µs | fixed / step | target |",
             "|---|---|---|---|---|---|---|"]
    for r in rs:
        for label, pre, target in (
                (f"{r['provider']}, langevin_fused", "", 2), (f"{r['provider']}, langevin_fused, [B] tensors", "tensor_", 2),
                (f"{r['provider']}, Sampler.run", "sampler_", 1),
                (f"{r['provider']}, Sampler.run, [B] tensors", "sampler_tensor_", 1),
                (f"{r['provider']}, general path (before the one door)", "general_", 3),
                (f"{r['provider']}, the op alone (arguments made once: the floor of any front)", "op_", None)):
            if f"{pre}t1_s" not in r:
                continue  # (JSON from before the Sampler: no sampler_ rows; "general_": from before the one door)
            if "sampler_t1_s" not in r and pre in ("", "tensor_"):
                target = 3  # (JSON from before the Sampler: langevin_fused was held to §5 alone)
            v = r.get(f"{pre}fixed_in_steps")
            lines.append(f"| {label} | {r[pre + 't1_s'] * 1e6:.0f} | {r[pre + 'tK_s'] * 1e6:.0f} | "
                         f"{r[pre + 'step_s'] * 1e6:.1f} | {r[pre + 'fixed_s'] * 1e6:.0f} | "
                         f"{'—' if v is None else f'{v:.2f}'} | "
                         f"{'—' if v is None or target is None else ('met' if v <= target else 'MISSED')}"
                         f"{'' if target is None else f' (≤ {target})'} |")
    return "\n".join(lines) + "\n"


def pause_table(rows: list[dict]) -> str:
    """test_call_after_a_pause: each call back to back, and its slow-down after a 5 ms pause."""
    rs = [r for r in rows if r["entry"] == "call_after_a_pause"]
    if not rs:
        return ""
    pauses = ("after_sleep", "after_busy", "after_op", "after_stream")
    lines = ["### A call after a pause (toy, B = 64; the third of three calls in a row, and the call after 5 ms "
             "of a sleep / a busy-wait / the op alone / streaming 16 MB)", "",
             "| call | back to back µs | after a sleep | after a busy-wait | after the op | after streaming |",
             "|---|---|---|---|---|---|"]
    for r in rs:
        for call in ("python_control", "sampler_1_step", "sampler_10_steps"):
            ratios = " | ".join("—" if r.get(f"{call}_{b}_ratio") is None else f"×{r[f'{call}_{b}_ratio']:.2f}"
                                for b in pauses)
            lines.append(f"| {call.replace('_', ' ')} | {r[call + '_back_to_back_s'] * 1e6:.0f} | {ratios} |")
    return "\n".join(lines) + "\n"


def train_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r["entry"] == "train_iteration"]
    if not rs:
        return ""
    by = defaultdict(dict)
    backend = {}
    for r in rs:
        by[r["problem"]][r["provider"]] = r["median_s"]
        if r["provider"] == "auto":
            backend[r["problem"]] = r.get("backend")
    lines = ["### train_iteration (default digits config, batch 64; median ms)", "",
             "| run | plain ms | ref ms | fused ms (backend) | fused vs plain | fused vs ref |", "|---|---|---|---|---|---|"]
    for prob in sorted(by):
        c = by[prob]
        f = c.get("auto")
        lines.append(f"| {prob} | {_ms(c.get('plain'))} | {_ms(c.get('ref'))} | {_ms(f)}"
                     f"{f' ({backend.get(prob)})' if f else ''} | "
                     f"{_x(c['plain'] / f) if f and c.get('plain') else '—'} | "
                     f"{_x(c['ref'] / f) if f and c.get('ref') else '—'} |")
    return "\n".join(lines) + "\n"


def _pm(mean, sd, fmt="{:.3g}") -> str:
    if mean is None:
        return "—"
    return fmt.format(mean) + ("" if sd is None else " ± " + fmt.format(sd))


#: issue 32's target: fused ULA ≥ 10× the plain loop in ESS/s at toy B = 64 on the CPU
ESS_TARGET = 10.0


def ess_table(rows: list[dict]) -> str:
    """ESS per second (benchmarks/test_ess_per_second.py): per target, every row's means ± sample
    std (ddof 1) over seeds, the ratio to the plain loop per seed (mean ± std)."""
    rs = [r for r in rows if r["entry"] == "ess_per_second"]
    if not rs:
        return ""
    out = []
    for prob in sorted({r["problem"] for r in rs}, key=_problem_key):
        g = [r for r in rs if r["problem"] == prob]
        i = g[0]
        seeds = i.get("seeds", [])
        head = (f"### ESS per second: {prob} top level (t = {i.get('level')}, λ = {i.get('energy_scale', 0):.4g}, "
                f"δ = {i.get('step_size', 0):.3g}), B = {i.get('B')}, D = {i.get('D')}; {i.get('burn')} burn-in + "
                f"{i.get('keep')} kept steps, a draw every {i.get('every')}; seeds {','.join(map(str, seeds))} "
                f"(mean ± std, ddof 1)")
        notes = []
        if "mala_step_size" in i:
            notes.append(f"MALA δ_M = {i['mala_step_size']:.3g} (pilot seed {i.get('mala_pilot_seed')}, acceptance "
                         f"{i.get('mala_pilot_accept', float('nan')):.2f})")
        if "pt_pilot_swap_rate" in i:
            notes.append(f"PT ladder {', '.join(f'{b:.3g}' for b in i['pt_ladder'])}, swaps every "
                         f"{i['pt_swap_every']}, pilot swap rates {', '.join(f'{x:.2f}' for x in i['pt_pilot_swap_rate'])}")
        lines = [head, ""] + ([("; ".join(notes)) + "", ""] if notes else []) + [
            "| row | kept s | ESS (min of log π, u₀, ‖u‖) | ESS/s | **ESS/s ÷ plain ULA** | ÷ plain MALA | "
            "time/step ÷ plain ULA | ESS/step ÷ plain ULA | R̂ max |", "|---|---|---|---|---|---|---|---|---|"]
        pm = next((r for r in g if r["row"] == "plain-mala"), None)
        for r in g:
            rh = max(n["rhat_max"] for n in r["per_seed"]) if r.get("per_seed") else None
            vs_mala = (None, None)
            if pm is not None and "-mala" in r["row"] and r.get("per_seed"):
                q = [a["ess_per_s"] / b["ess_per_s"] for a, b in zip(r["per_seed"], pm["per_seed"])]
                vs_mala = (statistics.fmean(q), statistics.stdev(q) if len(q) > 1 else None)
            lines.append(f"| {r['row']} | {_pm(r.get('seconds_mean'), r.get('seconds_sd'))} | "
                         f"{_pm(r.get('ess_bulk_min_mean'), r.get('ess_bulk_min_sd'), '{:.0f}')} | "
                         f"{_pm(r.get('ess_per_s_mean'), r.get('ess_per_s_sd'), '{:.0f}')} | "
                         f"**{_pm(r.get('ratio_ess_per_s_vs_plain_mean'), r.get('ratio_ess_per_s_vs_plain_sd'), '{:.2f}')}** | "
                         f"{_pm(*vs_mala, '{:.2f}')} | "
                         f"{_pm(r.get('ratio_time_per_step_vs_plain_mean'), None, '{:.2f}')} | "
                         f"{_pm(r.get('ratio_ess_per_step_vs_plain_mean'), r.get('ratio_ess_per_step_vs_plain_sd'), '{:.2f}')} | "
                         f"{'—' if rh is None else f'{rh:.3f}'} |")
        f = next((r for r in g if r["row"] == "fused-ula"), None)
        if f is not None and prob == "toy" and i.get("B") == 64 and f.get("ratio_ess_per_s_vs_plain_mean"):
            lo = min(f["ratio_ess_per_s_vs_plain_per_seed"])
            ok = f["ratio_ess_per_s_vs_plain_mean"] >= ESS_TARGET
            lines += ["", f"Target (issue 32): fused ULA ≥ {ESS_TARGET:g}× the plain loop in ESS/s at toy B = 64 — "
                          f"**{'met' if ok else 'MISSED'}** (mean {f['ratio_ess_per_s_vs_plain_mean']:.1f}×, "
                          f"lowest seed {lo:.1f}×)"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def roofline(rows: list[dict], peak: Optional[float], source: str) -> str:
    rs = [r for r in rows if r["entry"] in ("langevin", "reverse_diffusion") and r.get("flops")]
    if not rs:
        return ""
    lines = [f"### Roofline summary (achieved GFLOP/s by the 4·B·params-per-step model; peak: "
             f"{'%.0f GFLOP/s' % (peak / 1e9) if peak else 'unknown'} — {source})", "",
             "| entry | provider | best GFLOP/s (problem, B) | median over cells | best % of peak |", "|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in rs:
        groups[(r["entry"], r["provider"])].append(r)
    for (entry, prov) in sorted(groups, key=lambda k: (k[0], PROVIDER_ORDER.index(k[1]) if k[1] in PROVIDER_ORDER else 99)):
        g = groups[(entry, prov)]
        rates = sorted((r["flops"] / r["median_s"], r["problem"], r["B"]) for r in g)
        best = rates[-1]
        med = rates[len(rates) // 2][0]
        pct = f"{100 * best[0] / peak:.2g} %" if peak else "—"
        lines.append(f"| {entry} | {prov} | {best[0] / 1e9:.3g} ({best[1]}, {best[2]}) | {med / 1e9:.3g} | {pct} |")
    mm = [r for r in rows if r["entry"] == "mm"]
    for r in mm:
        lines.append(f"| mm | torch.mm {r['problem']} | {r['flops'] / r['median_s'] / 1e9:.3g} | | |")
    return "\n".join(lines) + "\n"


def header(rows: list[dict], data: dict) -> str:
    # "complete" (benchmarks/live.py): false while a run is going and when it was cut short; files
    # written before it existed have no such field and are complete
    partial = data.get("complete") is False
    note = (f"\n**Incomplete run** (stopped or still running): the {len(rows)} benchmarks it finished; "
            f"cells it did not reach are missing from the tables.\n" if partial else "")
    if not rows:
        return "No hebm benchmark results in this file.\n" + note
    r0 = rows[0]
    dates = sorted({r.get("date") for r in rows if r.get("date")})
    return (f"Device: **{r0.get('device_name')}** ({r0.get('device')}); torch {r0.get('torch')}, "
            f"triton {r0.get('triton')}, CUDA {r0.get('cuda')}, hebm {r0.get('hebm')}, Python {r0.get('python')}; "
            f"date {', '.join(dates)}; precision {r0.get('precision')}"
            f"{' (QUICK subset)' if any(r.get('quick') for r in rows) else ''}.\n" + note)


def setup_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("provider") not in ("ref", "torch.mm") and r.get("setup_s") is not None
          and r["entry"] not in ("mm", "fixed_cost")]
    if not rs:
        return ""
    lines = ["### One-off costs (first call minus a warm call: compile / JIT / capture), and peak memory", "",
             "| entry | problem | B | provider | setup s | peak memory MB |", "|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: (r["entry"], _problem_key(r["problem"]), r["B"], r["provider"])):
        mem = r.get("peak_mem_bytes")
        lines.append(f"| {r['entry']} | {r['problem']} | {r['B']} | {r['provider']} | {r['setup_s']:.2f} | "
                     f"{'—' if mem is None else f'{mem / 2**20:.1f}'} |")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict], out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for entry in ("langevin", "reverse_diffusion"):
        rs = [r for r in rows if r["entry"] == entry]
        if not rs:
            continue
        problems = sorted({r["problem"] for r in rs}, key=_problem_key)
        fig, axes = plt.subplots(1, len(problems), figsize=(4.5 * len(problems), 3.6), squeeze=False)
        for ax, prob in zip(axes[0], problems):
            pr = [r for r in rs if r["problem"] == prob]
            eager = defaultdict(list)
            for r in pr:
                if r["provider"] in EAGER:
                    eager[r["B"]].append(r["median_s"])
            ref = {b: min(v) for b, v in eager.items()}
            for prov in _providers(pr):
                pts = sorted((r["B"], ref[r["B"]] / r["median_s"]) for r in pr
                             if r["provider"] == prov and r["B"] in ref)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=prov)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{entry}: {prob}")
            ax.set_xlabel("batch B")
            ax.set_ylabel("speed-up over the fastest eager provider")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"speedup_{entry}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def render(data: dict) -> str:
    rows = rows_of(data)
    peak, source = peak_flops(rows)
    parts = [header(rows, data)]
    for entry in ("langevin", "reverse_diffusion"):
        parts.append(sampler_table(rows, entry, peak))
    parts.append(fixed_cost_table(rows))
    parts.append(pause_table(rows))
    parts.append(train_table(rows))
    parts.append(ess_table(rows))
    parts.append(roofline(rows, peak, source))
    parts.append(setup_table(rows))
    return "\n".join(p for p in parts if p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="bench.json", help="pytest-benchmark JSON (--benchmark-json=...)")
    ap.add_argument("--out", default="bench-report", help="folder for report.md and the PNG plots")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.exists(args.json):
        print(f"no such file {args.json!r}: run `pytest benchmarks --benchmark-json={args.json}` first", file=sys.stderr)
        return 2
    data = load(args.json)
    md = render(data)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    if not args.no_plots:
        for p in plots(rows_of(data), args.out):
            print(f"plot: {p}")
    print(f"markdown: {os.path.join(args.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
