"""``python -m hebm.evaluate``: the papers' evaluations, metrics from scikit-learn.

    python -m hebm.evaluate --ckpt CKPT anomaly --holdout 1            # run trained with --holdout 1
    python -m hebm.evaluate anomaly --train --prior ebm --holdout 1,4,5,7,9 --seeds 3 --steps 1500
    python -m hebm.evaluate --ckpt CKPT ood --ood-data photos
    python -m hebm.evaluate --ckpt CKPT fd [--inception-weights PATH]

* ``anomaly`` (PAPERS.md B §5.3, on digits): normal = every digit but D, shuffled with
  RandomState(42), first 80 % train, test = the other 20 % + every D image; label 1 = anomaly.
  Decision function: the un-normalised log posterior
  ``L^{>0}(x) = log p(x|z_1) + log p_β(z̃) + F(z̃)`` averaged over ``--n-post`` posterior
  samples (``q(z̃|x)``; posterior Langevin for ``--posterior langevin`` runs; for the diffusion
  prior ``F(z̃, 0)/s_0`` stands in for the tilt).  Anomaly score ``−L^{>0}``;
  AUPRC = ``auc(recall, precision)`` of ``precision_recall_curve``.  ``--train`` runs the whole
  protocol (train a model per held-out digit and seed, then score) and prints mean ± std.
* ``ood`` (PAPERS.md A, B §5.2): in-distribution = the run's held-out split; OOD = ``--ood-data``
  (``photos``: 8×8 grey patches of scikit-learn's sample photographs, no download; ``noise``;
  or a torchvision set under ``--data-root`` resized to the run's image size).
  ``L^{>k}``: layers above k from ``q``, the k lowest layers set to the top-down conditional
  means, scored ``log p(x|z_1) + log p_β(z̃_{>k}) + F(z̃) − log q(z̃_{>k}|x)``;
  ``LLR^{>k} = L^{>0} − L^{>k}`` (larger = more OOD; log Z cancels).  AUROC
  (``roc_auc_score``), AUPRC (``average_precision_score``), FPR80 (FPR at the first threshold
  with TPR ≥ 0.8) for k = 1 … L−1, and for ``−L^{>0}`` itself (row k = 0).
* ``fd``: Fréchet distance between ``--n`` generated images and the held-out split in the
  penultimate-layer features of a small MLP classifier trained on the run's training split
  (FID's recipe without Inception weights); the train-vs-held-out FD is printed as the floor.
  With ``--inception-weights PATH`` and torchmetrics installed, also torchmetrics' FID.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch


# ---------------------------------------------------------------------------------- scores
@torch.no_grad()
def log_posterior_scores(model, cfg, x: torch.Tensor, *, n_post: int = 4, seed: int = 0, batch: int = 512) -> torch.Tensor:
    """``L^{>0}(x)``: the un-normalised log posterior at posterior samples, averaged."""
    out = []
    for j in range(0, x.shape[0], batch):
        xb = x[j : j + batch]
        acc = torch.zeros(xb.shape[0], dtype=xb.dtype, device=xb.device)
        for s in range(n_post):
            if cfg.get("posterior") == "langevin" and model.kind == "ebm":
                z = model.posterior_langevin(xb, seed=seed * 1000 + s + j, n_steps=cfg["posterior_steps"],
                                             step_size=cfg["posterior_step_size"])
            else:
                g = torch.Generator(device=xb.device).manual_seed(seed * 1000 + s + j)
                z = model.q_sample(xb, g)[0]
            acc += model.log_px(xb, z) + model.log_prior_unnorm(z)
        out.append(acc / n_post)
    return torch.cat(out)


@torch.no_grad()
def llr_scores(model, x: torch.Tensor, *, seed: int = 0, n_post: int = 1) -> dict:
    """``{k: L^{>k}(x)}`` for k = 0 … L−1 (one or more importance samples from ``q``)."""
    prior = model.prior
    L = prior.L
    res = {k: torch.zeros(x.shape[0]) for k in range(L)}
    for s in range(n_post):
        g = torch.Generator(device=x.device).manual_seed(seed * 1000 + s)
        z, _, mu, sigma = model.q_sample(x, g)
        zs = prior.split(z)
        mus, sigs = prior.split(mu), prior.split(sigma)
        for k in range(L):
            parts = list(zs)
            for i in range(k - 1, -1, -1):  # the k lowest layers from the conditional means
                parts[i] = prior.conditional(i, parts[i + 1])[0]
            zk = torch.cat(parts, 1)
            lq = sum(_gauss(parts[i], mus[i], sigs[i]) for i in range(k, L))
            lp = -0.5 * (parts[-1].pow(2) + math.log(2 * math.pi)).sum(1)
            for i in range(k, L - 1):
                m, sd = prior.conditional(i, parts[i + 1])
                lp = lp + _gauss(parts[i], m, sd)
            lp = lp + (model.log_prior_unnorm(zk) - prior.log_p_beta(zk))  # the tilt F (0 for gaussian)
            res[k] += (model.log_px(x, zk) + lp - lq).cpu() / n_post
    return res


def _gauss(z, m, s):
    r = (z - m) / s
    return -(0.5 * (r * r + math.log(2 * math.pi)) + torch.log(s)).sum(1)


def auprc(labels, scores) -> float:
    from sklearn.metrics import auc, precision_recall_curve

    p, r, _ = precision_recall_curve(labels, scores)
    return float(auc(r, p))


def ood_metrics(labels, scores) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fpr80 = float(fpr[np.argmax(tpr >= 0.8)])
    return dict(auroc=float(roc_auc_score(labels, scores)), auprc=float(average_precision_score(labels, scores)), fpr80=fpr80)


# ---------------------------------------------------------------------------------- features / FD
class _Classifier(torch.nn.Module):
    def __init__(self, d, n_classes, feat=32):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(d, 128), torch.nn.GELU(), torch.nn.Linear(128, feat), torch.nn.GELU())
        self.head = torch.nn.Linear(feat, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


def train_classifier(x, y, *, steps: int = 600, seed: int = 0):
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    clf = _Classifier(x.shape[1], n_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def torchmetrics_fid(real01: torch.Tensor, fake01: torch.Tensor, weights: str) -> float:
    """FID with torchmetrics' Inception and user-supplied local weights (optional dependency)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise RuntimeError("FID needs torchmetrics (pip install torchmetrics torch-fidelity); the classifier FD above needs nothing") from None
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights)

    def prep(im):
        im = torch.nn.functional.interpolate(im, size=(299, 299), mode="bilinear")
        im = im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im
        return (im.clamp(0, 1) * 255).to(torch.uint8)

    fid.update(prep(real01), real=True)
    fid.update(prep(fake01), real=False)
    return float(fid.compute())


