"""The fused samplers: :class:`Sampler`, and :func:`langevin_fused` / :func:`reverse_diffusion` built on it.

A :class:`Sampler` is built once from a prior, a backend and a precision (BlackJAX's shape: a
kernel made from its parameters, then pure calls).  Building it reads the prior (its structure and
the values of its networks, :mod:`hebm.sampler.backends.pack`), decides what depends only on that —
whether the kernels take the networks, which backend runs, at which precision — and keeps a copy
of the values.  Its calls (:meth:`Sampler.run`, :meth:`Sampler.reverse_diffusion`) then only check
the call's own arguments (:mod:`hebm.sampler.checks`) and run.  After the prior's weights change (an
optimiser step, ``load_state_dict``, a write to ``.data``, ``.to(dtype)``), :meth:`Sampler.refresh`
reads it again; until then the Sampler samples the prior as it was read — the copy makes that
exact, never a mixture of old and new numbers.  ``hebm.train`` refreshes its samplers after every
change of the weights.

:func:`langevin_fused` and :func:`reverse_diffusion` are the drop-ins for the reference
(:func:`hebm.langevin_ref`, :func:`hebm.reverse_diffusion_ref`, whose module states the update
rule): the same arguments, the same result to float rounding.  Each call builds a Sampler that
reads the prior's numbers where they are (no copy) — so whatever happened to the weights before
the call is what it samples.

This module names no backend: the registry (:mod:`hebm.sampler.backends`) says which runs, and the Sampler
calls that backend's one entry.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..prior.hierarchical import HierarchicalPrior
from . import backends
from .backends import BackendUnavailable
from .backends import pack as packing
from .checks import check_langevin_args, check_options, check_reverse_args, prior_kind
from .record import LANGEVIN, REVERSE, Latents, signature, switched_on
from .reference import (draws_info, finish_reverse, langevin_ref, langevin_z_ref, reverse_diffusion_ref, reverse_loop,
                        run_chain, start_draws, swap_record_info, with_replica_exchange)
from .results import check_result, finish


class Sampler:
    """Langevin chains and reverse diffusions of one prior, by one backend at one precision.

        sampler = hebm.Sampler(prior, backend="auto", precision="auto")
        u = sampler.run(u0, n_steps=60, step_size=0.1, seed=0)       # hebm.langevin_ref's keywords
        u0 = sampler.reverse_diffusion(schedule, n_steps=50, batch=64, seed=1)
        ...                                                           # the prior's weights change
        sampler.refresh()

    ``backend``: ``"auto"`` (the fastest usable for the prior's device, else ``"ref"`` with one
    warning), ``"cpu"``, ``"cuda"``, ``"triton"``, ``"graph"`` or ``"ref"`` (a backend that cannot
    run here raises :class:`hebm.BackendUnavailable` naming the fix).  ``precision``: ``"auto"``
    follows ``torch.get_float32_matmul_precision()`` ("highest" → exact fp32, else TF32), or
    ``"fp32"``/``"tf32"``/``"bf16"``.  Both are decided when the Sampler is built (and at
    :meth:`refresh`): :attr:`backend` and :attr:`precision` say what they resolved to.

    The Sampler samples the prior as it was when built or last refreshed: call :meth:`refresh`
    after changing its weights.  (The backends that run the prior module itself — ``"ref"``,
    ``"graph"`` — see the weights as they are anyway.)
    """

    def __init__(self, prior: HierarchicalPrior, *, backend: str = "auto", precision: str = "auto"):
        self._read(prior, backend, precision, copy=True)

    @classmethod
    def _for_call(cls, prior, backend: str, precision: str) -> "Sampler":
        """A Sampler for one call: the prior's numbers read where they are, no copy."""
        self = cls.__new__(cls)
        self._read(prior, backend, precision, copy=False)
        return self

    def _read(self, prior, backend: str, precision: str, *, copy: bool) -> None:
        check_options(backend, precision)
        network, values = packing.read(prior)
        dtype, device = packing.kind_of(values) if values else prior_kind(prior)
        if device is None:  # a prior without parameters (one latent layer, no energy)
            dtype, device = torch.float32, torch.device("cpu")
        if device.type == "meta":
            raise ValueError("the prior is on the meta device, which holds no values; move it to a device that "
                             "does (e.g. prior.to('cpu'))")
        prec = backends.resolve_precision(precision, dtype)
        name = backends.choose(network, device, dtype, backend, prec)
        mod = backends.module(name)
        if getattr(mod, "RUNS_MODULE", False):
            pack = packing.Pack(network, [], dtype, device, prior=prior)
        elif copy:
            pack = packing.snapshot(network, values, dtype, device, prior=prior)
        else:
            pack = packing.Pack(network, values, dtype, device, prior=prior)
        self.prior, self.backend, self.precision, self.dtype, self.device = prior, name, prec, dtype, device
        self._asked, self._mod, self._pack, self._special = (backend, precision), mod, pack, {}
        self._summarize = backends.value_summaries(device)

    def refresh(self) -> "Sampler":
        """Read the prior again — its values, and its structure, dtype and device with them (the
        backend and precision are decided again too).  Call it after the prior's weights change."""
        self._read(self.prior, *self._asked, copy=True)
        return self

    def __repr__(self) -> str:
        return (f"hebm.Sampler({type(self.prior).__name__} dims={tuple(self.prior.dims)}, backend={self.backend!r}, "
                f"precision={self.precision!r}, {self.dtype} on {self.device})")

    def _backend_for(self, metropolis: bool, needs: tuple = (), ladder: int = 0):
        """``(name, module)`` that runs a call: this Sampler's backend, or for a Metropolis-adjusted
        call or one that switches on keywords only some backends run (``needs``: a temperature
        ladder, draws inside the call; :func:`hebm.sampler.record.switched_on`) the backend that
        implements those for these networks (``ladder``: R of the call's ladder, within the
        backend's ``max_ladder``) — this Sampler's when it does, else (``"auto"``) the next one of the
        device that does (a named backend that does not raises :class:`hebm.BackendUnavailable` with
        its reason); decided once per kind of call."""
        if not (metropolis or needs):
            return self.backend, self._mod
        key = (metropolis, needs, ladder)
        got = self._special.get(key)
        if got is None:
            name = backends.choose(self._pack.network, self.device, self.dtype, self._asked[0], self.precision,
                                   metropolis=metropolis, needs=needs, ladder=ladder)
            got = self._special[key] = (name, backends.module(name))
        return got

    def run(self, u: Latents, *, return_info: bool = False, _where: str = "Sampler.run", **arguments):
        """K steps of the update rule of :func:`hebm.langevin_ref` (its keywords, the same result
        to float rounding; a call with ``temperatures`` runs where replica exchange is implemented:
        the reference, the cpu, cuda and triton kernels, the graph backend's captured chunks).  ``return_info`` adds ``{"backend", "precision", "log_density"}`` — the
        backend and precision that actually ran (the CPU, for one, computes exactly in the
        tensors' dtype whatever is asked) — and MALA's ``"accepted"``, ``"accept_rate"``,
        ``"step_size"`` as the reference does."""
        a = check_langevin_args(self.prior, u, where=_where, kind=(self.dtype, self.device),
                                summarize=self._summarize, **arguments)
        start_draws(a, return_info, _where)
        name, mod = self._backend_for(a.metropolis, switched_on(LANGEVIN, a),
                                      0 if a.temperatures is None else a.temperatures.shape[0])
        pack, prec, ran, pt = self._pack, self.precision, [None], {}

        def run(args):
            out, logs, ran[0], stats = mod.run(pack, args, precision=prec, trace=return_info)
            return out, logs, stats

        if a.temperatures is not None and hasattr(mod, "run_replica"):  # swap rounds inside the kernel
            def run(args):
                out, logs, ran[0], stats, record = mod.run_replica(pack, args, precision=prec, trace=return_info)
                if return_info:  # the swap statistics only where they are returned
                    pt.update(swap_record_info(args, record, trace=True))
                return out, logs, stats
        else:
            run = with_replica_exchange(run, self.prior, a, trace=return_info, info=pt)
        out, logs, extra, stats = run_chain(run, a, trace=return_info)
        check_result(a, out, _where, stats, self._summarize)
        if not return_info:
            return finish(self.prior, a, out, None, False)
        info = {"backend": name, "precision": ran[0], "log_density": logs, **extra, **pt, **draws_info(self.prior, a)}
        return finish(self.prior, a, out, info, True)

    def reverse_diffusion(self, schedule, u_T: Optional[Latents] = None, *, return_levels: bool = False,
                          return_info: bool = False, _where: str = "Sampler.reverse_diffusion", **arguments):
        """:func:`hebm.reverse_diffusion_ref` (paper 2's sampler: ũ_T ~ N(0, I), then levels
        t = T−1 … 0, K steps each): its keywords, the same result.  Backends that fuse the whole
        diffusion into one launch do so, the others run it level by level.  ``return_info`` adds
        ``{"backend", "precision"}`` and, with ``metropolis``, ``"accepted"`` (``[T, B]``, level
        T−1 first).  Metropolis-adjusted levels run one by one (no backend fuses the whole
        adjusted diffusion yet)."""
        r = check_reverse_args(self.prior, schedule, u_T, where=_where, kind=(self.dtype, self.device),
                               summarize=self._summarize, **arguments)
        name, mod = self._backend_for(r.metropolis)
        fn = None if r.metropolis else getattr(mod, "run_reverse", None)
        fused = None if fn is None else fn(self._pack, schedule, r, precision=self.precision,
                                           return_levels=return_levels)
        accepted = []
        if fused is not None:
            levels, ran = fused
        else:
            ran = "fp64" if r.u.dtype == torch.float64 else "fp32"

            def level(p, a):
                nonlocal ran
                out, logs, ran, stats = mod.run(self._pack, a, precision=self.precision, trace=False)
                return out, logs, stats

            levels = reverse_loop(self.prior, schedule, r, run=level, accepted=accepted)
        res = finish_reverse(self.prior, schedule, r, levels, return_levels, "reverse_diffusion")
        info = {"backend": name, "precision": ran}
        if r.metropolis:
            info["accepted"] = torch.stack(accepted)
        return (res, info) if return_info else res


