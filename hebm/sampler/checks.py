"""The checks of a sampler call, derived from the call record (:mod:`hebm.sampler.record`).

:func:`check_langevin_args` and :func:`check_reverse_args` turn a call's keywords into the checked
call every backend receives (:class:`~hebm.sampler.record.LangevinArgs`,
:class:`~hebm.sampler.record.ReverseArgs`): one normaliser per kind of field (``_KINDS``), the
value rules of the fields (decided together: :class:`~hebm.sampler.values.ValueChecks`), and the
rules that relate fields (:func:`_relations`, each stated once).  An error names the argument and
says what was expected.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..prior.diffusion import DiffusionSchedule
from ..prior.hierarchical import HierarchicalPrior
from ..prior.philox import MAX_STEP, default_chain_ids, initial_noise
from .record import (BACKENDS, LANGEVIN, MAX_STEPS, PRECISIONS, REQUIRED, REVERSE, BY_NAME, Field, LangevinArgs,
                     Latents, ReverseArgs, check_keywords)
from .values import ValueChecks, as_int, constant_vector, fmt, int_tensor


def check_options(backend: str, precision: str) -> None:
    """The ``backend`` / ``precision`` names, checked the same way for every entry point."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def prior_kind(prior) -> tuple:
    """``(dtype, device)`` shared by the prior's parameters (None, None without parameters), or
    the error that they mix."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    kinds = {(p.dtype, p.device) for p in prior.parameters()}
    if len(kinds) > 1:
        got = ", ".join(sorted(f"{d} on {v}" for d, v in kinds))
        raise TypeError(f"prior's parameters mix dtypes/devices ({got}); convert the whole prior, e.g. prior.to(torch.float32)")
    return next(iter(kinds)) if kinds else (None, None)


def same_kind(u: torch.Tensor, dtype, device) -> None:
    """``u`` has the prior's dtype and device (``(dtype, device)`` from :func:`prior_kind`)."""
    if dtype is None:
        return
    if dtype != u.dtype:
        raise TypeError(f"u is {u.dtype} but the prior's parameters are {dtype}; convert one (e.g. prior.to({u.dtype}))")
    if device != u.device:
        raise ValueError(f"u is on {u.device} but the prior is on {device}; move one of them")


def check_prior(prior, u: Optional[torch.Tensor] = None) -> None:
    """``prior`` is a HierarchicalPrior whose tensors share one floating dtype and device (and,
    given ``u``, the dtype and device of ``u``)."""
    dtype, device = prior_kind(prior)
    if u is not None:
        same_kind(u, dtype, device)


def flat_latents(prior: HierarchicalPrior, u: Latents, name: str = "u") -> tuple[torch.Tensor, bool]:
    """``(u as [B, D], whether it came as a list)``, with errors naming ``name``."""
    as_list = not isinstance(u, torch.Tensor)
    if as_list:
        if not isinstance(u, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in u):
            raise TypeError(f"{name} must be a tensor [B, D] or a list of per-layer tensors [B, d_i]")
        parts = prior.split(u)
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"the per-layer tensors of {name} have different batch sizes: {[p.shape[0] for p in parts]}")
        if len({(p.dtype, p.device) for p in parts}) != 1:
            raise ValueError(f"the per-layer tensors of {name} must share one dtype and device")
        u = torch.cat(parts, 1)
    if u.dim() != 2 or u.shape[1] != prior.D:
        raise ValueError(f"{name} must have shape [B, D] with D = {prior.D} (layers {prior.dims}), got {fmt(u)}")
    if u.shape[0] < 1:
        raise ValueError(f"{name} has no chains (B = 0)")
    if u.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {u.dtype}")
    return (u.detach() if u.requires_grad else u).contiguous(), as_list


