"""Outlier scores of a trained model: the papers' family, and its choice on normal data alone.

**The terms** (:func:`score_terms`), per image x, at draws z̃ ~ q(z̃ | x) averaged over ``n_post``:
``log_px`` = log p(x | z̃); per layer ``log_pb`` (log p(z_i | z_{i+1}), log N(z_L; 0, I)), ``tilt``
(the prior's tilt in its own nats: f_i(z_i) for the EBM, f_i(z_i, 0)/s_0 for the diffusion's
level-0 marginal, 0 for the Gaussian prior) and ``log_q``; and the two forms of L^{>k}
(docs/papers.md B §5.2):

* *hvae-oodd* (Havtorn et al.): z_{>k} ~ q, the k lowest layers at their conditional prior means,
  ``L^{>k} = log p(x|z) + log p_β(z_{>k}) + tilt(z) − log q(z_{>k}|x)`` (k = 0: the ELBO);
* *poster* (paper 1): z_{>k} ~ q, z_{≤k} redrawn from the model's tilted prior conditional
  (ũ-space Langevin on the lower layers), ``L^{>k} = log p(x|z) + log p_β(z) + tilt(z)``.

**The family** (:func:`candidates`; each a larger-is-more-anomalous score):

* ``L>0`` — minus the un-normalised log posterior log p(x|z) + log p_β(z) + tilt(z), the papers'
  anomaly score;
* ``LLR>k[hvae]``, ``LLR>k[poster]`` — L^{>0} − L^{>k} (k ≥ 1), both forms (log Z cancels);
* ``prior>k`` — minus the upper layers' prior density at the posterior draw,
  −Σ_{i>k}(log_pb_i + tilt_i) (k = 0: every layer);
* ``energy>k`` — minus the upper layers' tilt alone, −Σ_{i>k} tilt_i (tilted priors only);
* ``L>0 w=W`` — −[log p(x|z) + W·(log p_β(z) + tilt(z))] (the likelihood varies by hundreds of
  nats over images, the prior terms by a few: the weight lets the prior speak).

**The choice** (:func:`choose`): the score with the largest AUPRC separating a *validation* slice
of normal training data (never trained on: ``--validation-fraction``) from proxy outliers made
from that same slice (:func:`proxy_outliers`: the images turned a quarter, and upside down — shapes
no digit has, in strokes every digit has).  Nothing of the held-out split is read until the
choice is made; every candidate's held-out value can be reported beside it, the choice is not
changed by them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sampler.reference import ref_step
from .metrics import auprc

LOG2PI = math.log(2 * math.pi)
WEIGHTS = (3.0, 10.0, 30.0, 100.0)


def _gauss(z, m, s):
    r = (z - m) / s
    return -(0.5 * (r * r + LOG2PI) + torch.log(s)).sum(1)


@dataclass
class ScoreTerms:
    """The terms of :func:`score_terms` for N images (each ``[N]`` or ``[N, L]``, CPU float64)."""

    log_px: torch.Tensor
    log_pb: torch.Tensor
    tilt: torch.Tensor
    log_q: torch.Tensor
    hvae: dict = field(default_factory=dict)  # {k: L^{>k}}, k = 0 … L−1
    poster: dict = field(default_factory=dict)

    @property
    def L(self) -> int:
        return self.log_pb.shape[1]

    @property
    def log_posterior(self) -> torch.Tensor:
        """``L^{>0}`` in the papers' anomaly form: log p(x|z) + log p_β(z) + tilt(z)."""
        return self.log_px + self.log_pb.sum(1) + self.tilt.sum(1)


@torch.no_grad()
def llr_hvae_oodd(model, x: torch.Tensor, *, seed: int = 0, n_post: int = 1) -> dict:
    """``{k: L^{>k}(x)}`` in the hvae-oodd form (module docstring), k = 0 … L−1."""
    prior, L = model.prior, model.prior.L
    res = {k: torch.zeros(x.shape[0], dtype=torch.float64) for k in range(L)}
    for s in range(n_post):
        post = model.posterior(x, torch.Generator(device=x.device).manual_seed(seed * 1000 + s))
        zs = prior.split(post.z)
        for k in range(L):
            parts = list(zs)
            for i in range(k - 1, -1, -1):  # the k lowest layers at their conditional prior means
                parts[i] = prior.conditional(i, parts[i + 1])[0]
            zk = torch.cat(parts, 1)
            lp = -0.5 * (parts[-1].pow(2) + LOG2PI).sum(1)
            for i in range(k, L - 1):
                m, sd = prior.conditional(i, parts[i + 1])
                lp = lp + _gauss(parts[i], m, sd)
            lq = post.log_q_layers[:, k:].sum(1)
            res[k] += (model.log_px(x, zk) + lp + model.tilt(zk) - lq).double().cpu() / n_post
    return res


