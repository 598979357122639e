"""Sample quality and the one-JSON summary of a checkpoint.

* ``fd`` (:func:`fd_eval`): Fréchet distances on the held-out protocol: the model's samples
  against the **held-out** split with matched sizes, in the features of two independent
  classifiers (an MLP and a CNN for images, :mod:`hebm.evaluation.features`), beside the same
  generator's Gaussian prior p_β and its **Recon** (the decoded aggregate posterior of the
  held-out images: the floor of any prior on that generator), the fraction of the gap the
  model's prior closes (the papers' NVAE / NVAE-Recon comparison), and the distance to the
  training split as a memorisation check.  With ``--inception-weights PATH`` (a local
  torch-fidelity Inception file; nothing is downloaded) also torchmetrics' FID against the
  held-out split.
* ``summary`` (:func:`summary_eval`): active units and KL per layer, the prior hole per layer,
  f⁺ − f⁻, the hierarchy measures, FD — one JSON.
"""
from __future__ import annotations

import torch

from ..config import FD_MIN_SAMPLES, FEATURE_DIM
from ..data import run_data_for
from ..errors import UserError
from ..models import load_model
from .features import feature_networks, fid_torchmetrics
from .hierarchy import hierarchy_eval
from .metrics import frechet_distance, gap_closed, latent_report, mean_std, prior_hole, stationarity


@torch.no_grad()
def generate(model, tcfg, n: int, seed: int, fused: bool, langevin_steps=None) -> torch.Tensor:
    K = tcfg.langevin_steps if langevin_steps is None else langevin_steps
    xs = [model.sample(min(500, n - j), seed=seed, n_steps=K, step_size=tcfg.langevin_step_size, fused=fused,
                       chain_offset=j, check="raise").cpu() for j in range(0, n, 500)]
    return torch.cat(xs)