# ------------------------------------------------------------------------------ one normaliser per kind
class _Call:
    """What the normalisers share while one call is checked."""

    __slots__ = ("prior", "u", "B", "device", "n_levels", "K", "max_steps", "per", "values")

    def __init__(self, prior, u, values, max_steps=MAX_STEPS, per=1):
        self.prior, self.u, self.values = prior, u, values
        self.B, self.device, self.n_levels, self.K = u.shape[0], u.device, prior.n_levels, 0
        self.max_steps, self.per = max_steps, per  # per: steps per record step (T levels of a reverse diffusion)


def _k_steps(c: _Call, f: Field, x):
    K = as_int(f.name, x, "an int >= 0")
    if not 0 <= K <= c.max_steps:
        what = "" if c.per == 1 else " (T·K steps in all)"
        raise ValueError(f"{f.name} must be in [0, {'2**31 - 1' if c.max_steps == MAX_STEPS else c.max_steps}]{what}, "
                         f"got {K}")
    c.K = K * c.per
    return K


def _k_chain(c: _Call, f: Field, x):
    """A real scalar or a [B] tensor → a [B] tensor of u's dtype; a number is checked here, a
    tensor's values are queued on ``c.values`` (decided with the call's other tensors)."""
    u, B, name = c.u, c.B, f.name
    if type(x) is torch.Tensor and x.dtype is u.dtype and x.dim() == 1 and x.shape[0] == B and not x.requires_grad \
            and x.device == c.device and x.is_contiguous():
        c.values.add(name, x, f.positive, f.allow_zero)  # the common form, and what the general path makes of it
        return x
    if not isinstance(x, torch.Tensor):
        if isinstance(x, bool):
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {x!r}")
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {x!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"{name} contains NaN or Inf; expected finite values")
        if f.positive and (v < 0 or (v == 0 and not f.allow_zero)):
            raise ValueError(f"{name} must be {'>= 0' if f.allow_zero else '> 0'}, got {v:g}")
        return constant_vector(B, v, u.dtype, u.device)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {fmt(x)}")
    if x.device != u.device:
        raise ValueError(f"{name} is on {x.device} but u is on {u.device}; put them on one device")
    if x.requires_grad:
        x = x.detach()
    if x.dim() == 1 and x.shape[0] == B:
        out = x if x.dtype == u.dtype else x.to(u.dtype)
    elif x.numel() == 1 and x.dim() <= 1:
        out = x.reshape(()).to(u.dtype).expand(B)
    else:
        raise ValueError(f"{name} must be a scalar or a per-chain tensor of shape [{B}], got {fmt(x)}")
    out = out.contiguous()
    c.values.add(name, out, positive=f.positive, allow_zero=f.allow_zero)
    return out


def _k_level(c: _Call, f: Field, t):
    u, B, n = c.u, c.B, c.n_levels
    if n is None:
        raise ValueError("t was given but the prior's energies are not level-conditioned (n_levels=None)")
    message = "t must lie in [0, {n}], got values in [{lo}, {hi}]"
    if type(t) is torch.Tensor and t.dtype is torch.int64 and t.shape == (B,) and t.device == u.device:
        tt = t.contiguous()  # the common form, and what the general path below makes of it
        c.values.add_range("t", tt, 0, n - 1, message)
        return tt
    what = f"an integer level or an integer tensor [{B}]"
    if isinstance(t, (bool, float)) and not (isinstance(t, float) and t.is_integer()):
        raise TypeError(f"t must be {what}, got {t!r}")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        v = int(t)
        if not 0 <= v < n:
            raise ValueError(f"t must lie in [0, {n - 1}], got {v}")
        return constant_vector(B, v, torch.long, u.device)
    t = int_tensor("t", t, B, u.device, what)
    if t.device != u.device:
        raise ValueError(f"t is on {t.device} but u is on {u.device}")
    if t.dim() == 1 and t.shape[0] == B:
        tt = t.long()
    elif t.numel() == 1:
        tt = t.reshape(()).long().expand(B)
    else:
        raise ValueError(f"t must be an int or an integer tensor of shape [{B}], got {fmt(t)}")
    tt = tt.contiguous()
    c.values.add_range("t", tt, 0, n - 1, message)
    return tt


