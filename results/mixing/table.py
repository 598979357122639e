"""The tables of results/mixing/README.md from the JSON files in a folder:

1. every ``*study*.json`` of study.py, one row per energy scale: the ladder, its worst swap rate,
   PT's steps between swap rounds, its round trips, where PT's cold chains end, R̂ of log π, and PT's class ESS per second against
   MALA's at equal wall time (the issue's target: ≥ 5 at λ = 16), for the study's PT seed 1 and the
   range over its three PT seeds;
2. every ``ais_*.json`` of ais_reference.py: the class weights annealed importance sampling finds,
   and how far (total variation) each sampler's class frequencies on the same checkpoint lie from
   them, beside the AIS seeds' own spread around their mean;
3. every ``swap_by_class_*.json`` of swap_by_class.py: per neighbour pair of a ladder, how often
   swaps between states of one class and of different classes were accepted;
4. for the studies that record it (from 2026-12-08): the largest R̂ of the class indicators of each
   sampler's draws — an ESS from chains above 1.01 counts the chains rather than the draws.

    python results/mixing/table.py results/mixing
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hebm.evaluation.mixing import total_variation as tv


def fmt(x, spec=".2f") -> str:
    return "—" if x is None else format(x, spec)


def span(values) -> str:
    v = [x for x in values if x is not None]
    return f"{min(v):.2f}–{max(v):.2f}" if v else "—"


def pt_over_mala(r: dict) -> str:
    """The range over PT seeds of PT's class ESS/s ÷ MALA's at equal wall time, for one energy scale."""
    mala = r["mala_equal_wall"]["class_ess_per_s"]
    return span(None if x["class_ess_per_s"] is None or not mala else x["class_ess_per_s"] / mala
                for x in r["pt"].values())


def load(folder: Path):
    studies = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*study*.json"))}
    ais = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("ais_*.json"))}
    by_class = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("swap_by_class_*.json"))}
    return studies, ais, by_class


def study_rows(studies: dict) -> None:
    print("| study | λ | R × groups, swap every | worst swap rate | round trips (PT seeds) | cold ‖u‖ | cold in region "
          "| R̂ log π: PT | MALA reference | class ESS: PT (seeds) | MALA (equal wall) | PT ÷ MALA class ESS/s: PT seed 1 "
          "(the study's) | each PT seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, d in studies.items():
        R, G, m = d.get("R", 4), d.get("groups", 16), d.get("swap_every", 4)
        for lam, r in d["scales"].items():
            pts = list(r["pt"].values())
            worst = min(min(x["swap_rate_per_pair"]) for x in pts)
            trips = "/".join(str(x["round_trips_total"]) for x in pts)
            unorm = np.median([x["final_state_cold"]["u_norm_median"] for x in pts])
            inside = np.mean([x["final_state_cold"]["inside_posterior_region"] for x in pts])
            rh = span(x["logpi_rhat"] for x in pts)
            ref = span(x["logpi_rhat"] for x in r["reference_mala"].values())
            ess = "/".join(fmt(x["class_ess_min"], ".0f") for x in pts)
            each = pt_over_mala(r)
            print(f"| {name} | {lam} | {R} × {G}, {m} | {worst:.3f} | {trips} | {unorm:.1f} | {inside:.2f} | {rh} | {ref} "
                  f"| {ess} | {fmt(r['mala_equal_wall']['class_ess_min'], '.0f')} "
                  f"| {fmt(r['compare']['pt_over_mala_ess_per_s'])} | {each} |")


def ais_rows(studies: dict, ais: dict) -> None:
    print("| AIS run | λ | particles × temperatures | weight ESS (seeds) | AIS class weights (mean; > 1 %) "
          "| AIS seeds: TV to their mean | sampler (study) | its TV to the AIS mean |")
    print("|---|---|---|---|---|---|---|---|")
    for name, a in ais.items():
        for lam, r in a["scales"].items():
            mean = np.asarray(r["class_weight_mean"])
            big = ", ".join(f"{c}: {w:.2f}" for c, w in enumerate(mean) if w > 0.01)
            ess = "/".join(f"{x['weight_ess']:.0f}" for x in r["runs"])
            spread = max(tv(x["class_weight"], mean) for x in r["runs"])
            head = (f"| {name} | {lam} | {a['particles']} × {a['temperatures']} | {ess} | {big} | ≤ {spread:.3f} ")
            for sname, d in studies.items():
                if d["ckpt"] != a["ckpt"] or lam not in d["scales"]:
                    continue
                s = d["scales"][lam]
                pt = np.mean([x["class_freq"] for x in s["pt"].values()], axis=0)
                ref = np.mean([x["class_freq"] for x in s["reference_mala"].values()], axis=0)
                mala = s["mala_equal_wall"]["class_freq"]
                for label, f in ((f"PT, R = {d.get('R', 4)} (3 seeds)", pt), ("MALA, equal wall time", mala),
                                 (f"MALA reference ({d['K_ref']} steps, 3 seeds)", ref)):
                    print(f"{head}| {label} ({sname}) | {tv(f, mean):.3f} |")


def swap_class_rows(by_class: dict) -> None:
    print("| run | λ | pair | β | same class: accepted (proposals) | different classes: accepted (proposals) |")
    print("|---|---|---|---|---|---|")
    for name, d in by_class.items():
        for x in d["per_pair"]:
            same, diff = x["same_class"], x["different_class"]
            print(f"| {name} | {d['scale']:g} | {x['pair'][0]}–{x['pair'][1]} | {x['beta'][0]:.3f}–{x['beta'][1]:.3f} "
                  f"| {fmt(same['rate'], '.3f')} ({same['proposals']}) | {fmt(diff['rate'], '.3f')} ({diff['proposals']}) |")


def rhat_rows(studies: dict) -> None:
    """R̂ of the class indicators (largest over the classes), per sampler and energy scale."""
    print("| study | λ | class-indicator R̂ (largest): PT (seeds) | ULA, equal wall | MALA, equal wall "
          "| MALA reference (seeds) | PT ÷ MALA class ESS/s (PT seeds) |")
    print("|---|---|---|---|---|---|---|")
    for name, d in studies.items():
        for lam, r in d["scales"].items():
            if "class_rhat_max" not in r["mala_equal_wall"]:
                continue
            pts = list(r["pt"].values())
            each = pt_over_mala(r)

            def rh(xs):
                return "/".join(fmt(x.get("class_rhat_max"), ".3f") for x in xs)

            print(f"| {name} | {lam} | {rh(pts)} | {rh([r['ula_equal_wall']])} | {rh([r['mala_equal_wall']])} "
                  f"| {rh(r['reference_mala'].values())} | {each} |")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python results/mixing/table.py results/mixing")
    studies, ais, by_class = load(Path(sys.argv[1]))
    study_rows(studies)
    print()
    ais_rows(studies, ais)
    if by_class:
        print()
        swap_class_rows(by_class)
    if any("class_rhat_max" in r["mala_equal_wall"] for d in studies.values() for r in d["scales"].values()):
        print()
        rhat_rows(studies)


if __name__ == "__main__":
    main()
