"""What ``hebm.sample`` draws beyond plain samples: the hierarchical grid (one latent layer varied
at a time), paper 1's long-run chains and the posterior region they are judged by, and the image
set written for FID tools."""
from __future__ import annotations

import os
import time

import torch

from ..errors import UserError
from ..prior.philox import initial_noise
from ..sampler.reference import cold_chains
from .figures import to_images

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
             region: PosteriorRegion = None, metropolis: bool = False, acceptance: list = None, traces: dict = None,
             every: int = 1, classify=None, temperatures=None, swap_every: int = 1, swaps: dict = None):
    """``(log π per step [K_total], F per snapshot, inside-fraction per snapshot, snapshot steps,
    decodes [snapshots, n_chains, D_x])`` of ``n_chains`` long prior chains.  ``metropolis``:
    Metropolis-adjusted steps (MALA), each segment's mean acceptance appended to ``acceptance``.

    ``traces`` (a dict, filled): per-chain traces, draw d the state after ``d·every`` steps —
    ``"log_density"`` ``[draws, n_chains]`` (log π of the state), with ``classify`` (decodes →
    labels) also ``"class_label"`` (the states at every ``every``-th step recorded inside the sampler
    calls, ``trace_every``, which leaves the chain and every other output as they are); ``"every"``, ``"steps"`` (the draws' steps) and
    ``"sampler_seconds"`` (the run's wall time less the time spent recording and classifying).

    ``temperatures`` (replica exchange, ``swap_every``): ``n_chains`` ladder groups of R chains
    run, and everything above is their cold chains'; ``swaps`` (a dict, filled) gets the swap and
    round-trip counts (:meth:`hebm.models.ebm.EBMModel.long_run`)."""
    p0 = next(model.parameters())
    R = len(temperatures) if temperatures else 1
    ids = torch.arange(n_chains * R, device=p0.device)
    u = initial_noise(seed, n_chains * R, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    snaps, energy, inside = [], [], []
    prior = model.sampling_prior
    aside = [0.0]  # seconds spent outside the sampler (recording, classifying)

    def record(u, t=None):
        t0 = time.perf_counter()
        z = model.prior.T(u)
        snaps.append(model.decode(z))
        energy.append(float(prior.energy(z, t).mean()) if prior.has_energy else 0.0)
        inside.append(region.inside(z) if region is not None else float("nan"))
        aside[0] += time.perf_counter() - t0

    def label(u):
        return torch.as_tensor(classify(model.decode(model.prior.T(u)))).cpu()

    dens, labels = [], []

    def trace(step, u, log_density, draws=None):  # log_density[i]: log π of the state after step − n + i steps
        t0 = time.perf_counter()
        first = step - log_density.shape[0]
        keep = [i for i in range(log_density.shape[0]) if (first + i) % every == 0]
        dens.append(log_density[keep].cpu())
        if classify is not None:
            if draws is not None:  # the states the sampler recorded inside the call: (step, state)
                labels.extend(label(x) for _, x in draws)
            elif step % every == 0:
                labels.append(label(u))
        aside[0] += time.perf_counter() - t0

    extra = {}
    if traces is not None:
        extra = dict(trace=trace, trace_every=every if classify is not None else 0)
        if classify is not None:
            labels.append(label(cold_chains(u, R)))  # the cold chains' states after 0 steps
    t0 = time.perf_counter()
    logs, marks, acc = model.long_run(u, K=K, seed=seed, chain_ids=ids, step_size=step_size, fused=fused,
                                      snapshots=snapshots, metropolis=metropolis, record=record, **extra,
                                      **(dict(temperatures=temperatures, swap_every=swap_every, swaps=swaps)
                                         if temperatures else {}))
    seconds = time.perf_counter() - t0 - aside[0]
    if acceptance is not None:
        acceptance.extend(acc)
    if traces is not None:
        ld = torch.cat(dens)
        n = ld.shape[0] if classify is None else min(ld.shape[0], len(labels))
        traces.update(log_density=ld[:n], every=every, steps=[d * every for d in range(n)], sampler_seconds=seconds)
        if classify is not None:
            traces["class_label"] = torch.stack(labels[:n])
    return logs.cpu(), energy, inside, marks, torch.stack(snaps)


def require_images(shape) -> None:
    """An image set (``--save``) needs image data: :class:`UserError` for a model of vectors."""
    if not shape:
        raise UserError("--save writes images; this model's data are not images")


def save_image_set(x: torch.Tensor, z: torch.Tensor, shape, out_dir: str) -> int:
    """``x`` (flat, [-1, 1]) as one PNG per image plus ``samples.npz`` in ``out_dir``; returns N."""
    import numpy as np
    from PIL import Image

    require_images(shape)
    os.makedirs(out_dir, exist_ok=True)
    imgs = to_images(x, shape)  # [N, C, H, W] in [0, 1]
    u8 = (imgs * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    for i, im in enumerate(u8):
        Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im).save(os.path.join(out_dir, f"{i:06d}.png"))
    np.savez_compressed(os.path.join(out_dir, "samples.npz"), images=u8, x=x.detach().cpu().numpy(),
                        z=z.detach().cpu().numpy())
    return len(u8)


__all__ = ["IN_REGION", "PosteriorRegion", "hierarchical_grid", "long_run", "require_images", "save_image_set"]