def _k_state(c: _Call, f: Field, x):
    u, name = c.u, f.name
    if not isinstance(x, torch.Tensor):
        if not isinstance(x, (list, tuple)):
            raise TypeError(f"{name} must be a tensor [B, D] or a list of per-layer tensors, got {type(x).__name__}")
        x = torch.cat(c.prior.split(x), 1)
    if x.shape != u.shape:
        raise ValueError(f"{name} must have the shape of u, {tuple(u.shape)}, got {fmt(x)}")
    if x.dtype != u.dtype or x.device != u.device:
        raise TypeError(f"{name} must match u's dtype and device ({u.dtype}, {u.device}), got {fmt(x)}")
    x = (x.detach() if x.requires_grad else x).contiguous()
    c.values.add(name, x)
    return x


def _k_seed(c: _Call, f: Field, x):
    s = as_int(f.name, x, "an int in [0, 2**64)")
    if not 0 <= s < 2**64:
        raise ValueError(f"{f.name} must be in [0, 2**64), got {s}")
    return s


def _k_ids(c: _Call, f: Field, x):
    B = c.B
    ids = int_tensor(f.name, x, B, c.u.device, f"an integer tensor of shape [{B}]", ValueError)
    if ids.shape != (B,):
        raise ValueError(f"{f.name} must be an integer tensor of shape [{B}], got {fmt(ids)}")
    ids = ids.to(device=c.u.device, dtype=torch.int64).contiguous()
    c.values.add_range(f.name, ids, 0, 2**32 - 1, f"{f.name} must lie in [0, 2**32), got values in [{{lo}}, {{hi}}]")
    return ids


def _steps_shape(c: _Call) -> str:
    return "[K, B, D]" if c.per == 1 else "[T*K, B, D]"


def _k_noise(c: _Call, f: Field, x):
    u, what = c.u, _steps_shape(c)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"noise must be a tensor {what}, got {type(x).__name__}")
    if x.shape != (c.K, *u.shape):
        raise ValueError(f"noise must have shape {what} = [{c.K}, {c.B}, {u.shape[1]}], got {fmt(x)}")
    if x.device != u.device:
        raise ValueError(f"noise is on {x.device} but u is on {u.device}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"noise must be a floating tensor, got {x.dtype}")
    x = x.detach().to(u.dtype).contiguous()
    c.values.add("noise", x)
    return x


def _k_offset(c: _Call, f: Field, x):
    k = as_int(f.name, x, "an int >= 0")
    if not 0 <= k <= MAX_STEP:
        raise ValueError(f"{f.name} must be in [0, 2**32 - 1] (a 32-bit step counter), got {k}")
    return k


def _k_choice(c: _Call, f: Field, x):
    if not isinstance(x, str) or x not in f.choices:
        raise ValueError(f"{f.name} must be one of {', '.join(f.choices)}, got {x!r}")
    return x


def _k_flag(c: _Call, f: Field, x):
    if not isinstance(x, bool):
        raise TypeError(f"{f.name} must be True or False, got {x!r}")
    return x


def _k_uniforms(c: _Call, f: Field, x):
    K, B, u = c.K, c.B, c.u
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"uniforms must be a floating tensor [K, B] = [{K}, {B}], got {fmt(x)}")
    if x.shape != (K, B) or x.device != u.device:
        raise ValueError(f"uniforms must be a tensor [K, B] = [{K}, {B}] on {u.device}, got {fmt(x)}")
    x = x.detach().to(u.dtype).contiguous()
    c.values.add("uniforms", x, positive=True, allow_zero=False, below_one=True)
    return x


