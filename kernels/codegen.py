"""Code generation of one persistent Triton Langevin kernel per network structure.

Why generate source: the number of layers L, every MLP's depth and widths, the activations and
the flags (kernel term, seeded noise, trace, reverse diffusion) vary per model, while Triton wants
every tile shape to be a compile-time constant and cannot hold a Python list of differently shaped
tiles.  So :func:`generate_source` writes a straight-line ``@triton.jit`` kernel in which every
width, weight offset, activation and flag is a literal; :func:`build_kernel` writes it to a cache
directory (keyed by the hash of the source), imports it and returns the jitted function.  Triton's
own cache then keys the compiled binary on that source.  Only ``BLOCK_B`` (rows per program) stays
a ``tl.constexpr`` so it can be autotuned.

One launch runs everything: each program owns ``BLOCK_B`` chains and keeps their state ``u`` (one
register tile ``[BLOCK_B, P_i]`` per layer, widths padded with zeros to powers of two ≥ 16) on
chip for all levels and steps.  Per step (DESIGN.md §2):

* top-down ``T_β``: ``z_L = u_L``; for i = L−1 … 1: ``(μ_i, ℓ_i) = g_i(z_{i+1})``,
  ``z_i = μ_i + (exp ℓ_i + σ_min) ⊙ u_i``; right after each ``z_i`` the energy ``f_i(z_i; t)`` runs
  forward and backward (seeded with λ), giving ``E_i = λ ∇f_i`` (the hidden tiles die at once);
* bottom-up: ``G_1 = E_1``; ``∇_{u_i} = G_i ⊙ σ_i``; ``g_i`` backward with ``∂μ = G_i``,
  ``∂ℓ = G_i ⊙ u_i ⊙ exp ℓ_i`` adds into ``G_{i+1} = E_{i+1} + …``; ``∇_{u_L} = G_L``;
* ``∇ log π = ∇_u − u − [cond] a(a u − u_next)/σ²``; ``u += (δ²/2)∇ + cδ ε``.

Layers come in two forms, chosen per MLP at generation time:

* register form (small layers, padded weight tile ≤ ``reg_limit`` elements): one ``tl.dot`` per
  layer on register tiles; the activation derivative of each hidden layer stays in registers until
  the backward pass;
* tiled form (large hidden widths, e.g. 512): hidden activations, their derivatives and the
  back-propagated gradients live in a per-program scratch buffer in global memory (L1/L2
  resident), and each layer is a loop over ``tile``-wide output chunks with a K-loop over input
  chunks, streaming weight tiles from global memory; ``tl.debug_barrier()`` separates phases.

Weights are read from hebm's flat packed buffer (``hebm.backends.pack``: W ``[out, in]``
row-major, then the bias table ``[rows, out]``; rows = n_levels for level-conditioned hidden
layers, picked per chain by its level t) with masked loads, so padding is exact zeros.
This module imports nothing from hebm; it takes plain tuples.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

from .device_src import ACT_NAMES, DEVICE_SRC, RNG_DEBUG_SRC


@dataclass(frozen=True)
class MLPSpec:
    """One MLP: ``layers`` = ((in, out, w_off, b_off, b_rows), …) in the flat buffer; the
    activation (hebm code, LeakyReLU slope) follows every hidden layer."""

    layers: tuple
    act: int
    act_param: float = 0.0

    @property
    def n_hidden(self) -> int:
        return len(self.layers) - 1


@dataclass(frozen=True)
class LangevinSpec:
    dims: tuple  # d_1 … d_L (bottom → top)
    sigma_min: float
    conds: tuple  # MLPSpec g_1 … g_{L-1}: conds[i] reads layer i+1, writes [μ_i | ℓ_i]
    energies: tuple  # MLPSpec f_1 … f_L (empty: plain Gaussian prior)
    has_kernel: bool = False  # recovery-kernel term
    unext_from_state: bool = False  # reverse diffusion: u_next = state entering the level
    seeded: bool = False  # in-kernel Philox noise (else explicit [steps, B, D] tensor)
    trace: bool = False  # write log π at the state entering every step
    store_levels: bool = False  # write the state after every level
    precision: str = "ieee"  # tl.dot: "ieee" (exact fp32) | "tf32" | "bf16"
    tile: int = 64  # chunk width of tiled layers
    reg_limit: int = 128 * 128  # padded weight elements above which an MLP is tiled


def pad(n: int) -> int:
    """Padded extent: a power of two ≥ 16 (tl.dot minimum on NVIDIA for 16-bit operands)."""
    p = 16
    while p < n:
        p *= 2
    return p


def mlp_is_tiled(m: MLPSpec, spec: LangevinSpec, out_split: int = 1) -> bool:
    if m.n_hidden == 0:
        return False
    biggest = 0
    for (i, o, *_), last in zip(m.layers, [False] * m.n_hidden + [True]):
        oo = o // out_split if last else o
        biggest = max(biggest, pad(i) * (pad(oo) if oo > 1 else 1))
    return biggest > spec.reg_limit


class _Src:
    def __init__(self):
        self.lines: list = []
        self.ind = 1

    def __call__(self, s: str = "") -> None:
        self.lines.append(("    " * self.ind + s) if s else "")

    def block(self, head: str):
        self(head)
        src = self

        class _B:
            def __enter__(self_inner):
                src.ind += 1

            def __exit__(self_inner, *a):
                src.ind -= 1

        return _B()


class _Gen:
    """Emits the kernel body.  Names: u{i} state tiles, z{i}, E{i} energy grads, etc."""

    def __init__(self, spec: LangevinSpec):
        self.s = spec
        self.o = _Src()
        self.aranges: set = set()
        self.D = sum(spec.dims)
        self.offs = [sum(spec.dims[:i]) for i in range(len(spec.dims))]
        self.P = [pad(d) for d in spec.dims]
        # scratch regions (widths per row) for tiled MLPs
        self.regions: dict = {}
        self.scr_w = 0
        self.cond_tiled = [mlp_is_tiled(m, spec, 2) for m in spec.conds]
        self.en_tiled = [mlp_is_tiled(m, spec, 1) for m in spec.energies]
        h_need, de_need, ga_need = 0, 0, 0
        for m, t in list(zip(spec.conds, self.cond_tiled)) + list(zip(spec.energies, self.en_tiled)):
            if not t:
                continue
            hs = [pad(l[1]) for l in m.layers[:-1]]
            h_need = max(h_need, sum(hs))
            ga_need = max(ga_need, max(hs))
        for m, t in zip(spec.energies, self.en_tiled):
            if t:
                de_need = max(de_need, sum(pad(l[1]) for l in m.layers[:-1]))
        self._region("H", h_need)
        self._region("DE", de_need)
        for i, (m, t) in enumerate(zip(spec.conds, self.cond_tiled)):
            if t:
                self._region(f"DC{i}", sum(pad(l[1]) for l in m.layers[:-1]))
        self._region("GA0", ga_need)
        self._region("GA1", ga_need)
        self.dot_kw = {"ieee": 'input_precision="ieee"', "tf32": 'input_precision="tf32"', "bf16": None}[spec.precision]

    def _region(self, name, width):
        if width > 0:
            self.regions[name] = (self.scr_w, width)
            self.scr_w += width

    # ------------------------------------------------------------------ small helpers
    def ar(self, n: int) -> str:
        self.aranges.add(n)
        return f"ar{n}"

    def dot(self, a: str, b: str) -> str:
        if self.dot_kw is None:
            return f"tl.dot(({a}).to(tl.bfloat16), ({b}).to(tl.bfloat16))"
        return f"tl.dot({a}, {b}, {self.dot_kw})"

    def act(self, m: MLPSpec, a: str) -> str:
        return f"_act_{ACT_NAMES[m.act]}({a}, {float(m.act_param)!r})"

    def load_wT(self, layer, kk: str, KP: int, nn: str, NP: int, row_shift: int = 0, n_valid: Optional[int] = None) -> str:
        """W^T tile [KP (in), NP (out)] of ``layer``; out rows shifted by ``row_shift``."""
        IN, OUT, WOFF = layer[0], layer[1], layer[2]
        nv = OUT if n_valid is None else n_valid
        return (f"tl.load(params_ptr + {WOFF + row_shift * IN} + ({nn})[None, :] * {IN} + ({kk})[:, None], "
                f"mask=(({kk})[:, None] < {IN}) & (({nn})[None, :] < {nv}), other=0.0)")

    def load_w(self, layer, nn: str, NP: int, kk: str, KP: int, row_shift: int = 0, n_valid: Optional[int] = None) -> str:
        """W tile [NP (out), KP (in)]."""
        IN, OUT, WOFF = layer[0], layer[1], layer[2]
        nv = OUT if n_valid is None else n_valid
        return (f"tl.load(params_ptr + {WOFF + row_shift * IN} + ({nn})[:, None] * {IN} + ({kk})[None, :], "
                f"mask=(({nn})[:, None] < {nv}) & (({kk})[None, :] < {IN}), other=0.0)")

    def load_bias(self, layer, nn: str, shift: int = 0, n_valid: Optional[int] = None) -> str:
        """Bias [1 or BLOCK_B, len(nn)] (per-row level row when the table has several rows)."""
        OUT, BOFF, ROWS = layer[1], layer[3], layer[4]
        nv = OUT if n_valid is None else n_valid
        if ROWS > 1:
            return (f"tl.load(params_ptr + {BOFF + shift} + tlev[:, None] * {OUT} + ({nn})[None, :], "
                    f"mask=rmask[:, None] & (({nn})[None, :] < {nv}), other=0.0)")
        return f"tl.load(params_ptr + {BOFF + shift} + ({nn}), mask=({nn}) < {nv}, other=0.0)[None, :]"

    def scr(self, region: str, cols: str, sub: int, width: int) -> str:
        off, w = self.regions[region]
        return f"scr + {off} * BLOCK_B + rl[:, None] * {w} + {sub} + ({cols})[None, :]"

    def barrier(self):
        self.o("tl.debug_barrier()")

    # ------------------------------------------------------------------ register-form MLP pieces
    def hidden_forward_reg(self, m: MLPSpec, x: str, pfx: str) -> list:
        """Hidden layers on register tiles; returns [(h, d, P)] per hidden layer."""
        o = self.o
        h, Pin = x, pad(m.layers[0][0])
        out = []
        for j, layer in enumerate(m.layers[:-1]):
            Po = pad(layer[1])
            kk, nn = self.ar(Pin), self.ar(Po)
            o(f"{pfx}w = {self.load_wT(layer, kk, Pin, nn, Po)}")
            o(f"{pfx}a = {self.dot(h, pfx + 'w')} + {self.load_bias(layer, nn)}")
            o(f"{pfx}h{j + 1}, {pfx}d{j + 1} = {self.act(m, pfx + 'a')}")
            h, Pin = f"{pfx}h{j + 1}", Po
            out.append((f"{pfx}h{j + 1}", f"{pfx}d{j + 1}", Po))
        return out

    def hidden_backward_reg(self, m: MLPSpec, g: str, hid: list, pfx: str, gx: str) -> None:
        """g: gradient w.r.t. the last hidden activation; writes the input gradient to ``gx``."""
        o = self.o
        for j in range(len(hid) - 1, -1, -1):
            layer = m.layers[j]
            Po = hid[j][2]
            Pin = pad(layer[0]) if j == 0 else hid[j - 1][2]
            o(f"{pfx}ga = {g} * {hid[j][1]}")
            nn, kk = self.ar(Po), self.ar(Pin)
            o(f"{pfx}w = {self.load_w(layer, nn, Po, kk, Pin)}")
            tgt = gx if j == 0 else f"{pfx}g"
            o(f"{tgt} = {self.dot(pfx + 'ga', pfx + 'w')}")
            g = tgt

    # ------------------------------------------------------------------ tiled-form MLP pieces
    def _hidden_layout(self, m: MLPSpec):
        subs, acc = [], 0
        for l in m.layers[:-1]:
            subs.append((acc, pad(l[1])))
            acc += pad(l[1])
        return subs

    def hidden_forward_tiled(self, m: MLPSpec, x: str, pfx: str, dreg: str) -> list:
        o = self.o
        subs = self._hidden_layout(m)
        Pin0 = pad(m.layers[0][0])
        for j, layer in enumerate(m.layers[:-1]):
            hoff, Po = subs[j]
            TN = min(self.s.tile, Po)
            with o.block(f"for n0 in range(0, {Po}, {TN}):"):
                o(f"nn = n0 + {self.ar(TN)}")
                if j == 0:
                    kk = self.ar(Pin0)
                    o(f"{pfx}w = {self.load_wT(layer, kk, Pin0, 'nn', TN)}")
                    o(f"{pfx}a = {self.dot(x, pfx + 'w')}")
                else:
                    poff, Pi = subs[j - 1]
                    TK = min(self.s.tile, Pi)
                    o(f"{pfx}a = tl.zeros([BLOCK_B, {TN}], dtype=tl.float32)")
                    with o.block(f"for k0 in range(0, {Pi}, {TK}):"):
                        o(f"kk = k0 + {self.ar(TK)}")
                        o(f"{pfx}x = tl.load({self.scr('H', 'kk', poff, Pi)})")
                        o(f"{pfx}w = {self.load_wT(layer, 'kk', TK, 'nn', TN)}")
                        o(f"{pfx}a += {self.dot(pfx + 'x', pfx + 'w')}")
                o(f"{pfx}a += {self.load_bias(layer, 'nn')}")
                o(f"{pfx}h, {pfx}dd = {self.act(m, pfx + 'a')}")
                o(f"tl.store({self.scr('H', 'nn', hoff, Po)}, {pfx}h)")
                o(f"tl.store({self.scr(dreg, 'nn', hoff, Po)}, {pfx}dd)")
            self.barrier()
        return subs

    def hidden_backward_tiled(self, m: MLPSpec, subs: list, pfx: str, dreg: str, gx: str, ga: str) -> None:
        """The gradient w.r.t. the last hidden *pre-activation* is in scratch region ``ga``."""
        o = self.o
        cur = ga
        for j in range(len(subs) - 1, 0, -1):
            layer = m.layers[j]  # maps hidden j-1 (P_in) -> hidden j (P_out)
            _, Po = subs[j]
            doff, Pi = subs[j - 1]
            nxt = "GA1" if cur == "GA0" else "GA0"
            TN, TK = min(self.s.tile, Pi), min(self.s.tile, Po)
            with o.block(f"for n0 in range(0, {Pi}, {TN}):"):
                o(f"nn = n0 + {self.ar(TN)}")
                o(f"{pfx}acc = tl.zeros([BLOCK_B, {TN}], dtype=tl.float32)")
                with o.block(f"for k0 in range(0, {Po}, {TK}):"):
                    o(f"kk = k0 + {self.ar(TK)}")
                    o(f"{pfx}g = tl.load({self.scr(cur, 'kk', 0, Po)})")
                    o(f"{pfx}w = {self.load_w(layer, 'kk', TK, 'nn', TN)}")
                    o(f"{pfx}acc += {self.dot(pfx + 'g', pfx + 'w')}")
                o(f"{pfx}acc = {pfx}acc * tl.load({self.scr(dreg, 'nn', doff, Pi)})")
                o(f"tl.store({self.scr(nxt, 'nn', 0, Pi)}, {pfx}acc)")
            self.barrier()
            cur = nxt
        layer = m.layers[0]
        _, Po = subs[0]
        Pin0 = pad(layer[0])
        TK = min(self.s.tile, Po)
        o(f"{gx} = tl.zeros([BLOCK_B, {Pin0}], dtype=tl.float32)")
        with o.block(f"for k0 in range(0, {Po}, {TK}):"):
            o(f"kk = k0 + {self.ar(TK)}")
            o(f"{pfx}g = tl.load({self.scr(cur, 'kk', 0, Po)})")
            o(f"{pfx}w = {self.load_w(layer, 'kk', TK, self.ar(Pin0), Pin0)}")
            o(f"{gx} += {self.dot(pfx + 'g', pfx + 'w')}")
        self.barrier()

    # ------------------------------------------------------------------ energies
    def energy(self, i: int, z: str) -> None:
        """E{i} = λ ∇f_i(z_i); F{i} = f_i(z_i) when tracing."""
        m, o, s = self.s.energies[i], self.o, self.s
        pfx = f"e{i}_"
        Pz = self.P[i]
        last = m.layers[-1]
        IN_last, WOFF_last, BOFF_last = last[0], last[2], last[3]
        o(f"# energy f_{i + 1}(z_{i + 1}; t): forward and backward")
        if m.n_hidden == 0:
            w = f"tl.load(params_ptr + {WOFF_last} + {self.ar(Pz)}, mask={self.ar(Pz)} < {IN_last}, other=0.0)"
            o(f"{pfx}wl = {w}")
            if s.trace:
                o(f"F{i} = tl.sum({z} * {pfx}wl[None, :], axis=1) + tl.load(params_ptr + {BOFF_last})")
            o(f"E{i} = lam[:, None] * {pfx}wl[None, :] + tl.zeros([BLOCK_B, {Pz}], dtype=tl.float32)")
            return
        if not self.en_tiled[i]:
            hid = self.hidden_forward_reg(m, z, pfx)
            hl, Ph = hid[-1][0], hid[-1][2]
            o(f"{pfx}wl = tl.load(params_ptr + {WOFF_last} + {self.ar(Ph)}, mask={self.ar(Ph)} < {IN_last}, other=0.0)")
            if s.trace:
                o(f"F{i} = tl.sum({hl} * {pfx}wl[None, :], axis=1) + tl.load(params_ptr + {BOFF_last})")
            self.hidden_backward_reg(m, f"(lam[:, None] * {pfx}wl[None, :])", hid, pfx, f"E{i}")
            return
        subs = self.hidden_forward_tiled(m, z, pfx, "DE")
        hoff, Ph = subs[-1]
        TK = min(s.tile, Ph)
        if s.trace:
            o(f"F{i} = tl.zeros([BLOCK_B], dtype=tl.float32) + tl.load(params_ptr + {BOFF_last})")
            with o.block(f"for k0 in range(0, {Ph}, {TK}):"):
                o(f"kk = k0 + {self.ar(TK)}")
                o(f"{pfx}wl = tl.load(params_ptr + {WOFF_last} + kk, mask=kk < {IN_last}, other=0.0)")
                o(f"F{i} += tl.sum(tl.load({self.scr('H', 'kk', hoff, Ph)}) * {pfx}wl[None, :], axis=1)")
        with o.block(f"for k0 in range(0, {Ph}, {TK}):"):
            o(f"kk = k0 + {self.ar(TK)}")
            o(f"{pfx}wl = tl.load(params_ptr + {WOFF_last} + kk, mask=kk < {IN_last}, other=0.0)")
            o(f"{pfx}ga = lam[:, None] * {pfx}wl[None, :] * tl.load({self.scr('DE', 'kk', hoff, Ph)})")
            o(f"tl.store({self.scr('GA0', 'kk', 0, Ph)}, {pfx}ga)")
        self.barrier()
        self.hidden_backward_tiled(m, subs, pfx, "DE", f"E{i}", "GA0")

    # ------------------------------------------------------------------ conditionals
    def cond_forward(self, i: int, x: str) -> None:
        """mu{i}, l{i} = g_i(z_{i+1}); keeps what the backward pass needs."""
        m, o = self.s.conds[i], self.o
        pfx = f"c{i}_"
        d, Pd = self.s.dims[i], self.P[i]
        last = m.layers[-1]
        o(f"# conditional g_{i + 1}(z_{i + 2}) -> (mu_{i + 1}, l_{i + 1})")
        nd = self.ar(Pd)
        if m.n_hidden == 0 or not self.cond_tiled[i]:
            if m.n_hidden == 0:
                h, Ph = x, pad(last[0])
                self.cond_hidden = getattr(self, "cond_hidden", {})
                self.cond_hidden[i] = []
            else:
                hid = self.hidden_forward_reg(m, x, pfx)
                self.cond_hidden = getattr(self, "cond_hidden", {})
                self.cond_hidden[i] = hid
                h, Ph = hid[-1][0], hid[-1][2]
            kh = self.ar(Ph)
            for nm, shift in (("mu", 0), ("l", d)):
                o(f"{pfx}w = {self.load_wT(last, kh, Ph, nd, Pd, row_shift=shift, n_valid=d)}")
                o(f"{nm}{i} = {self.dot(h, pfx + 'w')} + {self.load_bias(last, nd, shift=shift, n_valid=d)}")
            return
        subs = self.hidden_forward_tiled(m, x, pfx, f"DC{i}")
        hoff, Ph = subs[-1]
        TK = min(self.s.tile, Ph)
        o(f"mu{i} = tl.zeros([BLOCK_B, {Pd}], dtype=tl.float32)")
        o(f"l{i} = tl.zeros([BLOCK_B, {Pd}], dtype=tl.float32)")
        with o.block(f"for k0 in range(0, {Ph}, {TK}):"):
            o(f"kk = k0 + {self.ar(TK)}")
            o(f"{pfx}x = tl.load({self.scr('H', 'kk', hoff, Ph)})")
            for nm, shift in (("mu", 0), ("l", d)):
                o(f"{pfx}w = {self.load_wT(last, 'kk', TK, nd, Pd, row_shift=shift, n_valid=d)}")
                o(f"{nm}{i} += {self.dot(pfx + 'x', pfx + 'w')}")
        self.barrier()
        for nm, shift in (("mu", 0), ("l", d)):
            o(f"{nm}{i} += {self.load_bias(last, nd, shift=shift, n_valid=d)}")

    def cond_backward(self, i: int, gmu: str, gl: str, gx: str) -> None:
        m, o = self.s.conds[i], self.o
        pfx = f"c{i}_"
        d, Pd = self.s.dims[i], self.P[i]
        last = m.layers[-1]
        nd = self.ar(Pd)
        o(f"# backward through g_{i + 1}")
        if m.n_hidden == 0 or not self.cond_tiled[i]:
            hid = self.cond_hidden[i]
            Ph = hid[-1][2] if hid else pad(last[0])
            kh = self.ar(Ph)
            tgt = gx if not hid else f"{pfx}g"
            o(f"{pfx}w = {self.load_w(last, nd, Pd, kh, Ph, row_shift=0, n_valid=d)}")
            o(f"{tgt} = {self.dot(gmu, pfx + 'w')}")
            o(f"{pfx}w = {self.load_w(last, nd, Pd, kh, Ph, row_shift=d, n_valid=d)}")
            o(f"{tgt} += {self.dot(gl, pfx + 'w')}")
            if hid:
                self.hidden_backward_reg(m, tgt, hid, pfx, gx)
            return
        subs = self._hidden_layout(m)
        hoff, Ph = subs[-1]
        TN = min(self.s.tile, Ph)
        with o.block(f"for n0 in range(0, {Ph}, {TN}):"):
            o(f"nn = n0 + {self.ar(TN)}")
            o(f"{pfx}w = {self.load_w(last, nd, Pd, 'nn', TN, row_shift=0, n_valid=d)}")
            o(f"{pfx}g = {self.dot(gmu, pfx + 'w')}")
            o(f"{pfx}w = {self.load_w(last, nd, Pd, 'nn', TN, row_shift=d, n_valid=d)}")
            o(f"{pfx}g += {self.dot(gl, pfx + 'w')}")
            o(f"tl.store({self.scr('GA0', 'nn', 0, Ph)}, {pfx}g * tl.load({self.scr(f'DC{i}', 'nn', hoff, Ph)}))")
        self.barrier()
        self.hidden_backward_tiled(m, subs, pfx, f"DC{i}", gx, "GA0")

    # ------------------------------------------------------------------ the kernel
    def generate(self) -> str:
        s, o = self.s, self.o
        L, D = len(s.dims), self.D
        has_en = bool(s.energies)
        o("pid = tl.program_id(0)")
        o("rl = tl.arange(0, BLOCK_B)")
        o("rows = pid * BLOCK_B + rl")
        o("rmask = rows < B")
        o("rows64 = rows.to(tl.int64)")
        if self.scr_w:
            o(f"scr = scratch_ptr + pid.to(tl.int64) * (BLOCK_B * {self.scr_w})")
        for i in range(L):
            a = self.ar(self.P[i])
            o(f"cm{i} = {a} < {s.dims[i]}")
            o(f"m{i} = rmask[:, None] & cm{i}[None, :]")
            o(f"uo{i} = rows64[:, None] * {D} + ({self.offs[i]} + {a})[None, :]")
            o(f"u{i} = tl.load(u_ptr + uo{i}, mask=m{i}, other=0.0)")
        if s.seeded:
            o("key0 = tl.load(key_ptr).to(tl.uint32)")
            o("key1 = tl.load(key_ptr + 1).to(tl.uint32)")
            o("cid = tl.load(ids_ptr + rows, mask=rmask, other=0).to(tl.uint32)[:, None]")
            for i in range(L):
                a = self.ar(self.P[i])
                o(f"blk{i} = (({self.offs[i]} + {a}) // 4).to(tl.uint32)[None, :]")
                o(f"comp{i} = (({self.offs[i]} + {a}) % 4)[None, :]")
        else:
            o("nptr = noise_ptr")
        if s.trace:
            o("tptr = trace_ptr")
        if s.store_levels:
            o("lptr = lvl_ptr")
        o("pb = rows")
        with o.block("for j in range(NLEV):"):
            o("delta = tl.load(delta_ptr + pb, mask=rmask, other=0.0)")
            o("half = (0.5 * delta * delta)[:, None]")
            o("amp = (tl.load(c_ptr + pb, mask=rmask, other=0.0) * delta)[:, None]")
            o("lam = tl.load(lam_ptr + pb, mask=rmask, other=0.0)")
            if any(l[4] > 1 for m in s.energies for l in m.layers):
                o("tlev = tl.load(t_ptr + pb, mask=rmask, other=0).to(tl.int32)")
            if s.has_kernel:
                o("alpha = tl.load(alpha_ptr + pb, mask=rmask, other=0.0)[:, None]")
                o("sg = tl.load(sigma_ptr + pb, mask=rmask, other=1.0)")
                o("inv2v = 1.0 / (sg * sg)")
                o("inv2 = inv2v[:, None]")
                for i in range(L):
                    if s.unext_from_state:
                        o(f"un{i} = u{i}")
                    else:
                        o(f"un{i} = tl.load(unext_ptr + uo{i}, mask=m{i}, other=0.0)")
            o("pb += B")
            with o.block("for k in range(K):"):
                if has_en:
                    o("# ---- T_beta top-down, energies forward+backward")
                    top = L - 1
                    o(f"z{top} = u{top}")
                    self.energy(top, f"z{top}")
                    for i in range(L - 2, -1, -1):
                        self.cond_forward(i, f"z{i + 1}")
                        o(f"ex{i} = tl.exp(l{i})")
                        o(f"sd{i} = ex{i} + {float(s.sigma_min)!r}")
                        o(f"z{i} = mu{i} + sd{i} * u{i}")
                        self.energy(i, f"z{i}")
                    o("# ---- bottom-up backward through T_beta")
                    o("G = E0")
                    for i in range(L - 1):
                        o(f"gu{i} = G * sd{i}")
                        o(f"gl{i} = G * u{i} * ex{i}")
                        self.cond_backward(i, "G", f"gl{i}", f"gz{i}")
                        o(f"G = E{i + 1} + gz{i}")
                    o(f"gu{L - 1} = G")
                for i in range(L):
                    g = f"gu{i} - u{i}" if has_en else f"-u{i}"
                    if s.has_kernel:
                        o(f"kr{i} = alpha * u{i} - un{i}")
                        g += f" - alpha * kr{i} * inv2"
                    o(f"grad{i} = {g}")
                if s.trace:
                    terms = [f"tl.sum(u{i} * u{i}, axis=1)" for i in range(L)]
                    expr = "-0.5 * (" + " + ".join(terms) + ")"
                    if has_en:
                        expr = "lam * (" + " + ".join(f"F{i}" for i in range(L)) + ") " + expr
                    if s.has_kernel:
                        kt = " + ".join(f"tl.sum(kr{i} * kr{i}, axis=1)" for i in range(L))
                        expr += f" - 0.5 * ({kt}) * inv2v"
                    o(f"tl.store(tptr + rows, {expr}, mask=rmask)")
                    o("tptr += B")
                for i in range(L):
                    if s.seeded:
                        o(f"eps{i} = tl.where(cm{i}[None, :], _philox_normal(blk{i}, cid, step_offset + j * K + k, 0, comp{i}, key0, key1), 0.0)")
                    else:
                        o(f"eps{i} = tl.load(nptr + uo{i}, mask=m{i}, other=0.0)")
                    o(f"u{i} = u{i} + half * grad{i} + amp * eps{i}")
                if not s.seeded:
                    o(f"nptr += B * {D}")
            if s.store_levels:
                for i in range(L):
                    o(f"tl.store(lptr + uo{i}, u{i}, mask=m{i})")
                o(f"lptr += B * {D}")
        for i in range(L):
            o(f"tl.store(out_ptr + uo{i}, u{i}, mask=m{i})")

        head = [
            "# generated by kernels.codegen -- do not edit",
            DEVICE_SRC,
            "",
            "@triton.jit",
            "def langevin_kernel(u_ptr, out_ptr, lvl_ptr, noise_ptr, key_ptr, ids_ptr,",
            "                    delta_ptr, c_ptr, lam_ptr, t_ptr, alpha_ptr, sigma_ptr, unext_ptr,",
            "                    trace_ptr, params_ptr, scratch_ptr, B, K, NLEV, step_offset,",
            "                    BLOCK_B: tl.constexpr):",
            f'    """{_describe(s)}"""',
        ]
        ar_lines = [f"    ar{n} = tl.arange(0, {n})" for n in sorted(self.aranges)]
        return "\n".join(head + ar_lines + self.o.lines) + "\n"


def _describe(s: LangevinSpec) -> str:
    return (f"dims={s.dims} conds={[tuple(l[1] for l in m.layers) for m in s.conds]} "
            f"energies={[tuple(l[1] for l in m.layers) for m in s.energies]} kernel={s.has_kernel} "
            f"seeded={s.seeded} trace={s.trace} precision={s.precision}")


def generate_source(spec: LangevinSpec) -> tuple:
    """(source text, scratch floats per row) of the kernel for ``spec``."""
    g = _Gen(spec)
    src = g.generate()
    return src, g.scr_w


# ---------------------------------------------------------------------------------- module cache
_lock = threading.Lock()
_modules: dict = {}


def cache_dir() -> str:
    d = os.environ.get("HEBM_TRITON_CACHE") or os.path.join(
        tempfile.gettempdir(), f"hebm_triton_{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(d, exist_ok=True)
    return d


def load_source(src: str, prefix: str):
    """Import generated source from a file (Triton reads kernels' source through inspect)."""
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    h = hashlib.sha256(src.encode()).hexdigest()[:20]
    key = (h, interp)
    with _lock:
        if key in _modules:
            return _modules[key]
        name = f"hebm_gen_{prefix}_{h}{'_interp' if interp else ''}"
        path = os.path.join(cache_dir(), name + ".py")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(src)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _modules[key] = mod
        return mod


_built: dict = {}


def build_kernel(spec: LangevinSpec):
    """(jitted kernel, scratch floats per row) for ``spec`` (cached: no code generation per call)."""
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    hit = _built.get((spec, interp))
    if hit is None:
        src, scr_w = generate_source(spec)
        hit = _built[(spec, interp)] = (load_source(src, "langevin").langevin_kernel, scr_w)
    return hit


def rng_debug_kernel():
    """The jitted debug kernel writing hebm's Philox words and normals (tests)."""
    src = "# generated by kernels.codegen -- do not edit\n" + DEVICE_SRC + RNG_DEBUG_SRC
    return load_source(src, "rng").rng_debug_kernel