# ---------------------------------------------------------------------------------- tasks
def _run_data(cfg):
    from .data import anomaly_split, load_dataset, split

    data = load_dataset(cfg["dataset"], data_root=cfg.get("data_root"))
    if cfg.get("classes"):
        data = data.select_classes(cfg["classes"])
    if cfg.get("holdout") is not None:
        tr, te, _ = anomaly_split(data, int(cfg["holdout"]))
    else:
        tr, te = split(data, test_fraction=cfg.get("test_fraction", 0.1))
    return data, tr, te


def anomaly_from_ckpt(path: str, holdout: int, *, n_post: int = 4, seed: int = 0, device="cpu") -> float:
    from .data import anomaly_split, load_dataset
    from .train import load_model

    model, cfg, _ = load_model(path, device)
    if cfg["dataset"] != "digits":
        raise ValueError(f"the anomaly protocol runs on digits; {path!r} was trained on {cfg['dataset']}")
    if cfg.get("holdout") is not None and int(cfg["holdout"]) != holdout:
        raise ValueError(f"{path!r} was trained with --holdout {cfg['holdout']}, not {holdout}")
    if cfg.get("holdout") is None:
        print(f"[hebm.evaluate] warning: {path} was not trained with --holdout {holdout}: its training data contained "
              f"the held-out digit (train with --holdout {holdout}, or use anomaly --train)", file=sys.stderr)
    _, test, labels = anomaly_split(load_dataset("digits"), holdout)
    scores = -log_posterior_scores(model, cfg, test.x.to(device), n_post=n_post, seed=seed).cpu().numpy()
    return auprc(labels, scores)


