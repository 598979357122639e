"""RESULTS.md §7: which layer holds which attribute — a logistic-regression probe per layer on the
posterior means q(z̃ | x) of the training split, scored on the held-out split.

    python results/controllable/probe.py OUT.json CKPT [CKPT ...]
"""
import sys

import torch
from sklearn.linear_model import LogisticRegression

from hebm.data import run_data_for
from hebm.files import dump_json
from hebm.models import load_model
from hebm.models.attributes import labels

NAMES = ["digit", "thickness", "slant"]


def main(out, ckpts):
    res = {}
    for path in ckpts:
        m, _, tcfg, _ = load_model(path)
        d = run_data_for(tcfg)
        with torch.no_grad():
            ztr, zte = m.posterior(d.train.x, mean=True).z.numpy(), m.posterior(d.test.x, mean=True).z.numpy()
        ytr, yte = labels(d.train, NAMES).numpy(), labels(d.test, NAMES).numpy()
        row, o = {n: [] for n in NAMES}, 0
        for dd in m.dims:
            for a, n in enumerate(NAMES):
                clf = LogisticRegression(max_iter=2000).fit(ztr[:, o:o + dd], ytr[:, a])
                row[n].append(round(float(clf.score(zte[:, o:o + dd], yte[:, a])), 3))
            o += dd
        res[path] = row
        print(path, row)
    with open(out, "w") as f:
        dump_json(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
