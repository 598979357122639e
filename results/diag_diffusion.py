"""RESULTS.md §3, the diffusion diagnosis: per layer, the prior hole (Fréchet distance to the
aggregate posterior) of p_β, of the reverse diffusion as trained, and of the same reverse
diffusion with the level energies switched off (F = 0: only the N(0, I) and recovery-kernel
terms and the noise).  If the last equals p_β's, the sampler is right and the trained energies
move the samples.

    python results/diag_diffusion.py OUT.json CKPT [CKPT ...]
"""
import json
import sys

import torch

from hebm.evaluate import _data
from hebm.metrics import prior_hole
from hebm.models import load_model


def main(out_path, ckpts):
    out = {}
    for path in ckpts:
        model, mcfg, tcfg, _ = load_model(path)
        if model.kind != "diffusion":
            sys.exit(f"{path}: not a diffusion checkpoint")
        x = _data(tcfg).train.x
        kw = dict(n=2000, seed=0, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size, fused=True)
        trained = prior_hole(model, x, **kw)
        with torch.no_grad():
            for p in model.dprior.energies.parameters():
                p.zero_()
        off = prior_hole(model, x, **kw)
        out[path] = dict(p_beta=trained["gaussian"], reverse_diffusion=trained["model"], reverse_diffusion_F0=off["model"])
        print(path, json.dumps(out[path]), flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