def anomaly_train(prior: str, holdouts, seeds: int, *, steps, runs_dir, train_overrides: dict, n_post=4,
                  stage1_steps=None, device="cpu") -> dict:
    from .train import Trainer, default_config

    table = {}
    for h in holdouts:
        vals = []
        for s in range(seeds):
            run = os.path.join(runs_dir, f"{prior}-holdout{h}-seed{s}")
            ov = dict(train_overrides, holdout=h, seed=s, device=device, quiet=True)
            if steps is not None:
                ov["steps"] = steps
            if prior == "diffusion":
                base = dict(ov, out=run + "-stage1")
                if stage1_steps is not None:
                    base["steps"] = stage1_steps
                base.pop("T", None)
                Trainer(default_config("gaussian", **{k: v for k, v in base.items() if k != "langevin_step_size"})).train()
                ov["init"] = os.path.join(run + "-stage1", "ckpt.pt")
            tr = Trainer(default_config(prior, **dict(ov, out=run)))
            res = tr.train()
            if res["status"] != "ok":
                print(f"[hebm.evaluate] {run}: {res['message']}", file=sys.stderr)
                vals.append(float("nan"))
                continue
            v = anomaly_from_ckpt(os.path.join(run, "ckpt.pt"), h, n_post=n_post, seed=s, device=device)
            print(f"[hebm.evaluate] {prior} holdout {h} seed {s}: AUPRC {v:.3f}", flush=True)
            vals.append(v)
        table[h] = dict(values=vals, mean=float(np.nanmean(vals)), std=float(np.nanstd(vals)))
    return table


def ood_eval(path: str, ood_data: str, *, data_root=None, seed=0, n_post=1, device="cpu", n_ood=None) -> dict:
    from .data import load_dataset
    from .train import load_model

    model, cfg, _ = load_model(path, device)
    if cfg.get("posterior") == "langevin":
        raise ValueError("ood scoring uses the inference network q(z|x); this run was trained with --posterior langevin")
    _, _, test = _run_data(cfg)
    x_in = test.x
    if ood_data == "noise":
        g = torch.Generator().manual_seed(seed)
        x_out = torch.rand(len(x_in), x_in.shape[1], generator=g) * 2 - 1
    else:
        od = load_dataset(ood_data, data_root=data_root, train=False)
        x_out = od.x
        if od.dim != x_in.shape[1]:
            shape = model.cfg["image_shape"]
            if not shape or od.shape is None:
                raise ValueError(f"--ood-data {ood_data} has dimension {od.dim}, the model {x_in.shape[1]}")
            im = od.x.reshape(-1, *od.shape)
            if im.shape[1] != shape[0]:
                im = im.mean(1, keepdim=True).expand(-1, shape[0], -1, -1)
            x_out = torch.nn.functional.adaptive_avg_pool2d(im, shape[1:]).flatten(1)
    n = n_ood or len(x_in) * 2
    x_out = x_out[:n]
    x = torch.cat([x_in, x_out]).to(device)
    labels = np.concatenate([np.zeros(len(x_in)), np.ones(len(x_out))])
    Ls = llr_scores(model, x, seed=seed, n_post=n_post)
    rows = {0: dict(score="-L>0", **ood_metrics(labels, (-Ls[0]).numpy()))}
    for k in range(1, len(Ls)):
        rows[k] = dict(score=f"LLR>{k}", **ood_metrics(labels, (Ls[0] - Ls[k]).numpy()))
    return dict(n_in=len(x_in), n_out=len(x_out), ood_data=ood_data, rows=rows)


def fd_eval(path: str, *, n: int = 1000, seed: int = 0, fused: bool = False, device="cpu", inception_weights=None,
            langevin_steps=None) -> dict:
    from .train import load_model

    model, cfg, _ = load_model(path, device)
    _, tr, te = _run_data(cfg)
    if (tr.y < 0).any():
        raise ValueError("fd trains a classifier on labels; this data set has none")
    clf = train_classifier(tr.x, tr.y, seed=seed)
    with torch.no_grad():
        acc = float((clf(te.x).argmax(1) == te.y).float().mean())
    K = cfg["langevin_steps"] if langevin_steps is None else langevin_steps
    xs = []
    for j in range(0, n, 500):
        m = min(500, n - j)
        xs.append(model.sample(m, seed=seed * 7919 + 1, n_steps=K, step_size=cfg["langevin_step_size"], fused=fused,
                               chain_offset=j).cpu())
    xg = torch.cat(xs)
    with torch.no_grad():
        fg, ft, fr = clf.body(xg).numpy(), clf.body(te.x).numpy(), clf.body(tr.x).numpy()
    res = dict(fd=frechet_distance(fg, ft), fd_train_vs_heldout=frechet_distance(fr, ft), classifier_acc=acc,
               n_generated=n, n_heldout=len(te))
    if inception_weights:
        shape = model.cfg["image_shape"]
        res["fid"] = torchmetrics_fid(((te.x + 1) / 2).reshape(-1, *shape), ((xg.clamp(-1, 1) + 1) / 2).reshape(-1, *shape),
                                      inception_weights)
    return res


