"""Prior → flat buffers: the one packing every fused backend (C++, CUDA, Triton) reads.

What the kernels compute per step is fixed by the reference (:mod:`hebm.reference`); this module
only lays the networks out.  Spectral norm and the level-conditioning are resolved here, so a
kernel sees plain MLPs:

* MLP order: conditionals ``g_1 … g_{L-1}`` (``g_i``: z_{i+1} → [μ_i | ℓ_i], 0-based
  ``conditionals[i]`` reads layer i+1 and writes layer i), then energies ``f_1 … f_L`` (absent for
  a plain Gaussian prior).
* Each MLP: widths ``[w_0 = in, …, w_n = out]``; hidden layers are followed by the MLP's
  activation (code from :data:`hebm.nn.ACTIVATION_CODES`, parameter = LeakyReLU slope), the
  last layer by nothing.
* Each Linear layer: weight ``W`` ``[out, in]`` row-major (spectral norm already divided in) and a
  bias *table* ``[rows, out]``: ``rows = n_levels`` for the hidden layers of a level-conditioned
  energy (row ℓ = static bias + level bias of level ℓ), else 1.  A layer without bias gets a
  zero table, so kernels never branch on it.

Flat form (``PackedPrior.params`` / ``.layout`` / ``.mlps``), for kernels that take raw pointers:

* ``params``: every W then its bias table, layer by layer, MLP by MLP, in u's dtype;
* ``layout``: int64 ``[n_layers_total, 5]`` rows ``(in, out, w_offset, b_offset, b_rows)``;
* ``mlps``: int64 ``[n_mlps, 3]`` rows ``(first_layer_row, n_layers, act_code)`` and
  ``act_params``: float64 ``[n_mlps]``.

The one pack cache (:func:`packed_prior`, :func:`network_support`): per prior, the packing and
the verdict on whether the kernels take its networks are computed once and reused while

* the *structure* is unchanged — the same module objects and types, activations, σ_min and the
  clamp, and the same parameter/buffer tensors (identity, shape, dtype, device): a replaced module
  or parameter starts afresh (seen through PyTorch's registration hooks, so an unchanged prior
  costs no walk of its modules); and
* the *values* are unchanged — every call compares the parameters and buffers with a copy of the
  values the packing was made from.  This is what makes the cache correct for writes PyTorch's
  version counters do not see (``p.data.mul_(…)``, an EMA update), as well as for optimiser steps,
  ``load_state_dict`` and ``copy_`` under ``no_grad``.  The comparison reads the weights once
  (microseconds for the small priors; ~1 ms for 10 MB of weights on a CPU).
"""
from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch

from . import _build
from ..args import check_prior
from ..nn import ACTIVATION_CODES, MLP, Activation, SNLinear, structure_generation, walk, walked
from ..prior import HierarchicalPrior


_TOKENS = itertools.count(1)  # one per pack, never reused (the kernels may cache by it)


@dataclass
class PackedMLP:
    widths: tuple
    act_code: int
    act_param: float
    weights: list  # [out, in] tensors
    biases: list  # [rows, out] tensors

    @property
    def n_layers(self) -> int:
        return len(self.weights)