def _k_count(c: _Call, f: Field, x):
    n = as_int(f.name, x, "an int >= 0")
    if not 0 <= n <= c.K:
        raise ValueError(f"{f.name} must be in [0, n_steps = {c.K}] (the warm-up is part of the chain), got {n}")
    return n


def _k_prob(c: _Call, f: Field, x):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 < float(x) < 1.0:
        raise ValueError(f"{f.name} must be a number in (0, 1), got {x!r}")
    return float(x)


def _k_batch(c: _Call, f: Field, x):
    n = as_int(f.name, x, "an int >= 1")
    if n < 1:
        raise ValueError(f"{f.name} must be >= 1, got {n}")
    return n


def ladder_values(x, name: str = "temperatures") -> list:
    """The rule of a replica-exchange ladder, β_1 ≤ … ≤ β_R = 1 in [0, 1] (a list or a 1-d tensor),
    → its values as floats; errors name ``name`` (the command lines pass their flag)."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex() or x.dim() != 1:
            raise TypeError(f"{name} must be a 1-d ladder [R] of inverse temperatures, got {fmt(x)}")
        vals = x.detach().double().cpu().tolist()
    else:
        try:
            vals = [float(v) for v in x] if not isinstance(x, (str, bytes)) else None
        except (TypeError, ValueError):
            vals = None
        if vals is None or any(isinstance(v, bool) for v in x):
            raise TypeError(f"{name} must be a 1-d ladder (a list or [R] tensor) of inverse temperatures, got {x!r}")
    R = len(vals)
    if R < 1:
        raise ValueError(f"{name} must hold at least one inverse temperature, got an empty ladder")
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in vals):
        raise ValueError(f"{name} must lie in [0, 1] (inverse temperatures β), got {vals}")
    if any(b < a_ for a_, b in zip(vals, vals[1:])):
        raise ValueError(f"{name} must be increasing (β_1 ≤ … ≤ β_R, the hottest chain first), got {vals}")
    if vals[-1] != 1.0:
        raise ValueError(f"{name} must end at β_R = 1 (the cold chain samples the target), got {vals}")
    return vals


def _k_ladder(c: _Call, f: Field, x):
    """The replica-exchange ladder (:func:`ladder_values`), R dividing B → an [R] tensor of u's dtype."""
    name, B = f.name, c.B
    vals = ladder_values(x, name)
    R = len(vals)
    if B % R:
        raise ValueError(f"{name} has R = {R} inverse temperatures but u has B = {B} chains: B must be a multiple of "
                         f"R (ladder groups of R consecutive chains)")
    return torch.tensor(vals, dtype=c.u.dtype, device=c.device)


def _k_interval(c: _Call, f: Field, x):
    m = as_int(f.name, x, "an int >= 1")
    if not 1 <= m <= MAX_STEPS:
        raise ValueError(f"{f.name} must be an int >= 1 (steps between swap rounds), got {m}")
    return m


def _k_every(c: _Call, f: Field, x):
    """0 (off: None or 0) or an int m >= 1; whether the call records a draw is a relation
    (:func:`_trace_relations`)."""
    if x is None:
        return 0
    m = as_int(f.name, x, "an int >= 1 (or 0/None: off)")
    if not 0 <= m <= MAX_STEPS:
        raise ValueError(f"{f.name} must be an int >= 1 (record the state after every m-th step) or 0/None (off), "
                         f"got {m}")
    return m


def _k_swap_uniforms(c: _Call, f: Field, x):
    """A floating ``[n_rounds, B]`` tensor in (0, 1); its number of rounds is checked with the
    ladder (:func:`_replica_relations`)."""
    B, u = c.B, c.u
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{f.name} must be a floating tensor [n_rounds, B], got {fmt(x)}")
    if x.dim() != 2 or x.shape[1] != B or x.device != u.device:
        raise ValueError(f"{f.name} must be a tensor [n_rounds, B] (B = {B}) on {u.device}, got {fmt(x)}")
    x = x.detach().to(u.dtype).contiguous()
    c.values.add(f.name, x, positive=True, allow_zero=False, below_one=True)
    return x


