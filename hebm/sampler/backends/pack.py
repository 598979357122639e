"""The prior's networks as the kernels take them: the structure, decided once, and the values, read on demand.

What the kernels compute per step is fixed by the reference (:mod:`hebm.sampler.reference`); this module
only says where each network's numbers are.  :func:`read` walks the prior once and returns

* a :class:`Network` — the structure: latent sizes, σ_min and the clamp, the levels, and per MLP
  its widths, activation, bias, spectral norm and level source, with the op's tables built from
  them and the verdict whether the kernels take it (:func:`supported`).  A Network is made once
  per structure (a dictionary keyed by these values: no module, weight or hook is involved), so a
  second prior of the same shape, or the same prior again, reuses it;
* the values — one tensor per *slot*, in slot order: for each MLP (conditionals ``g_1 … g_{L−1}``,
  then energies ``f_1 … f_L``) its level bias table ``[n_levels, Σ hidden]`` if it is
  level-conditioned, then per Linear layer its weight ``W [out, in]`` (spectral norm divided in:
  :meth:`hebm.prior.nn.SNLinear.effective_weight`) and its bias ``[out]`` if it has one.  These are the
  parameters themselves (no copy) where nothing is computed, so reading them costs the walk and
  the level tables' three small ops per level-conditioned MLP.

The op's layout table (``Network.layout``, int64 ``[n_layers, 7]``) has per Linear layer
``(in, out, w_slot, b_slot, b_rows, lv_slot, lv_col)``: the slots of W and of the bias (−1: none);
``b_rows`` = n_levels for the hidden layers of a level-conditioned MLP, else 1; its level rows are
columns ``lv_col … lv_col+out−1`` of the table in ``lv_slot`` (−1: none).  A layer's bias table row
r is ``bias + level[r]`` (bias 0 where there is none) — what :func:`pack_prior` computes in torch
and the compiled ops in C++, the same IEEE additions.  ``Network.mlps``: ``(first_layer, n_layers,
act_code)`` per MLP; ``act_params`` the LeakyReLU slopes.

A :class:`hebm.Sampler` reads once (at build and :meth:`~hebm.Sampler.refresh`) and keeps a copy
of the values; :func:`hebm.langevin_fused` reads at every call, so whatever happened to the
weights in between (``.data`` writes, ``load_state_dict``, optimiser steps, ``.to(dtype)``) is
what it samples.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import torch

from ...prior.hierarchical import HierarchicalPrior, LayerStructure
from ...prior.nn import ACTIVATION_CODES, MLP, Activation, SNLinear

LAY_NCOLS = 7  # columns of Network.layout (csrc/hebm_kernel.h LayoutCol)
_TOKENS = itertools.count(1)  # one per copy of the values (Sampler), never reused: the CPU kernel caches by it


@dataclass(frozen=True)
class MLPShape:
    """One MLP's structure: widths ``[in, h_1, …, out]``, activation code and parameter, which
    layers have a bias, and its level source (None, ``"table"``, ``"embedding"``).  (Spectral norm
    is not structure: the kernels read the normalised weights.)"""

    widths: tuple
    act: int
    act_param: float
    biases: tuple  # per Linear layer: has a bias
    level: Optional[str]

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1


@dataclass(eq=False)
class Network(LayerStructure):
    """The structure of a prior's networks (no values), and the op's tables made from it."""

    dims: tuple
    sigma_min: float
    sigma_clamp: float  # c of σ = exp(c·tanh(ℓ/c)) + σ_min; 0: no clamp
    n_levels: int  # 1 for an unconditional prior
    conditionals: tuple  # MLPShape, L−1 of them
    energies: tuple  # MLPShape, L of them (empty for a plain Gaussian prior)
    reason: Optional[str]  # why the kernels do not take it (None: they do)
    layout: list = field(repr=False, default=None)  # [n_layers · 7], flattened (module docstring)
    mlps: list = field(repr=False, default=None)  # [n_mlps · 3], flattened
    act_params: list = field(repr=False, default=None)
    n_slots: int = 0
    n_params: int = 0  # weights of every MLP (the FLOP model of docs/design.md §5: 4·B·params per step)
    derived: dict = field(repr=False, default_factory=dict)  # per backend: what it makes of the structure

    def all_mlps(self) -> tuple:
        return self.conditionals + self.energies


@dataclass(eq=False)
class Pack:
    """A prior's networks for the kernels: the structure, the values (slot tensors), their dtype
    and device, the prior module itself, and ``token`` — nonzero when the values are a private copy that never changes
    (a :class:`hebm.Sampler`'s), so a kernel may keep what it derives from them under it."""

    network: Network
    values: list
    dtype: torch.dtype
    device: torch.device
    token: int = 0
    prior: object = None  # the module (for the backends that run it: ref, graph)
    derived: dict = field(repr=False, default_factory=dict)  # per backend: what it makes of these values


_NETWORKS: dict = {}  # structure key -> Network


def _network(key: tuple) -> Network:
    net = _NETWORKS.get(key)
    if net is None:
        if len(_NETWORKS) > 256:
            _NETWORKS.clear()
        net = _NETWORKS[key] = _build(*key)
    return net


def _build(dims, sigma_min, sigma_clamp, n_levels, conds, energies, reason) -> Network:
    conds, energies = tuple(MLPShape(*m) for m in conds), tuple(MLPShape(*m) for m in energies)
    layout, mlps, acts, slot, n_params = [], [], [], 0, 0
    for m in conds + energies:
        mlps += [len(layout) // LAY_NCOLS, m.n_layers, m.act]
        acts.append(m.act_param)
        lv_slot = -1
        if m.level is not None:
            lv_slot, slot = slot, slot + 1
        col = 0
        for j, (fan_in, fan_out) in enumerate(zip(m.widths[:-1], m.widths[1:])):
            hidden = j < m.n_layers - 1
            w_slot, slot = slot, slot + 1
            b_slot = -1
            if m.biases[j]:
                b_slot, slot = slot, slot + 1
            leveled = hidden and lv_slot >= 0
            layout += [fan_in, fan_out, w_slot, b_slot, n_levels if leveled else 1, lv_slot if leveled else -1,
                       col if leveled else 0]
            if hidden:
                col += fan_out
            n_params += fan_in * fan_out
    return Network(dims=dims, sigma_min=sigma_min, sigma_clamp=sigma_clamp, n_levels=n_levels or 1,
                   conditionals=conds, energies=energies, reason=reason, layout=layout, mlps=mlps, act_params=acts,
                   n_slots=slot, n_params=n_params)


_PRIOR_MATH = ("T", "conditional", "energy", "energy_terms", "log_density", "forward")


def _mlp(m, where: str, values: list, with_values: bool):
    """``(the fields of its MLPShape, as a tuple, or None, why not)`` of one network, its value
    tensors appended to ``values``.  (Plain tuples: this runs at every langevin_fused call, and the
    structure key is hashed; the Network is made from them once per structure.)"""
    if type(m) is not MLP:
        return None, (f"prior.{where} is a {type(m).__module__}.{type(m).__qualname__}, not a hebm.prior.nn.MLP "
                      f"(the kernels take MLPs of hebm.prior.nn.SNLinear layers and hebm.prior.nn.Activation)")
    mods = m._modules
    act = mods["act"]
    if type(act) is not Activation:
        return None, (f"prior.{where}.act is a {type(act).__module__}.{type(act).__qualname__}; the kernels take "
                      f"hebm.prior.nn.Activation ({', '.join(ACTIVATION_CODES)})")
    code = ACTIVATION_CODES.get(act.name)
    if code is None:
        return None, f"activation {act.name!r} of prior.{where} is not supported by the kernels"
    for name in mods:
        if name not in ("layers", "act", "level_net"):
            return None, f"prior.{where} has an extra submodule {name!r} the kernels would ignore"
    level = None if m.n_levels is None else m.level_source
    if with_values and level is not None:
        values.append(m.level_bias_table())  # (read() runs under no_grad)
    widths, biases = [None], []
    for j, layer in enumerate(mods["layers"]._modules.values()):
        if type(layer) is not SNLinear:
            return None, f"prior.{where}.layers[{j}] is a {type(layer).__qualname__}, not a hebm.prior.nn.SNLinear"
        w, b = layer._parameters["weight"], layer._parameters["bias"]
        if layer.spectral_norm and with_values:
            w = layer.effective_weight()
        biases.append(b is not None)
        if with_values:
            values.append(w)
            if b is not None:
                values.append(b)
        out, fan_in = w.shape
        if widths[-1] is not None and widths[-1] != fan_in:
            return None, f"prior.{where}.layers[{j}]'s input width {fan_in} does not follow {widths[-1]}"
        widths[-1:] = [fan_in, out]
    if len(widths) < 2:
        return None, f"prior.{where} has no layers"
    return (tuple(widths), code, float(act.param), tuple(biases), level), None


def read(prior, *, values: bool = True) -> tuple:
    """``(Network, slot tensors)`` of ``prior`` (slot tensors empty with ``values=False``): one walk
    over its networks.  A prior the kernels cannot take still gets a Network, whose ``reason``
    says why."""
    if not isinstance(prior, HierarchicalPrior):
        raise TypeError(f"prior must be a hebm.HierarchicalPrior, got {type(prior).__name__}")
    reason = None
    for meth in _PRIOR_MATH:
        if getattr(type(prior), meth) is not getattr(HierarchicalPrior, meth):
            reason = f"{type(prior).__name__} overrides {meth}(); the fused kernels implement HierarchicalPrior's own math"
            break
    if reason is None:
        for name in prior._modules:
            if name not in ("conditionals", "energies"):
                reason = f"the prior has an extra submodule {name!r} the kernels would ignore"
                break
    vals: list = []
    shapes = ([], [])
    if reason is None:
        threads = torch.get_num_threads() if values and prior.n_levels is not None else 1
        if threads > 1:
            # The level bias tables are products as small as [n_levels, 32] × [32, 32]: one thread.
            # A threaded GEMM waits for its whole team, and on a busy machine — or while the C++
            # kernel's workers still spin after a call — that wait measured 7–15 ms, against ~5 µs
            # on one thread (benchmarks/NOTES.md, "The Sampler").
            torch.set_num_threads(1)
        try:
            with torch.no_grad():  # (the values are read, never differentiated)
                reason = _read_mlps(prior, vals, shapes, values)
        finally:
            if threads > 1:
                torch.set_num_threads(threads)
    if reason is not None:
        vals, shapes = [], ([], [])
    key = (tuple(prior.dims), float(prior.sigma_min), float(prior.sigma_clamp), prior.n_levels, tuple(shapes[0]),
           tuple(shapes[1]), reason)
    return _network(key), vals


def _read_mlps(prior, vals: list, shapes: tuple, values: bool) -> Optional[str]:
    """Walk the conditionals then the energies (:func:`_mlp`); the first reason the kernels cannot
    take one, or None."""
    energies = prior._modules.get("energies")
    groups = (("conditionals", prior._modules["conditionals"]._modules.values()),
              ("energies", () if energies is None else energies._modules.values()))
    for g, (what, mods) in enumerate(groups):
        for i, m in enumerate(mods):
            shape, why = _mlp(m, f"{what}[{i}]", vals, values)
            if why is not None:
                return why
            shapes[g].append(shape)
    return None


def supported(network: Network) -> Optional[str]:
    """None if the kernels take every network of the prior, else which one they do not, and why."""
    return network.reason


def kind_of(values: list, default=None) -> tuple:
    """``(dtype, device)`` shared by the slot tensors, or the error that they mix (the words of
    :func:`hebm.sampler.checks.prior_kind`)."""
    if not values:
        return default if default is not None else (None, None)
    t0 = values[0]
    dtype, device = t0.dtype, t0.device
    for t in values:
        if t.dtype is not dtype or t.device != device:
            got = ", ".join(sorted({f"{x.dtype} on {x.device}" for x in values}))
            raise TypeError(f"prior's parameters mix dtypes/devices ({got}); convert the whole prior, e.g. "
                            f"prior.to(torch.float32)")
    return dtype, device


def snapshot(network: Network, values: list, dtype, device, prior=None) -> Pack:
    """A :class:`Pack` holding a private copy of ``values`` (one flat buffer, viewed per slot):
    later changes of the prior do not reach it, and its token lets a kernel keep what it derives."""
    with torch.no_grad():
        if values:
            flat = torch._utils._flatten_dense_tensors([v.detach() for v in values])
            if len(values) == 1:
                flat = flat.clone()  # one tensor flattens to a view of itself
            copies = list(torch._utils._unflatten_dense_tensors(flat, values))
        else:
            copies = []
    return Pack(network, copies, dtype, device, token=next(_TOKENS), prior=prior)


# ------------------------------------------------------------------------------ the torch form
@dataclass
class PackedMLP:
    widths: tuple
    act_code: int
    act_param: float
    weights: list  # [out, in] tensors
    biases: list  # [rows, out] bias tables

    @property
    def n_layers(self) -> int:
        return len(self.weights)


@dataclass
class PackedPrior(LayerStructure):
    """Every MLP as plain weights and bias tables (torch tensors): what the kernels compute with,
    in the form the Triton launcher and the plain benchmark loop build on."""

    dims: tuple
    sigma_min: float
    sigma_clamp: float
    n_levels: int
    conditionals: list  # PackedMLP, L−1 of them
    energies: list  # PackedMLP, L of them (empty for a plain Gaussian prior)

    def all_mlps(self) -> list:
        return list(self.conditionals) + list(self.energies)


@torch.no_grad()
def unpack(pack: Pack) -> PackedPrior:
    """The slot tensors of ``pack`` as per-MLP weights and bias tables (``bias + level[r]`` per row)."""
    net, vals = pack.network, pack.values
    lay = net.layout
    mlps = []
    for k, m in enumerate(net.all_mlps()):
        first = net.mlps[3 * k]
        ws, bs = [], []
        for j in range(m.n_layers):
            fan_in, fan_out, w_slot, b_slot, rows, lv_slot, lv_col = lay[(first + j) * LAY_NCOLS:(first + j + 1) * LAY_NCOLS]
            ws.append(vals[w_slot].detach())
            b = (vals[b_slot].detach() if b_slot >= 0 else torch.zeros(fan_out, dtype=pack.dtype, device=pack.device))
            b = b.reshape(1, fan_out)
            if lv_slot >= 0:
                b = b + vals[lv_slot].detach()[:, lv_col:lv_col + fan_out]
            bs.append(b.contiguous())
        mlps.append(PackedMLP(m.widths, m.act, m.act_param, ws, bs))
    L = net.L
    return PackedPrior(net.dims, net.sigma_min, net.sigma_clamp, net.n_levels, mlps[:L - 1], mlps[L - 1:])


def of(prior: HierarchicalPrior) -> Pack:
    """A :class:`Pack` of ``prior`` read now: its numbers where they are (no copy)."""
    net, vals = read(prior)
    if net.reason is not None:
        raise ValueError(f"the fused kernels cannot take this prior: {net.reason}")
    dtype, device = kind_of(vals, (torch.float32, torch.device("cpu")))
    return Pack(net, vals, dtype, device, prior=prior)


def pack_prior(prior: HierarchicalPrior) -> PackedPrior:
    """``prior``'s networks as plain weights and bias tables (:func:`unpack` of a fresh read)."""
    return unpack(of(prior))


__all__ = ["LAY_NCOLS", "MLPShape", "Network", "Pack", "PackedMLP", "PackedPrior", "kind_of", "of",
           "pack_prior", "read",
           "snapshot", "supported", "unpack"]
