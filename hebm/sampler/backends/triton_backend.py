"""``backend="triton"``: the launcher of the persistent Triton Langevin kernel (``kernels/``).

One launch runs all K steps (and, for :func:`run_reverse`, all T levels) of

    u ← u + (δ²/2) · ∇_u log π(u) + c·δ · ε,
    log π(u) = λ · F(T_β(u); t) − ½‖u‖² − [cond] ‖a·u − u_next‖² / (2σ²)

with each program holding ``BLOCK_B`` chains.  The kernel's glue is generated per network
structure by :mod:`hebm.kernels.codegen` (a sequence of :mod:`hebm.kernels.device` calls with
literal widths and offsets) and cached; the parameter layout is decided once per structure and
the kernels' parameter buffer built once per copy of the values (:mod:`hebm.kernels.params`, from
:mod:`hebm.sampler.backends.pack`); each call materialises the per-chain parameters and launches.  Which
argument of the call record goes to which kernel parameter is :data:`PARAMS` (a test keeps it
equal to the generated kernel's signature and the record's op fields).  One configuration, no autotuning (:func:`launch_config`: 16 rows ×
4 warps, no software pipelining; ``HEBM_TRITON_BLOCK_B`` / ``HEBM_TRITON_WARPS`` /
``HEBM_TRITON_STAGES`` pin others), so a first call compiles exactly one kernel
(``benchmarks/compile_report.py`` measures that compile offline).  Under ``TRITON_INTERPRET=1``
(CPU tensors, tests) 16 rows, 1 warp, and wider chunks (fewer numpy operations).

Replica exchange (``temperatures``, :func:`run_replica`): in both forms (MALA: the register form,
as without a ladder).  A program
holds whole ladder groups (``BLOCK_B`` rounded down to a multiple of R, the rest masked; R >
``BLOCK_B`` is refused naming ``temperatures``); each step runs at the chain's β_slot·λ (the launcher
passes the untempered λ, the kernel applies the slot's β); after a step whose counter
``swap_every`` divides, the program evaluates E = λF of its states (ULA: one forward pass, an extra
evaluation per round — the streamed form reruns its top-down pass; MALA: the F it carries with its
state), decides each pair (stream 3 or the explicit ``swap_uniforms``), writes the cpu kernel's swap
record ``[n_rounds, 2, B]`` and exchanges the accepted pairs' rows through the output buffer (the
streamed form: its scratch; global memory and ``tl.debug_barrier()``: Triton has no cross-row
shuffle); MALA then evaluates log π and its gradient afresh at the chains' β, as the reference
does.  The ladder kernel takes
:data:`LADDER_PARAMS` after :data:`PARAMS`; every other kernel's source is unchanged.

Precision: ``"fp32"`` → ``tl.dot(..., input_precision="ieee")`` (exact fp32, FMA loops on the
GPU), ``"tf32"`` → TF32 tensor-core dots, ``"bf16"`` → bf16 dot operands with fp32
accumulation (never tested in the interpreter, whose bf16 dot is broken).  Float64 is not
supported (use ``"ref"`` or ``"cpu"``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..record import LANGEVIN
from .pack import of, read, unpack

NAME = "triton"

#: Kernel-shape knobs (None: the default of the precision): ``tile`` = chunk width of every
#: product (a power of two >= 16); ``reg_limit`` = padded weight-block elements above which the
#: kernel takes the streamed (scratch) form instead of the register form (0 streams every network
#: with an MLP; tests use that to cover the streamed path at small sizes).
TUNING = {
    "tile": int(os.environ["HEBM_TRITON_TILE"]) if os.environ.get("HEBM_TRITON_TILE") else None,
    "reg_limit": int(os.environ["HEBM_TRITON_REG_LIMIT"]) if os.environ.get("HEBM_TRITON_REG_LIMIT") else None,
}
#: Their defaults per dot precision (None above): tensor-core dots hold a chunk product's operands
#: spread over the warp; exact-fp32 dots are FMA loops in which every thread holds its rows × K of
#: one operand and K × its columns of the other, so they take narrower chunks and only tiny MLPs
#: in registers (benchmarks/NOTES.md, "Compile time and registers").
_DEFAULT_TILE = {"ieee": 16, "tf32": 32, "bf16": 32}
_DEFAULT_REG_LIMIT = {"ieee": 32 * 32, "tf32": 64 * 64, "bf16": 64 * 64}

_PRECISIONS = {"fp32": "ieee", "tf32": "tf32", "bf16": "bf16"}

#: The generated kernel's parameters in order (kernels/codegen.py writes the signature), each with
#: the field of the call record it carries (None: the launcher's own — outputs, the parameter
#: buffer, scratch, sizes).  The record's ``metropolis`` is a compile-time flag of the kernel
#: (:data:`SPEC_FIELDS`), not a parameter.  tests/test_call_record.py checks this table against
#: the generated signature and against the record: every op field is carried here or a spec flag.
PARAMS = (("u_ptr", "u"), ("out_ptr", None), ("lvl_ptr", None), ("noise_ptr", "noise"), ("key_ptr", "seed"),
          ("ids_ptr", "chain_ids"), ("delta_ptr", "step_size"), ("c_ptr", "noise_scale"), ("lam_ptr", "energy_scale"),
          ("t_ptr", "t"), ("alpha_ptr", "alpha"), ("sigma_ptr", "sigma"), ("unext_ptr", "u_next"), ("trace_ptr", None),
          ("unif_ptr", "uniforms"), ("acc_ptr", None), ("draws_ptr", None), ("dlogp_ptr", None), ("params_ptr", None),
          ("scratch_ptr", None), ("B", None), ("K", "n_steps"), ("NLEV", None), ("step_offset", "step_offset"),
          ("trace_every", "trace_every"), ("zero", None))
#: A ladder kernel's (``temperatures``: replica exchange) further parameters, after ``zero``: the
#: other kernels' signature (and source) stays as it was.  ``rec_ptr``: the swap record
#: ``[n_rounds, 2, B]``; ``NR``: R, the ladder's length.
LADDER_PARAMS = (("temps_ptr", "temperatures"), ("sunif_ptr", "swap_uniforms"), ("rec_ptr", None), ("NR", None),
                 ("swap_every", "swap_every"))
#: the record's fields that are compile-time flags of the kernel spec: ``metropolis``, and
#: ``swap_schedule`` (the spec's ``ladder``: which pairs propose in a round)
SPEC_FIELDS = ("metropolis", "swap_schedule")
#: op fields of the record this kernel does not carry: those whose ``runs_on`` leaves it out (the
#: registry refuses a call that switches one on, by name: hebm.sampler.record.refusal)
REFUSED_FIELDS = tuple(f.name for f in LANGEVIN if f.runs_on and NAME not in f.runs_on)
_INTERP_BLOCK_B = 16


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"triton is not importable ({type(e).__name__}: {e}); install it with `pip install triton` (3.6-3.8)"
    if _interpret():
        return _interpreter_mode_problem()
    if torch.cuda.is_available():
        return None
    return ("no CUDA device: the Triton backend needs an NVIDIA GPU (or TRITON_INTERPRET=1, set before the first "
            "kernel is built, to run it very slowly on CPU tensors for testing)")


def _interpreter_mode_problem() -> Optional[str]:
    """Triton fixes interpreter vs compiler for its own ``triton.language`` functions when it is
    first imported: ``TRITON_INTERPRET=1`` set after that leaves ``tl.zeros`` & co. compiled-mode
    objects that fail inside the interpreter with an unrelated message.  Say what happened."""
    import triton.language as tl

    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - depends on the Triton version
        return None
    if isinstance(getattr(tl, "zeros", None), InterpretedFunction) or not hasattr(tl.zeros, "fn"):
        return None
    return ("TRITON_INTERPRET=1 was set after `triton` was imported, so Triton is in compiler mode; set it before "
            "the first `import triton` (e.g. in the shell: TRITON_INTERPRET=1 python ...)")


def unsupported(network, *, device, dtype, precision: str = "fp32", metropolis: bool = False) -> Optional[str]:
    if network.reason is not None:
        return network.reason
    if dtype != torch.float32:
        return f"the Triton backend runs float32 only, got {dtype}; use backend='ref' or 'cpu' for float64"
    if device.type == "cpu" and not _interpret():
        return "u is on the CPU: the Triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for slow CPU testing)"
    if device.type not in ("cpu", "cuda"):
        return f"the Triton backend runs on CUDA devices, got {device}"
    if metropolis and precision in _PRECISIONS:
        from ...kernels import kernel_form
        spec = kernel_spec(network, has_kernel=False, unext_from_state=False, seeded=True, trace=False,
                           store_levels=False, precision=precision)
        if kernel_form(spec) != "register":
            return (f"the Triton Metropolis kernel holds state, gradient and proposal in registers; this prior's "
                    f"networks need the streamed form at precision {precision!r} (a register-form compile ran "
                    f"> 15 min offline); use backend 'graph' or 'cpu', or precision='tf32' where the networks fit")
    return None


# ---------------------------------------------------------------------------------- packing
def _structure(network):
    """The kernels' parameter layout of a structure: ``(conditional MLPSpecs, energy MLPSpecs,
    total floats, sources)`` (:func:`hebm.kernels.params.layout`; once per structure)."""
    st = network.derived.get("triton")
    if st is None:
        from ...kernels import params as kparams

        lay = network.layout
        mlps = []
        for k, m in enumerate(network.all_mlps()):
            first = network.mlps[3 * k]
            rows = tuple(tuple(lay[(first + j) * 7 + c] for c in (0, 1, 4)) for j in range(m.n_layers))
            mlps.append((rows, m.act, m.act_param))
        L = network.L
        st = network.derived["triton"] = kparams.layout(network.dims, mlps[: L - 1], mlps[L - 1:])
    return st


def _parts(pack):
    """``(conditional MLPSpecs, energy MLPSpecs, the kernels' parameter buffer)`` of a pack (the
    buffer built once per pack: :mod:`hebm.kernels.params`)."""
    parts = pack.derived.get("triton")
    if parts is None:
        from ...kernels import params as kparams

        conds, energies, total, sources = _structure(pack.network)
        pp = unpack(pack)
        mlps = pp.all_mlps()
        with torch.no_grad():
            buf = kparams.build([w for m in mlps for w in m.weights], [b for m in mlps for b in m.biases],
                                conds + energies, sources, total)
        parts = pack.derived["triton"] = (conds, energies, buf)
    return parts


def packed(prior) -> tuple:
    """``(Pack, parts)`` of ``prior`` read now (its values as they are; tests and the compile report)."""
    pack = of(prior)
    return pack, _parts(pack)


# ---------------------------------------------------------------------------------- launch
def kernel_spec(network, *, has_kernel: bool, unext_from_state: bool, seeded: bool, trace: bool,
                store_levels: bool, precision: str, interpret: Optional[bool] = None, metropolis: bool = False,
                draws: bool = False, ladder: str = ""):
    """The :class:`hebm.kernels.LangevinSpec` a launch builds (its source is generated from it);
    ``interpret``: whose defaults (the interpreter's or a GPU's; default: this process's mode)."""
    from ...kernels import LangevinSpec

    if precision not in _PRECISIONS:
        raise ValueError(f"the Triton backend supports precision fp32, tf32 or bf16, got {precision!r}")
    conds, energies, _, _ = _structure(network)
    prec = _PRECISIONS[precision]
    interp = _interpret() if interpret is None else interpret
    # the interpreter's numpy ops cost per op, not per element: fewer, wider chunks
    tile = TUNING["tile"] if TUNING["tile"] is not None else 64 if interp else _DEFAULT_TILE[prec]
    reg_limit = (TUNING["reg_limit"] if TUNING["reg_limit"] is not None
                 else 64 * 64 if interp else _DEFAULT_REG_LIMIT[prec])
    return LangevinSpec(
        dims=tuple(network.dims), sigma_min=float(network.sigma_min), sigma_clamp=float(network.sigma_clamp),
        conds=conds, energies=energies if network.has_energy else (), has_kernel=has_kernel, unext_from_state=unext_from_state,
        seeded=seeded, trace=trace, store_levels=store_levels, precision=prec, tile=int(tile), reg_limit=int(reg_limit),
        metropolis=metropolis, draws=draws, ladder=ladder,
    )


def launch_config(B: int, spec, device=None) -> dict:
    """The one compiled configuration a launch uses: ``{"BLOCK_B", "num_warps", "num_stages"}``.

    16 rows × 4 warps, no software pipelining, for every problem and batch size: one MMA row
    block (16 rows) per program, and — every product being at least 32 columns wide — Triton
    spreads the 4 warps over the columns, so each warp holds a quarter of every tile (4 warps on
    16 rows otherwise replicate the work; 64 rows × 4 warps hold 16 rows per warp and more
    registers per thread, or replicate too).  The pipeliner (``num_stages`` > 1) multi-buffers the
    chunk loops' loads in shared memory and triples their code.  Measured offline for sm_90:
    benchmarks/NOTES.md, "Compile time and registers".  ``HEBM_TRITON_BLOCK_B`` /
    ``HEBM_TRITON_WARPS`` / ``HEBM_TRITON_STAGES`` pin other values (for measuring on a GPU).
    The interpreter (CPU tensors) runs 16 rows, 1 warp."""
    if device is None or torch.device(device).type != "cuda":
        return {"BLOCK_B": _INTERP_BLOCK_B, "num_warps": 1, "num_stages": 1}
    return {"BLOCK_B": int(os.environ.get("HEBM_TRITON_BLOCK_B") or 16),
            "num_warps": int(os.environ.get("HEBM_TRITON_WARPS") or 4),
            "num_stages": int(os.environ.get("HEBM_TRITON_STAGES") or 1)}


def prepare(pack, parts, *, u, K, nlev, delta, c, lam, t, alpha, sigma, unext, unext_from_state, noise, seed,
            chain_ids, step_offset, trace, store_levels, precision, config_for=None, metropolis=False, uniforms=None,
            trace_every=0, temperatures=None, swap_every=1, swap_schedule="deo", swap_uniforms=None):
    """Everything a launch needs, without launching: ``(kernel, args, config, spec, outputs)``
    (``outputs`` = (out, trace or None, levels or None, accept stats [2, B] or None, (draws [n, B, D],
    their log π [n, B]) or None — ``trace_every`` = m > 0: the state after every step whose counter
    step_offset + k + 1 m divides, hebm.sampler.checks.draw_count)).  ``config_for``: the device whose launch
    configuration to use (default: u's) — ``benchmarks/compile_report.py`` passes ``cuda`` with CPU
    tensors and compiles ``kernel`` offline for exactly these arguments and this config.

    ``temperatures`` (``[R]``, replica exchange): the ladder kernel (register form only), its
    programs holding ``BLOCK_B`` rounded down to a multiple of R rows (:func:`ladder_rows`), and one
    more output, the swap record ``[n_rounds, 2, B]`` (last in ``outputs``)."""
    from ...kernels import build_kernel

    gpu = config_for is not None and torch.device(config_for).type == "cuda"
    spec = kernel_spec(pack.network, has_kernel=alpha is not None, unext_from_state=unext_from_state,
                       seeded=seed is not None, trace=trace, store_levels=store_levels, precision=precision,
                       interpret=False if gpu else None, metropolis=metropolis, draws=bool(trace_every),
                       ladder=swap_schedule if temperatures is not None else "")
    B, D = u.shape
    dev = u.device
    cfg = launch_config(B, spec, dev if config_for is None else torch.device(config_for))
    if temperatures is not None:
        _check_ladder(spec, temperatures.shape[0], cfg["BLOCK_B"])
    kern, scr_w = build_kernel(spec)
    out = torch.empty_like(u)
    tr = torch.empty((nlev * K, B), dtype=u.dtype, device=dev) if trace else u
    lv = torch.empty((nlev, B, D), dtype=u.dtype, device=dev) if store_levels else u
    rows = cfg["BLOCK_B"] if temperatures is None else ladder_rows(cfg["BLOCK_B"], temperatures.shape[0])
    nprog = triton_cdiv(B, rows)  # (a ladder program holds fewer rows: more programs, each its scratch)
    scratch = torch.empty((nprog * cfg["BLOCK_B"] * scr_w,), dtype=torch.float32, device=dev) if scr_w else u
    if seed is not None:
        key = torch.tensor([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=torch.int64, device=dev)
        ids = chain_ids
        nz = u
    else:
        key, ids, nz = u, u, noise
    acc = torch.zeros((2, B), dtype=u.dtype, device=dev) if metropolis else u
    if trace_every:
        from ..checks import draw_count

        n = draw_count(K, step_offset, trace_every)
        draws, dlogp = torch.empty((n, B, D), dtype=u.dtype, device=dev), torch.empty((n, B), dtype=u.dtype, device=dev)
    else:
        draws = dlogp = u
    # by parameter name (PARAMS gives the order); an absent optional input gets a dummy pointer
    # the generated kernel never reads (its flags are compile-time)
    given = dict(u_ptr=u, out_ptr=out, lvl_ptr=lv, noise_ptr=nz, key_ptr=key, ids_ptr=ids, delta_ptr=delta, c_ptr=c,
                 lam_ptr=lam, t_ptr=t if t is not None else delta, alpha_ptr=alpha if alpha is not None else delta,
                 sigma_ptr=sigma if sigma is not None else delta, unext_ptr=unext if unext is not None else u,
                 trace_ptr=tr, unif_ptr=uniforms if uniforms is not None else u, acc_ptr=acc, draws_ptr=draws,
                 dlogp_ptr=dlogp, params_ptr=parts[2], scratch_ptr=scratch, B=B, K=K, NLEV=nlev,
                 step_offset=int(step_offset), trace_every=int(trace_every or 0), zero=0)
    params = PARAMS
    record = None
    if temperatures is not None:
        from ..checks import swap_rounds

        R = temperatures.shape[0]
        record = torch.zeros((swap_rounds(K, step_offset, swap_every), 2, B), dtype=u.dtype, device=dev)
        given.update(temps_ptr=temperatures.to(device=dev, dtype=u.dtype).contiguous(),
                     sunif_ptr=swap_uniforms if swap_uniforms is not None else u, rec_ptr=record, NR=int(R),
                     swap_every=int(swap_every))
        params = PARAMS + LADDER_PARAMS
    args = tuple(given[name] for name, _ in params)
    outs = (out, tr if trace else None, lv if store_levels else None, acc if metropolis else None,
            (draws, dlogp) if trace_every else None)
    return kern, args, cfg, spec, outs + ((record,) if temperatures is not None else ())


def max_ladder(device) -> int:
    """The longest ladder a launch on ``device`` runs: a program's rows (``BLOCK_B``; the registry
    refuses a longer ladder by name, so "auto" moves on to graph)."""
    return launch_config(0, None, device)["BLOCK_B"]


def ladder_rows(block_b: int, R: int) -> int:
    """Rows a program of a ladder kernel holds: ``BLOCK_B`` rounded down to a multiple of R (whole
    ladder groups, so a swap round never crosses programs; the remaining rows are masked)."""
    return (block_b // R) * R


def _check_ladder(spec, R: int, block_b: int) -> None:
    """Refuse, naming ``temperatures``, a ladder this kernel cannot hold: a group longer than a
    program's rows."""
    if R > block_b:
        raise ValueError(f"temperatures has R = {R} inverse temperatures; backend 'triton' runs ladders of at most "
                         f"BLOCK_B = {block_b} (a ladder group lives in one program's rows): use backend='graph' or "
                         f"'cpu' for this ladder")


def _launch(pack, parts, **kw):
    kern, args, cfg, _spec, outs = prepare(pack, parts, **kw)
    u = kw["u"]
    rows = cfg["BLOCK_B"] if kw.get("temperatures") is None else ladder_rows(cfg["BLOCK_B"], kw["temperatures"].shape[0])
    grid = (triton_cdiv(u.shape[0], rows),)
    if u.device.type == "cuda":
        with torch.cuda.device(u.device):
            kern[grid](*args, **cfg)
    else:
        kern[grid](*args, **cfg)
    return outs


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, -1).contiguous()


def ran(precision: str) -> str:
    """What the dots compute: the interpreter runs plain fp32 numpy dots whatever is asked."""
    return "fp32" if _interpret() else precision


def langevin_kwargs(args, *, precision: str, trace: bool) -> dict:
    """:func:`prepare` / :func:`_launch` keywords of a Langevin call (checked ``LangevinArgs``; with
    ``temperatures``, the ladder's: λ stays untempered, the kernel applies β_slot)."""
    ladder = {} if args.temperatures is None else dict(
        temperatures=args.temperatures, swap_every=args.swap_every, swap_schedule=args.swap_schedule,
        swap_uniforms=None if args.swap_uniforms is None else args.swap_uniforms.contiguous())
    return dict(**ladder,
        u=args.u, K=args.n_steps, nlev=1, delta=_rows(args.step_size), c=_rows(args.noise_scale),
        lam=_rows(args.energy_scale), t=None if args.t is None else _rows(args.t),
        alpha=None if args.alpha is None else _rows(args.alpha), sigma=None if args.sigma is None else _rows(args.sigma),
        unext=args.u_next, unext_from_state=False, noise=args.noise, seed=args.seed, chain_ids=args.chain_ids,
        step_offset=args.step_offset, trace=trace, store_levels=False, precision=precision,
        metropolis=args.metropolis, uniforms=args.uniforms, trace_every=args.trace_every or 0,
    )


def reverse_kwargs(schedule, r, *, precision: str, return_levels: bool) -> dict:
    """:func:`prepare` / :func:`_launch` keywords of a whole reverse diffusion: per-level δ, λ, a,
    σ, t from :meth:`hebm.DiffusionSchedule.level_params` as ``[T, B]`` rows (level T−1 first),
    u_next = the state entering the level (no kernel term at the top level)."""
    u, T, K, B = r.u, schedule.T, r.n_steps, r.B
    lv = [schedule.level_params(t) for t in range(T - 1, -1, -1)]

    def rows(key, dtype=u.dtype):
        return torch.tensor([[p[key]] * B for p in lv], dtype=dtype, device=u.device)

    return dict(
        u=u, K=K, nlev=T, delta=rows("step_size"), c=r.noise_scale.reshape(1, B).repeat(T, 1).contiguous(),
        lam=rows("energy_scale"), t=rows("t", torch.long), alpha=rows("alpha") if T > 1 else None,
        sigma=rows("sigma") if T > 1 else None, unext=None, unext_from_state=True,
        noise=r.noise, seed=r.seed, chain_ids=r.chain_ids, step_offset=0, trace=False,
        store_levels=return_levels, precision=precision,
    )


def run(pack, args, *, precision: str, trace: bool):
    """K Langevin steps in one launch: ``(u_out [B, D], log π trace [K, B] or None, precision ran,
    accept stats [2, B] with metropolis else None)``; with ``trace_every`` the draws appended to
    ``args.draws``."""
    u = args.u
    if args.n_steps == 0:
        stats = u.new_zeros((2, args.B)) if args.metropolis else None
        return u.clone(), (u.new_zeros((0, args.B)) if trace else None), ran(precision), stats
    out, tr, _, stats, draws = _launch(pack, _parts(pack), **langevin_kwargs(args, precision=precision, trace=trace))
    if draws is not None and draws[0].shape[0]:
        args.draws.append(draws)
    return out, tr, ran(precision), stats


def run_replica(pack, args, *, precision: str, trace: bool):
    """A call with ``temperatures`` (replica exchange): the swap rounds inside the launch.
    :func:`run`'s tuple plus the swap record ``[n_rounds, 2, B]`` (E = λF of each chain's state
    entering a round, the code at each pair's lower chain:
    :func:`hebm.sampler.reference.swap_record_info`)."""
    u = args.u
    if args.n_steps == 0:
        stats = u.new_zeros((2, args.B)) if args.metropolis else None
        return (u.clone(), (u.new_zeros((0, args.B)) if trace else None), ran(precision), stats,
                u.new_zeros((0, 2, args.B)))
    out, tr, _, stats, draws, record = _launch(pack, _parts(pack),
                                               **langevin_kwargs(args, precision=precision, trace=trace))
    if draws is not None and draws[0].shape[0]:
        args.draws.append(draws)
    return out, tr, ran(precision), stats, record


def run_reverse(pack, schedule, r, *, precision: str, return_levels: bool):
    """The whole reverse diffusion (levels t = T−1 … 0, K steps each) in one launch (step counter
    j·K + k of the seeded stream, or ``noise[j·K + k]``).  Same result as
    :func:`hebm.reverse_diffusion_ref`."""
    u, T = r.u, schedule.T
    if r.n_steps == 0:
        return [u] * (T + 1) if return_levels else [u, u], ran(precision)
    out, _, levels, _, _ = _launch(pack, _parts(pack), **reverse_kwargs(schedule, r, precision=precision,
                                                                      return_levels=return_levels))
    return ([u] + list(levels.unbind(0)) if return_levels else [u, out]), ran(precision)


# ---------------------------------------------------------------------------------- the committed kernel
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "kernels",
                      "generated", "small_seeded_kernel.py")


def standard_kernel_source(name: str = "small", precision: str = "fp32", batch: int = 64) -> str:
    """The source the launcher generates for a first GPU call on ``hebm.standard_problem(name)``
    (seeded, kernel term on, no trace), with the GPU defaults whatever this process's mode —
    committed as ``kernels/generated/small_seeded_kernel.py`` (refresh: :func:`write_standard_kernel`)."""
    from ..checks import check_langevin_args
    from ...kernels import generate_source  # optional dependency (Triton)
    from ..problems import standard_problem

    p = standard_problem(name, batch)
    a = check_langevin_args(p.prior, p.u, **p.kwargs)
    net, _ = read(p.prior, values=False)
    kw = langevin_kwargs(a, precision=precision, trace=False)
    spec = kernel_spec(net, has_kernel=kw["alpha"] is not None, unext_from_state=False,
                       seeded=kw["seed"] is not None, trace=False, store_levels=False, precision=precision,
                       interpret=False)
    return generate_source(spec)[0]


def write_standard_kernel(path: Optional[str] = None) -> str:
    """Regenerate the committed kernel file (after a deliberate change of the generator)."""
    path = path or GOLDEN
    with open(path, "w") as f:
        f.write(standard_kernel_source())
    return path


__all__ = ["LADDER_PARAMS", "NAME", "PARAMS", "TUNING", "ladder_rows", "launch_config", "max_ladder", "packed", "prepare", "run",
           "run_replica", "run_reverse", "standard_kernel_source",
           "unavailable", "unsupported", "write_standard_kernel"]