_KINDS = {"steps": _k_steps, "chain": _k_chain, "level": _k_level, "state": _k_state, "seed": _k_seed,
          "ids": _k_ids, "noise": _k_noise, "offset": _k_offset, "choice": _k_choice, "flag": _k_flag,
          "uniforms": _k_uniforms, "count": _k_count, "prob": _k_prob, "batch": _k_batch,
          "ladder": _k_ladder, "interval": _k_interval, "swap_uniforms": _k_swap_uniforms,
          "every": _k_every}


class _Plan:
    """How :func:`_fields` treats a record: its defaults that are the same for every call (None,
    0, False, a name), the ones that need the batch size (a per-chain number, the chain ids), the
    required names, and the kind's normaliser of every field."""

    def __init__(self, record):
        rest = record[1:]
        self.by_name = {f.name: (f, _KINDS[f.kind]) for f in rest}
        self.required = tuple(f.name for f in rest if f.default is REQUIRED)
        self.first = self.required[:1]  # n_steps: the per-step fields' shapes need K
        self.static = {f.name: f.default for f in rest if f.default is not REQUIRED and f.kind not in ("chain", "ids")}
        self.per_batch = tuple(f for f in rest if f.default is not REQUIRED and f.kind in ("chain", "ids"))


_PLANS: dict = {}


def _fields(record, c: _Call, kw: dict, where: str) -> dict:
    """Every field of ``record`` after ``record[0]`` (the state), normalised: the given ones by
    their kind (n_steps first, then in the order given), the others their default (a per-chain
    number as a [B] vector, the default chain ids)."""
    plan = _PLANS.get(id(record))
    if plan is None:
        plan = _PLANS[id(record)] = _Plan(record)
    for name in plan.required:
        if name not in kw:
            raise TypeError(f"{where} missing required keyword argument {name!r}")
    out = dict(plan.static)
    by_name, first = plan.by_name, plan.first
    for name in first:
        f, norm = by_name[name]
        out[name] = norm(c, f, kw[name])
    for name, x in kw.items():
        entry = by_name.get(name)
        if entry is None:
            check_keywords(record, where, kw)
        if name not in first and not (x is None and entry[0].kind == "ids"):
            # None is the value of a field whose default is None (and the default chain ids); other
            # fields refuse it by their kind
            out[name] = None if x is None and entry[0].default is None else entry[1](c, entry[0], x)
    for f in plan.per_batch:
        if kw.get(f.name) is None:
            out[f.name] = (default_chain_ids(c.B, None, c.u.device) if f.kind == "ids" else
                           None if f.default is None else constant_vector(c.B, f.default, c.u.dtype, c.u.device))
    return out