def langevin_fused(prior: HierarchicalPrior, u: Latents, *, return_info: bool = False, backend: str = "auto",
                   precision: str = "auto", **arguments):
    """Drop-in for :func:`hebm.langevin_ref`: the same ``arguments`` (its keywords, the call record
    :data:`hebm.sampler.record.LANGEVIN`), the same result to float rounding, run by the backend
    ``backend`` at ``precision`` (as :class:`Sampler`).  The prior is read at every call, so the
    chains follow whatever happened to its weights before it."""
    try:
        sampler = Sampler._for_call(prior, backend, precision)
    except BackendUnavailable:
        check_langevin_args(prior, u, where="langevin_fused", **arguments)  # a bad argument is named first
        raise
    return sampler.run(u, return_info=return_info, _where="langevin_fused", **arguments)


def reverse_diffusion(prior: HierarchicalPrior, schedule, u_T: Optional[Latents] = None, *, return_levels: bool = False,
                      backend: str = "ref", precision: str = "auto", return_info: bool = False, **arguments):
    """:func:`hebm.reverse_diffusion_ref` run by ``backend`` (:meth:`Sampler.reverse_diffusion`;
    the prior is read at every call): the same arguments and result as the reference."""
    try:
        sampler = Sampler._for_call(prior, backend, precision)
    except BackendUnavailable:
        check_reverse_args(prior, schedule, u_T, where="reverse_diffusion", **arguments)
        raise
    return sampler.reverse_diffusion(schedule, u_T, return_levels=return_levels, return_info=return_info,
                                     _where="reverse_diffusion", **arguments)


# help() and IDEs show the call record's keywords and the options of the fused entry points
langevin_fused.__signature__ = signature(LANGEVIN, ("prior",), (("return_info", False), ("backend", "auto"),
                                                                ("precision", "auto")))
reverse_diffusion.__signature__ = signature(REVERSE, ("prior", "schedule"), (
    ("return_levels", False), ("backend", "ref"), ("precision", "auto"), ("return_info", False)))
Sampler.run.__signature__ = signature(LANGEVIN, ("self",), (("return_info", False),))
Sampler.reverse_diffusion.__signature__ = signature(REVERSE, ("self", "schedule"), (("return_levels", False),
                                                                                    ("return_info", False)))

__all__ = ["Sampler", "langevin_fused", "langevin_ref", "langevin_z_ref", "reverse_diffusion", "reverse_diffusion_ref"]
