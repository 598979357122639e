"""How well chains mix, measured by a library rather than by hand: bulk and tail ESS, rank-normalised
split R-hat, the Monte Carlo standard error of the mean and the integrated autocorrelation time of a
per-chain trace, all from **arviz-stats** (its array interface, ``arviz_stats.base.array_stats``:
the estimators of Vehtari et al. 2021, "Rank-normalization, folding, and localization"); the
class-switch count of per-chain class labels; and the traces as an ArviZ DataTree (netCDF) for the
user's own tools (``arviz-base``, ``xarray``, ``h5netcdf`` and its ``h5py``).  ``pip install 'hebm[diagnostics]'``.

Traces are ``[draws, chains]`` (NumPy or torch), draw d of a chain being its state after
``d·every`` sampler steps; :func:`draws_traces` makes them from the draws one sampler call recorded
inside itself (``trace_every``).  What each number is:

* ``ess_bulk``: ESS of the rank-normalised split chains (how many independent draws the chains are
  worth for the centre of the distribution); ``ess_tail``: the smaller ESS of the 5 % and 95 %
  quantile indicators (worth for the tails);
* ``rhat``: rank-normalised split R-hat, max of bulk and folded (1 when the chains agree with each
  other and with their own halves; above 1.01 the chains have not mixed);
* ``mcse_mean``: Monte Carlo standard error of the mean;
* ``iat_steps``: integrated autocorrelation time in sampler steps, ``every · draws·chains /
  ess_bulk`` — arviz-stats estimates τ inside its ESS (Geyer's initial monotone sequence) but does
  not return it, so it is recovered from the bulk ESS (τ = N / ESS);
* ``ess_bulk_per_s``, ``ess_tail_per_s``: the ESS per second of the sampler time the draws took.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data import run_data_for
from ..errors import UserError
from .features import train_classifier

TAIL_PROB = 0.05  # tail ESS: min of the ESS of the 5 % and 95 % quantile indicators (ArviZ's default)
#: the R-hat below which chains count as mixed (Vehtari et al. 2021's recommendation; ArviZ's too)
RHAT_OK = 1.01


def _stats():
    try:
        from arviz_stats.base import array_stats
    except ModuleNotFoundError:
        raise UserError("--diagnostics needs arviz-stats: pip install 'hebm[diagnostics]'") from None
    return array_stats


def as_chains(trace) -> np.ndarray:
    """``[draws, chains]`` (NumPy or torch) as float64 ``[chains, draws]``, ArviZ's order."""
    if isinstance(trace, torch.Tensor):
        trace = trace.detach().cpu().double().numpy()
    a = np.asarray(trace, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"a trace is [draws, chains]; got shape {a.shape}")
    return a.T


def _num(x) -> float:
    x = float(x)
    return x if math.isfinite(x) else float("nan")


def diagnostics(trace, *, seconds: float = None, every: int = 1) -> dict:
    """The numbers of the module docstring for one ``[draws, chains]`` trace; ``seconds``: the
    sampler time the draws took (None: no per-second rates); ``every``: sampler steps per draw."""
    s = _stats()
    a = as_chains(trace)
    n = a.size
    ess_bulk = _num(s.ess(a, method="bulk"))
    ess_tail = _num(s.ess(a, method="tail", prob=TAIL_PROB))
    per_s = seconds is not None and seconds > 0
    return dict(draws=a.shape[1], chains=a.shape[0], every=every, mean=float(a.mean()), sd=float(a.std(ddof=1)),
                ess_bulk=ess_bulk, ess_tail=ess_tail, rhat=_num(s.rhat(a, method="rank")),
                mcse_mean=_num(s.mcse(a, method="mean")),
                iat_steps=every * n / ess_bulk if ess_bulk > 0 else float("nan"),
                ess_bulk_per_s=ess_bulk / seconds if per_s else None,
                ess_tail_per_s=ess_tail / seconds if per_s else None)


def draws_traces(info: dict, *, coordinates=None) -> tuple[dict, int]:
    """The draws a sampler call recorded inside itself (``trace_every``: ``info["draws"]``,
    ``info["draws_log_density"]``, ``info["draw_steps"]``) as the ``[draws, chains]`` traces of
    :func:`diagnostics` / :func:`datatree`: ``({"log_density": …, "u[c]": … for c in coordinates},
    every)`` — ``coordinates``: columns of the flat state ``[B, D]`` to trace too (None: none;
    ``"all"``: every one), ``every``: the sampler steps between draws."""
    if "draws" not in info:
        raise ValueError("info has no draws: pass trace_every=m (and return_info=True) to the sampler call")
    states = info["draws"]
    if isinstance(states, (list, tuple)):  # the per-layer form: back to the flat [n, B, D]
        states = torch.cat(list(states), dim=2)
    steps = info["draw_steps"]
    every = int(steps[1] - steps[0]) if steps.numel() > 1 else int(steps[0]) if steps.numel() else 1
    traces = {"log_density": info["draws_log_density"]}
    cols = range(states.shape[2]) if coordinates == "all" else (coordinates or ())
    for c in cols:
        traces[f"u[{int(c)}]"] = states[:, :, int(c)]
    return traces, every


def draws_diagnostics(info: dict, *, seconds: float = None, coordinates=None) -> dict:
    """:func:`diagnostics` of every trace of :func:`draws_traces` (name → numbers); ``seconds``: the
    sampler time of the call (for the per-second rates)."""
    traces, every = draws_traces(info, coordinates=coordinates)
    return {k: diagnostics(v, seconds=seconds, every=every) for k, v in traces.items()}


