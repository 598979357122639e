"""The value rules of one call's tensors, decided together, and the small conversions the checks share.

The checks are meant to cost microseconds: numbers are checked as numbers, the values of all
tensor arguments are decided together (:class:`ValueChecks`: one summary of each tensor's min and
max, one host read), and nothing here reads the network weights beyond their dtype and device.
No backend or kernel restates a rule.  This module imports no backend: the fused entry points
hand it the extension's value summaries (``summarize``).
"""
from __future__ import annotations

import math
import operator

import torch


def fmt(x) -> str:
    """How an argument is named in an error: a tensor by its shape, dtype and device."""
    return f"{tuple(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else repr(x)


class ValueChecks:
    """The value rules of one call's tensors — finite values, the signs of step_size, noise_scale
    and sigma, the ranges of t and chain_ids — stated here and nowhere else, and decided
    together.  What is read from the tensors is only each one's (min, max) (NaN propagates, so a
    finite min and max mean finite values); the rules are applied to those numbers in Python.

    The fused entry points pass the C++ extension's ``value_ranges`` for CPU tensors: one call
    summarises all the call's tensors, where torch's reductions cost a dispatch and a host read
    each, most of a short call's fixed cost (benchmarks/NOTES.md, "One door into each kernel").  Elsewhere (GPU
    tensors, the reference) all floating values are laid end to end in one tensor, its min and max and the
    mins of the parts that must be >= 0 or > 0 read back once; only when that fails are the
    tensors looked at one by one, for the message.  Errors name the first failing tensor in the
    order they were added, the same words on both paths."""

    def __init__(self, device: torch.device):
        self.device = device  # every tensor's (the callers put them on u's device first)
        self._items: list = []  # (name, tensor, positive, allow_zero)
        self._ranges: list = []  # (name, integer tensor, lo, hi, message): lo <= values <= hi
        self._below_one: set = set()  # indices of items whose values must be < 1

    def add(self, name: str, x: torch.Tensor, positive: bool = False, allow_zero: bool = True,
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

    def _finite_ok(self, v) -> bool:
        """With every (min, max) of ``v`` finite: whether the signs, the (0, 1) bounds and the
        integer ranges all hold (the messages of a failure are :meth:`_refuse`'s)."""
        for i, (_, _, positive, allow_zero) in enumerate(self._items):
            if positive and (v[2 * i] < 0 or (v[2 * i] == 0 and not allow_zero)):
                return False
        for i in self._below_one:
            if v[2 * i + 1] >= 1:
                return False
        k = 2 * len(self._items)
        for _, _, lo, hi, _ in self._ranges:
            if v[k] < lo or v[k + 1] > hi:
                return False
            k += 2
        return True

    def run(self, summarize=None) -> None:
        """Raise the error of the first failing tensor; one summary read when all pass.
        ``summarize(tensors) -> [min_0, max_0, min_1, …]`` (NaN for both where a tensor holds a
        NaN): the C++ extension's ``value_ranges``, for CPU tensors, when the caller has it."""
        xs = self._tensors()
        if not xs:
            return
        if self.device.type == "meta":  # shapes only: there are no values to check, or to sample from
            name = (self._items or self._ranges)[0][0]
            raise ValueError(f"{name} is on the meta device, which holds no values; put the chains and the prior "
                             f"on a device that does (e.g. cpu or cuda)")
        if summarize is not None and self.device.type == "cpu":
            v = summarize(xs)
            if all(map(math.isfinite, v)) and self._finite_ok(v):  # the common case: signs and ranges hold
                return
            # (the rules again, an empty tensor's (0, 0) left out, for the first failure's message)
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
    key = (B, v, dtype, device) if v else (B, v, math.copysign(1.0, v), dtype, device)  # -0.0 == 0.0 as a key
    x = _CONSTANTS.get(key)
    if x is None:
        if len(_CONSTANTS) > 256:
            _CONSTANTS.clear()
        x = _CONSTANTS[key] = torch.full((B,), v, dtype=dtype, device=device)
    return x



def int_tensor(name: str, x, B: int, device, what: str, exc=TypeError) -> torch.Tensor:
    """An integer tensor argument (``t``, ``chain_ids``): tensors, lists and NumPy arrays."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise exc(f"{name} must be {what}, got {x!r}") from None
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise exc(f"{name} must be {what}, got {fmt(x)}")
    return x



__all__ = ["ValueChecks", "as_int", "constant_vector", "fmt", "int_tensor"]