@dataclass
class PackedPrior:
    dims: tuple
    offsets: tuple  # start column of each layer in the flat [B, D] state
    sigma_min: float
    sigma_clamp: float  # c of σ = exp(c·tanh(ℓ/c)) + σ_min; 0: no clamp
    n_levels: int  # 1 for an unconditional prior
    conditionals: list  # PackedMLP, L-1 of them
    energies: list  # PackedMLP, L of them (empty for a plain Gaussian prior)
    params: torch.Tensor = field(repr=False, default=None)
    layout: torch.Tensor = field(repr=False, default=None)
    mlps: torch.Tensor = field(repr=False, default=None)
    act_params: torch.Tensor = field(repr=False, default=None)

    derived: dict = field(repr=False, default_factory=dict)  # per-backend structures made from this pack

    @property
    def L(self) -> int:
        return len(self.dims)

    def op_structure(self) -> dict:
        """The network description the compiled ops take (``hebm.backends.ops``), as Python
        lists (the op's schema) and as flat tensors (``tables``: the CPU extension's direct
        binding) — built once per pack, never per call."""
        st = self.derived.get("op")
        if st is None:
            st = self.derived["op"] = dict(
                params=self.params, dims=[int(d) for d in self.dims],
                layout=[int(x) for x in self.layout.reshape(-1).tolist()],
                mlps=[int(x) for x in self.mlps.reshape(-1).tolist()],
                act_params=[float(x) for x in self.act_params.tolist()], has_energy=bool(self.has_energy),
                n_levels=int(self.n_levels), sigma_min=float(self.sigma_min), sigma_clamp=float(self.sigma_clamp),
                token=next(_TOKENS),
                # layout, mlps, act_params as flat tensors: the CPU extension's direct binding takes these
                tables=(self.layout.reshape(-1).contiguous(), self.mlps.reshape(-1).contiguous(),
                        self.act_params.reshape(-1).contiguous()))
        return st

    @property
    def D(self) -> int:
        return sum(self.dims)

    @property
    def has_energy(self) -> bool:
        return bool(self.energies)

    def all_mlps(self) -> list:
        return list(self.conditionals) + list(self.energies)

    def n_params(self) -> int:
        """Weights of every MLP (the FLOP model of docs/design.md §5 counts 4·B·params per step);
        computed once per pack (it is asked on every call, for the chunking)."""
        n = self.derived.get("n_params")
        if n is None:
            n = self.derived["n_params"] = sum(int(w.numel()) for m in self.all_mlps() for w in m.weights)
        return n


@torch.no_grad()
def pack_mlp(mlp: MLP, dtype: torch.dtype, device) -> PackedMLP:
    n = len(mlp.layers)
    level_table = mlp.level_bias_table()
    level_parts = None
    if level_table is not None:
        level_parts = torch.split(level_table, mlp.hidden_widths, dim=1)
    weights, biases = [], []
    for j, layer in enumerate(mlp.layers):
        w = layer.effective_weight().detach().to(device=device, dtype=dtype).contiguous()
        out = w.shape[0]
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(out, device=w.device, dtype=w.dtype)
        b = b.to(device=device, dtype=dtype).reshape(1, out)
        if level_parts is not None and j < n - 1:
            b = b + level_parts[j].detach().to(device=device, dtype=dtype)
        weights.append(w)
        biases.append(b.contiguous())
    return PackedMLP(tuple(mlp.widths), mlp.act.code, mlp.act.param, weights, biases)


@torch.no_grad()
def pack_prior(prior: HierarchicalPrior, dtype: Optional[torch.dtype] = None, device=None) -> PackedPrior:
    """Pack ``prior`` for the kernels (weights in ``dtype`` on ``device``; defaults: the prior's)."""
    p0 = next(prior.parameters(), None)
    dtype = dtype or (p0.dtype if p0 is not None else torch.float32)
    device = device or (p0.device if p0 is not None else "cpu")
    conds = [pack_mlp(m, dtype, device) for m in prior.conditionals]
    ens = [pack_mlp(m, dtype, device) for m in prior.energies] if prior.energies is not None else []
    offsets, o = [], 0
    for d in prior.dims:
        offsets.append(o)
        o += d
    packed = PackedPrior(
        dims=tuple(prior.dims), offsets=tuple(offsets), sigma_min=prior.sigma_min, sigma_clamp=prior.sigma_clamp,
        n_levels=prior.n_levels or 1, conditionals=conds, energies=ens,
    )
    _flatten(packed, dtype, device)
    return packed


