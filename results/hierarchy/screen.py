"""RESULTS.md §9: which generator (and which KL settings) gives a hierarchy that is one — train
stage-1 Gaussian models and measure what each layer carries (hebm.evaluate hierarchy).

    python results/hierarchy/screen.py OUT_DIR NAME KEY=VALUE ... [--seeds 0,1,2]

Each (NAME, seed) trains ``OUT_DIR/NAME_sS`` with ``hebm.train``'s settings KEY=VALUE (values as
JSON, e.g. generator='"ladder"' free_bits=1.0), then writes ``OUT_DIR/NAME_sS/hierarchy.json``
(the ``hierarchy`` task's result); a finished run is reused.
"""
from __future__ import annotations

import json
import os
import sys
import time


def main(argv):
    from hebm.evaluation.hierarchy import hierarchy_eval
    from hebm.files import dump_json
    from hebm.training.trainer import Trainer

    out, name, *rest = argv
    seeds = [0]
    settings = dict(prior="gaussian", dataset="mnist5k", quiet=True)
    for a in rest:
        if a.startswith("--seeds="):
            seeds = [int(s) for s in a.split("=", 1)[1].split(",")]
            continue
        k, _, v = a.partition("=")
        try:
            settings[k] = json.loads(v)
        except json.JSONDecodeError:
            settings[k] = v
    for s in seeds:
        run = os.path.join(out, f"{name}_s{s}")
        ck = os.path.join(run, "ckpt.pt")
        t0 = time.time()
        if not os.path.isfile(os.path.join(run, "summary.json")):
            res = Trainer.from_settings(dict(settings, seed=s, out=run, overwrite=True)).train()
            if res["status"] != "ok":
                print(f"{run}: {res['status']} {res.get('message')}", flush=True)
                continue
        wall = time.time() - t0
        h = hierarchy_eval(ck, n=2000, seed=0)
        h.update(settings=settings, seed=s, train_wall_s=round(wall, 1))
        with open(os.path.join(run, "hierarchy.json"), "w") as f:
            dump_json(h, f, indent=1)
        print(f"{run}: change {[round(v, 3) for v in h['class_change']]} (indep {h['class_change_independent']:.3f}) "
              f"probe {[round(v, 3) for v in h['probe']]} KL {[round(v, 2) for v in h['kl_per_layer']]} "
              f"au {h['active_units']} hier {h['hierarchical']} ({wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
