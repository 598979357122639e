"""Backend ``"graph"``: the reference K-step loop captured once in a CUDA graph, then replayed.

The generic fused path for any PyTorch prior the kernels cannot take (and the "CUDA graph"
baseline of docs/design.md §5).  Nothing here restates the update rule: the captured body is
:func:`hebm.sampler.reference.ref_step` (with ``metropolis``: :func:`hebm.sampler.reference.mala_step`) called K
times, exactly as :func:`hebm.sampler.reference.langevin_loop` does.

One graph per (prior, parameter storage, B, D, K, dtype, device, which optional terms are on,
noise kind, trace).  Everything that changes between calls lives in static buffers that are
refreshed before each replay:

* the state ``u`` and every per-chain parameter (step size, noise scale, λ, t, u_next, a, σ);
* the noise: an explicit ``[K, B, D]`` tensor (and the Metropolis uniforms ``[K, B]``) is copied
  into a static buffer; seeded noise is generated *inside* the graph by
  :func:`hebm.prior.philox.normals_from_key` (:func:`hebm.prior.philox.accept_uniforms_from_key`) with the
  key words, the chain ids and the step offset read from static tensors — never a Python int
  baked into the capture (which would replay the same noise every call, docs/kernel_notes.md
  "Triton");
* the level-bias tables of level-conditioned MLPs: computed eagerly once per call into a static
  buffer that the captured forward reads (their sinusoidal embedding makes a host→device copy,
  which a capture forbids; the table does not depend on u, so the values are identical).

The prior's parameters are read in place, so an optimiser step between calls is seen by the
next replay; replacing a parameter tensor (``.to()``, re-assignment) triggers a new capture.
Long chains are captured in chunks of at most :data:`MAX_CAPTURE_STEPS` steps.

``trace_every`` = m (draws inside the call): which steps of a chunk are draws is fixed at capture
(part of the graph's key, :func:`_chunks`), and a chunk is cut at the last draw it reaches, so the
chunks of a long call share one or two captures.  A draw copies the state into a static buffer;
its log π is the one the next step's evaluation gives (MALA: the chain's own), and a draw that ends
a chunk costs one more evaluation (ULA: at most one per chunk, as the reference's last step).

``temperatures`` (replica exchange, :func:`run_replica`): the swap rounds are captured with the
steps — which steps of a chunk end in a round is part of the key, chunks end at their last round —
and run the reference's :func:`~hebm.sampler.reference.swap_energy` and
:func:`~hebm.sampler.reference.swap_round` on static buffers (the ladder, the untempered λ, the
explicit swap uniforms), stream 3 made in the graph from the key and the step counter.

A prior whose ``log_density`` cannot be captured (host synchronisation, CPU tensors, data-
dependent control flow) falls back to the eager reference with one warning.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from collections import OrderedDict
from dataclasses import replace
from typing import NamedTuple, Optional

import torch

from ...prior.nn import MLP
from ...prior.philox import accept_uniforms_from_key, normals_from_key, seed_to_key, swap_uniforms_from_key
from ..record import LANGEVIN
from ..reference import (langevin_loop, mala_step, ref_step, step_coefficients, swap_codes, swap_energy, swap_round,
                         target, tempered, value_and_grad)

NAME = "graph"
RUNS_MODULE = True  # it runs the reference math on the prior module itself
MAX_CAPTURE_STEPS = 128
MAX_GRAPHS_PER_PRIOR = 8

_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # prior -> OrderedDict(key -> _Captured)
_uncapturable: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # prior -> reason
last_capture_seconds: float = 0.0  # wall time of the most recent capture (benchmarks report it)


def unavailable() -> Optional[str]:
    if not torch.cuda.is_available():
        return ("backend 'graph' replays CUDA graphs and needs a CUDA GPU (torch.cuda.is_available() is False); "
                "use backend='ref' or 'cpu' here")
    return None


def unsupported(network, *, device, dtype, precision: str = "fp32", metropolis: bool = False) -> Optional[str]:
    if device.type != "cuda":
        return f"backend 'graph' runs CUDA tensors; u is on {device}"
    return None


#: the call's per-chain inputs (the call record's fields of these kinds): static buffers of a
#: capture, refreshed before each replay; the per-step noise and uniforms have their own
_STATIC = tuple(f.name for f in LANGEVIN[1:] if f.kind in ("chain", "level", "state", "ids"))


class _Ladder(NamedTuple):
    """The replica exchange of a captured chunk: R temperatures, a round after every ``every``-th
    step counter with ``schedule``, after the chunk's steps ``round_ks`` (fixed at capture)."""

    R: int
    every: int
    schedule: str
    round_ks: tuple


