"""``python -m hebm.evaluate``: the papers' evaluations and the checks that make them meaningful.

    python -m hebm.evaluate --ckpt CKPT summary                        # active units, KL, prior hole, f⁺−f⁻, FD
    python -m hebm.evaluate --ckpt CKPT anomaly --holdout 1            # a run trained with --holdout 1
    python -m hebm.evaluate anomaly --train --prior ebm --dataset mnist5k --holdout 1,4,5,7,9 --seeds 3
    python -m hebm.evaluate --ckpt CKPT ood --ood-data photos          # LLR^{>k}, two forms
    python -m hebm.evaluate --ckpt CKPT fd --seeds 3 [--inception-weights PATH]
    python -m hebm.evaluate --ckpt CKPT latents --figure latents.png   # digits 0/1, 2-d layers

* ``anomaly`` (docs/papers.md B §5.3): normal = every digit but D, shuffled with RandomState(42),
  first 80 % train, test = the other 20 % + every D image; label 1 = anomaly.  Score: minus the
  un-normalised log posterior ``L^{>0}(x) = log p(x|z_1) + log p(z̃)`` — ``log p(z̃)`` the model's own
  un-normalised prior (``log p_β``; ``+ F`` for the EBM; ``+ F(z̃, 0)/s_0`` for the diffusion, its
  level-0 marginal: :meth:`hebm.models.DiffusionModel.log_prior_unnorm`) — averaged over
  ``--n-post`` posterior samples (q; posterior Langevin for ``--posterior langevin`` runs);
  AUPRC = ``auc(recall, precision)``.  ``--train`` runs the whole protocol (a model per held-out
  digit and seed) and prints mean ± std.
* ``ood`` (docs/papers.md A, B §5.2): in-distribution = the run's held-out split; OOD =
  ``--ood-data`` (``photos``: grey patches of scikit-learn's sample photographs; ``noise``; or a
  torchvision set under ``--data-root``, resized).  Two forms of ``LLR^{>k} = L^{>0} − L^{>k}``:
  *hvae-oodd* (Havtorn et al.): z_{>k} ~ q, the k lowest layers at their conditional prior means,
  ``L^{>k} = log p(x|z) + log p(z_{>k}) + tilt − log q(z_{>k}|x)``; *poster* (paper 1): z_{>k} ~ q,
  z_{≤k} ~ the model's tilted prior conditional (ũ-space Langevin on the lower layers),
  ``L^{>k} = log p(x|z) + log p_β(z) + tilt``, no q terms.  AUROC, AUPRC, FPR80.
* ``fd``: Fréchet distances on the held-out protocol (:func:`fd_eval`): the model's samples against
  the **held-out** split with matched sizes, in the features of two independent classifiers
  (an MLP and a CNN for images), beside the same generator's Gaussian prior p_β and its
  **Recon** (the decoded aggregate posterior of the held-out images: the floor of any prior on
  that generator), the fraction of the gap the model's prior closes (the papers' NVAE /
  NVAE-Recon comparison), and the distance to the training split as a memorisation check.
  With ``--inception-weights PATH`` (a local torch-fidelity Inception file; nothing is
  downloaded) also torchmetrics' FID against the held-out split.
* ``hierarchy``: what each latent layer carries (:mod:`hebm.hierarchy`).
* ``summary``: active units and KL per layer, the prior hole per layer, f⁺ − f⁻, the hierarchy
  measures, FD — one JSON.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

from . import cli
from .checkpoint import load_checkpoint
from .config import EVALUATE_SHARED, EVALUATE_TASKS, EvaluateConfig, ModelConfig, TrainConfig, add_arguments, kind_of
from .data import RunData, load_dataset, run_data_for
from .metrics import (auprc, frechet_distance, gap_closed, latent_report, mean_std, ood_metrics, prior_hole,
                      stationarity)
from .models import LOG2PI, MODELS, load_model
from .scores import candidates, choose, evaluate_all, proxy_outliers, score_terms
from .trainer import Trainer, resolve_settings


def _data(tcfg) -> RunData:
    return run_data_for(tcfg)


def _batches(x, batch=512):
    for j in range(0, x.shape[0], batch):
        yield j, x[j: j + batch]


# ---------------------------------------------------------------------------------- scores
def _choice(model, tcfg, data, score, cands, *, n_post, seed, device, what: str) -> dict:
    """The score to report (:mod:`hebm.scores`): ``score`` as given, else the candidate chosen on
    the run's validation slice against proxy outliers made from it — read before, and without,
    the held-out split.  ``{"score", "chosen_on", "validation"}``."""
    if score is not None:
        if score not in cands:
            raise cli.UserError(f"--score {score!r}: the scores for this model are {', '.join(map(repr, cands))}")
        return dict(score=score, chosen_on="given (--score)", validation=None)
    if data.val is None or len(data.val) < 10:
        raise cli.UserError(f"{what}: the run has no validation slice to choose a score on (it was trained with "
                            f"--validation-fraction 0); pass --score NAME (e.g. --score 'L>0') or retrain with "
                            f"--validation-fraction 0.1")
    if data.val.shape is None:
        raise cli.UserError(f"{what}: proxy outliers are made from images; {tcfg.dataset} has none: pass --score NAME")
    xv = data.val.x.to(device)
    normal = score_terms(model, tcfg, xv, n_post=n_post, seed=seed + 11)
    proxy = score_terms(model, tcfg, proxy_outliers(xv, data.val.shape), n_post=n_post, seed=seed + 13)
    name, values = choose(cands, normal, proxy)
    return dict(score=name, chosen_on=f"validation slice ({len(data.val)} normal training images the model never "
                                      f"trained on) vs proxy outliers made from it (turned a quarter / upside down)",
                validation=values)


def _term_spread(t) -> dict:
    """Each term's spread over the images (std, nats): what can move a score at all."""
    out = dict(log_px=float(t.log_px.std()), log_p_beta=float(t.log_pb.sum(1).std()),
               tilt=float(t.tilt.sum(1).std()))
    out.update({f"log_pb_{i + 1}": float(t.log_pb[:, i].std()) for i in range(t.L)})
    out.update({f"tilt_{i + 1}": float(t.tilt[:, i].std()) for i in range(t.L)})
    return out


