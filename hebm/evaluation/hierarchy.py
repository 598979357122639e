"""What each latent layer carries, measured: the hierarchy a multi-layer generator is meant to have
(the abstract factors — a digit's identity — high, the detail — stroke, slant — low).

* **Class change when one layer is resampled** (the papers' hierarchical sampling, as a number):
  n draws ũ ~ N(0, I) are decoded, ``x = g(T_β(ũ))``; for layer i, ũ_i alone is replaced by a
  fresh draw (every other layer's ũ kept) and decoded again, so z_i and, through the
  conditionals, every layer below it change.  The rate at which an independent classifier's
  label changes is the layer's *class change*.  Beside it, ``independent``: the rate for two
  independent draws, ``1 − Σ_c p_c²`` with p_c the classifier's label frequencies on the first
  draws — the value a layer that decided the class alone would reach.  Done under the
  generator's own Gaussian prior p_β (ũ ~ N(0, I)): the measure is of the generator, whatever
  prior is later put on it.
* **Linear probe**: a logistic regression from a layer's posterior means ``E_q[z_i | x]``
  (every layer at its conditional mean) to a label, fitted on the training split and scored on
  the held-out split; ``chance`` is what a probe that ignores its input scores (the held-out
  frequency of the training split's most common label).
* **KL per layer** (nats): :func:`hebm.evaluation.metrics.latent_report`.

Everything takes a ``classify`` callable (images ``[N, D]`` → labels ``[N]``) so that the
measure and the classifier are separate (the tests use a stub with a known answer).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import run_data_for
from ..errors import UserError
from ..models import load_model
from ..prior.philox import initial_noise
from .features import train_classifier
from .metrics import latent_report


@torch.no_grad()
def resample_class_change(model, classify, *, n: int = 2000, seed: int = 0, batch: int = 500) -> dict:
    """``{"per_layer": [rate of z_1, …, rate of z_L], "independent": 1 − Σ p_c²}``
    (module docstring), over ``n`` draws."""
    p0 = next(model.parameters())
    prior = model.prior
    ids = torch.arange(n, dtype=torch.long, device=p0.device)
    u = initial_noise(seed, n, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    u_new = initial_noise(seed + 1, n, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)

    def labels_of(uu):
        return torch.cat([torch.as_tensor(classify(model.decode(prior.T(uu[j: j + batch])))).cpu()
                          for j in range(0, n, batch)])

    base = labels_of(u)
    rates, o = [], 0
    for d in model.dims:
        v = u.clone()
        v[:, o: o + d] = u_new[:, o: o + d]
        rates.append(float((labels_of(v) != base).double().mean()))
        o += d
    freq = torch.bincount(base.long()).double() / n
    return dict(per_layer=rates, independent=float(1.0 - (freq * freq).sum()))


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """``[N, D]``: every layer at its posterior conditional mean given the layers above (q at its mean)."""
    return torch.cat([model.posterior(x[j: j + batch], mean=True).z for j in range(0, x.shape[0], batch)])


def linear_probe(model, x_train, y_train, x_test, y_test, *, seed: int = 0) -> dict:
    """``{"per_layer": [held-out accuracy of z_1, …, z_L], "chance": …}``: a logistic regression
    per layer from the posterior means (standardised on the training split) to the labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ztr, zte = posterior_means(model, x_train).cpu().numpy(), posterior_means(model, x_test).cpu().numpy()
    ytr, yte = np.asarray(y_train), np.asarray(y_test)
    acc, o = [], 0
    for d in model.dims:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
        clf.fit(ztr[:, o: o + d], ytr)
        acc.append(float(clf.score(zte[:, o: o + d], yte)))
        o += d
    chance = float(np.mean(yte == np.bincount(ytr).argmax()))  # a probe that ignores its input
    return dict(per_layer=acc, chance=chance)


def is_hierarchical(change: list, *, top_min: float = 0.8, bottom_max: float = 0.25) -> bool:
    """The issue's bar for a hierarchy that is one: resampling the top layer changes the class at
    least ``top_min`` of the time, the bottom layer at most ``bottom_max``, monotone between."""
    mono = all(a <= b for a, b in zip(change, change[1:]))
    return bool(change[-1] >= top_min and change[0] <= bottom_max and mono)


def hierarchy_eval(path: str, *, n: int = 2000, seed: int = 0, device="cpu", model=None, tcfg=None) -> dict:
    """What each latent layer carries, measured on the run of ``path``: per layer (bottom-up) the class
    change when only its ũ is resampled (``class_change``, with ``class_change_independent``, the
    rate of two independent draws), the held-out accuracy of a linear probe of the label from its
    posterior means (``probe``, with ``probe_chance``), KL (nats) and active units; the pixel
    classifier that labels the samples is trained on the run's training split (its held-out
    accuracy: ``classifier_acc``).  ``hierarchical``: whether the bar of :func:`is_hierarchical`
    is met."""
    if model is None:
        model, _, tcfg, _ = load_model(path, device)
    data = run_data_for(tcfg)
    tr, te = data.train, data.test
    if (tr.y < 0).any():
        raise UserError("hierarchy measures the label each layer carries; this data set has no labels")
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


__all__ = ["hierarchy_eval", "is_hierarchical", "linear_probe", "posterior_means", "resample_class_change"]
