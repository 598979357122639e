"""Backend registry and choice for :func:`hebm.langevin_fused` / :func:`hebm.reverse_diffusion`.

Each fused backend is a module ``hebm.backends.<module>`` that defines

    NAME: str
    FEATURES: tuple                                 # optional: "sigma_clamp", "metropolis" (that math), "proves_prior" (below)
    def unavailable() -> Optional[str]            # None if usable on this machine, else why + the fix
    def unsupported(prior, args, precision) -> Optional[str]  # None if it can run this network, these tensors
                                                                # and this resolved precision
    def run(prior, args, *, precision, trace) -> (u_out [B, D], log_density [K, B] or None, precision ran,
                                                  accept stats [2, B] with args.metropolis, else None)
    # optional, the whole reverse diffusion in one launch:
    def run_reverse(prior, schedule, rargs, *, precision, return_levels) -> ([ũ_T, …, ũ_0] or [ũ_T, ũ_0], precision ran)

Every backend, the reference loop included (``"ref"``), is such a module, and this registry is
the only place that names them: the dispatch (:mod:`hebm.dispatch`) asks it which one runs and
calls :func:`run`.  The argument rules are applied once, before any backend runs
(:mod:`hebm.args`); a backend with ``"proves_prior"`` in ``FEATURES`` is left the one check it
proves anyway — the prior's dtype/device (:func:`hebm.args.check_prior`), which the CPU
backend's pack cache proves by its byte comparison (``args.pending_prior``) — and raises that
check's error, word for word.

``args`` is a checked :class:`hebm.args.LangevinArgs` (``rargs`` a :class:`hebm.args.ReverseArgs`);
kernels read the prior through the pack cache of :mod:`hebm.backends.pack`.  Whether a backend
is available is found once per process by the backend itself (the extension build, the import);
whether the kernels take a prior's networks, once per prior structure
(:func:`hebm.backends.pack.network_support`).
"""
from __future__ import annotations

import importlib
import warnings
from typing import Optional

import torch

# name -> module holding it
_MODULES = {
    "ref": "hebm.backends.ref",
    "cpu": "hebm.backends.cpu",
    "triton": "hebm.backends.triton_backend",
    "cuda": "hebm.backends.cuda",
    "graph": "hebm.backends.graph",
}

# "auto" tries these in order.  CUDA: the hand-written kernel first (exact fp32, one launch),
# then the generated Triton kernel, then graph replay of the reference step — the expected
# speed order from the design (docs/design.md §3); no GPU has timed them yet (benchmarks/RESULTS.md).
AUTO_ORDER = {
    "cpu": ("cpu",),
    "cuda": ("cuda", "triton", "graph"),
}


class BackendUnavailable(RuntimeError):
    """A requested backend cannot run here; the message says why and how to fix it."""


_warned: set = set()


_LOADED: dict = {}  # module path -> module, once imported (import_module costs µs a call)


def _module(name: str):
    path = _MODULES[name]
    mod = _LOADED.get(path)
    if mod is not None:
        return mod
    try:
        mod = _LOADED[path] = importlib.import_module(path)
        return mod
    except ModuleNotFoundError as e:
        if e.name == path:
            return None
        raise


def unavailable(name: str) -> Optional[str]:
    """None if backend ``name`` can run on this machine, else the reason (with the fix).  Cheap
    after the first call: each backend caches what it found (the extension build, the import)."""
    if name not in _MODULES:
        return f"there is no backend {name!r}; expected one of {', '.join(_MODULES)}"
    try:
        mod = _module(name)
    except ImportError as e:  # a dependency of the backend is missing or broken: report, so "auto" moves on
        return f"backend {name!r} failed to import ({type(e).__name__}: {e}); use backend='ref' or 'auto'"
    if mod is None:
        return f"backend {name!r} is not built in this version of hebm; use backend='ref' or 'auto'"
    return mod.unavailable()


def _why_not(name: str, prior, args, precision: str = "fp32") -> Optional[str]:
    why = unavailable(name)
    if why is not None:
        return why
    mod = _module(name)
    clamp = getattr(prior, "sigma_clamp", 0.0)
    if clamp and "sigma_clamp" not in getattr(mod, "FEATURES", ()):
        return (f"backend {name!r} does not implement the soft clamp of the conditionals' log σ "
                f"(sigma_clamp={clamp:g}); use backend 'cpu', 'cuda', 'graph' or 'ref'")
    if getattr(args, "metropolis", False) and "metropolis" not in getattr(mod, "FEATURES", ()):
        return f"backend {name!r} does not implement the Metropolis test (metropolis=True) yet; use backend 'cpu' or 'ref'"
    return mod.unsupported(prior, args, precision=precision)


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def choose(prior, args, backend: str, precision: str = "fp32") -> str:
    """The backend that will run: ``backend`` itself (or :class:`BackendUnavailable` naming the
    fix), or for ``"auto"`` the first usable one of :data:`AUTO_ORDER` for the device, else
    ``"ref"`` with a one-line warning.  ``precision``: the resolved one (:func:`resolve_precision`)."""
    if backend == "ref":
        return "ref"
    if backend != "auto":
        why = _why_not(backend, prior, args, precision)
        if why is not None:
            raise BackendUnavailable(why)
        return backend
    reasons = []
    for name in AUTO_ORDER.get(args.u.device.type, ()):
        why = _why_not(name, prior, args, precision)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    if reasons:
        _warn_once("hebm: no fused backend fits, using the reference (" + "; ".join(reasons) + ")")
    return "ref"


def proves_prior(name: str) -> bool:
    """Whether backend ``name`` proves the deferred prior check itself (see above)."""
    return "proves_prior" in getattr(_module(name), "FEATURES", ())


def set_kernel_threads(n) -> bool:
    """Threads of the CPU backends that keep their own pool (the C++ kernel's
    ``set_num_threads``); ``None``/0 follows ``torch.get_num_threads()``.  Unavailable backends
    are left alone; True when one took it."""
    took = False
    for name in AUTO_ORDER["cpu"]:
        if unavailable(name) is None and hasattr(_module(name), "set_num_threads"):
            _module(name).set_num_threads(n)
            took = True
    return took


def resolve_precision(precision: str, u: torch.Tensor) -> str:
    """``"auto"`` follows ``torch.get_float32_matmul_precision()``: "highest" → fp32, else tf32."""
    if u.dtype == torch.float64:
        return "fp64"
    if precision == "auto":
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return precision


def run(name: str, prior, args, *, precision: str, trace: bool):
    """``(u_out, log_density or None, precision that ran, accept stats or None)`` from backend ``name``."""
    return _module(name).run(prior, args, precision=precision, trace=trace)


def run_reverse(name: str, prior, schedule, rargs, *, precision: str, return_levels: bool):
    """The whole reverse diffusion in one fused call where backend ``name`` offers it (and the
    run is short enough for one call), else None."""
    fn = getattr(_module(name), "run_reverse", None)
    if fn is None:
        return None
    return fn(prior, schedule, rargs, precision=precision, return_levels=return_levels)


__all__ = ["AUTO_ORDER", "BackendUnavailable", "choose", "proves_prior", "set_kernel_threads", "resolve_precision", "run", "run_reverse", "unavailable"]
