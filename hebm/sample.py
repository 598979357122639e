"""``python -m hebm.sample --ckpt CKPT``: sample grids, hierarchical sampling, long-run chains.

    python -m hebm.sample --ckpt runs/ebm-digits-…/ckpt.pt                  # samples grid
    python -m hebm.sample --ckpt … --hierarchical                           # one row per layer i
    python -m hebm.sample --ckpt … --long-run 2500                          # energy profile + chain grid

* Plain: ``--n`` samples from the model's prior (ancestral for gaussian, ũ-space Langevin from
  N(0, I) for ebm, the reverse ũ-diffusion for diffusion), decoded to the generator mean.
* ``--hierarchical`` (docs/papers.md B §4.1 / §5.5): draw ``--ncol`` prior samples ũ⁽ʳ⁾; for each
  layer i, row i keeps every layer of sample 0 except layer i, which is taken from sample r —
  done in ũ-space (``z̃ = T_β(ũ)``), the natural variant for a conditional hierarchy: changing
  ``u_i`` changes ``z_i`` and, through the conditionals, everything below it.  Rows top layer
  first.  For the diffusion prior also ``*_levels.png``: the decodes of ``T_β(ũ_t)`` at every level
  t = T … 0 (the authors' progressive figure).
* ``--save DIR`` (with ``--n N``): the samples as files a field's FID tool reads — ``DIR/000000.png``
  … (one image each, 8-bit, the generator mean in [0, 1]; pytorch-fid and torch-fidelity take a
  folder of PNGs, as the authors' evaluation does) and ``DIR/samples.npz`` (``images`` uint8
  ``[N, H, W, C]``, ``x`` the flat [-1, 1] values, ``z`` the latents).  ``--recon`` writes the
  model's **Recon** set instead: x → z̃ ~ q(z̃ | x) → g(z̃) for N random training images, the floor
  any prior on this generator could reach.
* ``--attribute NAME=VALUE`` (repeatable; a checkpoint fine-tuned with ``--attributes``,
  docs/controllable.md): samples of ``p(z̃ | y)`` — conditional chains, every chain with its own
  values in one fused call; attributes not given are drawn with the training images'
  frequencies given the ones that are.
* ``--long-run K`` (paper 1's long-run figure, docs/papers.md B §5.6): ``--nchains`` prior chains
  run K Langevin steps (ebm; for diffusion K steps per level).  ``*_longrun_energy.png`` plots
  the mean target log π(u) and the mean energy F(z̃) per step; ``*_longrun_chain.png`` decodes
  10 evenly spaced steps; ``*_longrun.json`` reports the profile and whether the chains stay in
  the data region: at every snapshot, the fraction of chains whose latents lie inside the
  aggregate posterior's 99 % Mahalanobis region (a Gaussian fit of z̃ ~ q(z̃ | x) over the
  training data); "stays in the data region" when that fraction stays ≥ 0.9.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from . import cli
from .args import DivergenceError
from .config import SAMPLE_SHARED, SampleConfig, TrainConfig, add_arguments
from .data import run_data_for
from .figures import plot_profile, save_grid, save_scatter, to_images
from .models import load_model
from .philox import initial_noise

IN_REGION = 0.9  # the fraction of chains inside the posterior's 99 % region that counts as "staying"


def hierarchical_grid(model, *, ncol: int, seed: int, n_steps: int, step_size: float, fused: bool = False):
    """``[L·ncol, D_x]`` decodes: row i (top layer first) varies layer i only (ũ-space)."""
    z, u = model.sample_latents(ncol, seed=seed, n_steps=n_steps, step_size=step_size, fused=fused, return_u=True,
                                check="raise")
    prior = model.prior
    parts = prior.split(u)
    rows = []
    for i in reversed(range(prior.L)):
        new = [p[:1].expand(ncol, -1).clone() if j != i else p for j, p in enumerate(parts)]
        with torch.no_grad():
            rows.append(model.decode(prior.T(torch.cat(new, 1))))
    return torch.cat(rows)


class PosteriorRegion:
    """The aggregate posterior's Gaussian fit and its 99 % Mahalanobis radius."""

    def __init__(self, z_post: torch.Tensor, quantile: float = 0.99):
        z = z_post.double()
        self.mu = z.mean(0)
        cov = torch.cov(z.t()) + 1e-6 * torch.eye(z.shape[1], dtype=z.dtype)
        self.prec = torch.linalg.inv(cov)
        self.radius = float(torch.quantile(self._m2(z), quantile))

    def _m2(self, z):
        d = z.double() - self.mu
        return ((d @ self.prec) * d).sum(1)

    def inside(self, z: torch.Tensor) -> float:
        """Fraction of rows of ``z`` inside the region."""
        return float((self._m2(z) <= self.radius).double().mean())