def _relations(c: _Call, a: dict, given: dict, *, steps: str = "[K, B, D]") -> None:
    """The rules that relate fields (each stated here once); ``given``: the keywords as passed."""
    # the recovery-kernel term is on exactly when u_next is given, and then needs a and σ
    if a.get("u_next", None) is not None:
        if a["alpha"] is None or a["sigma"] is None:
            raise ValueError("u_next was given: the kernel term also needs alpha and sigma")
    elif a.get("alpha", None) is not None or a.get("sigma", None) is not None:
        raise ValueError("alpha/sigma were given without u_next: pass u_next to switch the kernel term on")
    # a level-conditioned prior needs t (t for another prior was refused by its normaliser)
    if c.n_levels is not None and "t" in a and a["t"] is None:
        raise ValueError(f"the prior's energies are level-conditioned: pass t (an int in [0, {c.n_levels - 1}] "
                         f"or an integer tensor [B])")
    # exactly one noise source; chain ids and the 32-bit counter belong to the seeded one
    if (a["noise"] is None) == (a["seed"] is None):
        raise ValueError(f"pass exactly one of noise (a {steps} tensor) or seed (an int in [0, 2**64))")
    if a["noise"] is not None and given.get("chain_ids") is not None:
        raise ValueError("chain_ids select seeded noise; they mean nothing with an explicit noise tensor")
    if a["seed"] is not None and a.get("step_offset", 0) + c.K > MAX_STEP + 1:
        raise ValueError(f"step_offset + n_steps = {a.get('step_offset', 0) + c.K} exceeds 2**32: the seeded stream "
                         f"counts steps in a 32-bit word (step {MAX_STEP + 1} would repeat step 0's noise)")
    _replica_relations(c, a, given)
    _trace_relations(c, a)
    # MALA: the proposal is the Langevin step with c = 1; explicit noise needs its uniforms; the
    # step adaptation steers by the test's acceptance
    if not a["metropolis"]:
        if a["uniforms"] is not None:
            raise ValueError("uniforms are the Metropolis test's; pass metropolis=True to use them")
        if a.get("adapt_steps", 0):
            raise ValueError("adapt_steps steers the step size by the Metropolis acceptance: pass metropolis=True")
        return
    c_ = a["noise_scale"]
    if not (c_.numel() and bool((c_ == 1).all())):
        raise ValueError("metropolis=True needs noise_scale = 1 (MALA's proposal is the Langevin step with c = 1)")
    if a["noise"] is None:
        if a["uniforms"] is not None:
            raise ValueError("uniforms go with an explicit noise tensor; with seed the test draws its own (stream 2)")
    elif a["uniforms"] is None:
        raise ValueError(f"metropolis=True with explicit noise needs uniforms too: a [K, B] = [{c.K}, {c.B}] tensor "
                         f"in (0, 1)")


def swap_rounds(n_steps: int, step_offset: int, swap_every: int) -> int:
    """Swap rounds of a call: one after every step k whose counter step_offset + k + 1 is a multiple
    of ``swap_every``."""
    return (step_offset + n_steps) // swap_every - step_offset // swap_every


#: the largest trace a call records (``trace_every``): past it the call is refused, naming the size
TRACE_MAX_BYTES = 2**32


def draw_count(n_steps: int, step_offset: int, trace_every: int) -> int:
    """Draws a call records with ``trace_every`` = m: one after every step k whose counter
    step_offset + k + 1 is a multiple of m (the counting of :func:`swap_rounds`)."""
    return swap_rounds(n_steps, step_offset, trace_every) if trace_every else 0


def _trace_relations(c: _Call, a: dict) -> None:
    """``trace_every``: the call records at least one draw, and the trace fits in memory."""
    m = a.get("trace_every", 0)
    if not m:
        return
    off = a.get("step_offset", 0)
    n = draw_count(c.K, off, m)
    if n == 0:
        raise ValueError(f"trace_every = {m} records no state in this call: no step counter in "
                         f"{off + 1} … {off + c.K} is a multiple of {m} (n_steps = {c.K}, step_offset = {off}); "
                         f"take trace_every <= n_steps")
    size = n * c.B * c.u.shape[1] * c.u.element_size()
    if size > TRACE_MAX_BYTES:
        raise ValueError(f"trace_every = {m} would record {n} states of [B, D] = [{c.B}, {c.u.shape[1]}]: "
                         f"{size / 2**30:.1f} GiB, more than hebm.sampler.checks.TRACE_MAX_BYTES "
                         f"({TRACE_MAX_BYTES / 2**30:.0f} GiB); take a larger trace_every or fewer steps per call")


#: the fields of the target that one ladder group shares (a swap exchanges states between copies
#: of one target at different β; only the sampler's own step_size and noise_scale may differ)
LADDER_SHARED = ("energy_scale", "t", "u_next", "alpha", "sigma")


