"""RESULTS.md §6, the diffusion diagnosis: does the level energies' *initialisation* alone move the
reverse diffusion off p_β?  For a trained stage-1 checkpoint, an untrained diffusion model is
built twice on it — PyTorch's default init of the level energies and the neutral init (F ≡ 0) —
and its reverse diffusion is run from the same ũ_T: per level, the mean displacement
‖ũ_t − ũ_{t+1}‖ of the chains against ‖ũ_{t+1}‖, and the prior hole of z₁ (Fréchet distance to
the aggregate posterior) against p_β's.  The claim "the default init breaks it" predicts large
displacements and a large hole for the default init only; had the sampler or the schedule been
at fault, both inits would move the chains alike.

    python results/diag_diffusion.py OUT.json STAGE1_CKPT [STAGE1_CKPT ...]
"""
import sys

import torch

from hebm.config import ModelConfig, build
from hebm.data import run_data_for
from hebm.evaluation.metrics import frechet_distance
from hebm.files import dump_json, json_text
from hebm.models import build_model, load_model
from hebm.prior.philox import initial_noise
from hebm.sampler.dispatch import reverse_diffusion


def untrained_diffusion(stage1, mcfg, neutral: bool, seed: int = 0):
    torch.manual_seed(seed)
    keep = ("arch", "x_dim", "image_shape", "latent_dims", "inference", "enc_hidden", "dec_hidden", "channels",
            "prior_hidden", "act", "sigma_x", "sigma_min", "sigma_clamp")
    cfg = build(ModelConfig, dict({k: getattr(mcfg, k) for k in keep}, prior="diffusion", neutral_init=neutral,
                                  base_prior=mcfg.prior))
    model = build_model(cfg)
    own = model.state_dict()
    own.update({k: v for k, v in stage1.state_dict().items() if k in own and not k.startswith("dprior.")})
    model.load_state_dict(own)
    return model.eval()


def main(out_path, ckpts, n=2000, K=50):
    out = {}
    for path in ckpts:
        stage1, mcfg, tcfg, _ = load_model(path)
        x = run_data_for(tcfg).train.x
        with torch.no_grad():
            z_post = stage1.posterior(x, torch.Generator().manual_seed(0)).z
            ids = torch.arange(n)
            u_T = initial_noise(1, n, stage1.D, chain_ids=ids)
            d1 = stage1.dims[0]
            hole_base = frechet_distance(z_post[:, :d1].numpy(), stage1.prior.T(u_T)[:, :d1].numpy())
        res = dict(prior_hole_z1_p_beta=hole_base)
        for name, neutral in (("default_init", False), ("neutral_init", True)):
            model = untrained_diffusion(stage1, mcfg, neutral)
            _, levels = reverse_diffusion(model.dprior, model.schedule, u_T, n_steps=K, seed=1, chain_ids=ids,
                                          backend="auto", return_levels=True)
            disp = [float((levels[j + 1] - levels[j]).norm(dim=1).mean()) for j in range(len(levels) - 1)]
            size = [float(levels[j].norm(dim=1).mean()) for j in range(len(levels) - 1)]
            with torch.no_grad():
                z = model.prior.T(levels[-1])
            res[name] = dict(displacement_per_level=disp, norm_entering_level=size,
                             prior_hole_z1=frechet_distance(z_post[:, :d1].numpy(), z[:, :d1].numpy()))
        out[path] = res
        print(path, json_text(res, indent=1))
    with open(out_path, "w") as f:
        dump_json(out, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
