"""``python -m hebm.sample --ckpt CKPT``: sample grids, hierarchical sampling, long-run chains.

    python -m hebm.sample --ckpt runs/ebm-digits-…/ckpt.pt                  # samples grid
    python -m hebm.sample --ckpt … --hierarchical                           # one row per layer i
    python -m hebm.sample --ckpt … --long-run 2500                          # energy profile + chain grid

* Plain: ``--n`` samples from the model's prior (ancestral for gaussian, ũ-space Langevin from
  N(0, I) for ebm, the reverse ũ-diffusion for diffusion), decoded to the generator mean.
* ``--hierarchical`` (PAPERS.md B §4.1 / §5.5): draw ``--ncol`` prior samples ũ⁽ʳ⁾; for each
  layer i, row i keeps every layer of sample 0 except layer i, which is taken from sample r —
  done in ũ-space (``z̃ = T_β(ũ)``), the natural variant for a conditional hierarchy: changing
  ``u_i`` changes ``z_i`` and, through the conditionals, everything below it.  Rows top layer
  first.  For the diffusion prior also ``*_levels.png``: the decodes of ``T_β(ũ_t)`` at every level
  t = T … 0 (the authors' progressive figure).
* ``--long-run K``: ``--nchains`` prior chains run K Langevin steps (ebm; for diffusion K steps
  per level); the target ``log π(u)`` per step (mean over chains) is plotted
  (``*_energy.png``) and the decodes at 10 evenly spaced steps form a grid (``*_chain.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def save_grid(images: torch.Tensor, path: str, nrow: int = 8, min_size: int = 32) -> None:
    """``torchvision.utils.save_image`` with small images (8×8 digits) upscaled for viewing."""
    from torchvision.utils import save_image

    images = images.detach().float().cpu()
    if images.shape[-1] < min_size:
        f = max(1, min_size // images.shape[-1])
        images = torch.nn.functional.interpolate(images, scale_factor=f, mode="nearest")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)


def save_scatter(x: torch.Tensor, ref: torch.Tensor, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(ref[:, 0].cpu(), ref[:, 1].cpu(), s=2, alpha=0.3, label="data")
    ax.scatter(x[:, 0].detach().cpu(), x[:, 1].detach().cpu(), s=4, label="samples")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _images(model, cfg, x):
    shape = model.cfg.get("image_shape")
    if not shape:
        return None
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).reshape(-1, *shape)


def hierarchical_grid(model, *, ncol: int, seed: int, n_steps: int, step_size: float, fused: bool = False):
    """``[L·ncol, D_x]`` decodes: row i (top layer first) varies layer i only (ũ-space)."""
    z, u = model.sample_latents(ncol, seed=seed, n_steps=n_steps, step_size=step_size, fused=fused, return_u=True)
    prior = model.prior
    parts = prior.split(u)
    rows = []
    for i in reversed(range(prior.L)):
        new = [p[:1].expand(ncol, -1).clone() if j != i else p for j, p in enumerate(parts)]
        with torch.no_grad():
            rows.append(model.decode(prior.T(torch.cat(new, 1))))
    return torch.cat(rows)


def long_run(model, *, n_chains: int, K: int, seed: int, step_size: float, fused: bool = False, snapshots: int = 10):
    """Returns ``(log_density [K_total], decodes [snapshots, n_chains, D_x])`` of a long chain."""
    from .models import run_langevin
    from .philox import initial_noise

    p0 = next(model.parameters())
    ids = torch.arange(n_chains)
    u = initial_noise(seed, n_chains, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    marks = sorted({int(round(K * (j + 1) / snapshots)) for j in range(snapshots)})
    logs, snaps = [], []
    if model.kind == "ebm":
        done = 0
        for m in marks:
            u, info = run_langevin(model.prior, u, fused=fused, n_steps=m - done, step_size=step_size, seed=seed,
                                   chain_ids=ids, step_offset=done, return_info=True)
            logs.append(info["log_density"].mean(1))
            done = m
            with torch.no_grad():
                snaps.append(model.decode(model.prior.T(u)))
    elif model.kind == "diffusion":
        sch = model.schedule
        for j, t in enumerate(range(sch.T - 1, -1, -1)):
            kw = sch.langevin_kwargs(t, u)
            u, info = run_langevin(model.dprior, u, fused=fused, n_steps=K, seed=seed, chain_ids=ids, step_offset=j * K,
                                   return_info=True, **kw)
            logs.append(info["log_density"].mean(1))
            with torch.no_grad():
                snaps.append(model.decode(model.prior.T(u)))
    else:
        raise ValueError("--long-run needs an ebm or diffusion checkpoint (the gaussian prior is sampled exactly)")
    return torch.cat(logs).cpu(), torch.stack(snaps)


def plot_profile(values: torch.Tensor, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(values.numpy())
    ax.set_xlabel("Langevin step")
    ax.set_ylabel("mean log π(u) (un-normalised)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m hebm.sample", description="Sample from a trained hebm checkpoint.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="ckpt.pt written by hebm.train")
    p.add_argument("--n", type=int, default=64, help="number of samples in the grid")
    p.add_argument("--nrow", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--langevin-steps", dest="langevin_steps", type=int, default=None, help="default: the run's")
    p.add_argument("--langevin-step-size", dest="langevin_step_size", type=float, default=None, help="default: the run's (ebm)")
    p.add_argument("--fused", action="store_true")
    p.add_argument("--hierarchical", action="store_true", help="rows varying one layer at a time (+ per-level decodes for diffusion)")
    p.add_argument("--ncol", type=int, default=10, help="columns of the hierarchical grid")
    p.add_argument("--long-run", dest="long_run", type=int, default=0, metavar="K", help="a K-step prior chain + energy profile")
    p.add_argument("--nchains", type=int, default=8, help="chains of the long run")
    p.add_argument("--out", default=None, help="output prefix (default <ckpt dir>/sample)")
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> int:
    from .checkpoint import CheckpointError
    from .train import load_model

    a = build_parser().parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    try:
        model, cfg, _ = load_model(a.ckpt, a.device)
    except CheckpointError as e:
        print(f"[hebm.sample] error: {e}", file=sys.stderr)
        return 2
    K = cfg["langevin_steps"] if a.langevin_steps is None else a.langevin_steps
    delta = cfg["langevin_step_size"] if a.langevin_step_size is None else a.langevin_step_size
    prefix = a.out or os.path.join(os.path.dirname(os.path.abspath(a.ckpt)), "sample")
    written = []
    x = model.sample(a.n, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused)
    img = _images(model, cfg, x)
    if img is not None:
        save_grid(img, prefix + ".png", nrow=a.nrow)
    else:
        from .data import load_dataset

        save_scatter(x, load_dataset(cfg["dataset"]).x, prefix + ".png")
    written.append(prefix + ".png")
    if a.hierarchical:
        if img is None:
            print("[hebm.sample] --hierarchical draws image grids; skipped for non-image data", file=sys.stderr)
        else:
            h = hierarchical_grid(model, ncol=a.ncol, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused)
            save_grid(_images(model, cfg, h), prefix + "_hierarchical.png", nrow=a.ncol)
            written.append(prefix + "_hierarchical.png")
            if model.kind == "diffusion":
                _, levels = model.sample_latents(a.ncol, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused,
                                                 return_levels=True)
                with torch.no_grad():
                    dec = torch.cat([model.decode(model.prior.T(u)) for u in levels])
                save_grid(_images(model, cfg, dec), prefix + "_levels.png", nrow=a.ncol)
                written.append(prefix + "_levels.png")
    if a.long_run:
        try:
            logs, snaps = long_run(model, n_chains=a.nchains, K=a.long_run, seed=a.seed, step_size=delta, fused=a.fused)
        except ValueError as e:
            print(f"[hebm.sample] error: {e}", file=sys.stderr)
            return 2
        plot_profile(logs, prefix + "_longrun_energy.png", f"{cfg['prior']} prior, {a.long_run}-step chain")
        written.append(prefix + "_longrun_energy.png")
        if img is not None:
            save_grid(_images(model, cfg, snaps.reshape(-1, snaps.shape[-1])), prefix + "_longrun_chain.png", nrow=a.nchains)
            written.append(prefix + "_longrun_chain.png")
        with open(prefix + "_longrun.json", "w") as f:
            json.dump(dict(K=a.long_run, log_density_first=float(logs[0]), log_density_last=float(logs[-1]),
                           log_density_min=float(logs.min()), log_density_max=float(logs.max())), f)
    print("[hebm.sample] wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