def class_switches(labels, *, every: int = 1) -> dict:
    """Of per-chain class labels ``[draws, chains]``: ``switches`` (per chain, how often the label
    of consecutive draws differs), ``switches_per_1000_steps`` (all chains' switches per 1,000
    sampler steps of one chain: a lower bound, a switch and back between draws is not seen) and
    ``classes_visited`` (per chain, the number of distinct labels)."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 2:
        raise ValueError(f"labels are [draws, chains]; got shape {y.shape}")
    sw = (y[1:] != y[:-1]).sum(0)
    steps = (y.shape[0] - 1) * every * y.shape[1]
    return dict(switches=sw.tolist(), switches_per_1000_steps=1000.0 * float(sw.sum()) / steps if steps else None,
                classes_visited=[int(len(np.unique(y[:, c]))) for c in range(y.shape[1])])


def total_variation(p, q) -> float:
    """Total variation distance ½·Σ|p − q| between two distributions over the same classes."""
    return 0.5 * float(np.abs(np.asarray(p, dtype=float) - np.asarray(q, dtype=float)).sum())


def indicator_ess(labels, n_classes: int) -> dict:
    """ESS and R-hat of each class indicator ``1[label = c]`` (``[draws, chains]`` labels).
    ``per_class``: ArviZ's ESS of the mean (method "mean", split chains) — what the chains are worth
    for estimating the class's frequency; ``rhat_per_class``: its rank-normalised split R-hat (inf
    where every chain holds one value but the chains differ: chains that never leave their class);
    both None for a class whose indicator never changes (never visited, or every draw of every
    chain), where they say nothing.  ``min``: the smallest ESS of the others, ``rhat_max`` the
    largest R-hat (None if there are none), ``rhat_ok``: ``rhat_max`` ≤ :data:`RHAT_OK` — below it
    an ESS is an estimate; above it the chains disagree, and an indicator's ESS counts little more
    than the chains (each stuck chain is worth about one draw)."""
    s = _stats()
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    ess, rhat = [], []
    for c in range(n_classes):
        ind = (y == c).astype(np.float64)
        if ind.min() == ind.max():
            ess.append(None)
            rhat.append(None)
            continue
        a = as_chains(ind)
        ess.append(_num(s.ess(a, method="mean")))
        if np.all(a.min(axis=1) == a.max(axis=1)):  # no chain moves: no within-chain variance
            rhat.append(math.inf)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = float(s.rhat(a, method="rank"))
            rhat.append(r if math.isfinite(r) else math.inf)
    seen = [e for e in ess if e is not None]
    rh = [r for r in rhat if r is not None]
    return dict(per_class=ess, min=min(seen) if seen else None, rhat_per_class=rhat,
                rhat_max=max(rh) if rh else None, rhat_ok=(max(rh) <= RHAT_OK) if rh else None)


def label_classifier(tcfg, *, seed: int = 0):
    """``(classify, n_classes, held-out accuracy)`` for the run's data set, or None when it has no
    labels: the pixel classifier of :mod:`hebm.evaluation.hierarchy`, trained the same way on the
    run's training split (``classify``: decodes ``[N, D_x]`` → labels ``[N]``)."""
    data = run_data_for(tcfg)
    tr, te = data.train, data.test
    if tr.y is None or (tr.y < 0).any():
        return None
    clf = train_classifier(tr.x, tr.y, seed=seed)
    with torch.no_grad():
        acc = float((clf(te.x).argmax(1) == te.y).float().mean()) if len(te.x) else float("nan")
    return (lambda x: clf(x.cpu()).argmax(1)), int(tr.y.max()) + 1, acc


def one_hot(labels, n_classes: int) -> np.ndarray:
    """``[draws, chains]`` labels as ``[draws, chains, n_classes]`` 0/1 indicators."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    return (y[..., None] == np.arange(n_classes)).astype(np.int8)


def datatree(traces: dict, *, warmup: int = 0, attrs: dict = None):
    """The ``[draws, chains(, …)]`` arrays of ``traces`` (name → array) as an ArviZ DataTree: the
    first ``warmup`` draws in group ``warmup_posterior``, the rest in ``posterior``; dims ``chain``,
    ``draw`` (and ``class`` for a third axis)."""
    try:
        from arviz_base import from_dict
    except ModuleNotFoundError:
        raise UserError("--trace-netcdf needs arviz-base: pip install 'hebm[diagnostics]'") from None

    def part(sl):
        d = {}
        for k, v in traces.items():
            v = np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v)[sl]
            d[k] = np.moveaxis(v, 0, 1)  # [chains, draws, …]
        return d

    dims = {k: ["class"] for k, v in traces.items() if np.ndim(v) == 3}
    groups = {"posterior": part(slice(warmup, None))}
    if warmup:
        groups["warmup_posterior"] = part(slice(0, warmup))
    return from_dict(groups, dims=dims, attrs={g: dict(attrs or {}) for g in groups}, save_warmup=bool(warmup))


def write_netcdf(path: str, traces: dict, *, warmup: int = 0, attrs: dict = None) -> None:
    """:func:`datatree` written to ``path`` (netCDF4 with groups, through h5netcdf and h5py)."""
    try:
        import h5netcdf  # noqa: F401  (xarray's engine for groups without the netCDF C library)
        import h5py  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("--trace-netcdf needs h5netcdf: pip install 'hebm[diagnostics]'") from None
    datatree(traces, warmup=warmup, attrs=attrs).to_netcdf(path, engine="h5netcdf")


__all__ = ["RHAT_OK", "TAIL_PROB", "as_chains", "class_switches", "datatree", "diagnostics", "draws_diagnostics", "draws_traces", "indicator_ess", "label_classifier", "one_hot", "total_variation",
           "write_netcdf"]