# ------------------------------------------------------------------------------ capture
def _level_mlps(prior):
    return [m for m in prior.modules() if isinstance(m, MLP) and m.n_levels is not None]


def _storage_signature(prior) -> tuple:
    return tuple((t.data_ptr(), tuple(t.shape), t.dtype) for t in list(prior.parameters()) + list(prior.buffers()))


class _Captured:
    """Static buffers and the graph of one chunk of ``n`` steps."""

    def __init__(self, prior, a, n: int, trace: bool, capture: bool = True, draw_ks: tuple = (),
                 ladder: Optional[_Ladder] = None):
        self.n, self.trace = n, trace
        B, D, dev = a.B, a.D, a.u.device
        # the steps of the chunk after which the state is a draw (fixed at capture), their buffers
        self.draw_ks = draw_ks
        slot = {k: i for i, k in enumerate(draw_ks)}
        self.draws = torch.zeros(len(draw_ks), B, D, dtype=a.u.dtype, device=dev) if draw_ks else None
        self.draws_logp = torch.zeros(len(draw_ks), B, dtype=a.u.dtype, device=dev) if draw_ks else None
        clone = lambda x: None if x is None else x.detach().clone()  # noqa: E731
        self.args = replace(a, u=clone(a.u), noise=None, uniforms=None,
                            **{name: clone(getattr(a, name)) for name in _STATIC})
        self.seeded = a.noise is None
        self.metropolis = a.metropolis
        self.noise = None if self.seeded else torch.zeros(n, B, D, dtype=a.u.dtype, device=dev)
        self.unif = torch.zeros(n, B, dtype=a.u.dtype, device=dev) if a.metropolis and not self.seeded else None
        self.stats = None
        self.key = torch.zeros(2, dtype=torch.int64, device=dev)
        self.step0 = torch.zeros((), dtype=torch.int64, device=dev)
        self.mlps = _level_mlps(prior)
        self.tables = [m.level_bias_table().detach().clone() for m in self.mlps]
        self.logs = torch.zeros(n, B, dtype=a.u.dtype, device=dev) if trace else None
        sa = self.args
        pr = weakref.proxy(prior)  # the cache is keyed weakly by the prior: do not keep it alive
        # replica exchange: the swap rounds after the steps ladder.round_ks of the chunk, with the
        # ladder, the untempered λ (E = λ·F), the explicit swap uniforms and the record as static buffers
        self.ladder = ladder
        rounds = {k: i for i, k in enumerate(ladder.round_ks)} if ladder is not None else {}
        if ladder is not None:
            self.beta = torch.zeros(ladder.R, dtype=a.u.dtype, device=dev)
            self.lam = torch.zeros(B, dtype=a.u.dtype, device=dev)
            self.swap_unif = None if self.seeded else torch.zeros(len(rounds), B, dtype=a.u.dtype, device=dev)
            self.record = torch.zeros(len(rounds), 2, B, dtype=a.u.dtype, device=dev)
            energy_args = replace(sa, energy_scale=self.lam)

        def body(n_steps: int):
            half_d2, noise_amp = step_coefficients(sa)
            log_pi = target(pr, sa)
            u, stats = sa.u, None
            if self.metropolis:
                delta = sa.step_size[:, None]
                inv_2d2 = torch.where(delta > 0, 0.5 / (delta * delta), torch.zeros_like(delta))
                logp, grad = value_and_grad(log_pi, u)
                stats = torch.zeros(2, B, dtype=u.dtype, device=dev)
            pending = None  # ULA: the draw slot whose log π the next step's evaluation gives
            for k in range(n_steps):
                if self.seeded:
                    eps = normals_from_key((self.key[0], self.key[1]), sa.chain_ids, self.step0 + k, D).to(u.dtype)
                else:
                    eps = self.noise[k]
                if self.metropolis:
                    if trace:
                        self.logs[k].copy_(logp)
                    U = (accept_uniforms_from_key((self.key[0], self.key[1]), sa.chain_ids, self.step0 + k).to(u.dtype)
                         if self.seeded else self.unif[k])
                    u, logp, grad, acc, prob = mala_step(log_pi, u, logp, grad, eps, U, half_d2, delta, inv_2d2)
                    stats = stats + torch.stack([acc.to(u.dtype), prob])
                else:
                    u, logp = ref_step(log_pi, u, eps, half_d2, noise_amp)
                    if trace:
                        self.logs[k].copy_(logp)
                    if pending is not None:
                        self.draws_logp[pending].copy_(logp)
                        pending = None
                if k in slot:
                    self.draws[slot[k]].copy_(u)
                    if self.metropolis:
                        self.draws_logp[slot[k]].copy_(logp)
                    else:
                        pending = slot[k]
                if k in rounds:  # a swap round, as hebm.sampler.reference.replica_exchange runs it
                    if pending is not None:  # (the draw's log π is its own state's, before the swap)
                        self.draws_logp[pending].copy_(value_and_grad(log_pi, u)[0])
                        pending = None
                    i = rounds[k]
                    E = swap_energy(pr, energy_args, u)
                    U = (swap_uniforms_from_key((self.key[0], self.key[1]), sa.chain_ids, self.step0 + k,
                                                ladder.R).to(u.dtype) if self.seeded else self.swap_unif[i])
                    src, att, acc = swap_round(self.beta, E, U, (self.step0 + k + 1) // ladder.every - 1,
                                               ladder.schedule)
                    u = u[src]
                    self.record[i, 0].copy_(E)
                    self.record[i, 1].copy_(swap_codes(att, acc))
                    if self.metropolis and k < n_steps - 1:  # the next run of steps starts afresh
                        logp, grad = value_and_grad(log_pi, u)
            if pending is not None:  # a draw after the chunk's last step: one more evaluation
                self.draws_logp[pending].copy_(value_and_grad(log_pi, u)[0])
            return u, stats

        self._body = body
        self.graph = None
        if not capture:  # eager replay of the same body: lets the CPU test everything but the capture
            return
        with self._static_tables():
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                body(1)  # warm-up: cuBLAS handles, autograd engine, allocator
            torch.cuda.current_stream(dev).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out, self.stats = body(n)

    @contextlib.contextmanager
    def _static_tables(self):
        """The forward reads the static level-bias tables (an instance attribute shadows the method)."""
        for m, tab in zip(self.mlps, self.tables):
            m.level_bias_table = (lambda tab=tab: tab)
        try:
            yield
        finally:
            for m in self.mlps:
                m.__dict__.pop("level_bias_table", None)

    def replay(self, a, u: torch.Tensor, noise: Optional[torch.Tensor], step0: int, key: Optional[torch.Tensor],
               uniforms: Optional[torch.Tensor] = None, ladder_values: Optional[tuple] = None):
        """``ladder_values`` (a chunk with swap rounds): ``(temperatures [R], untempered λ [B],
        the chunk's rows of swap_uniforms or None)``."""
        sa = self.args
        sa.u.copy_(u)
        if ladder_values is not None:
            beta, lam, swap_unif = ladder_values
            self.beta.copy_(beta)
            self.lam.copy_(lam)
            if self.swap_unif is not None:
                self.swap_unif.copy_(swap_unif)
        for name in _STATIC:
            dst = getattr(sa, name)
            if dst is not None:
                dst.copy_(getattr(a, name))
        for m, tab in zip(self.mlps, self.tables):
            with torch.no_grad():
                tab.copy_(m.level_bias_table())
        self.step0.fill_(step0)  # (the noise's counter, and the swap rounds' index)
        if self.seeded:
            self.key.copy_(key)
        else:
            self.noise.copy_(noise)
            if self.unif is not None:
                self.unif.copy_(uniforms)
        if self.graph is not None:
            self.graph.replay()
        else:
            with self._static_tables():
                self.out, self.stats = self._body(self.n)
        return self.out, self.logs, self.stats


