"""Backend registry and choice for :func:`hebm.langevin_fused`.

Each fused backend is a module ``hebm.backends.<module>`` that defines

    NAME: str
    def unavailable() -> Optional[str]           # None if usable here, else why + the fix
    def unsupported(prior, args) -> Optional[str]  # None if it can run this network/arguments
    def run(prior, args, *, precision, trace) -> (u_out [B, D], log_density [K, B] or None)
    # optional: the whole reverse diffusion in one launch
    def run_reverse_diffusion(prior, schedule, u_T, *, n_steps, seed, chain_ids, noise,
                              noise_scale, precision, return_levels) -> result or None

``args`` is a checked :class:`hebm.sampling.LangevinArgs`; kernels read the prior through
:func:`hebm.backends.pack.pack_prior`.  A backend whose module does not exist yet reports
"not built".
"""
from __future__ import annotations

import importlib
import warnings
from typing import Optional

import torch

# name -> module holding it (missing modules mean "not built in this version")
_MODULES = {
    "cpu": "hebm.backends.cpu",
    "triton": "hebm.backends.triton_backend",
    "cuda": "hebm.backends.cuda",
    "graph": "hebm.backends.graph",
}

# "auto" tries these in order.  CUDA: the hand-written kernel first (exact fp32, one launch),
# then the generated Triton kernel, then graph replay of the reference step — the expected
# speed order from the design (DESIGN.md §3); no GPU has timed them yet (benchmarks/RESULTS.md).
AUTO_ORDER = {
    "cpu": ("cpu",),
    "cuda": ("cuda", "triton", "graph"),
}


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run here; the message says why and how to fix it."""


_warned: set = set()


def _module(name: str):
    try:
        return importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == _MODULES[name]:
            return None
        raise


def unavailable(name: str) -> Optional[str]:
    """None if backend ``name`` can run on this machine, else the reason (with the fix)."""
    if name == "ref":
        return None
    try:
        mod = _module(name)
    except ImportError as e:  # a dependency of the backend is missing or broken: report, so "auto" moves on
        return f"backend {name!r} failed to import ({type(e).__name__}: {e}); use backend='ref' or 'auto'"
    if mod is None:
        return f"backend {name!r} is not built in this version of hebm; use backend='ref' or 'auto'"
    return mod.unavailable()


def _unsupported(name: str, prior, args) -> Optional[str]:
    why = unavailable(name)
    if why is not None:
        return why
    if name == "ref":
        return None
    return _module(name).unsupported(prior, args)


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def choose(prior, args, backend: str) -> str:
    """The backend that will run: ``backend`` itself (or an error naming the fix), or for
    ``"auto"`` the first usable one of :data:`AUTO_ORDER` for the device, else ``"ref"``
    with a one-line warning."""
    if backend == "ref":
        return "ref"
    if backend != "auto":
        why = _unsupported(backend, prior, args)
        if why is not None:
            raise BackendUnavailable(why)
        return backend
    reasons = []
    for name in AUTO_ORDER.get(args.u.device.type, ()):
        why = _unsupported(name, prior, args)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    if reasons:
        _warn_once("hebm.langevin_fused: no fused backend fits, using the reference (" + "; ".join(reasons) + ")")
    return "ref"


def resolve_precision(precision: str, u: torch.Tensor) -> str:
    """``"auto"`` follows ``torch.get_float32_matmul_precision()``: "highest" → fp32, else tf32."""
    if u.dtype == torch.float64:
        return "fp64"
    if precision == "auto":
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return precision


def run(name: str, prior, args, *, precision: str, trace: bool):
    return _module(name).run(prior, args, precision=precision, trace=trace)


def run_reverse_diffusion(prior, schedule, u_T, *, backend: str, **kw):
    """Whole reverse diffusion in one fused call where the chosen backend offers it, else None."""
    if backend == "ref":
        return None
    from ..sampling import check_langevin_args

    probe = check_langevin_args(prior, u_T, n_steps=0, step_size=1.0, t=0, seed=0)
    name = choose(prior, probe, backend)
    if name == "ref":
        return None
    mod = _module(name)
    fn = getattr(mod, "run_reverse_diffusion", None)
    if fn is None:
        return None
    prec = resolve_precision(kw.pop("precision", "auto"), u_T)
    return fn(prior, schedule, u_T, precision=prec, **kw)


__all__ = ["BackendUnavailable", "choose", "resolve_precision", "run", "unavailable", "AUTO_ORDER"]