def anomaly_from_ckpt(path: str, holdout: int, *, n_post: int = 4, seed: int = 0, device="cpu", score=None) -> dict:
    """Held-out-digit anomaly detection on the run's test split (anomaly = the held-out digit):
    ``auprc`` (and ``auroc``) of the score chosen on validation (or ``score``), ``score`` and ``chosen_on``;
    beside it ``auprc_L0`` (the papers' −L^{>0}), ``auprc_base`` (the same generator without the
    tilt: what the prior adds), ``validation`` (each candidate's value where it was chosen),
    ``test_all`` (each candidate's held-out AUPRC — reported, never used to choose) and
    ``spread`` (each term's std over the test images, nats)."""
    model, mcfg, tcfg, _ = load_model(path, device)
    if tcfg.holdout is None:
        raise cli.UserError(f"{path} was not trained with --holdout {holdout}: its training data contain the held-out "
                            f"digit (train with --holdout {holdout}, or use anomaly --train)")
    if int(tcfg.holdout) != holdout:
        raise cli.UserError(f"{path!r} was trained with --holdout {tcfg.holdout}, not {holdout}")
    data = _data(tcfg)
    cands = candidates(model.prior.L, tilted=model.tilted, llr=tcfg.posterior == "q")
    pick = _choice(model, tcfg, data, score, cands, n_post=n_post, seed=seed, device=device, what="anomaly")
    test = score_terms(model, tcfg, data.test.x.to(device), n_post=n_post, seed=seed)
    lab = data.test_labels
    test_all = evaluate_all(cands, test, lab)
    base = -(test.log_px + test.log_pb.sum(1)).numpy()
    auroc = ood_metrics(lab, cands[pick["score"]](test).numpy())["auroc"]
    return dict(auprc=test_all[pick["score"]], auroc=auroc, **pick, auprc_L0=test_all["L>0"],
                auprc_base=auprc(lab, base), test_all=test_all, spread=_term_spread(test), n_test=len(lab),
                anomaly_rate=float(np.mean(lab)))


def _protocol_run(settings: dict, run: str, log=print) -> dict:
    """Train one model of a protocol in ``run`` and return ``Trainer.train()``'s result — or pick
    up what is already there: a finished run with the same settings is read back, an interrupted
    one resumed from its checkpoint (so a killed protocol continues where it stopped).  A run
    there with other model, data or knob settings is an error: a protocol never replaces a run."""
    ckpt = os.path.join(run, "ckpt.pt")
    settings = dict(settings, out=run)
    settings.pop("overwrite", None)
    if not os.path.isfile(ckpt):
        if os.path.isdir(run) and os.listdir(run):
            settings["overwrite"] = True  # a directory without a checkpoint: nothing trained to keep
        return Trainer.from_settings(settings).train()
    mcfg, tcfg = resolve_settings(settings)
    ck = load_checkpoint(ckpt)
    same = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples vs lists)
    saved = same({**ck["model_config"], **ck["train_config"]})
    asked = same({**dataclasses.asdict(mcfg), **dataclasses.asdict(tcfg)})
    differ = [f"--{k.replace('_', '-')} {saved[k]!r} there, {v!r} asked" for k, v in asked.items()
              if k in saved and saved[k] != v and kind_of(k) != "run"]
    if differ:
        raise cli.UserError(f"--runs-dir: {run!r} holds a run trained with other settings ({'; '.join(differ)}); "
                            f"give the protocol a fresh --runs-dir")
    summary_path = os.path.join(run, "summary.json")
    if int(ck["step"]) >= tcfg.steps and os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        log(f"[hebm.evaluate] {run}: finished run reused (step {ck['step']})")
        return dict(status="ok", step=int(ck["step"]), message="reused", out=run, summary=summary)
    log(f"[hebm.evaluate] {run}: resuming from step {ck['step']}")
    return Trainer.from_checkpoint(ckpt, {}, announce=None).train()


