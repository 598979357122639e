"""The boundary to the compiled kernels: the op schema and its fake (meta) kernels, both derived from
the call record (:data:`hebm.sampler.record.LANGEVIN`, :data:`hebm.sampler.record.REVERSE`), the kernels' argument
slots (``csrc/call_record.h``, generated here), and the one wrapper that calls ``torch.ops.hebm.*``.

Two ops, defined here once (``torch.library``); the C++ CPU extension (``csrc/ops.cpp``) and the
CUDA extension (``csrc/cuda/langevin_cuda.cpp``) register boxed implementations of them
(``TORCH_LIBRARY_IMPL(hebm, CPU|CUDA)``) that read each argument from its slot, so neither
restates the argument list and either loads on its own:

* ``hebm::langevin`` — K steps of the update rule of :mod:`hebm.sampler.reference` for a checked
  :class:`hebm.sampler.record.LangevinArgs`: the network (:data:`NETWORK`), then every field of the record
  that has an op type, in the record's order, then ``trace`` and ``precision``.  Outputs: the
  state, the trace ``[K, B]`` (empty without ``trace``), the accept stats ``[2, B]`` (accepted
  proposals, Σ min(1, α); empty without ``metropolis``), and with ``trace_every`` = m the draws
  ``[n, B, D]`` and their log π ``[n, B]`` (n = :func:`hebm.sampler.checks.draw_count`: the states
  after the steps whose counter step_offset + k + 1 is a multiple of m; empty without it).
* ``hebm::reverse_diffusion`` — every level of a reverse diffusion (levels ``t = T−1 … 0``, K
  steps each): the network, the op fields of :data:`hebm.sampler.record.REVERSE`, the per-level scalars of
  :meth:`hebm.DiffusionSchedule.level_params` (:data:`LEVELS`), ``return_levels``, ``precision``.

The network travels as the slot tensors of :mod:`hebm.sampler.backends.pack` and its tables, with the
pack's ``token``: nonzero when the values never change (a :class:`hebm.Sampler`'s copy), so the CPU
kernel keeps its panel-packed weights under it; 0 means "derive afresh".  The same schema is
defined under ``hebm_cuda_emu`` for the CUDA extension's host emulator of its block code (CPU
tests of the GPU code).

Long CPU runs are cut into chunks of about :data:`CHUNK_SECONDS` (exact: the seeded noise is
counter-based, and explicit noise is sliced), so Ctrl-C reaches Python between chunks.
"""
from __future__ import annotations

import operator
import sys

import torch

from ..checks import draw_count, swap_rounds
from ..record import LANGEVIN, REVERSE, LangevinArgs, ReverseArgs
from .pack import Pack

#: the network arguments of both ops (hebm.sampler.backends.pack), in slot order
#: (the tables dims, layout, mlps are int64 CPU tensors: an int[] costs a conversion per element)
NETWORK = (("weights", "Tensor[]"), ("dims", "Tensor"), ("layout", "Tensor"), ("mlps", "Tensor"),
           ("act_params", "float[]"), ("has_energy", "bool"), ("n_levels", "int"), ("sigma_min", "float"),
           ("sigma_clamp", "float"), ("pack_token", "int"))
#: the per-level scalars of a fused reverse diffusion: (op argument, key of DiffusionSchedule.level_params)
LEVELS = (("level_t", "int[]", "t"), ("level_step", "float[]", "step_size"),
          ("level_energy_scale", "float[]", "energy_scale"), ("level_alpha", "float[]", "alpha"),
          ("level_sigma", "float[]", "sigma"))
#: the op fields of each record: (name, op type, C++ kind) — the kind says how a kernel reads it
#: (csrc/network.h: HEBM_FILL_<KIND>)
_CPP_KIND = {"chain": "CHAIN", "level": "LEVEL", "ids": "IDS", "noise": "NOISE", "uniforms": "UNIF", "seed": "SEED",
             "steps": "STEPS", "offset": "COUNT", "flag": "FLAG", "every": "COUNT", "ladder": "LADDER",
             "interval": "COUNT", "choice": "CHOICE", "swap_uniforms": "ROUNDS"}


def _op_fields(record) -> tuple:
    return tuple((f.name, f.op, "U" if f is record[0] else "NEXT" if f.kind == "state" else _CPP_KIND[f.kind])
                 for f in record if f.op is not None)