def fd_eval(path: str, *, n=None, seeds: int = 3, seed: int = 0, fused: bool = False, device="cpu",
            inception_weights=None, langevin_steps=None) -> dict:
    """Sample quality on the held-out protocol, over ``seeds`` sampling seeds.

    Each seed splits the held-out images at random into halves A and B; B is the reference every
    set is compared with, and every set has B's size (``n``, unless given): so no FD compares an
    image with itself and every FD carries the same finite-sample term.  For each of two feature
    networks (:func:`feature_networks`; the first one's numbers are the top-level keys, the
    second's under ``features2``): ``fd`` — the model's prior samples; on the same generator
    ``fd_gaussian`` (its Gaussian prior p_β, ancestral from the same N(0, I) draws as the model's
    chains) and ``fd_recon`` (the decoded aggregate posterior of the other half A, x → z̃ ~ q(z̃|x)
    → g(z̃): the floor any prior on this generator could reach), ``gap_closed`` = (fd_gaussian −
    fd) / (fd_gaussian − fd_recon); ``fd_data`` — half A itself (real held-out images: the value
    an exact model of the data would score); ``fd_train`` — the samples against as many random
    *training* images, beside ``fd_heldout_vs_train`` (half B against them): samples that sit
    closer to the training images than held-out real images do raise ``memorisation_warning``.
    Spreads are sample standard deviations (ddof 1) over the seeds."""
    if n is not None and n < FD_MIN_SAMPLES:
        raise UserError(f"--n {n}: an FD needs more samples than its {FEATURE_DIM} feature dimensions; pass --n >= "
                        f"{FD_MIN_SAMPLES}")
    model, mcfg, tcfg, _ = load_model(path, device)
    data = run_data_for(tcfg)
    tr, te = data.train, data.test
    if (tr.y < 0).any():
        raise UserError("fd trains a classifier on labels; this data set has none")
    half = len(te) // 2
    if half < FD_MIN_SAMPLES:
        raise UserError(f"fd needs at least {2 * FD_MIN_SAMPLES} held-out images (two halves of {FD_MIN_SAMPLES}, more "
                        f"than the {FEATURE_DIM} feature dimensions); the run holds out {len(te)}")
    n = int(n or half)
    nets = feature_networks(tr, te, seed=seed)
    vals = {k: {q: [] for q in ("fd", "gaussian", "recon", "data", "train", "heldout_train")} for k in nets}
    fids = []
    for s in range(seeds):
        s_seed = seed * 7919 + 1 + s
        perm = torch.randperm(len(te), generator=torch.Generator().manual_seed(s_seed))
        x_a, x_b = te.x[perm[:half]], te.x[perm[half: 2 * half]]
        xg = generate(model, tcfg, n, s_seed, fused, langevin_steps)
        xb = xg if not model.tilted else torch.cat([model.sample_base(min(500, n - j), seed=s_seed, chain_offset=j).cpu()
                                                    for j in range(0, n, 500)])
        g = torch.Generator(device=device).manual_seed(s_seed)
        xr = torch.cat([model.reconstruct(x_a[j: j + 500].to(device), generator=g).cpu() for j in range(0, half, 500)])
        rows = torch.randperm(len(tr), generator=torch.Generator().manual_seed(s_seed))[:n]
        for k, (body, _) in nets.items():
            with torch.no_grad():
                f_b, f_tr, f_g = body(x_b).numpy(), body(tr.x[rows]).numpy(), body(xg).numpy()
                v = vals[k]
                v["fd"].append(frechet_distance(f_g, f_b))
                v["gaussian"].append(v["fd"][-1] if xb is xg else frechet_distance(body(xb).numpy(), f_b))
                v["recon"].append(frechet_distance(body(xr).numpy(), f_b))
                v["data"].append(frechet_distance(body(x_a).numpy(), f_b))
                v["train"].append(frechet_distance(f_g, f_tr))
                v["heldout_train"].append(frechet_distance(f_b, f_tr))
        if inception_weights:
            shape = mcfg.image_shape
            fids.append(fid_torchmetrics(((x_b + 1) / 2).reshape(-1, *shape), ((xg.clamp(-1, 1) + 1) / 2).reshape(-1, *shape),
                                         inception_weights))

    def block(k):
        v = {q: mean_std(vals[k][q]) for q in vals[k]}
        return dict(features=k, fd=v["fd"][0], fd_std=v["fd"][1], fd_values=vals[k]["fd"],
                    fd_gaussian=v["gaussian"][0], fd_gaussian_std=v["gaussian"][1], fd_gaussian_values=vals[k]["gaussian"],
                    fd_recon=v["recon"][0], fd_recon_std=v["recon"][1], fd_recon_values=vals[k]["recon"],
                    gap_closed=gap_closed(v["gaussian"][0], v["fd"][0], v["recon"][0]),
                    fd_data=v["data"][0], fd_data_std=v["data"][1],
                    fd_train=v["train"][0], fd_train_std=v["train"][1], fd_train_values=vals[k]["train"],
                    fd_heldout_vs_train=v["heldout_train"][0], fd_heldout_vs_train_std=v["heldout_train"][1],
                    memorisation_warning=bool(v["train"][0] < v["heldout_train"][0]), classifier_acc=nets[k][1])

    names = list(nets)
    res = dict(block(names[0]), features2=block(names[1]), n_generated=n, n_reference=half, n_heldout=len(te),
               n_train=len(tr), seeds=seeds, against="half B of the held-out split (Recon: decodes of half A)")
    if fids:
        res.update(fid=mean_std(fids)[0], fid_std=mean_std(fids)[1], fid_values=fids)
    return res


def summary_eval(path: str, *, n: int = 2000, seed: int = 0, fused: bool = False, device="cpu", fd_seeds: int = 3) -> dict:
    """Everything that makes a model's numbers meaningful, for one checkpoint."""
    model, mcfg, tcfg, ck = load_model(path, device)
    data = run_data_for(tcfg)
    x = data.train.x.to(device)
    rep = latent_report(model, x[:2000], samples=16, seed=seed)
    hole = prior_hole(model, x, n=n, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size,
                      fused=fused)
    st = stationarity(model, x, n=2048, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size,
                      fused=fused)
    with torch.no_grad():
        post = model.posterior(data.test.x.to(device), torch.Generator().manual_seed(seed))
        elbo = float((model.log_px(data.test.x.to(device), post.z) - post.kl.sum(1)).mean())
    res = dict(prior=mcfg.prior, step=int(ck["step"]), active_units=rep["active_units"], kl_per_layer=rep["kl_per_layer"],
               prior_hole_gaussian=hole["gaussian"], prior_hole_model=hole["model"], heldout_elbo=elbo)
    if st is not None:
        res.update(st)
    if (data.train.y >= 0).all():
        res["hierarchy"] = hierarchy_eval(path, n=n, seed=seed, device=device, model=model, tcfg=tcfg)
        res.update({f"fd_{k}": v for k, v in fd_eval(path, seeds=fd_seeds, seed=seed, fused=fused,
                                                      device=device).items()})
    return res


__all__ = ["fd_eval", "generate", "summary_eval"]