def anomaly_train(prior: str, holdouts, seeds: int, *, runs_dir: str, settings: dict, n_post: int = 4,
                  stage1_settings=None, stage1_runs=None, two_stage: bool = False, device="cpu", log=print,
                  score=None) -> dict:
    """The whole protocol: per held-out digit and seed, train (a two-stage prior — the diffusion, or
    the ebm with ``two_stage`` — on a gaussian stage 1: the matching run of ``stage1_runs``, a
    gaussian protocol's runs directory, or one trained here), then score;
    ``{digit: {"values", "mean", "std", "details"}}`` (details: :func:`anomaly_from_ckpt`'s).
    Rerun with the same ``runs_dir`` after an interruption, it reuses the finished runs and
    resumes the interrupted one (``_protocol_run``)."""
    table = {}
    two_stage = MODELS[prior].is_two_stage(two_stage)
    for h in holdouts:
        vals, details = [], []
        for s in range(seeds):
            run = os.path.join(runs_dir, f"{prior}-holdout{h}-seed{s}")
            base = dict(settings, holdout=h, seed=s, device=device, quiet=True)
            if two_stage:
                reuse = stage1_runs and os.path.join(stage1_runs, f"gaussian-holdout{h}-seed{s}", "ckpt.pt")
                if reuse and os.path.isfile(reuse):
                    base["init"] = reuse
                else:
                    st1 = dict(base, **(stage1_settings or {}), prior="gaussian")
                    for k in ("lr_ebm", "langevin_steps", "langevin_step_size", "diffusion_step", "T", "energy_hidden",
                              "ebm_betas", "weight_decay_ebm", "neutral_init", "spectral_norm"):
                        st1.pop(k, None)
                    res1 = _protocol_run(st1, run + "-stage1", log)
                    if res1["status"] != "ok":
                        raise cli.UserError(f"{run}-stage1 (the gaussian stage 1) ended {res1['status']}: "
                                            f"{res1['message']}")
                    base["init"] = os.path.join(run + "-stage1", "ckpt.pt")
            res = _protocol_run(dict(base, prior=prior), run, log)
            if res["status"] == "interrupted":
                raise cli.UserError(f"{res['message']}; rerun the same command to continue the protocol")
            if res["status"] != "ok":
                log(f"[hebm.evaluate] {run}: {res['status']} {res['message']}")
                vals.append(float("nan"))
                details.append(None)
                continue
            d = anomaly_from_ckpt(os.path.join(run, "ckpt.pt"), h, n_post=n_post, seed=s, device=device, score=score)
            gap = res["summary"].get("eval_f_gap")
            gap = (f"f_gap {gap:.3f} nats" if gap is not None else "no energy")
            sp = d["spread"]
            log(f"[hebm.evaluate] {prior} holdout {h} seed {s}: AUPRC {d['auprc']:.3f} with {d['score']!r} (chosen: "
                f"{d['chosen_on'].split(' (')[0]}); -L>0 {d['auprc_L0']:.3f}, without the tilt {d['auprc_base']:.3f}; std "
                f"over test images: log p(x|z) {sp['log_px']:.2f}, log p_β {sp['log_p_beta']:.2f}, tilt {sp['tilt']:.3g} "
                f"(active units {res['summary'].get('active_units')}, {gap})")
            vals.append(d["auprc"])
            details.append(d)
        m, sd = mean_std(vals)
        table[h] = dict(values=vals, mean=m, std=sd, details=details)
    return table


def _resized(x: torch.Tensor, shape_from, shape_to) -> torch.Tensor:
    """Flat images of ``shape_from`` as ``shape_to`` (grey-averaged or repeated channels, bilinear)."""
    im = x.reshape(-1, *shape_from)
    if im.shape[1] != shape_to[0]:
        im = im.mean(1, keepdim=True).expand(-1, shape_to[0], -1, -1)
    if tuple(im.shape[2:]) != tuple(shape_to[1:]):
        im = torch.nn.functional.interpolate(im, size=tuple(shape_to[1:]), mode="bilinear", align_corners=False)
    return im.clamp(-1, 1).reshape(im.shape[0], -1)


def ood_inputs(mcfg, tcfg, ood_data: str, data_root=None, seed: int = 0):
    """``(x_in, x_out)``: the run's held-out split and the OOD set — ``photos`` (grey patches of
    scikit-learn's photographs), ``digits`` (scikit-learn's 8×8 digits; for a 28×28 model upscaled:
    smoother, simpler images the model may find *more* likely), ``shuffled`` (the held-out images
    with their pixels permuted: the same pixel statistics, no shape), ``noise`` (uniform), or a
    torchvision set under ``--data-root`` — resized to the model's images where they differ."""
    x_in = _data(tcfg).test.x
    g = torch.Generator().manual_seed(seed)
    if ood_data == "noise":
        return x_in, torch.rand(len(x_in), x_in.shape[1], generator=g) * 2 - 1
    if ood_data == "shuffled":
        return x_in, torch.stack([row[torch.randperm(row.numel(), generator=g)] for row in x_in])
    od = load_dataset(ood_data, data_root=data_root, train=False)
    x_out = od.x
    if od.dim != x_in.shape[1] or (mcfg.image_shape and od.shape and list(od.shape) != list(mcfg.image_shape)):
        if not mcfg.image_shape or od.shape is None:
            raise cli.UserError(f"--ood-data {ood_data} has dimension {od.dim}, the model {x_in.shape[1]}")
        x_out = _resized(od.x, od.shape, mcfg.image_shape)
    return x_in, x_out


