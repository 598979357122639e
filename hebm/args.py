"""The sampler's arguments, checked once: what every entry point and every backend receives.

:func:`check_langevin_args` turns the keywords of :func:`hebm.langevin_ref` into a
:class:`LangevinArgs` — flat ``[B, D]`` state, per-chain ``[B]`` parameters, exactly one noise
source — or raises an error that names the argument and says what was expected.
:func:`check_reverse_args` does the same for a whole reverse diffusion.  Both the reference
(:mod:`hebm.reference`) and the fused dispatch (:mod:`hebm.dispatch`, :mod:`hebm.backends`)
build on this module, so a bad argument is refused the same way whichever path runs.

The checks are meant to cost microseconds: Python scalars are checked as numbers, the values
of all tensor arguments are decided together (:class:`ValueChecks`: one summary of each
tensor's min and max, one host read), and nothing here touches the network weights beyond
reading their dtype and device.  The rules live here only; no backend or kernel restates them.
:func:`hebm.langevin_fused` leaves one check to a backend that proves it anyway — the prior's
dtype and device, which the CPU backend's pack cache proves by its byte comparison
(``defer=True``, ``FEATURES`` ``"proves_prior"`` in :mod:`hebm.backends`).
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import torch

from .backends import _build
from .diffusion import DiffusionSchedule
from .nn import walked
from .philox import MAX_STEP, default_chain_ids, initial_noise
from .prior import HierarchicalPrior

Latents = Union[torch.Tensor, Sequence[torch.Tensor]]

#: the ``backend=`` names of :func:`hebm.langevin_fused` / :func:`hebm.reverse_diffusion`
BACKENDS = ("auto", "ref", "cpu", "triton", "cuda", "graph")
#: the ``precision=`` names (what is asked; ``info["precision"]`` reports what ran)
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
#: the ``check=`` modes (what to do when chains diverge)
CHECK_MODES = ("warn", "raise", "off")
#: largest ``n_steps`` a call takes (the kernels count steps in 32-bit words)
MAX_STEPS = 2**31 - 1


@dataclass
class LangevinArgs:
    """Checked, normalised arguments shared by every backend.

    ``u`` is flat ``[B, D]``, contiguous and detached; every per-chain parameter is a ``[B]``
    tensor of ``u``'s dtype on ``u``'s device (``t`` int64, ``chain_ids`` int64); ``u_next``/
    ``alpha``/``sigma`` are None when the kernel term is off; exactly one of ``noise``/``seed``
    is set.  ``check`` says what to do when the chains diverge (``"warn"``, ``"raise"``, ``"off"``).
    """

    u: torch.Tensor
    n_steps: int
    step_size: torch.Tensor
    noise_scale: torch.Tensor
    energy_scale: torch.Tensor
    t: Optional[torch.Tensor]
    u_next: Optional[torch.Tensor]
    alpha: Optional[torch.Tensor]
    sigma: Optional[torch.Tensor]
    seed: Optional[int]
    chain_ids: torch.Tensor
    noise: Optional[torch.Tensor]
    step_offset: int = 0
    as_list: bool = False
    check: str = "warn"
    #: Metropolis adjustment (MALA, docs/design.md §2b); ``uniforms`` ``[K, B]`` with explicit noise
    metropolis: bool = False
    uniforms: Optional[torch.Tensor] = None
    #: step adaptation: the first ``adapt_steps`` steps move each chain's δ toward ``target_accept``
    adapt_steps: int = 0
    target_accept: float = 0.574
    adapt: str = "robbins_monro"
    extras: dict = field(default_factory=dict)
    #: the prior's dtype/device check (:func:`check_prior`) left to the backend (``defer=True``);
    #: False once applied
    pending_prior: bool = field(default=False, repr=False)

    def apply_deferred_checks(self, prior: HierarchicalPrior) -> None:
        """Apply the deferred prior check here (for a backend that does not prove it itself)."""
        if self.pending_prior:
            check_prior(prior, self.u)
            self.pending_prior = False

    @property
    def B(self) -> int:
        return self.u.shape[0]

    @property
    def D(self) -> int:
        return self.u.shape[1]

    def steps(self, k0: int, k1: int) -> "LangevinArgs":
        """The same chains for steps ``k0 … k1−1`` only (exact: the noise is counter-based)."""
        noise = None if self.noise is None else self.noise[k0:k1]
        uniforms = None if self.uniforms is None else self.uniforms[k0:k1]
        return replace(self, n_steps=k1 - k0, noise=noise, uniforms=uniforms, step_offset=self.step_offset + k0)


@dataclass
class ReverseArgs:
    """A checked reverse diffusion: ũ_T ``[B, D]`` and the noise of all ``T·K`` steps
    (``noise`` ``[T·K, B, D]``, level T−1 first, or the seeded stream with step ``j·K + k``)."""

    u: torch.Tensor
    n_steps: int  # K, per level
    levels: int  # T
    noise_scale: torch.Tensor
    seed: Optional[int]
    chain_ids: torch.Tensor
    noise: Optional[torch.Tensor]
    as_list: bool = False
    check: str = "warn"
    #: every level's steps Metropolis-adjusted; ``uniforms`` ``[T·K, B]`` with explicit noise
    metropolis: bool = False
    uniforms: Optional[torch.Tensor] = None

    @property
    def B(self) -> int:
        return self.u.shape[0]

    @property
    def D(self) -> int:
        return self.u.shape[1]


def _fmt(x) -> str:
    return f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else repr(x)


class ValueChecks:
    """The value rules of one call's tensors — finite values, the signs of step_size, noise_scale
    and sigma, the ranges of t and chain_ids — stated here and nowhere else, and decided
    together.  What is read from the tensors is only each one's (min, max) (NaN propagates, so a
    finite min and max mean finite values); the rules are applied to those numbers in Python.

    On the CPU the summaries come from one call of the C++ extension's ``value_ranges`` (a loop
    over all the call's tensors; torch's reductions cost a dispatch and a host read each, most
    of a short call's fixed cost — benchmarks/NOTES.md, "one door").  Elsewhere (GPU tensors, or
    no extension) all floating values are laid end to end in one tensor, its min and max and the
    mins of the parts that must be >= 0 or > 0 read back once; only when that fails are the
    tensors looked at one by one, for the message.  Errors name the first failing tensor in the
    order they were added, the same words on both paths."""

    def __init__(self, device: torch.device):
        self.device = device  # every tensor's (the callers put them on u's device first)
        self._items: list = []  # (name, tensor, positive, allow_zero)
        self._ranges: list = []  # (name, integer tensor, lo, hi, message): lo <= values <= hi
        self._below_one: set = set()  # indices of items whose values must be < 1

    def add(self, name: str, x: torch.Tensor, *, positive: bool = False, allow_zero: bool = True,
            below_one: bool = False) -> None:
        """``below_one``: values must also be < 1 (with ``positive``: a probability in (0, 1))."""
        self._items.append((name, x, positive, allow_zero))
        if below_one:
            self._below_one.add(len(self._items) - 1)

    def add_range(self, name: str, x: torch.Tensor, lo: int, hi: int, message: str) -> None:
        """Integer values in [lo, hi]; ``message`` is the error, with ``{lo}``/``{hi}`` filled in
        from the values found and ``{n}`` with ``hi``."""
        self._ranges.append((name, x, lo, hi, message))

    def _tensors(self) -> list:
        return [x for _, x, _, _ in self._items] + [x for _, x, _, _, _ in self._ranges]

    def _refuse(self, ranges, finite: bool = False) -> None:
        """The rules, applied to each tensor's ``(min, max)`` (``ranges``, items then integer
        ranges, in the order added; None for an empty tensor): raise the first failure's error.
        ``finite``: every min and max is known to be finite (an empty tensor's (0, 0) passes)."""
        it = iter(ranges)
        for i, ((name, _, positive, allow_zero), mm) in enumerate(zip(self._items, it)):
            if mm is None or (finite and not positive):
                continue
            lo, hi = mm
            if not (finite or (math.isfinite(lo) and math.isfinite(hi))):
                raise ValueError(f"{name} contains NaN or Inf; expected finite values")
            if positive and (lo < 0 or (lo == 0 and not allow_zero)):
                raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got min {lo:g}")
            if i in self._below_one and hi >= 1:
                raise ValueError(f"{name} must lie in (0, 1), got max {hi:g}")
        for (_, _, lo, hi, message), mm in zip(self._ranges, it):
            if mm is not None and (mm[0] < lo or mm[1] > hi):
                raise ValueError(message.format(lo=int(mm[0]), hi=int(mm[1]), n=hi))

    def run(self) -> None:
        """Raise the error of the first failing tensor; one summary read when all pass."""
        xs = self._tensors()
        if not xs:
            return
        ext = _build.loaded_cpu_ops() if self.device.type == "cpu" else None
        if ext is not None:
            v = ext.value_ranges(xs)
            if all(map(math.isfinite, v)):  # the common case: only the signs and ranges to look at
                self._refuse([(v[i], v[i + 1]) for i in range(0, len(v), 2)], finite=True)
            else:
                self._refuse([(v[2 * i], v[2 * i + 1]) if x.numel() else None for i, x in enumerate(xs)])
            return
        if self._below_one or not self._combined_ok():  # (bounds above: looked at one by one)
            self.explain()
            if self._below_one:
                return
            raise AssertionError("hebm: the combined value check failed but no tensor does")  # pragma: no cover

    def _combined_ok(self) -> bool:
        parts, sizes = [], [0, 0, 0]
        if self._items:
            # [values that must be >= 0 | values that must be > 0 | the rest], flattened
            groups = ([], [], [])
            for _, x, positive, allow_zero in self._items:
                g = 2 if not positive else (0 if allow_zero else 1)
                groups[g].append(x.reshape(-1))
                sizes[g] += x.numel()
            flat = torch.cat(groups[0] + groups[1] + groups[2])  # one copy
            if flat.numel():
                parts += torch.aminmax(flat)
            if sizes[0]:
                parts.append(flat[:sizes[0]].amin())
            if sizes[1]:
                parts.append(flat[sizes[0]:sizes[0] + sizes[1]].amin())
        ints = [v for _, x, _, _, _ in self._ranges if x.numel() for v in torch.aminmax(x)]
        if not parts and not ints:
            return True
        if not ints:
            vals = torch.stack(parts).tolist()  # the one host read
        else:  # in float64 for one read: exact below 2**53, and anything above is out of range anyway
            both = [torch.stack(p).to(torch.float64) for p in (parts, ints) if p]
            vals = (both[0] if len(both) == 1 else torch.cat(both)).tolist()
        ok, k = True, 0
        if parts:
            ok = math.isfinite(vals[0]) and math.isfinite(vals[1])
            k = 2
            if sizes[0]:
                ok = ok and vals[k] >= 0
                k += 1
            if sizes[1]:
                ok = ok and vals[k] > 0
                k += 1
        for _, x, lo, hi, _ in self._ranges:
            if x.numel():
                ok = ok and lo <= vals[k] and vals[k + 1] <= hi
                k += 2
        return ok

    def explain(self) -> None:
        """Raise the error of the first failing tensor, looking at them one by one (returns when
        every value is fine)."""
        xs = self._tensors()
        self._refuse([tuple(torch.stack(torch.aminmax(x)).double().tolist()) if x.numel() else None for x in xs])


def as_int(name: str, x, what: str) -> int:
    """An integer argument: Python/NumPy ints and one-element integer tensors; floats (which
    would silently truncate) and bools are refused."""
    if type(x) is int:  # the common form (a bool's type is bool)
        return x
    if isinstance(x, bool) or (isinstance(x, torch.Tensor) and (x.numel() != 1 or x.dtype.is_floating_point
                                                                 or x.dtype == torch.bool)):
        raise TypeError(f"{name} must be {what}, got {x!r}")
    try:
        return int(operator.index(x.reshape(()) if isinstance(x, torch.Tensor) else x))
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {x!r}") from None


_CONSTANTS: dict = {}  # (B, value, dtype, device) -> [B] tensor


def constant_vector(B: int, v, dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.full((B,), v)``, one cached tensor per (B, value, dtype, device) — read-only for
    its users (the samplers only read their per-chain parameters), as the default chain ids.
    A scalar step size, noise or energy scale costs a dictionary lookup, not an allocation."""
    key = (B, v, v == 0 and math.copysign(1.0, v) < 0, dtype, device)  # -0.0 == 0.0 as a dict key
    x = _CONSTANTS.get(key)
    if x is None:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        x = _CONSTANTS[key] = torch.full((B,), v, dtype=dtype, device=device)
    return x


def _per_chain(name: str, x, u: torch.Tensor, checks: "ValueChecks", *, positive: bool = False,
               allow_zero: bool = True) -> torch.Tensor:
    """``x`` as a [B] tensor of u's dtype; a Python scalar is checked here, a tensor's values are
    queued on ``checks`` (decided together with the call's other tensors)."""
    B = u.shape[0]
    if type(x) is torch.Tensor and x.dtype is u.dtype and x.shape == (B,) and not x.requires_grad \
            and x.device == u.device:
        out = x.contiguous()  # the common form, and what the general path below makes of it
        checks.add(name, out, positive=positive, allow_zero=allow_zero)
        return out
    if not isinstance(x, torch.Tensor):
        if isinstance(x, bool):
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {x!r}")
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {x!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"{name} contains NaN or Inf; expected finite values")
        if positive and (v < 0 or (v == 0 and not allow_zero)):
            raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v:g}")
        return constant_vector(B, v, u.dtype, u.device)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must be a real scalar or a [B] = [{B}] tensor, got {_fmt(x)}")
    if x.device != u.device:
        raise ValueError(f"{name} is on {x.device} but u is on {u.device}; put them on one device")
    if x.requires_grad:
        x = x.detach()
    if x.dim() == 1 and x.shape[0] == B:
        out = x if x.dtype == u.dtype else x.to(u.dtype)
    elif x.numel() == 1 and x.dim() <= 1:
        out = x.reshape(()).to(u.dtype).expand(B)
    else:
        raise ValueError(f"{name} must be a scalar or a per-chain tensor of shape [{B}], got {_fmt(x)}")
    out = out.contiguous()
    checks.add(name, out, positive=positive, allow_zero=allow_zero)
    return out


def _int_tensor(name: str, x, B: int, device, what: str, exc=TypeError) -> torch.Tensor:
    """An integer tensor argument (``t``, ``chain_ids``): tensors, lists and NumPy arrays."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise exc(f"{name} must be {what}, got {x!r}") from None
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise exc(f"{name} must be {what}, got {_fmt(x)}")
    return x


def check_options(backend: str, precision: str) -> None:
    """The ``backend`` / ``precision`` names, checked the same way for every entry point."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_mode(check) -> str:
    if check not in CHECK_MODES:
        raise ValueError(f"check must be 'warn', 'raise' or 'off', got {check!r}")
    return check


def check_prior(prior, u: Optional[torch.Tensor] = None) -> None:
    """``prior`` is a HierarchicalPrior whose tensors share one floating dtype and device (and,
    given ``u``, the dtype and device of ``u``)."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    kinds = {(p.dtype, p.device) for p in walked(prior)[1] if isinstance(p, torch.nn.Parameter)}
    if len(kinds) > 1:
        got = ", ".join(sorted(f"{d} on {v}" for d, v in kinds))
        raise TypeError(f"prior's parameters mix dtypes/devices ({got}); convert the whole prior, e.g. prior.to(torch.float32)")
    if u is None or not kinds:
        return
    dtype, device = next(iter(kinds))
    if dtype != u.dtype:
        raise TypeError(f"u is {u.dtype} but the prior's parameters are {dtype}; convert one (e.g. prior.to({u.dtype}))")
    if device != u.device:
        raise ValueError(f"u is on {u.device} but the prior is on {device}; move one of them")


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
        raise ValueError(f"{name} must have shape [B, D] with D = {prior.D} (layers {prior.dims}), got {_fmt(u)}")
    if u.shape[0] < 1:
        raise ValueError(f"{name} has no chains (B = 0)")
    if u.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {u.dtype}")
    return (u.detach() if u.requires_grad else u).contiguous(), as_list


def _check_noise_source(u: torch.Tensor, n_steps: int, seed, noise, chain_ids, step_offset: int, what: str,
                        values: "ValueChecks"):
    """``(seed, chain_ids [B], noise)``: exactly one of an explicit noise tensor and a seed."""
    B = u.shape[0]
    if (noise is None) == (seed is None):
        raise ValueError(f"pass exactly one of noise (a {what} tensor) or seed (an int in [0, 2**64))")
    if noise is not None:
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"noise must be a tensor {what}, got {type(noise).__name__}")
        if noise.shape != (n_steps, *u.shape):
            raise ValueError(f"noise must have shape {what} = [{n_steps}, {B}, {u.shape[1]}], got {_fmt(noise)}")
        if noise.device != u.device:
            raise ValueError(f"noise is on {noise.device} but u is on {u.device}")
        if not noise.dtype.is_floating_point:
            raise TypeError(f"noise must be a floating tensor, got {noise.dtype}")
        noise = noise.detach().to(u.dtype).contiguous()
        values.add("noise", noise)
        if chain_ids is not None:
            raise ValueError("chain_ids select seeded noise; they mean nothing with an explicit noise tensor")
        return None, default_chain_ids(B, None, u.device), noise
    seed = as_int("seed", seed, "an int in [0, 2**64)")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if step_offset + n_steps > MAX_STEP + 1:
        raise ValueError(f"step_offset + n_steps = {step_offset + n_steps} exceeds 2**32: the seeded stream counts "
                         f"steps in a 32-bit word (step {MAX_STEP + 1} would repeat step 0's noise)")
    if chain_ids is not None:
        ids = _int_tensor("chain_ids", chain_ids, B, u.device, f"an integer tensor of shape [{B}]", ValueError)
        if ids.shape != (B,):
            raise ValueError(f"chain_ids must be an integer tensor of shape [{B}], got {_fmt(ids)}")
        ids = ids.to(device=u.device, dtype=torch.int64).contiguous()
        values.add_range("chain_ids", ids, 0, 2**32 - 1, "chain_ids must lie in [0, 2**32), got values in [{lo}, {hi}]")
    else:
        ids = default_chain_ids(B, None, u.device)
    return seed, ids, None


def _check_levels(prior: HierarchicalPrior, t, u: torch.Tensor, values: ValueChecks) -> Optional[torch.Tensor]:
    B = u.shape[0]
    if prior.n_levels is None:
        if t is not None:
            raise ValueError("t was given but the prior's energies are not level-conditioned (n_levels=None)")
        return None
    if t is None:
        raise ValueError(f"the prior's energies are level-conditioned: pass t (an int in [0, {prior.n_levels - 1}] "
                         f"or an integer tensor [B])")
    if type(t) is torch.Tensor and t.dtype is torch.int64 and t.shape == (B,) and t.device == u.device:
        tt = t.contiguous()  # the common form, and what the general path below makes of it
        values.add_range("t", tt, 0, prior.n_levels - 1, "t must lie in [0, {n}], got values in [{lo}, {hi}]")
        return tt
    what = f"an integer level or an integer tensor [{B}]"
    if isinstance(t, (bool, float)) and not (isinstance(t, float) and t.is_integer()):
        raise TypeError(f"t must be {what}, got {t!r}")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        v = int(t)
        if not 0 <= v < prior.n_levels:
            raise ValueError(f"t must lie in [0, {prior.n_levels - 1}], got {v}")
        return constant_vector(B, v, torch.long, u.device)
    t = _int_tensor("t", t, B, u.device, what)
    if t.device != u.device:
        raise ValueError(f"t is on {t.device} but u is on {u.device}")
    if t.dim() == 1 and t.shape[0] == B:
        tt = t.long()
    elif t.numel() == 1:
        tt = t.reshape(()).long().expand(B)
    else:
        raise ValueError(f"t must be an int or an integer tensor of shape [{B}], got {_fmt(t)}")
    tt = tt.contiguous()
    values.add_range("t", tt, 0, prior.n_levels - 1, "t must lie in [0, {n}], got values in [{lo}, {hi}]")
    return tt


def check_langevin_args(
    prior: HierarchicalPrior,
    u: Latents,
    *,
    n_steps,
    step_size,
    noise_scale=1.0,
    energy_scale=1.0,
    t=None,
    u_next=None,
    alpha=None,
    sigma=None,
    seed=None,
    chain_ids=None,
    noise=None,
    step_offset=0,
    check: str = "warn",
    metropolis=False,
    uniforms=None,
    adapt_steps=0,
    target_accept=0.574,
    adapt="robbins_monro",
    defer: bool = False,
) -> LangevinArgs:
    """Validate the sampler arguments once, with errors that name the argument.

    ``defer``: leave the prior's dtype/device check (:func:`check_prior`) to the caller
    (``pending_prior``) — for a backend that proves it anyway (the CPU backend's pack cache);
    any other caller applies it with :meth:`LangevinArgs.apply_deferred_checks` (or keeps the
    default)."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    u, as_list = flat_latents(prior, u)
    if not defer:
        check_prior(prior, u)
    values = ValueChecks(u.device)
    values.add("u", u)
    n_steps = as_int("n_steps", n_steps, "an int >= 0")
    if not 0 <= n_steps <= MAX_STEPS:
        raise ValueError(f"n_steps must be in [0, 2**31 - 1], got {n_steps}")
    step_offset = as_int("step_offset", step_offset, "an int >= 0")
    if not 0 <= step_offset <= MAX_STEP:
        raise ValueError(f"step_offset must be in [0, 2**32 - 1] (a 32-bit step counter), got {step_offset}")

    step = _per_chain("step_size", step_size, u, values, positive=True, allow_zero=True)
    c = _per_chain("noise_scale", noise_scale, u, values, positive=True, allow_zero=True)
    lam = _per_chain("energy_scale", energy_scale, u, values)
    tt = _check_levels(prior, t, u, values)

    if u_next is not None:
        if not isinstance(u_next, torch.Tensor):
            if not isinstance(u_next, (list, tuple)):
                raise TypeError(f"u_next must be a tensor [B, D] or a list of per-layer tensors, got {type(u_next).__name__}")
            u_next = torch.cat(prior.split(u_next), 1)
        if u_next.shape != u.shape:
            raise ValueError(f"u_next must have the shape of u, {tuple(u.shape)}, got {_fmt(u_next)}")
        if u_next.dtype != u.dtype or u_next.device != u.device:
            raise TypeError(f"u_next must match u's dtype and device ({u.dtype}, {u.device}), got {_fmt(u_next)}")
        u_next = (u_next.detach() if u_next.requires_grad else u_next).contiguous()
        values.add("u_next", u_next)
        if alpha is None or sigma is None:
            raise ValueError("u_next was given: the kernel term also needs alpha and sigma")
        a = _per_chain("alpha", alpha, u, values)
        s = _per_chain("sigma", sigma, u, values, positive=True, allow_zero=False)
    else:
        if alpha is not None or sigma is not None:
            raise ValueError("alpha/sigma were given without u_next: pass u_next to switch the kernel term on")
        a = s = None
    seed, ids, noise = _check_noise_source(u, n_steps, seed, noise, chain_ids, step_offset, "[K, B, D]", values)
    check = _check_mode(check)
    uniforms, adapt_steps, target_accept = _check_metropolis(u, n_steps, c, noise, metropolis, uniforms, adapt_steps,
                                                             target_accept, adapt, values)
    values.run()
    return LangevinArgs(
        u=u, n_steps=n_steps, step_size=step, noise_scale=c, energy_scale=lam, t=tt,
        u_next=u_next, alpha=a, sigma=s, seed=seed, chain_ids=ids, noise=noise,
        step_offset=step_offset, as_list=as_list, check=check, metropolis=metropolis, uniforms=uniforms,
        adapt_steps=adapt_steps, target_accept=target_accept, adapt=adapt, pending_prior=defer,
    )


#: the step-adaptation rules of ``adapt=`` (hebm.reference.adapt_step_size)
ADAPT_RULES = ("robbins_monro", "dual_averaging")


def _check_metropolis(u, n_steps: int, c: torch.Tensor, noise, metropolis, uniforms, adapt_steps, target_accept, adapt,
                      values: ValueChecks):
    """``(uniforms [K, B] or None, adapt_steps, target_accept)``: MALA's arguments
    (docs/design.md §2b) — the proposal is the ULA step with c = 1, explicit noise needs its
    uniforms, and the step adaptation needs the Metropolis test it steers by."""
    if metropolis is False and uniforms is None and type(adapt_steps) is int and adapt_steps == 0 \
            and target_accept == 0.574 and adapt == ADAPT_RULES[0]:
        return None, 0, 0.574  # the default: no test (the checks below would all pass)
    if not isinstance(metropolis, bool):
        raise TypeError(f"metropolis must be True or False, got {metropolis!r}")
    adapt_steps = as_int("adapt_steps", adapt_steps, "an int >= 0")
    if not 0 <= adapt_steps <= n_steps:
        raise ValueError(f"adapt_steps must be in [0, n_steps = {n_steps}] (the warm-up is part of the chain), "
                         f"got {adapt_steps}")
    if adapt not in ADAPT_RULES:
        raise ValueError(f"adapt must be one of {', '.join(ADAPT_RULES)}, got {adapt!r}")
    if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) \
            or not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
    if not metropolis:
        if uniforms is not None:
            raise ValueError("uniforms are the Metropolis test's; pass metropolis=True to use them")
        if adapt_steps:
            raise ValueError("adapt_steps steers the step size by the Metropolis acceptance: pass metropolis=True")
        return None, 0, float(target_accept)
    if not (c.numel() and bool((c == 1).all())):
        raise ValueError("metropolis=True needs noise_scale = 1 (MALA's proposal is the Langevin step with c = 1)")
    B = u.shape[0]
    if noise is None:
        if uniforms is not None:
            raise ValueError("uniforms go with an explicit noise tensor; with seed the test draws its own (stream 2)")
        return None, adapt_steps, float(target_accept)
    if uniforms is None:
        raise ValueError(f"metropolis=True with explicit noise needs uniforms too: a [K, B] = [{n_steps}, {B}] tensor "
                         f"in (0, 1)")
    if not isinstance(uniforms, torch.Tensor) or not uniforms.dtype.is_floating_point:
        raise TypeError(f"uniforms must be a floating tensor [K, B] = [{n_steps}, {B}], got {_fmt(uniforms)}")
    if uniforms.shape != (n_steps, B) or uniforms.device != u.device:
        raise ValueError(f"uniforms must be a tensor [K, B] = [{n_steps}, {B}] on {u.device}, got {_fmt(uniforms)}")
    uniforms = uniforms.detach().to(u.dtype).contiguous()
    values.add("uniforms", uniforms, positive=True, allow_zero=False, below_one=True)
    return uniforms, adapt_steps, float(target_accept)


def check_reverse_args(prior: HierarchicalPrior, schedule, u_T=None, *, n_steps, batch=None, seed=None, chain_ids=None,
                       noise=None, noise_scale=1.0, check: str = "warn", metropolis=False,
                       uniforms=None) -> ReverseArgs:
    """Validate a whole reverse diffusion (``hebm.reverse_diffusion``'s arguments) once.

    Without ``u_T``, ũ_T is drawn from stream 1 of the seeded noise (``batch`` chains)."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    if not isinstance(schedule, DiffusionSchedule):
        raise TypeError(f"schedule must be a hebm.DiffusionSchedule, got {type(schedule).__name__}")
    if prior.n_levels is None or prior.n_levels < schedule.T:
        raise ValueError(f"the prior must be level-conditioned with n_levels >= T = {schedule.T}, "
                         f"got n_levels={prior.n_levels}")
    check_prior(prior)
    K = as_int("n_steps", n_steps, "an int >= 0")
    if not 0 <= K <= MAX_STEPS // schedule.T:
        raise ValueError(f"n_steps must be in [0, {MAX_STEPS // schedule.T}] (T·K steps in all), got {K}")
    if u_T is None:
        if seed is None or batch is None:
            raise ValueError("pass u_T, or batch and seed to draw ũ_T from the seeded stream")
        batch = as_int("batch", batch, "an int >= 1")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        s = as_int("seed", seed, "an int in [0, 2**64)")
        if not 0 <= s < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {s}")
        p0 = next(prior.parameters())
        ids = None if chain_ids is None else _int_tensor("chain_ids", chain_ids, batch, p0.device, "an integer tensor",
                                                         ValueError)
        if ids is not None and ids.shape != (batch,):
            raise ValueError(f"chain_ids must be an integer tensor of shape [{batch}], got {_fmt(ids)}")
        u_T = initial_noise(s, batch, prior.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    elif batch is not None:
        raise ValueError("pass either u_T or batch (the batch is u_T's first dimension)")
    u, as_list = flat_latents(prior, u_T, "u_T")
    check_prior(prior, u)
    values = ValueChecks(u.device)
    values.add("u_T", u)
    c = _per_chain("noise_scale", noise_scale, u, values, positive=True, allow_zero=True)
    seed, ids, noise = _check_noise_source(u, schedule.T * K, seed, noise, chain_ids, 0, "[T*K, B, D]", values)
    uniforms, _, _ = _check_metropolis(u, schedule.T * K, c, noise, metropolis, uniforms, 0, 0.574, ADAPT_RULES[0], values)
    values.run()
    return ReverseArgs(u=u.contiguous(), n_steps=K, levels=schedule.T, noise_scale=c, seed=seed, chain_ids=ids,
                       noise=noise, as_list=as_list, check=_check_mode(check), metropolis=metropolis, uniforms=uniforms)


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


__all__ = ["BACKENDS", "CHECK_MODES", "PRECISIONS", "LangevinArgs", "ReverseArgs", "check_langevin_args", "check_options",
           "check_prior", "check_reverse_args", "flat_latents", "level_args"]


# ------------------------------------------------------------------------------ results
class DivergenceError(FloatingPointError):
    """Chains of a sampler call diverged to NaN/Inf (raised with ``check="raise"``)."""


_warned: set = set()


def divergence_hint(a: LangevinArgs) -> str:
    """Which knob to turn when chains diverge: the Langevin step is unstable once δ² times the
    target's curvature passes ~4; the Gaussian term contributes 1, the kernel term a²/σ²."""
    d2 = float((a.step_size * a.step_size).max())
    if a.u_next is not None:
        stiff = float((a.step_size * a.step_size * a.alpha * a.alpha / (a.sigma * a.sigma)).max())
        if stiff > 2.0:
            return (f"the recovery-kernel term is too stiff for the step: max δ²·a²/σ² = {stiff:.3g} (unstable above "
                    f"~4); lower step_size or raise sigma")
    return f"lower step_size (max δ = {d2 ** 0.5:.3g}) or the energy's scale (energy_scale)"


def check_result(a: LangevinArgs, out: torch.Tensor, what: str = "langevin") -> None:
    """Chains that ended at NaN/Inf are never returned silently: a warning naming the knob
    (once per call site and cause), or :class:`DivergenceError` with ``check="raise"``."""
    if a.check == "off":
        return
    # the sum is finite when every value is (NaN and ±Inf propagate): one reduction and one host
    # read, where isfinite().all() is a composite of four ops.  A sum can also overflow from
    # finite values, so a non-finite sum is only a suspicion, settled by the count below.
    if math.isfinite(out.sum().item()):
        return
    n_bad = int((~torch.isfinite(out)).any(1).sum())
    if n_bad == 0:
        return
    msg = (f"hebm.{what}: {n_bad} of {out.shape[0]} chains diverged to NaN/Inf within {a.n_steps} steps; "
           f"{divergence_hint(a)}.  (check='raise' makes this an error, check='off' silences it)")
    if a.check == "raise":
        raise DivergenceError(msg)
    key = (what, msg.split(";")[1][:60])
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def finish(prior: HierarchicalPrior, a, out: torch.Tensor, info: dict, return_info: bool):
    """The result in the caller's structure (a list of layers if ``u`` came as one), detached."""
    if out.requires_grad:  # (a tensor without autograd history is returned as is)
        out = out.detach()
    res = prior.split(out) if a.as_list else out
    return (res, info) if return_info else res


__all__ += ["DivergenceError", "check_result", "finish"]