def _key(prior, a, n: int, trace: bool, precision: str, draw_ks: tuple = (), ladder: Optional[_Ladder] = None) -> tuple:
    return (precision, n, a.B, a.D, a.u.dtype, a.u.device, a.t is not None, a.u_next is not None, a.noise is None, trace,
            a.metropolis, draw_ks, ladder, _storage_signature(prior))


def _chunks(n_steps: int, step_offset: int, m: int, swap_every: int = 0):
    """The captured chunks of a call: ``(first step k0, length n, the steps of the chunk after
    which the state is a draw, the steps after which a swap round runs)``.  At most
    :data:`MAX_CAPTURE_STEPS` steps; a chunk that would end past a swap round (``swap_every`` > 0)
    but not at one is cut at its last round, else past a draw (m > 0) at its last draw, so that
    full chunks repeat the same steps (one capture) whatever m is."""
    k0 = 0
    while k0 < n_steps:
        n = min(MAX_CAPTURE_STEPS, n_steps - k0)
        c = step_offset + k0  # the counter before the chunk
        for every in (swap_every, m):
            if every:
                last = (c + n) // every * every  # the last counter of a round (a draw) the chunk reaches
                if c < last < c + n:
                    n = last - c
                    break
        draw_ks = tuple(range(m - 1 - c % m, n, m)) if m else ()
        round_ks = tuple(range(swap_every - 1 - c % swap_every, n, swap_every)) if swap_every else ()
        yield k0, n, draw_ks, round_ks
        k0 += n