def ood_eval(path: str, ood_data: str, *, data_root=None, seed=0, n_post=1, device="cpu", n_ood=None, score=None) -> dict:
    """OOD detection, in = the run's held-out split, out = ``ood_data`` (:func:`ood_inputs`):
    AUROC, AUPRC and FPR80 of every score of the family (:mod:`hebm.scores`: −L^{>0}, LLR^{>k}
    in both forms, the upper layers' prior and energy terms, the weighted scores) in ``rows``, and
    the one chosen on the run's validation slice against proxy outliers (``score``,
    ``chosen_on``; or ``score`` as given) — chosen without reading either OOD set."""
    model, mcfg, tcfg, _ = load_model(path, device)
    if tcfg.posterior == "langevin":
        raise cli.UserError("ood scoring uses the inference network q(z|x); this run was trained with --posterior "
                            "langevin")
    data = _data(tcfg)
    cands = candidates(model.prior.L, tilted=model.tilted)
    pick = _choice(model, tcfg, data, score, cands, n_post=n_post, seed=seed, device=device, what="ood") \
        if (score is not None or (data.val is not None and data.val.shape is not None)) else \
        dict(score="L>0", chosen_on="default (no validation slice)", validation=None)
    x_in, x_out = ood_inputs(mcfg, tcfg, ood_data, data_root, seed)
    x_out = x_out[: n_ood or len(x_in) * 2]
    t_in = score_terms(model, tcfg, x_in.to(device), n_post=n_post, seed=seed)
    t_out = score_terms(model, tcfg, x_out.to(device), n_post=n_post, seed=seed + 1)
    labels = np.concatenate([np.zeros(len(x_in)), np.ones(len(x_out))])
    rows = []
    for name, fn in cands.items():
        sc = torch.cat([fn(t_in), fn(t_out)]).numpy()
        if np.isfinite(sc).all() and np.std(sc) > 0:
            rows.append(dict(score=name, chosen=name == pick["score"], **ood_metrics(labels, sc)))
    spread = dict(log_px_in=float(t_in.log_px.mean()), log_px_out=float(t_out.log_px.mean()),
                  tilt_in=[float(v) for v in t_in.tilt.mean(0)], tilt_out=[float(v) for v in t_out.tilt.mean(0)])
    return dict(n_in=len(x_in), n_out=len(x_out), ood_data=ood_data, rows=rows, means=spread, **pick)


class _Classifier(torch.nn.Module):
    """The feature network of FD: an MLP on the flat pixels; ``body`` is its 32-d penultimate layer."""

    def __init__(self, d, n_classes, feat=32):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(d, 128), torch.nn.GELU(), torch.nn.Linear(128, feat),
                                        torch.nn.GELU())
        self.head = torch.nn.Linear(feat, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


class _ConvBody(torch.nn.Module):
    """A second, convolutional feature network for images (any size ≥ 4×4): two 3×3 convolutions
    with 2×2 pooling, global 2×2 average pooling, a Linear to 32 features."""

    def __init__(self, shape, feat=32):
        super().__init__()
        C = int(shape[0])
        self.shape = tuple(int(v) for v in shape)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(C, 16, 3, 1, 1), torch.nn.GELU(), torch.nn.MaxPool2d(2),
                                       torch.nn.Conv2d(16, 32, 3, 1, 1), torch.nn.GELU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                       torch.nn.Linear(128, feat), torch.nn.GELU())

    def forward(self, x):
        return self.net(x.reshape(-1, *self.shape))