LANGEVIN_FIELDS = _op_fields(LANGEVIN)
REVERSE_FIELDS = _op_fields(REVERSE)
LANGEVIN_ARGS = NETWORK + tuple(f[:2] for f in LANGEVIN_FIELDS) + (("trace", "bool"), ("precision", "str"))
REVERSE_ARGS = (NETWORK + tuple(f[:2] for f in REVERSE_FIELDS) + tuple(x[:2] for x in LEVELS)
                + (("return_levels", "bool"), ("precision", "str")))
#: outputs: u_K, log π trace, accept stats, draws, their log π, swap record
LANGEVIN_SCHEMA = (f"langevin({', '.join(f'{t} {n}' for n, t in LANGEVIN_ARGS)}) "
                   f"-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
REVERSE_SCHEMA = f"reverse_diffusion({', '.join(f'{t} {n}' for n, t in REVERSE_ARGS)}) -> Tensor"

#: namespaces that carry the schema: the real ops, and the CUDA block-code emulator (tests)
NAMESPACES = ("hebm", "hebm_cuda_emu")

_LIBS = []
_LI = {n: i for i, (n, _) in enumerate(LANGEVIN_ARGS)}
_RI = {n: i for i, (n, _) in enumerate(REVERSE_ARGS)}


def _langevin_fake(*args):
    u, K = args[_LI["u"]], args[_LI["n_steps"]]
    torch._check(u.dim() == 2, lambda: "hebm: u must be [B, D]")
    n = draw_count(K, args[_LI["step_offset"]], args[_LI["trace_every"]])
    r = swap_rounds(K, args[_LI["step_offset"]], args[_LI["swap_every"]])
    return (u.new_empty(u.shape), (u.new_empty((K, u.shape[0])) if args[_LI["trace"]] else u.new_empty((0,))),
            (u.new_empty((2, u.shape[0])) if args[_LI["metropolis"]] else u.new_empty((0,))),
            u.new_empty((n, *u.shape)), u.new_empty((n, u.shape[0])),
            (u.new_empty((r, 2, u.shape[0])) if args[_LI["temperatures"]] is not None else u.new_empty((0,))))


def _reverse_fake(*args):
    u_T = args[_RI["u_T"]]
    torch._check(u_T.dim() == 2, lambda: "hebm: u_T must be [B, D]")
    if args[_RI["return_levels"]]:
        return u_T.new_empty((len(args[_RI["level_t"]]) + 1, *u_T.shape))
    return u_T.new_empty(u_T.shape)


def _define() -> None:
    for ns in NAMESPACES:
        if hasattr(torch.ops, ns) and hasattr(getattr(torch.ops, ns), "langevin"):
            continue  # defined already (this module re-imported)
        lib = torch.library.Library(ns, "DEF")
        lib.define(LANGEVIN_SCHEMA)
        lib.define(REVERSE_SCHEMA)
        torch.library.register_fake(f"{ns}::langevin", _langevin_fake, lib=lib)
        torch.library.register_fake(f"{ns}::reverse_diffusion", _reverse_fake, lib=lib)
        _LIBS.append(lib)


_define()


def op(name: str, namespace: str = "hebm"):
    """The op handle ``torch.ops.<namespace>.<name>`` (for ``torch.library.opcheck`` in tests)."""
    return getattr(getattr(torch.ops, namespace), name)


# ------------------------------------------------------------------------------ the header
def header() -> str:
    """``csrc/call_record.h``: the argument slots of both ops and, per op field, its slot and
    C++ kind — what the compiled ops read their arguments by."""
    lines = ["// call_record.h — GENERATED from the call record (hebm/sampler/record.py LANGEVIN, REVERSE) and the op schema",
             "// (hebm/sampler/backends/ops.py) by `python -m hebm.sampler.backends.ops --header`.  Do not edit:",
             "// tests/test_call_record.py regenerates it and compares.",
             "//",
             "// Slots: the position of each argument of hebm::langevin / hebm::reverse_diffusion.  Fields: the",
             "// call-record arguments a kernel reads, as X(name, slot, KIND); csrc/network.h says what each KIND",
             "// becomes (a member of hebm::Problem, the memory guard of its shape).",
             "#pragma once", "", "namespace hebm {", ""]
    for title, prefix, args in (("hebm::langevin", "LANGEVIN", LANGEVIN_ARGS),
                                ("hebm::reverse_diffusion", "REVERSE", REVERSE_ARGS)):
        lines.append(f"// argument slots of {title}")
        lines.append(f"enum {prefix.title()}Slot : int {{")
        for i, (n, _) in enumerate(args):
            lines.append(f"  {prefix}_{n.upper()} = {i},")
        lines.append(f"  {prefix}_N_ARGS = {len(args)}")
        lines.append("};")
        names = ", ".join(f'"{n}"' for n, _ in args)
        lines.append(f"constexpr const char* k{prefix.title()}ArgNames[] = {{{names}}};")
        lines.append("")
    lines.append("// the names a CHOICE field takes (its member holds the index)")
    for f in LANGEVIN:
        if f.op is not None and f.kind == "choice":
            names = ", ".join(f'"{c}"' for c in f.choices)
            lines.append(f"constexpr const char* kChoices_{f.name}[] = {{{names}}};")
            lines.append(f"constexpr int kNChoices_{f.name} = {len(f.choices)};")
    lines.append("")
    lines.append("}  // namespace hebm")
    lines.append("")
    for prefix, fields in (("LANGEVIN", LANGEVIN_FIELDS), ("REVERSE", REVERSE_FIELDS)):
        lines.append(f"#define HEBM_{prefix}_FIELDS(X) \\")
        body = [f"  X({n}, hebm::{prefix}_{n.upper()}, {kind})" for n, _, kind in fields]
        lines += [b + " \\" for b in body[:-1]] + [body[-1]]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ chunking
#: wall time one CPU call of the kernel is allowed before Python gets control back (Ctrl-C)
CHUNK_SECONDS = 0.25
#: a pessimistic CPU kernel rate for that estimate (2 loaded cores do ≥ 20 GFLOP/s; docs/design.md §5)
_CPU_FLOPS_PER_S = 2e10


def steps_per_chunk(pack: Pack, B: int, device: torch.device) -> int:
    """How many steps one call may take: all of them on GPUs (asynchronous anyway), on the CPU
    about :data:`CHUNK_SECONDS` of work by the 4·B·params FLOP model."""
    if device.type != "cpu":
        return 2**31 - 1
    per_step = 4.0 * B * max(pack.network.n_params, 1) / _CPU_FLOPS_PER_S
    return max(1, int(CHUNK_SECONDS / per_step))


def _network_args(pack: Pack) -> list:
    """The op's network arguments (:data:`NETWORK`) of a pack, made once per pack."""
    args = pack.derived.get("op")
    if args is None:
        net = pack.network
        st = net.derived.get("op")
        if st is None:
            st = net.derived["op"] = [torch.tensor(net.dims, dtype=torch.int64),
                                      torch.tensor(net.layout, dtype=torch.int64),
                                      torch.tensor(net.mlps, dtype=torch.int64), list(net.act_params), net.has_energy,
                                      net.n_levels, net.sigma_min, net.sigma_clamp]
        args = pack.derived["op"] = (pack.values, *st, pack.token)
    return args


def _getter(fields):
    """The op's record arguments of a checked call, in slot order (one C-level attribute getter;
    the seed in [0, 2**64) lowered to the op's int64, two's complement: the kernels read the bits)."""
    names = ["u" if kind == "U" else name for name, _, kind in fields]
    get = operator.attrgetter(*names)
    i_seed = next(i for i, (_, _, kind) in enumerate(fields) if kind == "SEED")

    def values(a) -> list:
        v = list(get(a))
        if v[i_seed] is not None and v[i_seed] >= 2**63:
            v[i_seed] -= 2**64
        return v
    return values


_LANGEVIN_VALUES = _getter(LANGEVIN_FIELDS)
_REVERSE_VALUES = _getter(REVERSE_FIELDS)


def _field_values(a, fields) -> list:
    return (_LANGEVIN_VALUES if fields is LANGEVIN_FIELDS else _REVERSE_VALUES)(a)


_CALLABLES: dict = {}


def _callable(name: str, namespace: str):
    """The op's C++ entry (the overload's own callable: no Python frame of the op packet between)."""
    fn = _CALLABLES.get((name, namespace))
    if fn is None:
        fn = _CALLABLES[(name, namespace)] = op(name, namespace).default._op
    return fn


def _langevin_call(pack: Pack, a: LangevinArgs, precision: str, trace: bool, namespace: str):
    """One op call: ``(u, log π trace, accept stats, swap record)``; its draws (``trace_every``)
    appended to ``a.draws``."""
    out, logd, stats, draws, draws_logd, swaps = _callable("langevin", namespace)(
        *_network_args(pack), *_LANGEVIN_VALUES(a), trace, precision)
    if a.trace_every and draws.shape[0]:
        a.draws.append((draws, draws_logd))
    return out, logd, stats, swaps


def langevin(pack: Pack, a: LangevinArgs, *, precision: str, trace: bool, namespace: str = "hebm"):
    """``hebm::langevin`` on checked arguments: ``(u_K [B, D], log π trace [K, B] or None,
    accept stats [2, B] or None, swap record [n_rounds, 2, B] or None)``, the draws of
    ``trace_every`` appended to ``a.draws``.  Runs in chunks of :func:`steps_per_chunk` steps
    (results identical to one call; a Metropolis chunk evaluates its first state afresh; a chunk's
    swap rounds are those after its steps, with their rows of ``swap_uniforms``).  The swap record
    (with ``temperatures``): per round, E = λF of each chain's state entering it, and a code at
    each pair's lower chain (1: proposed, 2: swapped, 0: neither)."""
    u = a.u
    pt = a.temperatures is not None
    if a.n_steps <= steps_per_chunk(pack, u.shape[0], u.device):
        out, logd, stats, swaps = _langevin_call(pack, a, precision, trace, namespace)
        return out, (logd if trace else None), (stats if a.metropolis else None), (swaps if pt else None)
    chunk = steps_per_chunk(pack, u.shape[0], u.device)
    logs, total, records = [], None, []
    for k0 in range(0, a.n_steps, chunk):
        part = a.steps(k0, min(a.n_steps, k0 + chunk))
        part.u = u
        u, logd, stats, swaps = _langevin_call(pack, part, precision, trace, namespace)
        if trace:
            logs.append(logd)
        if a.metropolis:
            total = stats if total is None else total + stats
        if pt:
            records.append(swaps)
    return u, (torch.cat(logs) if trace else None), total, (torch.cat(records) if pt else None)


def fits_one_reverse_call(pack: Pack, r: ReverseArgs) -> bool:
    """Whether a whole reverse diffusion fits one chunk (else the levels run one by one)."""
    return r.levels * r.n_steps <= steps_per_chunk(pack, r.B, r.u.device)


def reverse_diffusion(pack: Pack, schedule, r: ReverseArgs, *, precision: str, return_levels: bool,
                      namespace: str = "hebm"):
    """``hebm::reverse_diffusion`` on checked arguments: ``[ũ_T, …, ũ_0]`` with ``return_levels``,
    else ``[ũ_T, ũ_0]``."""
    lv = [schedule.level_params(t) for t in range(schedule.T - 1, -1, -1)]
    levels = [[p[key] for p in lv] for _, _, key in LEVELS]
    res = _callable("reverse_diffusion", namespace)(*_network_args(pack), *_REVERSE_VALUES(r), *levels,
                                                    return_levels, precision)
    return list(res.unbind(0)) if return_levels else [r.u, res]


__all__ = ["CHUNK_SECONDS", "LANGEVIN_ARGS", "LANGEVIN_SCHEMA", "LEVELS", "NAMESPACES", "NETWORK", "REVERSE_ARGS",
           "REVERSE_SCHEMA", "fits_one_reverse_call", "swap_rounds", "header", "langevin", "op", "reverse_diffusion",
           "steps_per_chunk"]

if __name__ == "__main__":  # python -m hebm.sampler.backends.ops --header [PATH]
    if len(sys.argv) >= 2 and sys.argv[1] == "--header":
        from . import _build

        path = sys.argv[2] if len(sys.argv) > 2 else str(_build.csrc_dir() / "call_record.h")
        with open(path, "w") as f:
            f.write(header())
        print(path)
    else:
        print(__doc__)