def _replica_relations(c: _Call, a: dict, given: dict) -> None:
    """Replica exchange: the swap keywords need a ladder; explicit noise needs swap_uniforms of one
    row per round; step adaptation does not run on a ladder yet."""
    if a.get("temperatures") is None:
        extra = [n for n in ("swap_every", "swap_schedule", "swap_uniforms") if given.get(n) is not None]
        if extra:
            raise ValueError(f"{extra[0]} belongs to replica exchange: pass temperatures (the ladder of inverse "
                             f"temperatures) to switch it on")
        return
    if a.get("adapt_steps", 0):
        raise ValueError("adapt_steps does not run with temperatures yet: pass a per-chain step_size (e.g. larger "
                         "steps for the hot chains) instead")
    n = swap_rounds(c.K, a.get("step_offset", 0), a["swap_every"])
    if a["noise"] is None:
        if a["swap_uniforms"] is not None:
            raise ValueError("swap_uniforms go with an explicit noise tensor; with seed the swap rounds draw their "
                             "own (stream 3)")
    elif a["swap_uniforms"] is None:
        raise ValueError(f"temperatures with explicit noise needs swap_uniforms too: a [n_rounds, B] = [{n}, {c.B}] "
                         f"tensor in (0, 1)")
    elif a["swap_uniforms"].shape[0] != n:
        raise ValueError(f"swap_uniforms must have one row per swap round, [n_rounds, B] = [{n}, {c.B}] "
                         f"(n_steps = {c.K}, swap_every = {a['swap_every']}), got {fmt(a['swap_uniforms'])}")


