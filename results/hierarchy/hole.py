"""RESULTS.md §9: where the ladder's Gaussian prior p_β fails — a test that could have come out
either way.

    python results/hierarchy/hole.py CKPT [CKPT ...] [--json OUT]

For a stage-1 (Gaussian) checkpoint: decode sets whose whitened latents ũ mix draws of the prior
(ũ_i ~ N(0, I)) with the aggregate posterior's (ũ_i = T_β⁻¹(z̃)_i, z̃ ~ q(z̃ | x) for random
training images), layer by layer, and measure each set's FD to the held-out split exactly as
``hebm.evaluate fd`` does (halves A/B, both feature networks, 3 sampling seeds).  If the poor
p_β samples come from the top layer's prior hole (the aggregate posterior of z_L far from
N(0, I)), taking ũ_L alone from the posterior recovers most of the gap to Recon and taking
every layer but the top does not; if they come from the lower conditionals, the reverse.
Nothing here is tuned: one run per checkpoint, the rows as listed.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch


def main(argv):
    from hebm.data import run_data_for
    from hebm.evaluation.features import feature_networks
    from hebm.evaluation.metrics import frechet_distance
    from hebm.files import dump_json
    from hebm.models import load_model

    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    torch.set_num_threads(1)
    results = {}
    for path in argv:
        model, mcfg, tcfg, _ = load_model(path, "cpu")
        data = run_data_for(tcfg)
        tr, te = data.train, data.test
        nets = feature_networks(tr, te, seed=0)
        L = len(model.dims)
        half = len(te) // 2
        # which layers take the posterior's ũ: none (p_β), each one alone, all but each one, all (Recon of training images)
        sets = {"p_β (all from N(0, I))": ()}
        for i in range(L):
            sets[f"ũ_{i + 1} from q, rest N(0, I)"] = (i,)
        for i in range(L):
            sets[f"all but ũ_{i + 1} from q"] = tuple(j for j in range(L) if j != i)
        sets["all from q (Recon of training images)"] = tuple(range(L))
        fd = {k: {n: [] for n in nets} for k in sets}
        recon_a = {n: [] for n in nets}
        for s in range(3):
            s_seed = 1 + s
            perm = torch.randperm(len(te), generator=torch.Generator().manual_seed(s_seed))
            x_a, x_b = te.x[perm[:half]], te.x[perm[half: 2 * half]]
            rows = torch.randperm(len(tr), generator=torch.Generator().manual_seed(s_seed))[:half]
            g = torch.Generator().manual_seed(s_seed)
            with torch.no_grad():
                zq = model.posterior(tr.x[rows], g).z
                uq = model.prior.split(model.prior.T_inv(zq))
                un = model.prior.split(torch.randn(half, model.D, generator=g))
                xr = model.reconstruct(x_a, generator=g)
                for k, from_q in sets.items():
                    u = torch.cat([uq[j] if j in from_q else un[j] for j in range(L)], 1)
                    x = model.decode(model.prior.T(u))
                    for n, (body, _) in nets.items():
                        fd[k][n].append(frechet_distance(body(x).numpy(), body(x_b).numpy()))
                for n, (body, _) in nets.items():
                    recon_a[n].append(frechet_distance(body(xr).numpy(), body(x_b).numpy()))
        res = {k: {n: (float(np.mean(v)), float(np.std(v, ddof=1))) for n, v in d.items()} for k, d in fd.items()}
        res["Recon of held-out half A"] = {n: (float(np.mean(v)), float(np.std(v, ddof=1))) for n, v in recon_a.items()}
        results[path] = res
        print(f"\n{path}")
        for k, d in res.items():
            print(f"  {k:>40}: " + "   ".join(f"{n} {m:7.1f} ± {sd:5.1f}" for n, (m, sd) in d.items()))
    if out:
        with open(out, "w") as f:
            dump_json(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