@torch.no_grad()
def long_run(model, *, n_chains: int, K: int, seed: int, step_size: float, fused: bool = False, snapshots: int = 10,
             region: PosteriorRegion = None, metropolis: bool = False, acceptance: list = None):
    """``(log π per step [K_total], F per snapshot, inside-fraction per snapshot, snapshot steps,
    decodes [snapshots, n_chains, D_x])`` of ``n_chains`` long prior chains.  ``metropolis``:
    Metropolis-adjusted steps (MALA), each segment's mean acceptance appended to ``acceptance``."""
    p0 = next(model.parameters())
    ids = torch.arange(n_chains, device=p0.device)
    u = initial_noise(seed, n_chains, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    snaps, energy, inside = [], [], []
    prior = model.sampling_prior

    def record(u, t=None):
        z = model.prior.T(u)
        snaps.append(model.decode(z))
        energy.append(float(prior.energy(z, t).mean()) if prior.has_energy else 0.0)
        inside.append(region.inside(z) if region is not None else float("nan"))

    logs, marks, acc = model.long_run(u, K=K, seed=seed, chain_ids=ids, step_size=step_size, fused=fused,
                                      snapshots=snapshots, metropolis=metropolis, record=record)
    if acceptance is not None:
        acceptance.extend(acc)
    return logs.cpu(), energy, inside, marks, torch.stack(snaps)


def save_image_set(x: torch.Tensor, z: torch.Tensor, shape, out_dir: str) -> int:
    """``x`` (flat, [-1, 1]) as one PNG per image plus ``samples.npz`` in ``out_dir``; returns N."""
    import numpy as np
    from PIL import Image

    if not shape:
        raise cli.UserError("--save writes images; this model's data are not images")
    os.makedirs(out_dir, exist_ok=True)
    imgs = to_images(x, shape)  # [N, C, H, W] in [0, 1]
    u8 = (imgs * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    for i, im in enumerate(u8):
        Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im).save(os.path.join(out_dir, f"{i:06d}.png"))
    np.savez_compressed(os.path.join(out_dir, "samples.npz"), images=u8, x=x.detach().cpu().numpy(),
                        z=z.detach().cpu().numpy())
    return len(u8)


def build_parser():
    """The flags of :class:`hebm.config.SampleConfig`, and those it shares with training
    (:data:`hebm.config.SAMPLE_SHARED`: training's types and ranges), generated."""
    p = cli.Parser(prog="python -m hebm.sample", description="Sample from a trained hebm checkpoint.")
    add_arguments(p, (SampleConfig,), defaults={})
    add_arguments(p, (TrainConfig,), only=list(SAMPLE_SHARED), defaults=SAMPLE_SHARED)
    return p


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, status 2) or --help (0)
        return int(e.code or 0)

    def go() -> int:
        if a.device == "cpu":
            torch.set_num_threads(1)
        model, mcfg, tcfg, _ = load_model(a.ckpt, a.device)
        K = tcfg.langevin_steps if a.langevin_steps is None else a.langevin_steps
        delta = tcfg.langevin_step_size if a.langevin_step_size is None else a.langevin_step_size
        prefix = a.out or os.path.join(os.path.dirname(os.path.abspath(a.ckpt)), "sample")
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        shape = mcfg.image_shape
        written = []
        draw = None  # the latents of --n chains: the model's prior, or p(z | y) with --attribute
        if a.attribute:
            from .attributes import labels as attribute_labels
            from .controllable import draw_values, parse_fixed

            names = list(getattr(model, "attributes", []) or [])
            if not names:
                raise cli.UserError(f"--attribute: {a.ckpt} has no attribute heads (fine-tune it with hebm.train --init "
                                    f"{a.ckpt} --attributes digit,thickness,slant)")
            fixed = parse_fixed(a.attribute, names)
            data = run_data_for(tcfg)
            values = draw_values(attribute_labels(data.train, names), names, fixed, a.n, a.seed)

            def draw(j0, j1):
                return model.sample_latents_given(values[j0:j1], seed=a.seed, n_steps=K, step_size=delta, fused=a.fused,
                                                  chain_offset=j0, check="raise")
        else:
            def draw(j0, j1):
                return model.sample_latents(j1 - j0, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused,
                                            chain_offset=j0, check="raise")
        if a.recon and not a.save:
            raise cli.UserError("--recon writes the reconstruction set to --save DIR: pass --save DIR")
        if a.metropolis and not a.long_run:
            raise cli.UserError("--metropolis adjusts the long-run chain: pass --long-run K too")
        if a.save and os.path.isdir(a.save) and any(n.endswith(".png") or n == "samples.npz" for n in os.listdir(a.save)):
            raise cli.UserError(f"--save {a.save!r} already holds images; pick an empty or new directory (a set "
                                f"mixed from two runs would be scored as one)")
        try:
            if a.save:
                if a.recon:
                    data = run_data_for(tcfg)
                    g = torch.Generator().manual_seed(a.seed)
                    rows = torch.randperm(len(data.train), generator=g)[: a.n]
                    xs = data.train.x[rows].to(a.device)
                    with torch.no_grad():
                        zs = torch.cat([model.posterior(xs[j: j + 500], g).z for j in range(0, len(xs), 500)])
                        xr = model.decode(zs)
                    n = save_image_set(xr, zs, shape, a.save)
                    print(f"[hebm.sample] wrote {n} reconstructions of training images (the Recon set) to {a.save}")
                    return 0
                zs = torch.cat([draw(j, min(a.n, j + 500)) for j in range(0, a.n, 500)])
                with torch.no_grad():
                    xs = model.decode(zs)
                n = save_image_set(xs, zs, shape, a.save)
                written.append(f"{a.save}/ ({n} PNGs + samples.npz)")
            with torch.no_grad():
                x = model.decode(draw(0, min(a.n, 256)))
            if shape:
                save_grid(to_images(x, shape), prefix + ".png", nrow=a.nrow)
            else:
                save_scatter(x, run_data_for(tcfg).train.x, prefix + ".png")
            written.append(prefix + ".png")
            if a.hierarchical:
                if not shape:
                    print("[hebm.sample] --hierarchical draws image grids; skipped for non-image data", file=sys.stderr)
                else:
                    h = hierarchical_grid(model, ncol=a.ncol, seed=a.seed, n_steps=K, step_size=delta, fused=a.fused)
                    save_grid(to_images(h, shape), prefix + "_hierarchical.png", nrow=a.ncol)
                    written.append(prefix + "_hierarchical.png")
                    if model.has_levels:
                        _, levels = model.sample_latents(a.ncol, seed=a.seed, n_steps=K, fused=a.fused, return_levels=True)
                        with torch.no_grad():
                            dec = torch.cat([model.decode(model.prior.T(u)) for u in levels])
                        save_grid(to_images(dec, shape), prefix + "_levels.png", nrow=a.ncol)
                        written.append(prefix + "_levels.png")
            if a.long_run:
                data = run_data_for(tcfg)
                with torch.no_grad():
                    zq = model.posterior(data.train.x.to(a.device), torch.Generator().manual_seed(a.seed)).z
                region = PosteriorRegion(zq)
                acceptance = []
                logs, energy, inside, marks, snaps = long_run(model, n_chains=a.nchains, K=a.long_run, seed=a.seed,
                                                              step_size=delta, fused=a.fused, region=region,
                                                              metropolis=a.metropolis, acceptance=acceptance)
                plot_profile(logs, prefix + "_longrun_energy.png", f"{mcfg.prior} prior, {a.long_run}-step chain "
                             f"(train K = {K})")
                written.append(prefix + "_longrun_energy.png")
                if shape:
                    sel = snaps[:, : min(a.nchains, 8)]
                    save_grid(to_images(sel.reshape(-1, sel.shape[-1]), shape), prefix + "_longrun_chain.png",
                              nrow=sel.shape[1])
                    written.append(prefix + "_longrun_chain.png")
                stays = all(f >= IN_REGION for f in inside)
                rep = dict(K=a.long_run, train_K=K, n_chains=a.nchains, steps=marks, log_density_first=float(logs[0]),
                           log_density_last=float(logs[-1]), log_density_min=float(logs.min()),
                           log_density_max=float(logs.max()), mean_energy=energy, inside_fraction=inside,
                           stays_in_data_region=stays, metropolis=a.metropolis,
                           acceptance=acceptance if a.metropolis else None)
                with open(prefix + "_longrun.json", "w") as f:
                    json.dump(rep, f, indent=2)
                written.append(prefix + "_longrun.json")
                print(f"[hebm.sample] long run of {a.long_run} steps: log π {float(logs[0]):.2f} -> {float(logs[-1]):.2f}, "
                      f"inside the posterior's 99% region {inside[0]:.2f} -> {inside[-1]:.2f}: chains "
                      f"{'stay' if stays else 'do NOT stay'} in the data region"
                      + (f"; MALA acceptance {min(acceptance):.2f}-{max(acceptance):.2f} per segment" if a.metropolis
                         else ""))
        except DivergenceError as e:
            raise cli.UserError(f"{e.args[0].split(';')[0]}; lower --langevin-step-size (now {delta:g}) or --langevin-steps")
        print("[hebm.sample] wrote " + ", ".join(written))
        return 0

    return cli.run("hebm.sample", go)


if __name__ == "__main__":
    sys.exit(main())
