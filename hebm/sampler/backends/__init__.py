"""Backend registry and choice for :class:`hebm.Sampler` (and so :func:`hebm.langevin_fused` /
:func:`hebm.reverse_diffusion`).

Each backend is a module ``hebm.sampler.backends.<module>`` that defines

    NAME: str
    RUNS_MODULE: bool        # optional, default False: it runs the prior module itself (ref, graph),
                             # so no values are packed for it
    def unavailable() -> Optional[str]       # None if usable on this machine, else why + the fix
    def unsupported(network, *, device, dtype, precision, metropolis) -> Optional[str]
                             # None if it runs this structure (hebm.sampler.backends.pack.Network) on these
                             # tensors at this resolved precision: decided from the structure, never
                             # from the values; a form the backend does not implement for this
                             # structure is refused here, by name (metropolis: the Metropolis test).
                             # A keyword that only some backends run says which in its record field
                             # (runs_on) and is refused for the others here, in the registry
                             # (hebm.sampler.record.refusal): replica exchange (temperatures: a backend
                             # with run_replica (cpu, cuda, triton, graph) runs the swap rounds inside its call, the
                             # reference's hebm.sampler.reference.replica_exchange drives them between
                             # runs of the reference loop), draws (trace_every: the run appends them to
                             # args.draws)
    # optional: the longest ladder (temperatures) it runs on this device, when a ladder group must
    # fit one thread block or program (cuda, triton); a longer one is refused by name, so that
    # "auto" passes the call on (graph)
    def max_ladder(device) -> int
    def run(pack, args, *, precision, trace) -> (u_out [B, D], log_density [K, B] or None, precision ran,
                                                 accept stats [2, B] with args.metropolis, else None)
    # optional, the whole reverse diffusion in one launch:
    def run_reverse(pack, schedule, rargs, *, precision, return_levels) -> ([ũ_T, …, ũ_0] or [ũ_T, ũ_0],
                                                                           precision ran) or None

``pack`` is a :class:`hebm.sampler.backends.pack.Pack` (the structure, the slot tensors, their dtype and
device, the prior module); ``args`` a checked :class:`hebm.sampler.record.LangevinArgs` (``rargs`` a
:class:`hebm.sampler.record.ReverseArgs`).  Every backend, the reference loop included (``"ref"``), is such a
module, and this registry is the only place that names them: a Sampler asks it once, when it is
built, which one runs (:func:`choose`) and then calls that module's ``run``.  Whether a backend is
available is found once per process by the backend itself (the extension build, the import);
whether it takes a structure, once per structure (the Network keeps the verdict).
"""
from __future__ import annotations

import importlib
import warnings
from typing import Optional

import torch

from ..record import refusal

# name -> module holding it
_MODULES = {
    "ref": "hebm.sampler.backends.ref",
    "cpu": "hebm.sampler.backends.cpu",
    "triton": "hebm.sampler.backends.triton_backend",
    "cuda": "hebm.sampler.backends.cuda",
    "graph": "hebm.sampler.backends.graph",
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


def module(name: str):
    """The module of backend ``name`` (which :func:`choose` returned)."""
    return _module(name)


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


def why_not(name: str, network, device: torch.device, dtype: torch.dtype, precision: str,
            metropolis: bool = False, needs: tuple = (), ladder: int = 0) -> Optional[str]:
    """None if backend ``name`` runs this structure on these tensors here, else why not.  ``needs``:
    the record's fields with ``runs_on`` that the call switches on
    (:func:`hebm.sampler.record.switched_on`), refused by name where the record says the backend
    does not run them.  ``ladder``: R of a call's ladder (0: none), refused by a backend whose
    ``max_ladder(device)`` is below it (a ladder group lives in one thread block or program).  Whether the backend is available is its own (cached) answer; whether it
    takes the structure is decided once per (backend, structure, device, dtype, precision,
    metropolis) and kept in the Network."""
    why = unavailable(name)
    if why is not None:
        return why
    why = refusal(name, needs)
    if why is not None:
        return why
    limit = getattr(_module(name), "max_ladder", None) if ladder else None
    limit = None if limit is None else limit(device)
    if limit is not None and ladder > limit:
        return (f"temperatures has R = {ladder} inverse temperatures; backend {name!r} runs ladders of at most "
                f"{limit} (a ladder group lives in one block of chains): use backend='graph' on a GPU, 'cpu' or "
                f"'auto'")
    key = ("takes", name, device, dtype, precision, metropolis)
    try:
        return network.derived[key]
    except KeyError:
        pass
    why = _module(name).unsupported(network, device=device, dtype=dtype, precision=precision, metropolis=metropolis)
    network.derived[key] = why
    return why


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=5)


def choose(network, device: torch.device, dtype: torch.dtype, backend: str, precision: str,
           metropolis: bool = False, needs: tuple = (), ladder: int = 0) -> str:
    """The backend that runs: ``backend`` itself (or :class:`BackendUnavailable` naming the fix),
    or for ``"auto"`` the first usable one of :data:`AUTO_ORDER` for the device, else ``"ref"``
    with a one-line warning.  ``precision``: the resolved one (:func:`resolve_precision`)."""
    if backend == "ref":
        return "ref"
    if backend != "auto":
        why = why_not(backend, network, device, dtype, precision, metropolis, needs, ladder)
        if why is not None:
            raise BackendUnavailable(why)
        return backend
    reasons = []
    for name in AUTO_ORDER.get(device.type, ()):
        why = why_not(name, network, device, dtype, precision, metropolis, needs, ladder)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    if reasons:
        _warn_once("hebm: no fused backend fits, using the reference (" + "; ".join(reasons) + ")")
    return "ref"


def value_summaries(device: torch.device):
    """The C++ extension's ``value_ranges`` for CPU tensors when it is loaded (hebm.sampler.values'
    ValueChecks reads each tensor's (min, max) through it in one call), else None."""
    if device.type != "cpu":
        return None
    from . import _build

    ext = _build.loaded_cpu_ops()
    return None if ext is None else ext.value_ranges


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


def resolve_precision(precision: str, dtype: torch.dtype) -> str:
    """``"auto"`` follows ``torch.get_float32_matmul_precision()``: "highest" → fp32, else tf32."""
    if dtype == torch.float64:
        return "fp64"
    if precision == "auto":
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return precision


__all__ = ["AUTO_ORDER", "BackendUnavailable", "choose", "module", "resolve_precision",
           "set_kernel_threads", "unavailable", "value_summaries", "why_not"]
