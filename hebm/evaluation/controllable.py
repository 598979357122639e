"""Controllable synthesis, scored (docs/controllable.md): conditional samples of an
attribute-fine-tuned checkpoint judged by independent classifiers and by the attributes'
formulas, and the figure of hierarchical control."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..config import FD_MIN_SAMPLES
from ..data import run_data_for
from ..errors import UserError
from ..models import load_model
from ..models.attributes import class_ink_medians, labels as attribute_labels, second_moment_slant
from ..models.attributes import thickness_given_medians
from ..models.controllable import combinations as all_combos, draw_values
from .features import train_classifier
from .figures import save_grid, to_images
from .metrics import frechet_distance, mean_std
from .quality import generate


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
    (:mod:`hebm.models.attributes`) on the samples instead of by classifiers (thickness against the
    training images' per-class median ink mass at the requested digit, or at the digit
    classifier's reading when the digit is not an attribute).  ``fd``: the Fréchet distance in
    the digit classifier's features of the conditional samples to the held-out split
    (``conditional``), of the same model's unconditional samples (``unconditional``), and per
    attribute value within the training images with that value (``per_value``).  Spreads are
    sample standard deviations over the seeds.  ``figure``: :func:`controllable_figure`."""
    model, mcfg, tcfg, _ = load_model(path, device)
    names = list(getattr(model, "attributes", []) or [])
    if not names:
        raise UserError(f"{path} has no attribute heads: fine-tune it first (hebm.train --init {path} --attributes "
                        f"digit,thickness,slant)")
    data = run_data_for(tcfg)
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
                if rows.sum() >= FD_MIN_SAMPLES and ref.sum() >= FD_MIN_SAMPLES:
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


__all__ = ["attribute_agreement", "chance_agreement", "controllable_eval", "controllable_figure"]
