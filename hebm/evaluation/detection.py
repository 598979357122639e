"""Held-out-digit anomaly detection and out-of-distribution detection on a trained checkpoint
(docs/papers.md B §5.2, §5.3), each with the score chosen on the run's validation slice
(:mod:`hebm.evaluation.scores`), never on the held-out or OOD data it reports on.

* ``anomaly`` (:func:`anomaly_from_ckpt`): normal = every digit but D, shuffled with
  RandomState(42), first 80 % train, test = the other 20 % + every D image; label 1 = anomaly.
  Score: minus the un-normalised log posterior ``L^{>0}(x) = log p(x|z_1) + log p(z̃)`` —
  ``log p(z̃)`` the model's own un-normalised prior (``log p_β``; ``+ F`` for the EBM;
  ``+ F(z̃, 0)/s_0`` for the diffusion, its level-0 marginal:
  :meth:`hebm.models.DiffusionModel.log_prior_unnorm`) — averaged over ``--n-post`` posterior
  samples (q; posterior Langevin for ``--posterior langevin`` runs); AUPRC =
  ``auc(recall, precision)``.  The protocol that trains a model per held-out digit and seed is
  :mod:`hebm.training.protocol`.
* ``ood`` (:func:`ood_eval`): in-distribution = the run's held-out split; OOD = ``--ood-data``
  (``photos``: grey patches of scikit-learn's sample photographs; ``noise``; or a torchvision
  set under ``--data-root``, resized).  Two forms of ``LLR^{>k} = L^{>0} − L^{>k}``:
  *hvae-oodd* (Havtorn et al.): z_{>k} ~ q, the k lowest layers at their conditional prior
  means, ``L^{>k} = log p(x|z) + log p(z_{>k}) + tilt − log q(z_{>k}|x)``; *poster* (paper 1):
  z_{>k} ~ q, z_{≤k} ~ the model's tilted prior conditional (ũ-space Langevin on the lower
  layers), ``L^{>k} = log p(x|z) + log p_β(z) + tilt``, no q terms.  AUROC, AUPRC, FPR80.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import load_dataset, run_data_for
from ..errors import UserError
from ..models import load_model
from .metrics import auprc, ood_metrics
from .scores import candidates, choose, evaluate_all, proxy_outliers, score_terms


def _choice(model, tcfg, data, score, cands, *, n_post, seed, device, what: str) -> dict:
    """The score to report (:mod:`hebm.evaluation.scores`): ``score`` as given, else the candidate chosen on
    the run's validation slice against proxy outliers made from it — read before, and without,
    the held-out split.  ``{"score", "chosen_on", "validation"}``."""
    if score is not None:
        if score not in cands:
            raise UserError(f"--score {score!r}: the scores for this model are {', '.join(map(repr, cands))}")
        return dict(score=score, chosen_on="given (--score)", validation=None)
    if data.val is None or len(data.val) < 10:
        raise UserError(f"{what}: the run has no validation slice to choose a score on (it was trained with "
                        f"--validation-fraction 0); pass --score NAME (e.g. --score 'L>0') or retrain with "
                        f"--validation-fraction 0.1")
    if data.val.shape is None:
        raise UserError(f"{what}: proxy outliers are made from images; {tcfg.dataset} has none: pass --score NAME")
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
        raise UserError(f"{path} was not trained with --holdout {holdout}: its training data contain the held-out "
                        f"digit (train with --holdout {holdout}, or use anomaly --train)")
    if int(tcfg.holdout) != holdout:
        raise UserError(f"{path!r} was trained with --holdout {tcfg.holdout}, not {holdout}")
    data = run_data_for(tcfg)
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
    x_in = run_data_for(tcfg).test.x
    g = torch.Generator().manual_seed(seed)
    if ood_data == "noise":
        return x_in, torch.rand(len(x_in), x_in.shape[1], generator=g) * 2 - 1
    if ood_data == "shuffled":
        return x_in, torch.stack([row[torch.randperm(row.numel(), generator=g)] for row in x_in])
    od = load_dataset(ood_data, data_root=data_root, train=False)
    x_out = od.x
    if od.dim != x_in.shape[1] or (mcfg.image_shape and od.shape and list(od.shape) != list(mcfg.image_shape)):
        if not mcfg.image_shape or od.shape is None:
            raise UserError(f"--ood-data {ood_data} has dimension {od.dim}, the model {x_in.shape[1]}")
        x_out = _resized(od.x, od.shape, mcfg.image_shape)
    return x_in, x_out


def ood_eval(path: str, ood_data: str, *, data_root=None, seed=0, n_post=1, device="cpu", n_ood=None, score=None) -> dict:
    """OOD detection, in = the run's held-out split, out = ``ood_data`` (:func:`ood_inputs`):
    AUROC, AUPRC and FPR80 of every score of the family (:mod:`hebm.evaluation.scores`: −L^{>0}, LLR^{>k}
    in both forms, the upper layers' prior and energy terms, the weighted scores) in ``rows``, and
    the one chosen on the run's validation slice against proxy outliers (``score``,
    ``chosen_on``; or ``score`` as given) — chosen without reading either OOD set."""
    model, mcfg, tcfg, _ = load_model(path, device)
    if tcfg.posterior == "langevin":
        raise UserError("ood scoring uses the inference network q(z|x); this run was trained with --posterior "
                        "langevin")
    data = run_data_for(tcfg)
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


__all__ = ["anomaly_from_ckpt", "ood_eval", "ood_inputs"]