def _get(prior, a, n: int, trace: bool, precision: str, draw_ks: tuple = (), ladder: Optional[_Ladder] = None,
         eager: bool = False) -> _Captured:
    """The chunk's capture (made on first use, kept per prior); ``eager``: an uncached eager body
    (a prior that could not be captured)."""
    global last_capture_seconds
    import time

    if eager:
        return _Captured(prior, a, n, trace, capture=False, draw_ks=draw_ks, ladder=ladder)
    graphs = _cache.setdefault(prior, OrderedDict())
    key = _key(prior, a, n, trace, precision, draw_ks, ladder)
    if key in graphs:
        graphs.move_to_end(key)
        return graphs[key]
    t0 = time.perf_counter()
    # the captured matmuls keep the cuBLAS math mode of capture time: TF32 iff precision says so
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        on_gpu = a.u.device.type == "cuda"  # CPU tensors (tests only): the same body, replayed eagerly
        cap = _Captured(prior, a, n, trace, capture=on_gpu, draw_ks=draw_ks, ladder=ladder)
        if on_gpu:
            torch.cuda.synchronize(a.u.device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    last_capture_seconds = time.perf_counter() - t0
    graphs[key] = cap
    while len(graphs) > MAX_GRAPHS_PER_PRIOR:
        graphs.popitem(last=False)
    return cap


def clear_cache() -> None:
    """Drop every captured graph (frees their memory pools)."""
    _cache.clear()
    _uncapturable.clear()


def _replay_chunks(prior, args, base, precision: str, trace: bool, *, ladder: bool, eager: bool):
    """The call's chunks (:func:`_chunks`) replayed in turn on the steps' arguments ``base``:
    ``(u, log π parts, accept stats, swap-record parts)``; with ``ladder`` the swap rounds of
    ``args`` run in them.  When the first capture fails the prior is marked uncapturable (one
    warning) and, with ``eager``, the same chunks run eagerly; without it the result is None (the
    caller runs the eager reference)."""
    m = args.swap_every if ladder else 0
    key = torch.tensor(seed_to_key(args.seed), dtype=torch.int64).to(args.u.device) if args.noise is None else None
    u, logs, stats, records, swap_row = args.u, [], None, [], 0
    eager_now = eager and prior in _uncapturable
    for done, n, draw_ks, round_ks in _chunks(args.n_steps, args.step_offset, args.trace_every or 0, m):
        lad = _Ladder(args.temperatures.shape[0], m, args.swap_schedule, round_ks) if ladder else None
        try:
            cap = _get(prior, base, n, trace, precision, draw_ks, lad, eager=eager_now)
        except Exception as e:  # the capture failed: this prior is not graph-safe
            if done > 0:
                raise
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            _uncapturable[prior] = msg
            instead = "running the same steps eagerly instead" if eager else "running the eager reference instead"
            warnings.warn(f"hebm backend 'graph': could not capture this prior's log_density in a CUDA graph "
                          f"({msg}); {instead}", RuntimeWarning, stacklevel=4)
            if not eager:
                return None
            eager_now = True
            cap = _get(prior, base, n, trace, precision, draw_ks, lad, eager=True)
        noise = None if args.noise is None else args.noise[done : done + n]
        unif = None if args.uniforms is None else args.uniforms[done : done + n]
        values = None
        if ladder:
            rows = None if args.swap_uniforms is None else args.swap_uniforms[swap_row : swap_row + len(round_ks)]
            swap_row += len(round_ks)
            values = (args.temperatures, args.energy_scale, rows)
        out, lg, st = cap.replay(base, u, noise, args.step_offset + done, key, unif, ladder_values=values)
        u = out.clone()  # the static outputs are overwritten by the next replay
        if trace:
            logs.append(lg.clone())
        if st is not None:
            stats = st.clone() if stats is None else stats + st
        if draw_ks:
            args.draws.append((cap.draws.clone(), cap.draws_logp.clone()))
        if ladder:
            records.append(cap.record.clone())
    return u, logs, stats, records


def run(pack, args, *, precision: str, trace: bool):
    """K steps by graph replay: ``(u_out, log π trace or None, precision ran, accept stats [2, B]
    with metropolis else None)``; with ``trace_every`` the draws appended to ``args.draws``."""
    prior = pack.prior
    ran = "fp64" if args.u.dtype == torch.float64 else precision
    got = None
    if args.n_steps > 0 and prior not in _uncapturable:
        got = _replay_chunks(prior, args, args, precision, trace, ladder=False, eager=False)
    if got is None:
        out, logs, stats = langevin_loop(prior, args, trace=trace)
        return out, logs, ran, stats
    u, logs, stats, _ = got
    return u, (torch.cat(logs) if trace else None), ran, stats


def run_replica(pack, args, *, precision: str, trace: bool):
    """A call with ``temperatures``: the swap rounds run inside the captured chunks, after the
    steps whose counter is a multiple of ``swap_every`` (:func:`hebm.sampler.reference.swap_round`
    on E = λ·F of :func:`hebm.sampler.reference.swap_energy`, the uniforms of stream 3 made in the
    graph from the key).  :func:`run`'s tuple plus the swap record ``[n_rounds, 2, B]``
    (:func:`hebm.sampler.reference.swap_record_info` reads it).  A prior that cannot be captured
    runs the same chunks eagerly (one warning)."""
    ran = "fp64" if args.u.dtype == torch.float64 else precision
    # the chains' own targets: energy scale β·λ
    u, logs, stats, records = _replay_chunks(pack.prior, args, tempered(args), precision, trace, ladder=True,
                                             eager=True)
    if args.n_steps == 0:
        u = args.u.clone()
        stats = args.u.new_zeros(2, args.B) if args.metropolis else None
    record = torch.cat(records) if records else args.u.new_zeros(0, 2, args.B)
    log_density = (torch.cat(logs) if logs else args.u.new_zeros(0, args.B)) if trace else None
    return u, log_density, ran, stats, record