def tilted_lower_layers(model, z: torch.Tensor, k: int, *, n_steps: int, step_size: float, seed: int) -> torch.Tensor:
    """z_{≤k} redrawn from the model's prior conditional given z_{>k} (the upper layers of ``z``):
    ũ-space Langevin on the k lowest layers of ``tilt(T_β(u)) − ½‖u‖²`` from u_{≤k} ~ N(0, I), the
    upper u fixed (exact ancestral draws for the Gaussian prior)."""
    prior = model.prior
    u = prior.T_inv(z)
    cut = sum(model.dims[:k])
    g = torch.Generator(device=z.device).manual_seed(seed)
    low = torch.randn(z.shape[0], cut, generator=g, device=z.device, dtype=z.dtype)
    high = u[:, cut:]
    chain = model.lower_layer_chain(step_size)
    if chain is None or n_steps == 0:  # (the prior draws them exactly)
        return prior.T(torch.cat([low, high], 1))
    scale, step_size = chain

    def target(lo):
        return scale * model.tilt(prior.T(torch.cat([lo, high], 1))) - 0.5 * lo.pow(2).sum(1)

    half = torch.full((z.shape[0], 1), 0.5 * step_size * step_size, dtype=z.dtype, device=z.device)
    amp = torch.full((z.shape[0], 1), step_size, dtype=z.dtype, device=z.device)
    for _ in range(n_steps):
        low, _ = ref_step(target, low, torch.randn(low.shape, generator=g, device=z.device, dtype=z.dtype), half, amp)
    return prior.T(torch.cat([low.detach(), high], 1))


def llr_poster(model, x: torch.Tensor, *, seed: int = 0, n_steps: int, step_size: float) -> dict:
    """``{k: L^{>k}(x)}`` in the poster's form (module docstring), k = 0 … L−1."""
    with torch.no_grad():
        post = model.posterior(x, torch.Generator(device=x.device).manual_seed(seed))
    res = {}
    for k in range(model.prior.L):
        zk = post.z if k == 0 else tilted_lower_layers(model, post.z, k, n_steps=n_steps, step_size=step_size,
                                                        seed=seed + k)
        with torch.no_grad():
            res[k] = (model.log_px(x, zk) + model.log_prior_unnorm(zk)).double().cpu()
    return res