def _ladder_groups_share_the_target(a) -> None:
    """The chains of one ladder group have the same target but for β (:data:`LADDER_SHARED`)."""
    if a.temperatures is None:
        return
    R = a.temperatures.shape[0]
    for name in LADDER_SHARED:
        v = getattr(a, name)
        if v is None or R == 1:
            continue
        g = v.reshape(a.B // R, R, -1)
        if not bool((g == g[:, :1]).all()):
            raise ValueError(f"{name} differs between the chains of one ladder group (groups of R = {R} "
                             f"consecutive chains): a swap exchanges states between copies of one target, so "
                             f"{', '.join(LADDER_SHARED)} must be the same within each group")


# ------------------------------------------------------------------------------ the checks
def check_langevin_args(prior: HierarchicalPrior, u: Latents, *, where: str = "langevin_ref", kind=None,
                        summarize=None, **arguments) -> LangevinArgs:
    """The keywords of :data:`LANGEVIN` (``arguments``), checked once, as a :class:`LangevinArgs`.

    ``kind``: the prior's ``(dtype, device)`` when the caller already knows it (a
    :class:`hebm.Sampler`, which read the prior when it was built); else the prior's parameters are
    read here (:func:`check_prior`).  ``summarize``: the value summaries for CPU tensors
    (:class:`ValueChecks`); ``where``: the entry point named in a keyword error."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    u, as_list = flat_latents(prior, u)
    same_kind(u, *(kind if kind is not None else prior_kind(prior)))
    c = _Call(prior, u, ValueChecks(u.device))
    c.values.add("u", u)
    a = _fields(LANGEVIN, c, arguments, f"{where}()")
    _relations(c, a, arguments)
    c.values.run(summarize)
    out = LangevinArgs(u=u, as_list=as_list, **a)
    _ladder_groups_share_the_target(out)
    return out


def check_reverse_args(prior: HierarchicalPrior, schedule, u_T=None, *, where: str = "reverse_diffusion_ref",
                       kind=None, summarize=None, **arguments) -> ReverseArgs:
    """The keywords of :data:`REVERSE`, checked once (a whole reverse diffusion).  Without ``u_T``,
    ũ_T is ``batch`` chains of stream 1 of the seeded noise."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    if not isinstance(schedule, DiffusionSchedule):
        raise TypeError(f"schedule must be a hebm.DiffusionSchedule, got {type(schedule).__name__}")
    if prior.n_levels is None or prior.n_levels < schedule.T:
        raise ValueError(f"the prior must be level-conditioned with n_levels >= T = {schedule.T}, "
                         f"got n_levels={prior.n_levels}")
    dtype, device = kind if kind is not None else prior_kind(prior)
    check_keywords(REVERSE, f"{where}()", arguments)
    T = schedule.T
    if u_T is None:
        seed, batch = arguments.get("seed"), arguments.get("batch")
        if seed is None or batch is None:
            raise ValueError("pass u_T, or batch and seed to draw ũ_T from the seeded stream")
        batch = _k_batch(None, BY_NAME[id(REVERSE)]["batch"], batch)
        seed = _k_seed(None, BY_NAME[id(REVERSE)]["seed"], seed)
        dev = device if device is not None else torch.device("cpu")
        ids = arguments.get("chain_ids")
        if ids is not None:
            ids = int_tensor("chain_ids", ids, batch, dev, "an integer tensor", ValueError)
            if ids.shape != (batch,):
                raise ValueError(f"chain_ids must be an integer tensor of shape [{batch}], got {fmt(ids)}")
        u_T = initial_noise(seed, batch, prior.D, chain_ids=ids, device=dev, dtype=dtype or torch.float32)
    elif arguments.get("batch") is not None:
        raise ValueError("pass either u_T or batch (the batch is u_T's first dimension)")
    u, as_list = flat_latents(prior, u_T, "u_T")
    same_kind(u, dtype, device)
    c = _Call(prior, u, ValueChecks(u.device), max_steps=MAX_STEPS // T, per=T)
    c.values.add("u_T", u)
    given = {k: v for k, v in arguments.items() if k != "batch"}
    a = _fields(REVERSE, c, given, f"{where}()")
    _relations(c, a, given, steps="[T*K, B, D]")
    c.values.run(summarize)
    return ReverseArgs(u=u, n_steps=a["n_steps"], levels=T, noise_scale=a["noise_scale"], seed=a["seed"],
                       chain_ids=a["chain_ids"], noise=a["noise"], as_list=as_list, check=a["check"],
                       metropolis=a["metropolis"], uniforms=a["uniforms"])


def level_args(r: ReverseArgs, schedule, j: int, u: torch.Tensor) -> LangevinArgs:
    """The Langevin arguments of level ``j`` (``t = T−1−j``) of the checked reverse diffusion
    ``r``, entering the level at ``u``: the schedule's per-level δ, λ, a, σ
    (:meth:`hebm.DiffusionSchedule.level_params`), ``u_next = u`` where the level has a recovery
    kernel, steps ``j·K … j·K+K−1`` of the noise."""
    lv = schedule.level_params(schedule.T - 1 - j)
    B, K = r.B, r.n_steps

    def full(v):
        return torch.full((B,), v, dtype=u.dtype, device=u.device)

    kernel = lv["alpha"] != 0.0
    return LangevinArgs(
        u=u, n_steps=K, step_size=full(lv["step_size"]), noise_scale=r.noise_scale, energy_scale=full(lv["energy_scale"]),
        t=torch.full((B,), lv["t"], dtype=torch.long, device=u.device),
        u_next=u if kernel else None, alpha=full(lv["alpha"]) if kernel else None,
        sigma=full(lv["sigma"]) if kernel else None, seed=r.seed, chain_ids=r.chain_ids,
        noise=None if r.noise is None else r.noise[j * K:(j + 1) * K], step_offset=j * K, check=r.check,
        metropolis=r.metropolis, uniforms=None if r.uniforms is None else r.uniforms[j * K:(j + 1) * K],
    )




__all__ = ["LADDER_SHARED", "TRACE_MAX_BYTES", "draw_count", "ladder_values", "swap_rounds", "check_langevin_args", "check_options", "check_prior", "check_reverse_args", "flat_latents", "level_args",
           "prior_kind", "same_kind"]