def _flatten(packed: PackedPrior, dtype, device) -> None:
    chunks, layout, mlps, act_params = [], [], [], []
    off = 0
    for m in packed.all_mlps():
        mlps.append((len(layout), m.n_layers, m.act_code))
        act_params.append(m.act_param)
        for w, b in zip(m.weights, m.biases):
            layout.append((w.shape[1], w.shape[0], off, off + w.numel(), b.shape[0]))
            chunks += [w.reshape(-1), b.reshape(-1)]
            off += w.numel() + b.numel()
    packed.params = torch.cat(chunks).contiguous() if chunks else torch.zeros(0, dtype=dtype, device=device)
    packed.layout = torch.tensor(layout, dtype=torch.int64).reshape(-1, 5)
    packed.mlps = torch.tensor(mlps, dtype=torch.int64).reshape(-1, 3)
    packed.act_params = torch.tensor(act_params, dtype=torch.float64)


def supported_network(prior) -> Optional[str]:
    """None if every network of ``prior`` is in the family the kernels take, else which module
    is not (by its place in the prior) and what the kernels take instead."""
    if not isinstance(prior, HierarchicalPrior):
        return f"the fused kernels take a hebm.HierarchicalPrior, got {type(prior).__name__}"
    for meth in ("T", "conditional", "energy", "energy_terms", "log_density", "forward"):
        if getattr(type(prior), meth) is not getattr(HierarchicalPrior, meth):
            return f"{type(prior).__name__} overrides {meth}(); the fused kernels implement HierarchicalPrior's own math"
    named = [(f"conditionals[{i}]", m) for i, m in enumerate(prior.conditionals)]
    named += [(f"energies[{i}]", m) for i, m in enumerate(prior.energies or [])]
    for where, m in named:
        if type(m) is not MLP:
            return (f"prior.{where} is a {type(m).__module__}.{type(m).__qualname__}, not a hebm.nn.MLP "
                    f"(the kernels take MLPs of hebm.nn.SNLinear layers and hebm.nn.Activation)")
        for j, layer in enumerate(m.layers):
            if type(layer) is not SNLinear:
                return f"prior.{where}.layers[{j}] is a {type(layer).__qualname__}, not a hebm.nn.SNLinear"
        if type(m.act) is not Activation:
            return (f"prior.{where}.act is a {type(m.act).__module__}.{type(m.act).__qualname__}; the kernels take "
                    f"hebm.nn.Activation ({', '.join(ACTIVATION_CODES)})")
        if m.act.name not in ACTIVATION_CODES:
            return f"activation {m.act.name!r} of prior.{where} is not supported by the kernels"
        for name, _ in m.named_children():
            if name not in ("layers", "act", "level_net"):
                return f"prior.{where} has an extra submodule {name!r} the kernels would ignore"
    for name, _ in prior.named_children():
        if name not in ("conditionals", "energies"):
            return f"the prior has an extra submodule {name!r} the kernels would ignore"
    return None


# ---------------------------------------------------------------------------------- the cache
# Structural changes (a module, parameter or buffer assigned anywhere) are seen through PyTorch's
# global registration hooks (hebm.nn.structure_generation): a cache entry re-reads its prior's
# structure only when the generation moved.  The math-defining attributes that are not modules
# (activation names, widths, σ_min, ...) are read-only (hebm.nn.fixed).  So the common call costs
# one comparison of the generation and one of the values.
def structure_signature(prior, walked=None) -> tuple:
    """What the packing depends on besides the values: module objects and types, activation specs,
    σ_min and the soft clamp, and the identity/shape/dtype/device of every tensor."""
    mods, tens = walked or walk(prior)
    return (tuple((id(m), type(m)) for m in mods), tuple(m.spec() for m in mods if isinstance(m, Activation)),
            getattr(prior, "sigma_min", None), getattr(prior, "sigma_clamp", None), getattr(prior, "n_levels", None),
            tuple((id(t), t.shape, t.dtype, t.device) for t in tens))