@torch.no_grad()
def posterior_terms(model, tcfg, x: torch.Tensor, *, n_post: int = 4, seed: int = 0, batch: int = 512) -> dict:
    """``{"log_px" [N], "log_pb" [N, L], "tilt" [N, L], "log_q" [N, L]}`` at posterior draws
    (``model.posterior_draw``: q, or the posterior Langevin chain of ``--posterior langevin`` runs,
    whose ``log_q`` is NaN), each averaged over ``n_post`` draws."""
    out = {k: [] for k in ("log_px", "log_pb", "tilt", "log_q")}
    L = len(model.dims)
    for j in range(0, x.shape[0], batch):
        xb = x[j: j + batch]
        acc = dict(log_px=0.0, log_pb=0.0, tilt=0.0, log_q=0.0)
        for s in range(n_post):
            s_seed = seed * 1000 + s + j
            if getattr(tcfg, "posterior", "q") == "q":
                post = model.posterior(xb, torch.Generator(device=xb.device).manual_seed(s_seed))
                z, lq = post.z, post.log_q_layers
            else:
                z = model.posterior_draw(xb, tcfg, seed=s_seed)
                lq = torch.full((xb.shape[0], L), float("nan"), dtype=xb.dtype, device=xb.device)
            acc["log_px"] = acc["log_px"] + model.log_px(xb, z).double()
            acc["log_pb"] = acc["log_pb"] + model.prior.log_p_beta_terms(z).double()
            acc["tilt"] = acc["tilt"] + model.tilt_terms(z).double()
            acc["log_q"] = acc["log_q"] + lq.double()
        for k in out:
            out[k].append((acc[k] / n_post).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def score_terms(model, tcfg, x: torch.Tensor, *, n_post: int = 4, seed: int = 0, llr: bool = True) -> ScoreTerms:
    """Every term the family needs for the images ``x`` (module docstring); ``llr``: also the
    two forms of L^{>k} (q-scheme runs only: they need log q)."""
    t = posterior_terms(model, tcfg, x, n_post=n_post, seed=seed)
    terms = ScoreTerms(**t)
    if llr and getattr(tcfg, "posterior", "q") == "q":
        terms.hvae = llr_hvae_oodd(model, x, seed=seed, n_post=n_post)
        terms.poster = llr_poster(model, x, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size)
    return terms


def candidates(L: int, *, tilted: bool, llr: bool = True) -> dict:
    """``{name: score(terms) → [N]}``, larger = more anomalous (module docstring), in the order a
    tie is broken (simplest first)."""
    out = {"L>0": lambda t: -t.log_posterior}
    for w in WEIGHTS:
        out[f"L>0 w={w:g}"] = lambda t, w=w: -(t.log_px + w * (t.log_pb.sum(1) + t.tilt.sum(1)))
    for k in range(L):
        out[f"prior>{k}"] = lambda t, k=k: -(t.log_pb[:, k:].sum(1) + t.tilt[:, k:].sum(1))
    if tilted:
        for k in range(L):
            out[f"energy>{k}"] = lambda t, k=k: -t.tilt[:, k:].sum(1)
    if llr:
        for k in range(1, L):
            out[f"LLR>{k}[hvae]"] = lambda t, k=k: t.hvae[0] - t.hvae[k]
            out[f"LLR>{k}[poster]"] = lambda t, k=k: t.poster[0] - t.poster[k]
    return out


def evaluate_all(cands: dict, terms: ScoreTerms, labels, metric=auprc) -> dict:
    """``{name: metric(labels, score)}`` for every candidate (NaN where a score is not finite)."""
    out = {}
    for name, fn in cands.items():
        s = fn(terms).numpy()
        out[name] = float(metric(labels, s)) if np.isfinite(s).all() and np.std(s) > 0 else float("nan")
    return out


def choose(cands: dict, normal: ScoreTerms, proxy: ScoreTerms, metric=auprc) -> tuple[str, dict]:
    """``(name, {name: validation value})``: the candidate that best separates the validation
    images ``normal`` (label 0) from the ``proxy`` outliers (label 1) — a function of those two
    alone.  Ties go to the earlier candidate."""
    joined = ScoreTerms(*(torch.cat([getattr(normal, f), getattr(proxy, f)]) for f in ("log_px", "log_pb", "tilt",
                                                                                          "log_q")),
                        hvae={k: torch.cat([normal.hvae[k], proxy.hvae[k]]) for k in normal.hvae},
                        poster={k: torch.cat([normal.poster[k], proxy.poster[k]]) for k in normal.poster})
    labels = np.concatenate([np.zeros(len(normal.log_px)), np.ones(len(proxy.log_px))])
    values = evaluate_all(cands, joined, labels, metric)
    best = max((v, -j, name) for j, (name, v) in enumerate(values.items()) if math.isfinite(v))
    return best[2], values


def proxy_outliers(x: torch.Tensor, shape) -> torch.Tensor:
    """Outliers made from normal images alone: half of them turned a quarter (90°), half upside
    down — strokes like the data's, shapes unlike any class's."""
    C, H, W = (int(v) for v in shape)
    im = x.reshape(-1, C, H, W)
    n = im.shape[0] // 2
    turned = torch.rot90(im[:n], 1, dims=(2, 3)) if H == W else torch.flip(im[:n], dims=(3,))
    upside = torch.flip(im[n:], dims=(2,))
    return torch.cat([turned, upside]).reshape(x.shape[0], -1)


__all__ = ["ScoreTerms", "WEIGHTS", "candidates", "choose", "evaluate_all", "llr_hvae_oodd", "llr_poster",
           "posterior_terms", "proxy_outliers", "score_terms", "tilted_lower_layers"]