def latents_figure(path: str, fig_path: str, *, n: int = 500, seed: int = 0, fused: bool = False) -> dict:
    """The digits-0/1 experiment (PAPERS.md A, B §5.4): per layer, posterior means of the data
    coloured by label, prior samples before the EBM tilt (p_β, ancestral) and after it (ũ-space
    Langevin).  Needs 2-d layers (``--latent-dims 2,2``); saves one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .train import load_model

    model, cfg, _ = load_model(path)
    if any(d != 2 for d in model.dims):
        raise ValueError(f"the latent scatter needs 2-d layers (train with --latent-dims 2,2), got {model.dims}")
    data, tr, _ = _run_data(cfg)
    with torch.no_grad():
        mu = model.q_sample(data.x, mean=True)[2]
    z0 = model.sample_latents(n, seed=seed, n_steps=0, step_size=cfg["langevin_step_size"]) if model.kind != "diffusion" else None
    z1 = model.sample_latents(n, seed=seed, n_steps=cfg["langevin_steps"], step_size=cfg["langevin_step_size"], fused=fused)
    L = model.prior.L
    fig, axes = plt.subplots(L, 3, figsize=(9, 3 * L), squeeze=False)
    mus, a0, a1 = model.prior.split(mu), model.prior.split(z0) if z0 is not None else None, model.prior.split(z1)
    for i in range(L):
        ax = axes[L - 1 - i]
        for c in sorted(set(data.y.tolist())):
            m = data.y == c
            ax[0].scatter(mus[i][m, 0], mus[i][m, 1], s=3, label=f"digit {c}")
        ax[0].legend(fontsize=7)
        ax[0].set_title(f"z_{i + 1}: posterior means", fontsize=9)
        if a0 is not None:
            ax[1].scatter(a0[i][:, 0], a0[i][:, 1], s=3, c="gray")
        ax[1].set_title(f"z_{i + 1}: Gaussian prior p_β", fontsize=9)
        ax[2].scatter(a1[i][:, 0], a1[i][:, 1], s=3, c="C3")
        ax[2].set_title(f"z_{i + 1}: {model.kind} prior (after tilt)", fontsize=9)
        lim = float(torch.cat([mus[i], a1[i]]).abs().quantile(0.99)) * 1.2 + 0.1
        for a in ax:
            a.set_xlim(-lim, lim)
            a.set_ylim(-lim, lim)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=70)
    plt.close(fig)
    return dict(figure=fig_path)


# ---------------------------------------------------------------------------------- CLI
def build_parser():
    p = argparse.ArgumentParser(prog="python -m hebm.evaluate", description="Evaluate a hebm checkpoint the way the papers do.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", help="ckpt.pt written by hebm.train (not needed for anomaly --train)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    sub = p.add_subparsers(dest="task", required=True)
    a = sub.add_parser("anomaly", help="held-out-digit anomaly detection, AUPRC (PAPERS.md B §5.3)")
    a.add_argument("--holdout", required=True, help="held-out digit(s), e.g. 1 or 1,4,5,7,9")
    a.add_argument("--train", action="store_true", help="run the whole protocol: train per digit and seed, then score")
    a.add_argument("--prior", default="ebm", choices=("gaussian", "ebm", "diffusion"), help="with --train")
    a.add_argument("--seeds", type=int, default=3, help="with --train: seeds per digit")
    a.add_argument("--steps", type=int, default=None, help="with --train: training steps (diffusion: of stage 2)")
    a.add_argument("--stage1-steps", dest="stage1_steps", type=int, default=None, help="with --train --prior diffusion")
    a.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    a.add_argument("--langevin-steps", dest="langevin_steps", type=int, default=None)
    a.add_argument("--fused", action="store_true")
    a.add_argument("--runs-dir", dest="runs_dir", default=None, help="with --train (default runs/anomaly-<prior>-<time>)")
    a.add_argument("--n-post", dest="n_post", type=int, default=4, help="posterior samples per image")
    o = sub.add_parser("ood", help="LLR^{>k} out-of-distribution detection: AUROC, AUPRC, FPR80")
    o.add_argument("--ood-data", dest="ood_data", default="photos", help="photos | noise | mnist | fashion-mnist | svhn | cifar10")
    o.add_argument("--data-root", dest="data_root", default=None)
    o.add_argument("--n-post", dest="n_post", type=int, default=1)
    f = sub.add_parser("fd", help="Fréchet distance in a small classifier's features (+ FID with local Inception weights)")
    f.add_argument("--n", type=int, default=1000, help="generated images")
    f.add_argument("--fused", action="store_true")
    f.add_argument("--langevin-steps", dest="langevin_steps", type=int, default=None)
    f.add_argument("--inception-weights", dest="inception_weights", default=None, help="local Inception weights for torchmetrics FID")
    t = sub.add_parser("latents", help="digits-0/1 figure: posterior means and prior samples per 2-d layer")
    t.add_argument("--figure", default="latents.png")
    t.add_argument("--fused", action="store_true")
    return p


def main(argv=None) -> int:
    from .checkpoint import CheckpointError

    a = build_parser().parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    try:
        if a.task == "anomaly":
            holdouts = [int(v) for v in str(a.holdout).split(",") if v.strip()]
            if a.train:
                ov = {k: getattr(a, k) for k in ("batch_size", "langevin_steps", "fused") if getattr(a, k) not in (None, False)}
                runs = a.runs_dir or os.path.join("runs", f"anomaly-{a.prior}-{time.strftime('%Y%m%d-%H%M%S')}")
                table = anomaly_train(a.prior, holdouts, a.seeds, steps=a.steps, runs_dir=runs, train_overrides=ov,
                                      n_post=a.n_post, stage1_steps=a.stage1_steps, device=a.device)
                print(f"anomaly AUPRC, prior {a.prior}, {a.seeds} seed(s):")
                for h, r in table.items():
                    print(f"  held-out {h}: {r['mean']:.3f} ± {r['std']:.3f}   {['%.3f' % v for v in r['values']]}")
                result = dict(task="anomaly", prior=a.prior, seeds=a.seeds, table=table)
            else:
                if not a.ckpt:
                    raise SystemExit("anomaly needs --ckpt CKPT (a run trained with --holdout D) or --train")
                result = dict(task="anomaly", ckpt=a.ckpt, auprc={})
                for h in holdouts:
                    v = anomaly_from_ckpt(a.ckpt, h, n_post=a.n_post, seed=a.seed, device=a.device)
                    result["auprc"][h] = v
                    print(f"anomaly AUPRC, held-out {h}: {v:.3f}")
        elif a.task == "ood":
            if not a.ckpt:
                raise SystemExit("ood needs --ckpt CKPT")
            result = dict(task="ood", ckpt=a.ckpt, **ood_eval(a.ckpt, a.ood_data, data_root=a.data_root, seed=a.seed,
                                                               n_post=a.n_post, device=a.device))
            print(f"OOD: in = held-out split ({result['n_in']}), out = {a.ood_data} ({result['n_out']})")
            print(f"  {'k':>2} {'score':>7} {'AUROC':>6} {'AUPRC':>6} {'FPR80':>6}")
            for k, r in result["rows"].items():
                print(f"  {k:>2} {r['score']:>7} {r['auroc']:.3f}  {r['auprc']:.3f}  {r['fpr80']:.3f}")
        elif a.task == "latents":
            if not a.ckpt:
                raise SystemExit("latents needs --ckpt CKPT")
            result = latents_figure(a.ckpt, a.figure, seed=a.seed, fused=a.fused)
            print(f"wrote {a.figure}")
        else:
            if not a.ckpt:
                raise SystemExit("fd needs --ckpt CKPT")
            result = dict(task="fd", ckpt=a.ckpt, **fd_eval(a.ckpt, n=a.n, seed=a.seed, fused=a.fused, device=a.device,
                                                           inception_weights=a.inception_weights, langevin_steps=a.langevin_steps))
            print(f"FD (classifier features, {result['n_generated']} samples vs {result['n_heldout']} held-out): {result['fd']:.3f}"
                  f"   [train vs held-out floor {result['fd_train_vs_heldout']:.3f}; classifier acc {result['classifier_acc']:.3f}]")
            if "fid" in result:
                print(f"FID (torchmetrics Inception): {result['fid']:.3f}")
    except (CheckpointError, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"[hebm.evaluate] error: {e}", file=sys.stderr)
        return 2
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