def _flat_values(tensors: list) -> Optional[torch.Tensor]:
    """All values in one flat tensor (one C++ call); None when they cannot be flattened together.
    Called under no_grad: flattening parameters then records no graph, so no detach is needed."""
    if not tensors:
        return torch.zeros(0)
    try:
        flat = torch._C._nn.flatten_dense_tensors(tensors)
    except (RuntimeError, TypeError):  # mixed dtypes/devices: such a prior is repacked every call
        return None
    # one tensor comes back as a view of itself, which would always "equal" the current values
    return flat.clone() if len(tensors) == 1 else flat


def _same_values(tensors: list, snapshot: Optional[torch.Tensor]) -> tuple[bool, bool]:
    """``(same, proven)``: whether the tensors still hold the values ``snapshot`` was flattened
    from, and whether that answer also proved every tensor to be of the snapshot's dtype on the
    CPU.  CPU priors: the CPU extension compares the bytes in place (~5 µs for the toy problem
    instead of ~40 µs for flatten + equal, the larger part of a short call's fixed cost), and
    only compares tensors of the snapshot's dtype on the CPU; otherwise flatten + equal."""
    if snapshot is None:
        return False, False
    ext = _build.loaded_cpu_ops()  # never builds: the cpu backend loads it before it packs
    if ext is not None and snapshot.device.type == "cpu":
        same = ext.same_bytes(tensors, snapshot)
        if same >= 0:
            return bool(same), same == 1
    with torch.no_grad():
        vals = _flat_values(tensors)
    return vals is not None and torch.equal(vals, snapshot), False


@dataclass
class _Entry:
    signature: tuple
    reason: Optional[str]  # why the kernels do not take this network (None: they do)
    tensors: list  # the prior's parameters and buffers
    generation: int
    values: Optional[torch.Tensor] = None  # copy of the values the packs were made from
    packs: dict = field(default_factory=dict)  # (dtype, device) -> PackedPrior


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _entry(prior) -> _Entry:
    gen = structure_generation()
    e = _CACHE.get(prior)
    if e is not None and e.generation == gen:
        return e
    tree = walked(prior)
    sig = structure_signature(prior, tree)
    with _LOCK:
        e = _CACHE.get(prior)
        if e is None or e.signature != sig:
            e = _CACHE[prior] = _Entry(sig, supported_network(prior), tree[1], gen)
        else:
            e.generation = gen
        return e


def network_support(prior) -> Optional[str]:
    """:func:`supported_network`, decided once per prior structure."""
    return _entry(prior).reason


def packed_prior(prior: HierarchicalPrior, dtype: torch.dtype, device, *,
                 like: Optional[torch.Tensor] = None) -> PackedPrior:
    """``pack_prior(prior, dtype, device)``, cached (rules in the module docstring).

    ``like``: a tensor whose dtype and device every parameter must share — the check of
    :func:`hebm.args.check_prior`, deferred to here by :func:`hebm.langevin_fused` for the CPU
    backend.  The byte comparison proves it for free when the values are unchanged (it compares
    only tensors of the snapshot's dtype on the CPU); otherwise ``check_prior`` runs, with its
    errors."""
    e = _entry(prior)
    if e.reason is not None:
        raise ValueError(f"the fused kernels cannot take this prior: {e.reason}")
    if not isinstance(device, torch.device):
        device = torch.device(device)
    with _LOCK:
        same, proven = _same_values(e.tensors, e.values)
        if like is not None and not (proven and e.values.dtype == like.dtype and like.device.type == "cpu"):
            check_prior(prior, like)
        if not same:
            with torch.no_grad():
                e.values, e.packs = _flat_values(e.tensors), {}
        pk = e.packs.get((dtype, device))
        if pk is None:
            pk = e.packs[(dtype, device)] = pack_prior(prior, dtype=dtype, device=device)
    return pk


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