class _ConvClassifier(torch.nn.Module):
    def __init__(self, shape, n_classes, feat=32):
        super().__init__()
        self.body = _ConvBody(shape, feat)
        self.head = torch.nn.Linear(feat, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


def train_classifier(x, y, *, steps: int = 1000, seed: int = 0, shape=None):
    """A classifier of ``y`` from flat images ``x`` (Adam, 1,000 steps of 128): the MLP, or with an
    image ``shape`` the convolutional one."""
    torch.manual_seed(seed)
    clf = _Classifier(x.shape[1], int(y.max()) + 1) if shape is None else _ConvClassifier(shape, int(y.max()) + 1)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(clf(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def feature_networks(tr, te, *, seed: int = 0) -> dict:
    """The two feature networks FD is measured in, each trained on the training split's labels:
    ``mlp`` (the MLP classifier's penultimate layer) and a second of another architecture —
    ``cnn`` for images, else an MLP of another seed (``mlp2``) — so a ranking can be confirmed in
    features that share no weights.  ``{name: (body, held-out accuracy)}``."""
    nets = {"mlp": train_classifier(tr.x, tr.y, seed=seed)}
    if tr.shape is not None:
        nets["cnn"] = train_classifier(tr.x, tr.y, seed=seed + 1, shape=tr.shape)
    else:
        nets["mlp2"] = train_classifier(tr.x, tr.y, seed=seed + 101)
    out = {}
    with torch.no_grad():
        for k, clf in nets.items():
            out[k] = (clf.body, float((clf(te.x).argmax(1) == te.y).float().mean()))
    return out


def fid_torchmetrics(real01: torch.Tensor, fake01: torch.Tensor, weights: str) -> float:
    """FID with torchmetrics' Inception and user-supplied local weights (optional dependency)."""
    if not os.path.isfile(weights):
        raise cli.UserError(f"--inception-weights {weights!r} does not exist")
    try:  # torch-fidelity itself loads the file with weights_only=False: check it holds only tensors first
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means we will not hand the file on
        raise cli.UserError(f"--inception-weights {weights!r} is refused by torch.load(weights_only=True) "
                            f"({type(e).__name__}); it must be a plain state dict of tensors") from None
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise cli.UserError("FID needs torchmetrics and torch-fidelity (pip install torchmetrics torch-fidelity); the "
                            "classifier FD needs nothing") from None
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights)

    def prep(im):
        im = torch.nn.functional.interpolate(im, size=(299, 299), mode="bilinear")
        im = im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im
        return (im.clamp(0, 1) * 255).to(torch.uint8)

    for j in range(0, len(real01), 64):
        fid.update(prep(real01[j: j + 64]), real=True)
    for j in range(0, len(fake01), 64):
        fid.update(prep(fake01[j: j + 64]), real=False)
    return float(fid.compute())


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
    model, mcfg, tcfg, _ = load_model(path, device)
    data = _data(tcfg)
    tr, te = data.train, data.test
    if (tr.y < 0).any():
        raise cli.UserError("fd trains a classifier on labels; this data set has none")
    half = len(te) // 2
    if half < 10:
        raise cli.UserError(f"fd needs at least 20 held-out images (two halves of 10); the run holds out {len(te)}")
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


def hierarchy_eval(path: str, *, n: int = 2000, seed: int = 0, device="cpu", model=None, tcfg=None) -> dict:
    """What each latent layer carries (:mod:`hebm.hierarchy`): per layer (bottom-up) the class
    change when only its ũ is resampled (``class_change``, with ``class_change_independent``, the
    rate of two independent draws), the held-out accuracy of a linear probe of the label from its
    posterior means (``probe``, with ``probe_chance``), KL (nats) and active units; the pixel
    classifier that labels the samples is trained on the run's training split (its held-out
    accuracy: ``classifier_acc``).  ``hierarchical``: whether the bar of :func:`hebm.hierarchy.is_hierarchical`
    is met."""
    from .hierarchy import is_hierarchical, linear_probe, resample_class_change

    if model is None:
        model, _, tcfg, _ = load_model(path, device)
    data = _data(tcfg)
    tr, te = data.train, data.test
    if (tr.y < 0).any():
        raise cli.UserError("hierarchy measures the label each layer carries; this data set has no labels")
    clf = train_classifier(tr.x, tr.y, seed=seed)
    with torch.no_grad():
        acc = float((clf(te.x).argmax(1) == te.y).float().mean())
    change = resample_class_change(model, lambda x: clf(x.cpu()).argmax(1), n=n, seed=seed)
    probe = linear_probe(model, tr.x.to(device), tr.y.numpy(), te.x.to(device), te.y.numpy(), seed=seed)
    rep = latent_report(model, tr.x[:2000].to(device), samples=16, seed=seed)
    return dict(class_change=change["per_layer"], class_change_independent=change["independent"],
                probe=probe["per_layer"], probe_chance=probe["chance"], kl_per_layer=rep["kl_per_layer"],
                active_units=rep["active_units"], classifier_acc=acc, n=n,
                hierarchical=is_hierarchical(change["per_layer"]))


def summary_eval(path: str, *, n: int = 2000, seed: int = 0, fused: bool = False, device="cpu", fd_seeds: int = 3) -> dict:
    """Everything that makes a model's numbers meaningful, for one checkpoint."""
    model, mcfg, tcfg, ck = load_model(path, device)
    data = _data(tcfg)
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


def attribute_agreement(pred: torch.Tensor, y: torch.Tensor) -> tuple[list, float]:
    """``(per attribute, joint)``: the fraction of rows whose predicted values ``pred`` ``[N, A]``
    equal the requested ``y`` ``[N, A]``, per column and on every column at once."""
    right = pred.long() == y.long()
    return [float(right[:, a].double().mean()) for a in range(y.shape[1])], float(right.all(1).double().mean())


def chance_agreement(y: torch.Tensor) -> tuple[list, float]:
    """``(per attribute, joint)``: Σ_v p_v² of the requested values' frequencies — the agreement of
    a sample whose values are drawn independently of the request from the same law."""
    def sq(col_codes):
        _, counts = torch.unique(col_codes, return_counts=True)
        p = counts.double() / counts.sum()
        return float((p * p).sum())

    codes = torch.zeros(len(y), dtype=torch.long)
    for a in range(y.shape[1]):
        codes = codes * (int(y[:, a].max()) + 1) + y[:, a].long()
    return [sq(y[:, a]) for a in range(y.shape[1])], sq(codes)


def controllable_eval(path: str, *, n: int = 1000, seeds: int = 3, seed: int = 0, fused: bool = False, device="cpu",
                      figure: str = None) -> dict:
    """Controllable synthesis, scored (docs/controllable.md): an independent classifier per
    attribute, trained on the real training images (its held-out accuracy reported), scores
    ``n`` conditional samples per sampling seed whose attribute values are those of n random
    training images (so the values' joint law is the data's) — ``accuracy`` per attribute and
    ``joint_accuracy`` (every attribute right).  Beside them: ``chance`` (Σ_v p_v² of the
    requested values, per attribute and joint), ``ignore_y`` (the same model's *unconditional*
    samples scored against the same requested values: what a sampler that ignores the request
    scores), and ``formula`` — thickness and slant computed by their definitions
    (:mod:`hebm.attributes`) on the samples instead of by classifiers (thickness against the
    training images' per-class median ink mass at the requested digit, or at the digit
    classifier's reading when the digit is not an attribute).  ``fd``: the Fréchet distance in
    the digit classifier's features of the conditional samples to the held-out split
    (``conditional``), of the same model's unconditional samples (``unconditional``), and per
    attribute value within the training images with that value (``per_value``).  Spreads are
    sample standard deviations over the seeds.  ``figure``: :func:`controllable_figure`."""
    from .attributes import class_ink_medians, labels as attribute_labels, second_moment_slant, thickness_given_medians
    from .controllable import draw_values

    model, mcfg, tcfg, _ = load_model(path, device)
    names = list(getattr(model, "attributes", []) or [])
    if not names:
        raise cli.UserError(f"{path} has no attribute heads: fine-tune it first (hebm.train --init {path} --attributes "
                            f"digit,thickness,slant)")
    data = _data(tcfg)
    tr, te = data.train, data.test
    y_tr, y_te = attribute_labels(tr, names), attribute_labels(te, names)
    clfs, clf_acc = {}, {}
    for a, name in enumerate(names):
        clfs[name] = train_classifier(tr.x, y_tr[:, a], seed=seed + a)
        with torch.no_grad():
            clf_acc[name] = float((clfs[name](te.x).argmax(1) == y_te[:, a]).float().mean())
    digit_clf = clfs["digit"] if "digit" in clfs else train_classifier(tr.x, tr.y, seed=seed + 17)
    medians = class_ink_medians(tr.x, tr.y)
    feat = train_classifier(tr.x, tr.y, seed=seed).body  # the FD features of ``fd``
    with torch.no_grad():
        f_train, f_test = feat(tr.x).numpy(), feat(te.x).numpy()

    def formula_values(x, y):
        digit = y[:, names.index("digit")] if "digit" in names else digit_clf(x).argmax(1)
        out = {}
        if "thickness" in names:
            out["thickness"] = thickness_given_medians(x, digit, medians)
        if "slant" in names:
            out["slant"] = (second_moment_slant(x, tr.shape) > 0).long()
        return out

    K, delta = tcfg.langevin_steps, tcfg.langevin_step_size
    acc, ign = {k: [] for k in names}, {k: [] for k in names}
    form = {k: [] for k in ("thickness", "slant") if k in names}
    joint, joint_ign, chance_runs, fd_c, fd_u = [], [], [], [], []
    per_value = {k: {} for k in names}
    for s in range(seeds):
        s_seed = seed * 7919 + 1 + s
        y = draw_values(y_tr, names, {}, n, s_seed)
        z = torch.cat([model.sample_latents_given(y[j: j + 500], seed=s_seed, n_steps=K, step_size=delta, fused=fused,
                                                  chain_offset=j, check="raise") for j in range(0, n, 500)])
        with torch.no_grad():
            x = torch.cat([model.decode(z[j: j + 500]) for j in range(0, n, 500)]).cpu()
            xu = generate(model, tcfg, n, s_seed, fused)
            pred = torch.stack([clfs[k](x).argmax(1) for k in names], 1)
            pred_u = torch.stack([clfs[k](xu).argmax(1) for k in names], 1)
            f_x = feat(x).numpy()
            fd_c.append(frechet_distance(f_x, f_test))
            fd_u.append(frechet_distance(feat(xu).numpy(), f_test))
        per, j_acc = attribute_agreement(pred, y)
        per_u, j_u = attribute_agreement(pred_u, y)
        for a, k in enumerate(names):
            acc[k].append(per[a])
            ign[k].append(per_u[a])
            for v in range(int(y_tr[:, a].max()) + 1):
                rows, ref = (y[:, a] == v).numpy(), (y_tr[:, a] == v).numpy()
                if rows.sum() >= 10 and ref.sum() >= 10:
                    per_value[k].setdefault(v, []).append(frechet_distance(f_x[rows], f_train[ref]))
        for k, vals in formula_values(x, y).items():
            form[k].append(float((vals == y[:, names.index(k)]).double().mean()))
        joint.append(j_acc)
        joint_ign.append(j_u)
        chance_runs.append(chance_agreement(y))
    ms = lambda v: dict(zip(("mean", "std"), mean_std(v)))  # noqa: E731
    res = dict(attributes=names, attribute_layers=[int(i) + 1 for i in model.heads.layers], n=n, seeds=seeds,
               accuracy={k: mean_std(v)[0] for k, v in acc.items()},
               accuracy_std={k: mean_std(v)[1] for k, v in acc.items()},
               joint_accuracy=mean_std(joint)[0], joint_accuracy_std=mean_std(joint)[1],
               ignore_y={**{k: ms(v) for k, v in ign.items()}, "joint": ms(joint_ign)},
               chance={**{k: float(np.mean([c[0][a] for c in chance_runs])) for a, k in enumerate(names)},
                       "joint": float(np.mean([c[1] for c in chance_runs]))},
               formula={k: ms(v) for k, v in form.items()},
               classifier_accuracy=clf_acc,
               fd=dict(against="held-out split", conditional=mean_std(fd_c)[0], conditional_std=mean_std(fd_c)[1],
                       unconditional=mean_std(fd_u)[0], unconditional_std=mean_std(fd_u)[1],
                       per_value={k: {str(v): mean_std(f)[0] for v, f in d.items()} for k, d in per_value.items()}))
    if figure:
        res["figure"] = controllable_figure(model, tcfg, y_tr, figure, seed=seed, fused=fused)
    return res


def controllable_figure(model, tcfg, y_tr, fig_path: str, *, seed: int = 0, fused: bool = False, per_cell: int = 2) -> str:
    """Hierarchical control: one row per value of the first attribute (e.g. the digit, on its
    layer), held fixed while the columns run through every combination of the others (e.g.
    thickness and slant on z₁), ``per_cell`` samples each; the column label says which values
    and on which layer.  One grid PNG and a caption in ``<fig>.txt``."""
    from .controllable import combinations as all_combos
    from .figures import save_grid, to_images

    names, nv = model.heads.names, model.heads.n_values
    rest = all_combos(nv[1:]) if len(nv) > 1 else torch.zeros(1, 0, dtype=torch.long)
    rows = []
    for v in range(nv[0]):
        y = torch.cat([torch.full((len(rest), 1), v, dtype=torch.long), rest], 1).repeat_interleave(per_cell, 0)
        # chain ids shared across rows: a column keeps its noise, only the fixed attribute changes
        z = model.sample_latents_given(y, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size,
                                       fused=fused, chain_offset=0)
        with torch.no_grad():
            rows.append(model.decode(z))
    x = torch.cat(rows)
    save_grid(to_images(x, model.cfg.image_shape), fig_path, nrow=len(rest) * per_cell)
    layer = {k: int(i) + 1 for k, i in zip(names, model.heads.layers)}
    cols = [", ".join(f"{k}={int(c)}" for k, c in zip(names[1:], combo)) for combo in rest]
    caption = (f"rows: {names[0]} = 0 … {nv[0] - 1} (on z_{layer[names[0]]}); columns ({per_cell} samples each): "
               + "; ".join(cols) + " (" + ", ".join(f"{k} on z_{layer[k]}" for k in names[1:]) + ")")
    with open(os.path.splitext(fig_path)[0] + ".txt", "w") as f:
        f.write(caption + "\n")
    return fig_path


def latents_figure(path: str, fig_path: str, *, n: int = 500, seed: int = 0, fused: bool = False) -> dict:
    """The digits-0/1 experiment (docs/papers.md A, B §5.4): per layer, posterior means of the data
    coloured by label, prior samples before the EBM tilt (p_β, ancestral) and after it (ũ-space
    Langevin).  Needs 2-d layers (``--latent-dims 2,2``); saves one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, mcfg, tcfg, _ = load_model(path)
    if any(d != 2 for d in model.dims):
        raise cli.UserError(f"the latent scatter needs 2-d layers (train with --latent-dims 2,2), got {model.dims}")
    data = load_dataset(tcfg.dataset, data_root=tcfg.data_root)
    if tcfg.classes:
        data = data.select_classes(tcfg.classes)
    with torch.no_grad():
        mu = model.posterior(data.x, mean=True).z
    z0 = model.sample_latents(n, seed=seed, n_steps=0)
    z1 = model.sample_latents(n, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size, fused=fused)
    L = model.prior.L
    fig, axes = plt.subplots(L, 3, figsize=(9, 3 * L), squeeze=False)
    mus, a0, a1 = model.prior.split(mu), model.prior.split(z0), model.prior.split(z1)
    for i in range(L):
        ax = axes[L - 1 - i]
        for c in sorted(set(data.y.tolist())):
            m = data.y == c
            ax[0].scatter(mus[i][m, 0], mus[i][m, 1], s=3, label=f"digit {c}")
        ax[0].legend(fontsize=7)
        ax[0].set_title(f"z_{i + 1}: posterior means", fontsize=9)
        ax[1].scatter(a0[i][:, 0], a0[i][:, 1], s=3, c="gray")
        ax[1].set_title(f"z_{i + 1}: Gaussian prior p_β", fontsize=9)
        ax[2].scatter(a1[i][:, 0], a1[i][:, 1], s=3, c="C3")
        ax[2].set_title(f"z_{i + 1}: {model.kind} prior", fontsize=9)
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
    """Generated from :mod:`hebm.config`: :class:`~hebm.config.EvaluateConfig` and one subcommand
    per :data:`~hebm.config.EVALUATE_TASKS` entry, the flags shared with training taken from
    training's fields (the same types and ranges)."""
    p = cli.Parser(prog="python -m hebm.evaluate", description="Evaluate a hebm checkpoint the way the papers do.")
    add_arguments(p, (EvaluateConfig,), defaults={})
    add_arguments(p, (TrainConfig,), only=list(EVALUATE_SHARED), defaults=EVALUATE_SHARED)
    sub = p.add_subparsers(dest="task", required=True, parser_class=cli.Parser)
    for name, (help_, task, shared) in EVALUATE_TASKS.items():
        t = sub.add_parser(name, help=help_, description=help_)
        add_arguments(t, (task,), defaults={})
        add_arguments(t, (ModelConfig, TrainConfig), only=list(shared), defaults=shared)
    return p


def _extra_settings(items) -> dict:
    out = {}
    known = {f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)}
    for it in items:
        key, _, val = it.partition("=")
        if key not in known:
            raise cli.UserError(f"--set {it!r}: unknown setting {key!r}")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, status 2) or --help (0)
        return int(e.code or 0)

    def need_ckpt():
        if not a.ckpt:
            raise cli.UserError(f"{a.task} needs --ckpt CKPT")

    def go() -> int:
        if a.device == "cpu":
            torch.set_num_threads(1)
        if a.task == "anomaly":
            if a.train:
                settings = dict(dataset=a.dataset, fused=a.fused, **_extra_settings(a.set))
                if a.steps is not None:
                    settings["steps"] = a.steps
                runs = a.runs_dir or os.path.join("runs", f"anomaly-{a.prior}-{time.strftime('%Y%m%d-%H%M%S')}")
                st1 = {"steps": a.stage1_steps} if a.stage1_steps else None
                if a.two_stage and not MODELS[a.prior].two_stage_optional:
                    raise cli.UserError(f"--two-stage applies to a prior that can be trained either way (--prior ebm); "
                                        f"{a.prior} is " + ("always two-stage" if MODELS[a.prior].two_stage_only
                                                            else "trained from scratch"))
                table = anomaly_train(a.prior, a.holdout, a.seeds, runs_dir=runs, settings=settings, n_post=a.n_post,
                                      stage1_settings=st1, stage1_runs=a.stage1_runs, two_stage=a.two_stage,
                                      device=a.device, score=a.score)
                print(f"anomaly AUPRC, prior {a.prior}, {a.dataset}, {a.seeds} seed(s), each run's score "
                      f"{'as given' if a.score else 'chosen on its validation slice'}:")
                for h, r in table.items():
                    chosen = [d["score"] for d in r["details"] if d]
                    print(f"  held-out {h}: {r['mean']:.3f} ± {r['std']:.3f}   {['%.3f' % v for v in r['values']]}  "
                          f"scores {chosen}")
                result = dict(task="anomaly", prior=a.prior, two_stage=MODELS[a.prior].is_two_stage(a.two_stage), dataset=a.dataset,
                              seeds=a.seeds, table=table)
            else:
                need_ckpt()
                result = dict(task="anomaly", ckpt=a.ckpt, auprc={})
                for h in a.holdout:
                    d = anomaly_from_ckpt(a.ckpt, h, n_post=a.n_post, seed=a.seed, device=a.device, score=a.score)
                    result["auprc"][h] = d
                    print(f"anomaly AUPRC, held-out {h}: {d['auprc']:.3f} with the score {d['score']!r}, "
                          f"{d['chosen_on']}; the papers' -L>0: {d['auprc_L0']:.3f}")
        elif a.task == "ood":
            need_ckpt()
            result = dict(task="ood", ckpt=a.ckpt, **ood_eval(a.ckpt, a.ood_data, data_root=a.data_root, seed=a.seed,
                                                               n_post=a.n_post, device=a.device, score=a.score))
            print(f"OOD: in = held-out split ({result['n_in']}), out = {a.ood_data} ({result['n_out']}); the score "
                  f"{result['score']!r} was {result['chosen_on']}")
            print(f"  {'score':>18} {'AUROC':>6} {'AUPRC':>6} {'FPR80':>6}")
            for r in result["rows"]:
                print(f"  {r['score']:>18} {r['auroc']:.3f}  {r['auprc']:.3f}  {r['fpr80']:.3f}{'  <- chosen' if r['chosen'] else ''}")
        elif a.task == "controllable":
            need_ckpt()
            result = dict(task="controllable", ckpt=a.ckpt, **controllable_eval(
                a.ckpt, n=a.n, seeds=a.seeds, seed=a.seed, fused=a.fused, device=a.device, figure=a.figure))
            acc = ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
            ign = ", ".join(f"{k} {v['mean']:.3f}" for k, v in result["ignore_y"].items())
            ch = ", ".join(f"{k} {v:.3f}" for k, v in result["chance"].items())
            form = ", ".join(f"{k} {v['mean']:.3f}" for k, v in result["formula"].items())
            print(f"controllable ({result['n']} samples x {result['seeds']} seeds, attributes on layers "
                  f"{result['attribute_layers']}): accuracy {acc}; joint {result['joint_accuracy']:.3f}")
            print(f"  ignore-y baseline {ign}; chance {ch}; by formula {form or '-'}")
            print(f"  FD vs held-out: conditional {result['fd']['conditional']:.2f} vs unconditional "
                  f"{result['fd']['unconditional']:.2f}")
        elif a.task == "latents":
            need_ckpt()
            result = latents_figure(a.ckpt, a.figure, seed=a.seed, fused=a.fused)
            print(f"wrote {a.figure}")
        elif a.task == "hierarchy":
            need_ckpt()
            result = dict(task="hierarchy", ckpt=a.ckpt, **hierarchy_eval(a.ckpt, n=a.n, seed=a.seed, device=a.device))
            print("per layer, bottom-up (z_1 … z_L):")
            print(f"  class change when only its u is resampled: {['%.3f' % v for v in result['class_change']]} "
                  f"(independent draws: {result['class_change_independent']:.3f})")
            print(f"  linear probe of the label (held-out): {['%.3f' % v for v in result['probe']]} "
                  f"(chance {result['probe_chance']:.3f})")
            print(f"  KL (nats): {['%.2f' % v for v in result['kl_per_layer']]}; hierarchical: {result['hierarchical']}")
        elif a.task == "summary":
            need_ckpt()
            result = dict(task="summary", ckpt=a.ckpt, **summary_eval(a.ckpt, n=a.n, seed=a.seed, fused=a.fused,
                                                                     device=a.device))
            print(json.dumps(result, indent=1, default=float))
        else:
            need_ckpt()
            result = dict(task="fd", ckpt=a.ckpt, **fd_eval(a.ckpt, n=a.n, seeds=a.seeds, seed=a.seed, fused=a.fused,
                                                           device=a.device, inception_weights=a.inception_weights,
                                                           langevin_steps=a.langevin_steps))
            for b in (result, result["features2"]):
                print(f"FD vs held-out images ({b['features']} features, {result['n_generated']} samples x "
                      f"{result['seeds']} seeds): {b['fd']:.3f} ± {b['fd_std']:.3f}; same generator: p_β "
                      f"{b['fd_gaussian']:.3f}, Recon (floor) {b['fd_recon']:.3f}; gap closed {100 * b['gap_closed']:.1f} %; "
                      f"real held-out images {b['fd_data']:.3f}; vs train {b['fd_train']:.3f} (held-out vs train "
                      f"{b['fd_heldout_vs_train']:.3f}{'; MEMORISATION WARNING' if b['memorisation_warning'] else ''}); "
                      f"classifier acc {b['classifier_acc']:.3f}")
            if "fid" in result:
                print(f"FID (torchmetrics Inception, local weights): {result['fid']:.3f} ± {result['fid_std']:.3f}")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(result, fh, indent=2, default=str)
        return 0

    return cli.run("hebm.evaluate", go)


if __name__ == "__main__":
    sys.exit(main())
