"""The per-network glue of hebm's persistent Triton Langevin kernel, and its module cache.

Why generate: the number of latent layers L, every MLP's depth and widths, the activations and
the flags (kernel term, seeded noise, trace, reverse diffusion) vary per model, while Triton wants
every tile shape to be a compile-time constant and cannot hold a list of differently shaped
tiles.  Everything that computes is a ``@triton.jit`` device function in
:mod:`hebm.kernels.device`; :func:`generate_source` only writes the kernel that calls them in the
right order with literal widths, weight offsets, activations and flags.  :func:`build_kernel`
writes that source to a cache directory (named by its hash), imports it and returns the jitted
kernel; Triton's own cache then keys the binary on the source of the kernel and of the device
functions it calls.  ``BLOCK_B`` (rows per program) stays a ``tl.constexpr``.

One launch runs everything: each program owns ``BLOCK_B`` chains for all levels and steps.  Per
step (docs/design.md §2), top-down ``z_L = u_L``; for i = L−1 … 1 ``(μ_i, ℓ_i) = g_i(z_{i+1})``,
``z_i = μ_i + (e^{s(ℓ_i)} + σ_min)⊙u_i`` (s the soft clamp, or the identity); each energy runs forward and backward as soon as its z
exists (``E_i = λ∇f_i``); then bottom-up ``G_1 = E_1``, at each layer ``∇u_i = G_i⊙σ_i``, the
Langevin update of u_i right away (u_i is not needed after that in the step), and back through
``g_i`` with ``∂μ = G_i``, ``∂ℓ = G_i⊙u_i⊙e^ℓ_i`` into ``G_{i+1} = E_{i+1} + …``.

Two forms of the same sequence, chosen per network (:func:`kernel_form`):

* **register** (every padded weight tile ≤ ``reg_limit`` elements, e.g. toy): the state and every
  activation are register tiles; MLP activations are held as ``[BLOCK_B, tile]`` chunks and every
  product is a chunk product (``dev.linear_fwd`` / ``dev.linear_bwd``), so no dot operand is
  bigger than ``tile × tile``.
* **streamed** (wider networks, e.g. small and large): the state lives in the output buffer, the
  activations, their derivatives and the gradients in a per-program scratch buffer (L1/L2
  resident), and each layer is one ``dev.stream_*`` call — a runtime loop over ``tile``-wide output
  chunks with an inner loop over input chunks.  ``tl.debug_barrier()`` separates the phases.

Register pressure (benchmarks/NOTES.md, "Compile time and registers"): a ``tl.dot`` operand is held
whole in registers by every warp that uses it (a 64×64 fp32 weight tile is 128 registers per
thread), hence chunk products; the compiler hoists loop-invariant loads (into shared memory for
the whole kernel) *and* every loop-invariant address computation (into registers for the whole
chain) out of the step loop, hence ``zk = k * zero`` — the kernel argument ``zero`` is always 0,
but the compiler cannot know it, so every parameter address and scratch row pointer built from
``zk`` is computed in the step where it is used; every padded width is ≥ 32, so each product of
the 16-row programs is wider than tall and Triton spreads the 4 warps over its columns instead of
replicating the 16 rows in each warp.  Parameters come from the kernels' own buffer
(:mod:`hebm.kernels.params`: dense aligned ``Wᵀ`` blocks, unmasked vector loads).

Latent columns are addressed block-aligned (see :mod:`hebm.kernels.device`): layer i's tile
starts at element ``4·⌊offset_i/4⌋`` of the chain, so its noise is one Philox call per four
elements.  This module imports nothing from hebm; it takes plain tuples.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TLayer:
    """One layer in the kernels' parameter buffer (:mod:`hebm.kernels.params`): true widths,
    bias rows, and its ``Wᵀ [kp, np]`` / bias ``[rows, np]`` blocks (``np`` = 1: an energy's
    1-wide output, a ``kp`` vector)."""

    in_: int
    out: int
    rows: int
    w_off: int
    kp: int
    np: int
    b_off: int


@dataclass(frozen=True)
class MLPSpec:
    """One MLP: its layers (:class:`TLayer`) and the activation (hebm code, LeakyReLU slope)
    after every hidden layer."""

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
    sigma_clamp: float = 0.0  # c of σ = e^{c·tanh(ℓ/c)} + σ_min; 0: σ = e^ℓ + σ_min
    has_kernel: bool = False  # recovery-kernel term
    unext_from_state: bool = False  # reverse diffusion: u_next = state entering the level
    seeded: bool = False  # in-kernel Philox noise (else explicit [steps, B, D] tensor)
    trace: bool = False  # write log π at the state entering every step
    store_levels: bool = False  # write the state after every level
    precision: str = "ieee"  # tl.dot: "ieee" (exact fp32) | "tf32" | "bf16"
    tile: int = 32  # chunk width of every product
    reg_limit: int = 64 * 64  # padded weight elements above which the kernel is streamed
    metropolis: bool = False  # Metropolis-adjusted steps (MALA; register form only)
    draws: bool = False  # trace_every: the state (and its log π) after every m-th step into draws_ptr / dlogp_ptr
    ladder: str = ""  # replica exchange: the swap schedule ("deo" | "even_odd"); "" no ladder (register form only)


def pad(n: int) -> int:
    """Padded extent: a power of two ≥ 32.  (tl.dot needs ≥ 16 for 16-bit operands; 32 makes every
    product of the 16-row programs wider than tall, and for such a chain of dots Triton spreads the
    warps over the columns — each warp a quarter of every tile — instead of giving each warp a
    full replica of the 16 rows.)"""
    p = 32
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True)
class Latent:
    """A latent layer's block-aligned tile: width ``d``, first chain element ``base`` (a multiple
    of 4), its own columns ``[sh, sh + d)`` of a ``P``-wide tile."""

    d: int
    base: int
    sh: int
    P: int

    @property
    def hi(self) -> int:
        return self.sh + self.d


def latent_geometry(dims) -> list:
    out, off = [], 0
    for d in dims:
        base = off - off % 4
        out.append(Latent(d, base, off - base, pad(off - base + d)))
        off += d
    return out


def kernel_form(spec: LangevinSpec) -> str:
    """``"register"`` when every weight block (an energy's 1-wide output excepted) has at most
    ``spec.reg_limit`` elements, else ``"streamed"``.  A plain Gaussian prior (no MLP runs) is
    register form.  A Metropolis-adjusted kernel exists in the register form only (its state,
    gradient and proposal live in registers); :func:`generate_source` refuses it for a network
    that needs the streamed form (the launcher checks first: hebm.sampler.backends.triton_backend)."""
    if not spec.energies:
        return "register"
    for m in list(spec.conds) + list(spec.energies):
        for lay in m.layers:
            if lay.np > 1 and lay.kp * lay.np > spec.reg_limit:
                return "streamed"
    return "register"


_WIDTH = 120


def _split_args(s: str) -> list:
    """Split a call's argument text at its top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _wrap(line: str) -> list:
    """A generated statement longer than 120 columns as a call with its arguments on continuation
    lines (aligned with the opening parenthesis of the outermost call)."""
    if len(line) <= _WIDTH or not line.endswith(")") or "(" not in line:
        return [line]
    i = line.index("(")
    head, args = line[: i + 1], _split_args(line[i + 1: -1])
    pad_ = " " * len(head)
    lines, cur = [], head
    for j, a in enumerate(args):
        piece = a + (", " if j < len(args) - 1 else ")")
        if len(cur) + len(piece.rstrip()) > _WIDTH and cur.strip() != head.strip():
            lines.append(cur.rstrip())
            cur = pad_
        cur += piece
    lines.append(cur.rstrip())
    return lines


class _Src:
    """Indented source lines."""

    def __init__(self, indent: int = 1):
        self.lines: list = []
        self.ind = indent

    def __call__(self, s: str = "") -> None:
        if not s:
            self.lines.append("")
            return
        self.lines += _wrap("    " * self.ind + s)

    def indent(self, head: str):
        self(head)
        src = self

        class _Block:
            def __enter__(self):
                src.ind += 1

            def __exit__(self, *exc):
                src.ind -= 1

        return _Block()


def _call(fn: str, *args, **kw) -> str:
    # str values are names or expressions of the kernel; floats are written exactly (repr)
    parts = [str(a) for a in args] + [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items()]
    return f"dev.{fn}({', '.join(parts)})"


class _Glue:
    """What both forms share: layer geometry, the kernel head, per-level parameters, the loops."""

    form = ""

    def __init__(self, spec: LangevinSpec):
        if spec.precision not in ("ieee", "tf32", "bf16"):
            raise ValueError(f"precision must be ieee, tf32 or bf16, got {spec.precision!r}")
        if spec.tile < 16 or spec.tile & (spec.tile - 1):
            raise ValueError(f"tile must be a power of two >= 16, got {spec.tile}")
        for m in spec.conds:
            if m.layers[-1].rows != 1:
                raise ValueError("a conditional's output layer cannot be level-conditioned")
        for m in spec.energies:
            if m.layers[-1].np != 1 or m.layers[-1].rows != 1:
                raise ValueError("an energy's output layer must be 1-wide with one bias row")
        self.s = spec
        self.o = _Src()
        self.L = len(spec.dims)
        self.D = sum(spec.dims)
        self.lay = latent_geometry(spec.dims)
        self.has_en = bool(spec.energies)
        self.level_rows = any(lay.rows > 1 for m in spec.conds + spec.energies for lay in m.layers)
        self.scr_w = 0
        # F is summed where log π is needed: the trace, the Metropolis test, the draws' log π
        self.need_logp = spec.trace or spec.metropolis or spec.draws
        # the Langevin step sums log π of the state entering it (lp, fsum) for the trace and the draws
        self.logp = spec.trace or spec.draws

    def t(self, n: int) -> int:
        """Chunk width of an extent."""
        return min(self.s.tile, n)

    def head(self) -> list:
        s = self.s
        conds = [tuple(lay.out for lay in m.layers) for m in s.conds]
        ens = [tuple(lay.out for lay in m.layers) for m in s.energies]
        doc = (f"dims={s.dims} conds={conds} energies={ens} kernel={s.has_kernel} seeded={s.seeded} "
               f"trace={s.trace} levels={s.store_levels} unext_from_state={s.unext_from_state} "
               + ("metropolis=True " if s.metropolis else "") + ("draws=True " if s.draws else "") +
               (f"ladder={s.ladder} " if s.ladder else "") +
               f"precision={s.precision} form={self.form} tile={s.tile} scratch/row={self.scr_w}")
        doc = textwrap.fill(doc, width=_WIDTH - 8, subsequent_indent="    ")
        # a ladder kernel takes five more parameters (the launcher's LADDER_PARAMS); the others'
        # signature (and source) is what it was before ladders existed
        nds = ', "NR", "swap_every"' if s.ladder else ""
        lad = ["                    temps_ptr, sunif_ptr, rec_ptr, NR, swap_every,"] if s.ladder else []
        return [
            "# generated by hebm.kernels.codegen -- do not edit (tests/test_triton_backend.py compares the",
            "# committed copy kernels/generated/small_seeded_kernel.py with a fresh generation)",
            "import triton",
            "import triton.language as tl",
            "",
            "from hebm.kernels import jit_device",
            "",
            "dev = jit_device()  # hebm.kernels.device, jitted for this process's TRITON_INTERPRET mode",
            f"PREC = tl.constexpr({s.precision!r})  # tl.dot operands",
            "",
            "",
            f'@triton.jit(do_not_specialize=["B", "K", "NLEV", "step_offset", "trace_every"{nds}])',
            "def langevin_kernel(u_ptr, out_ptr, lvl_ptr, noise_ptr, key_ptr, ids_ptr,",
            "                    delta_ptr, c_ptr, lam_ptr, t_ptr, alpha_ptr, sigma_ptr, unext_ptr,",
            "                    trace_ptr, unif_ptr, acc_ptr, draws_ptr, dlogp_ptr, params_ptr, scratch_ptr,",
            "                    B, K, NLEV, step_offset, trace_every, zero,",
            *lad,
            "                    BLOCK_B: tl.constexpr):",
            f'    """{doc}\n    """',
        ]

    def prologue(self) -> None:
        o, s = self.o, self.s
        o("pid = tl.program_id(0)")
        if s.ladder:
            o("# replica exchange: a program holds whole ladder groups of NR consecutive chains — its")
            o("# BLOCK_B rows rounded down to a multiple of NR, the rest masked — so a swap round's pairs")
            o("# never cross programs (the launcher refuses NR > BLOCK_B)")
            o("lrow = tl.arange(0, BLOCK_B)")
            o("RB = (BLOCK_B // NR) * NR")
            o("rows = pid * RB + lrow")
            o("rmask = (lrow < RB) & (rows < B)")
            o("slot = lrow % NR  # the chain's ladder slot: it always runs at beta_slot")
        else:
            o("rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)")
            o("rmask = rows < B")
        o("rows64 = rows.to(tl.int64)")
        if s.seeded:
            o("key0 = tl.load(key_ptr).to(tl.uint32)")
            o("key1 = tl.load(key_ptr + 1).to(tl.uint32)")
            o("cid = tl.load(ids_ptr + rows, mask=rmask, other=0).to(tl.uint32)")
        else:
            o("nptr = noise_ptr")
        if s.trace:
            o("tptr = trace_ptr")
        if s.draws:
            o("# draws (trace_every = m): after every step whose counter step_offset + k + 1 m divides; a draw")
            o("# after the last step gets its log π from one more sweep (k = K: no update, nothing traced)")
            o("dfirst = step_offset // trace_every + 1  # the counter of draw n is (dfirst + n)·m")
            if s.ladder and not s.metropolis:
                o("# (a draw after the last step that a swap round follows gets its log π in that round)")
                o("kend = K + tl.where(((step_offset + K) % trace_every == 0) & ((step_offset + K) % swap_every != 0), 1, 0)")
            else:
                o("kend = K + tl.where((step_offset + K) % trace_every == 0, 1, 0)")

    def per_level(self) -> None:
        """Per-row parameters of level j (row block j of the ``[NLEV, B]`` tables), loaded in every
        step (L1 hits): held across the step loop they would stay live in registers, in every
        layout their uses need, for the whole chain."""
        o, s = self.o, self.s
        o("pb = rows + j * B + zk")
        o("delta = tl.load(delta_ptr + pb, mask=rmask, other=0.0)")
        o("half = (0.5 * delta * delta)[:, None]")
        o("amp = (tl.load(c_ptr + pb, mask=rmask, other=0.0) * delta)[:, None]")
        o("lam = tl.load(lam_ptr + pb, mask=rmask, other=0.0)")
        if s.ladder:
            o("lam0 = lam  # the untempered λ: the swap test's E = λ·F")
            o("lam = lam * tl.load(temps_ptr + slot + zk, mask=rmask, other=0.0)  # the chain's target: β_slot·λ·F")
        if self.level_rows:
            o("tlev = tl.load(t_ptr + pb, mask=rmask, other=0).to(tl.int32)")
        else:
            o("tlev = 0")
        if s.has_kernel:
            o("alpha = tl.load(alpha_ptr + pb, mask=rmask, other=0.0)[:, None]")
            o("sg = tl.load(sigma_ptr + pb, mask=rmask, other=1.0)")
            o("inv2 = (1.0 / (sg * sg))[:, None]")
        else:
            o("alpha = 0.0")
            o("inv2 = 0.0")

    def step_head(self) -> None:
        o, s = self.o, self.s
        o("zk = k * zero  # 0, but not to the compiler: parameter addresses are computed in the step")
        o("step = step_offset + j * K + k")
        self.per_level()
        if s.draws:
            o("live = k < K  # False in the draw's extra sweep")
            o("half = tl.where(live, half, 0.0)")
            o("amp = tl.where(live, amp, 0.0)")
        if not s.seeded and self.form == "streamed":
            o(f"nrow = nptr + rows64[:, None] * {self.D}  # noise[j·K + k]")
        if self.logp:
            o("lp = tl.zeros([BLOCK_B], dtype=tl.float32)")
            o("fsum = tl.zeros([BLOCK_B], dtype=tl.float32)")

    def step_tail(self) -> None:
        o = self.o
        if not self.s.seeded:
            if self.s.draws:  # (the extra sweep reads row K − 1 again, its noise multiplied by 0)
                o(f"nptr += tl.where(k + 1 < K, B * {self.D}, 0)")
            else:
                o(f"nptr += B * {self.D}")
        self.trace_store()
        if self.s.draws:
            o("# the log π of the draw taken after the previous step: this step's state entering it")
            o("dn = (step_offset + k) // trace_every - dfirst")
            if self.s.ladder:  # (a swap round after the draw's step computed its log π before the swap)
                o("pend = (k > 0) & ((step_offset + k) % trace_every == 0) & ((step_offset + k) % swap_every != 0)")
            else:
                o("pend = (k > 0) & ((step_offset + k) % trace_every == 0)")
            o("tl.store(dlogp_ptr + dn.to(tl.int64) * B + rows64, lam * fsum + lp, mask=rmask & pend)")

    def swap_decide(self) -> None:
        """One swap round's decisions for every ladder group in the program
        (hebm/sampler/reference.py swap_round), given ``E`` = λ·F of each chain's state entering
        it: the swap record (row ``rc`` of rec_ptr: E, then the code at each pair's lower chain),
        ``sw`` (this row's pair, as its lower chain, swaps) and ``swd`` (the pair below swaps).
        Neighbours' values go through global memory — the record's own rows — with
        ``tl.debug_barrier()`` between writing and reading: Triton has no cross-row shuffle of a
        register tile, and a round is rare (every ``swap_every`` steps)."""
        o, s = self.o, self.s
        o("rn = (step + 1) // swap_every - 1  # the round's index on the step counter (the 'deo' parity)")
        o("rc = (rn - step_offset // swap_every).to(tl.int64)  # its row in this call's record")
        o("rp = rec_ptr + rc * (2 * B)")
        if s.seeded:
            o("U = " + _call("swap_uniform", "slot", "NR", "cid", "step", "key0", "key1") + "  # stream 3")
        else:
            o("U = tl.load(sunif_ptr + rc * B + rows64, mask=rmask, other=0.5)  # swap_uniforms[n]")
        o("tl.store(rp + rows64, E, mask=rmask)")
        o("tl.store(rp + B + rows64, U, mask=rmask)  # (the codes overwrite it below)")
        o("tl.debug_barrier()")
        o("up = slot < NR - 1  # the lower chain of the pair (slot, slot + 1)")
        o("En = tl.load(rp + rows64 + 1, mask=rmask & up, other=0.0)")
        if s.ladder == "deo":
            o("par = rn % 2  # deterministic even/odd alternation")
        else:
            o("coin = tl.load(rp + B + rows64 - slot + NR - 1, mask=rmask, other=0.0)  # the group's coin: its last chain's U")
            o("par = tl.where(coin >= 0.5, 1, 0)")
        o("bl = tl.load(temps_ptr + slot, mask=rmask, other=0.0)")
        o("bu = tl.load(temps_ptr + slot + 1, mask=rmask & up, other=0.0)")
        o("att = up & ((slot % 2) == par)")
        o("sw = att & (tl.log(U) < (bu - bl) * (E - En))  # NaN refuses")
        o("tl.debug_barrier()  # every row has read its group's coin before the codes overwrite the U")
        o("tl.store(rp + B + rows64, att.to(tl.float32) + sw.to(tl.float32), mask=rmask)")
        o("tl.debug_barrier()")
        o("swd = tl.load(rp + B + rows64 - 1, mask=rmask & (slot > 0), other=0.0) == 2.0  # the pair below swapped")

    def draw_mask(self) -> None:
        """``isd``: the state after step k is a draw, ``dst``: draw n's row pointers (``dn``)."""
        o = self.o
        o("isd = ((step_offset + k + 1) % trace_every == 0)" + (" & live" if not self.s.metropolis else ""))
        o("dn = (step_offset + k + 1) // trace_every - dfirst")
        o(f"dptr = draws_ptr + dn.to(tl.int64) * B * {self.D}")

    def trace_store(self) -> None:
        if self.s.trace:
            self.o("tl.store(tptr + rows, lam * fsum + lp, mask=rmask" + (" & live)" if self.s.draws else ")"))
            self.o("tptr += B")


# ------------------------------------------------------------------------------------- register form
class _RegisterGlue(_Glue):
    """State and activations in registers (activations as ``[BLOCK_B, tile]`` chunks); one line
    per chunk product."""

    form = "register"

    def hidden_fwd(self, m, pfx: str, x: list, top_seed: bool) -> list:
        """Hidden layers of m from input chunks ``x`` [(name, k0)]; returns per hidden layer its
        chunks [(h, d, n0, width)].  With ``top_seed`` (an energy) the last hidden layer writes the
        backward seed ``λ·w_out·act'`` into ``{pfx}g_*`` and adds ``h·w_out`` to the trace sum."""
        o = self.o
        out = []
        for j, lay in enumerate(m.layers[:-1]):
            T = self.t(lay.np)
            last = j == m.n_hidden - 1
            chunks = []
            for c in range(lay.np // T):
                n0 = c * T
                o(f"{pfx}a = " + _call("bias_tile", "params_ptr", "zk", OFF=lay.b_off, NP=lay.np, ROWS=lay.rows, n0=n0,
                                       TN=T, tlev="tlev", BLOCK_B="BLOCK_B"))
                for (xn, k0) in x:
                    o(f"{pfx}a = " + _call("linear_fwd", f"{pfx}a", xn, "params_ptr", "zk", OFF=lay.w_off, NP=lay.np,
                                           k0=k0, n0=n0, PREC="PREC"))
                h, d = f"{pfx}h{j}_{c}", f"{pfx}d{j}_{c}"
                o(f"{h}, {d} = " + _call("activation", f"{pfx}a", ACT=m.act, SLOPE=float(m.act_param)))
                if last and top_seed:
                    o(f"{pfx}wl = " + _call("row_vector", "params_ptr", "zk", OFF=m.layers[-1].w_off, n0=n0, TN=T))
                    o(f"{pfx}g_{c} = lam[:, None] * {pfx}wl * {d}")
                    if self.need_logp:
                        o(f"fsum += tl.sum({h} * {pfx}wl, axis=1)")
                chunks.append((h, d, n0, T))
            out.append(chunks)
            x = [(h, n0) for (h, _d, n0, _T) in chunks]
        return out

    def hidden_bwd(self, m, pfx: str, hid: list, g: list) -> list:
        """From the gradient chunks ``g`` [(name, n0)] at the last hidden pre-activation back to
        the first hidden pre-activation; returns its chunks."""
        o = self.o
        for j in range(m.n_hidden - 1, 0, -1):
            lay = m.layers[j]
            new = []
            for (_h, d, k0, T) in hid[j - 1]:
                nm = f"{pfx}g{j - 1}_{k0 // T}"
                o(f"{pfx}acc = tl.zeros([BLOCK_B, {T}], dtype=tl.float32)")
                for (gn, n0) in g:
                    o(f"{pfx}acc = " + _call("linear_bwd", f"{pfx}acc", gn, "params_ptr", "zk", OFF=lay.w_off,
                                             NP=lay.np, n0=n0, k0=k0, PREC="PREC"))
                o(f"{nm} = {pfx}acc * {d}")
                new.append((nm, k0))
            g = new
        return g

    def input_grad(self, lay, g: list, dst: str, P: int, acc: bool = False) -> None:
        """``dst (+)= Σ_n g_n @ W[n, :]``: the gradient at an MLP's latent input (P wide)."""
        o = self.o
        if not acc:
            o(f"{dst} = tl.zeros([BLOCK_B, {P}], dtype=tl.float32)")
        for (gn, n0) in g:
            o(f"{dst} = " + _call("linear_bwd", dst, gn, "params_ptr", "zk", OFF=lay.w_off, NP=lay.np, n0=n0, k0=0,
                                  PREC="PREC"))

    def energy(self, i: int, z: str) -> None:
        """E{i} = λ ∇f_i(z_i) (and the trace's f_i(z_i))."""
        m, o, ly = self.s.energies[i], self.o, self.lay[i]
        pfx = f"e{i}_"
        o(f"# energy f_{i + 1}(z_{i + 1}; t): forward and backward")
        last = m.layers[-1]
        if self.need_logp:
            o(f"fsum += tl.load(params_ptr + {last.b_off})")
        if m.n_hidden == 0:
            o(f"{pfx}w = " + _call("row_vector", "params_ptr", "zk", OFF=last.w_off, n0=0, TN=ly.P))
            o(f"E{i} = lam[:, None] * {pfx}w + tl.zeros([BLOCK_B, {ly.P}], dtype=tl.float32)")
            if self.need_logp:
                o(f"fsum += tl.sum({z} * {pfx}w, axis=1)")
            return
        hid = self.hidden_fwd(m, pfx, [(z, 0)], top_seed=True)
        g = [(f"{pfx}g_{c}", n0) for c, (_h, _d, n0, _T) in enumerate(hid[-1])]
        g = self.hidden_bwd(m, pfx, hid, g)
        self.input_grad(m.layers[0], g, f"E{i}", ly.P)

    def cond_fwd(self, i: int, x: str, pfx: str = "c", out: tuple = ("mu", "l")) -> None:
        """mu{i}, l{i} = g_i(z_{i+1}); keeps the hidden derivatives for the backward pass.  (``pfx``,
        ``out``: other names, for the swap round's forward-only pass.)"""
        m, o, ly = self.s.conds[i], self.o, self.lay[i]
        keep = pfx == "c"
        pfx = f"{pfx}{i}_"
        o(f"# conditional g_{i + 1}(z_{i + 2}) -> (mu_{i + 1}, l_{i + 1})")
        hid = self.hidden_fwd(m, pfx, [(x, 0)], top_seed=False)
        if keep:
            self.cond_hidden[i] = hid
        lay = m.layers[-1]
        xs = [(h, n0) for (h, _d, n0, _T) in hid[-1]] if hid else [(x, 0)]
        for nm, n0 in ((out[0], 0), (out[1], ly.P)):
            o(f"{nm}{i} = " + _call("bias_tile", "params_ptr", "zk", OFF=lay.b_off, NP=lay.np, ROWS=1, n0=n0, TN=ly.P,
                                    tlev=0, BLOCK_B="BLOCK_B"))
            for (xn, k0) in xs:
                o(f"{nm}{i} = " + _call("linear_fwd", f"{nm}{i}", xn, "params_ptr", "zk", OFF=lay.w_off, NP=lay.np,
                                        k0=k0, n0=n0, PREC="PREC"))

    def cond_bwd(self, i: int, gmu: str, gl: str, gz: str) -> None:
        """gz = the gradient at g_i's input z_{i+1} given ∂μ = gmu, ∂ℓ = gl."""
        m, o, ly, lx = self.s.conds[i], self.o, self.lay[i], self.lay[i + 1]
        pfx = f"c{i}_"
        o(f"# backward through g_{i + 1}")
        hid = self.cond_hidden[i]
        lay = m.layers[-1]
        if not hid:
            self.input_grad(lay, [(gmu, 0)], gz, lx.P)
            self.input_grad(lay, [(gl, ly.P)], gz, lx.P, acc=True)
            return
        g = []
        for (_h, d, k0, T) in hid[-1]:
            nm = f"{pfx}g{len(hid) - 1}_{k0 // T}"
            o(f"{pfx}acc = tl.zeros([BLOCK_B, {T}], dtype=tl.float32)")
            for src, n0 in ((gmu, 0), (gl, ly.P)):
                o(f"{pfx}acc = " + _call("linear_bwd", f"{pfx}acc", src, "params_ptr", "zk", OFF=lay.w_off, NP=lay.np,
                                         n0=n0, k0=k0, PREC="PREC"))
            o(f"{nm} = {pfx}acc * {d}")
            g.append((nm, k0))
        g = self.hidden_bwd(m, pfx, hid, g)
        self.input_grad(m.layers[0], g, gz, lx.P)

    # ---------------------------------------------------------------- replica exchange
    def energy_fwd(self, i: int, z: str) -> None:
        """``rf += f_i(z_i; t)``: an energy's forward pass only (the swap round's E)."""
        m, o, ly = self.s.energies[i], self.o, self.lay[i]
        pfx = f"re{i}_"
        last = m.layers[-1]
        o(f"rf += tl.load(params_ptr + {last.b_off})")
        if m.n_hidden == 0:
            o(f"{pfx}w = " + _call("row_vector", "params_ptr", "zk", OFF=last.w_off, n0=0, TN=ly.P))
            o(f"rf += tl.sum({z} * {pfx}w, axis=1)")
            return
        hid = self.hidden_fwd(m, pfx, [(z, 0)], top_seed=False)
        for (h, _d, n0, T) in hid[-1]:
            o(f"{pfx}wl = " + _call("row_vector", "params_ptr", "zk", OFF=last.w_off, n0=n0, TN=T))
            o(f"rf += tl.sum({h} * {pfx}wl, axis=1)")

    def forward_F(self, x: str) -> None:
        """``rf = F(T_β(x); t)`` per row: T_β and the energies forward, no backward pass."""
        o, s, L = self.o, self.s, self.L
        top = L - 1
        o("rf = tl.zeros([BLOCK_B], dtype=tl.float32)")
        if not self.has_en:
            return
        self.energy_fwd(top, f"{x}{top}")
        for i in range(L - 2, -1, -1):
            self.cond_fwd(i, f"rz{i + 1}" if i + 1 < top else f"{x}{top}", pfx="rc", out=("rmu", "rl"))
            o(f"rex{i} = " + _call("sigma_exp", f"rl{i}", CLAMP=float(s.sigma_clamp)))
            o(f"rz{i} = rmu{i} + (rex{i} + {float(s.sigma_min)!r}) * {x}{i}")
            self.energy_fwd(i, f"rz{i}")

    def swap_round(self) -> None:
        """The register form's round: the decisions (:meth:`_Glue.swap_decide`), then the accepted
        pairs' states exchanged through the output buffer (each program's rows are its own)."""
        o, L = self.o, self.L
        self.swap_decide()
        o("src = rows64 + sw.to(tl.int64) - swd.to(tl.int64)  # the chain whose state this chain takes")
        for i in range(L):
            o(self.state("store_state", "out_ptr", i, "zk", x=f"u{i}"))
        o("tl.debug_barrier()")
        for i, ly in enumerate(self.lay):
            o(f"u{i} = " + _call("load_state", "out_ptr", "src", "rmask", "zk", D=self.D, BASE=ly.base, P=ly.P,
                                 LO=ly.sh, HI=ly.hi))
        o("tl.debug_barrier()  # every row has its new state before any row's is stored again")

    def ula_round(self) -> None:
        """ULA's swap round after the step: one forward pass for E = λ·F of the states (an extra
        evaluation per round: the step's own sweep saw the state entering it, not the one after),
        which also gives a draw taken at this step its log π before the swap moves the state."""
        o, s, L = self.o, self.s, self.L
        o("# ---- replica exchange: a swap round after every step whose counter swap_every divides")
        cond = "(step + 1) % swap_every == 0"
        with o.indent(f"if ({cond}) & live:" if s.draws else f"if {cond}:"):
            self.forward_F("u")
            if s.draws:
                o("dlr = tl.zeros([BLOCK_B], dtype=tl.float32)")
                for i in range(L):
                    o("dlr += " + _call("gauss_terms", f"u{i}", f"un{i}", "alpha", "inv2", KERNEL=s.has_kernel))
                o("isd = (step + 1) % trace_every == 0  # a draw at this step: its log π at the chain's β")
                o("dn = (step + 1) // trace_every - dfirst")
                o("tl.store(dlogp_ptr + dn.to(tl.int64) * B + rows64, lam * rf + dlr, mask=rmask & isd)")
            o("E = lam0 * rf")
            self.swap_round()

    def begin(self) -> None:
        """The program's rows and noise source, and the chains' state ``u{i}`` per layer."""
        self.cond_hidden: dict = {}
        self.prologue()
        for i in range(self.L):
            self.o(f"u{i} = " + self.state("load_state", "u_ptr", i, "0"))

    def level_entry(self) -> None:
        """At a level's start: ``un{i}``, the kernel term's u_next (the given tensor, or the state
        entering the level in a reverse diffusion)."""
        o, s = self.o, self.s
        o("zj = j * zero")
        for i in range(self.L):
            if s.has_kernel and not s.unext_from_state:
                o(f"un{i} = " + self.state("load_state", "unext_ptr", i, "zj"))
            else:
                o(f"un{i} = u{i}  # {'u_next = the state entering the level' if s.has_kernel else 'unused'}")

    def top_down(self, x: str) -> None:
        """T_β forward from the state ``{x}{i}`` (z_i, the conditionals' outputs, e^{s(ℓ_i)}), each
        energy forward and backward on the way (``E{i}``; ``fsum`` where log π is needed)."""
        o, s, L = self.o, self.s, self.L
        top = L - 1
        self.energy(top, f"{x}{top}")
        for i in range(L - 2, -1, -1):
            self.cond_fwd(i, f"z{i + 1}" if i + 1 < top else f"{x}{top}")
            o(f"ex{i} = " + _call("sigma_exp", f"l{i}", CLAMP=float(s.sigma_clamp)))
            o(f"z{i} = mu{i} + (ex{i} + {float(s.sigma_min)!r}) * {x}{i}")
            self.energy(i, f"z{i}")

    def evaluate(self, x: str, g: str, lp: str) -> None:
        """``{g}{i} = ∇log π`` and ``{lp} = log π`` at the state ``{x}{i}`` (the Metropolis form:
        the same top-down / bottom-up sweep as the update, keeping the gradient instead of
        stepping)."""
        o, s, L = self.o, self.s, self.L
        o("fsum = tl.zeros([BLOCK_B], dtype=tl.float32)")
        o(f"{lp} = tl.zeros([BLOCK_B], dtype=tl.float32)")
        if self.has_en:
            self.top_down(x)
            o("G = E0")
        for i in range(L):
            if self.has_en and i < L - 1:
                o("gu, gl = " + _call("cond_grads", "G", f"{x}{i}", f"ex{i}", SIGMA_MIN=float(s.sigma_min),
                                      CLAMP=float(s.sigma_clamp)))
            else:
                o("gu = G" if self.has_en else "gu = 0.0")
            o(f"{lp} += " + _call("gauss_terms", f"{x}{i}", f"un{i}", "alpha", "inv2", KERNEL=s.has_kernel))
            o(f"{g}{i} = " + _call("full_grad", f"{x}{i}", "gu", f"un{i}", "alpha", "inv2", KERNEL=s.has_kernel))
            if self.has_en and i < L - 1:
                self.cond_bwd(i, "G", "gl", f"gz{i}")
                o(f"G = E{i + 1} + gz{i}")
        o(f"{lp} += lam * fsum")

    def generate_metropolis(self) -> str:
        """K Metropolis-adjusted steps (hebm/sampler/reference.py mala_step): each state evaluated once —
        the proposal's log π and gradient serve the next step when it is accepted — so K steps
        cost K + 1 sweeps.  Per chain: the accepted proposals and Σ min(1, α) to ``acc_ptr``."""
        s, o, L = self.s, self.o, self.L
        self.begin()
        o("nacc = tl.zeros([BLOCK_B], dtype=tl.float32)")
        o("psum = tl.zeros([BLOCK_B], dtype=tl.float32)")
        if not s.seeded:
            o("uptr = unif_ptr")
        with o.indent("for j in range(NLEV):"):
            self.level_entry()
            o("k = 0")
            o("zk = zj")
            self.per_level()
            o("# ---- the state entering the level: its log π and gradient")
            self.evaluate("u", "g", "lp")
            if s.ladder:
                o("fu = fsum  # F of the state held (the swap test's E = λ·F)")
            with o.indent("for k in range(K):"):
                o("zk = k * zero  # 0, but not to the compiler: parameter addresses are computed in the step")
                o("step = step_offset + j * K + k")
                self.per_level()
                if s.trace:
                    o("tl.store(tptr + rows, lp, mask=rmask)")
                    o("tptr += B")
                o("# ---- the proposal u' = u + (δ²/2)∇log π(u) + δε (c = 1)")
                for i, ly in enumerate(self.lay):
                    if s.seeded:
                        o("eps = " + _call("noise_chunk", "cid", "step", "key0", "key1", ly.base // 4, NB=ly.P // 4,
                                           c0=0, LO=ly.sh, HI=ly.hi))
                    else:
                        o("eps = " + self.state("load_state", "nptr", i, "zk"))
                    o(f"p{i} = u{i} + half * g{i} + delta[:, None] * eps")
                self.evaluate("p", "q", "lpp")
                if s.ladder:
                    o("fp = fsum")
                o("# ---- the test: log U < log π(u') − log π(u) + log q(u | u') − log q(u' | u)")
                o("fwd = tl.zeros([BLOCK_B], dtype=tl.float32)")
                o("rev = tl.zeros([BLOCK_B], dtype=tl.float32)")
                for i in range(L):
                    o(f"dq = u{i} - p{i} - half * q{i}")
                    o("rev += tl.sum(dq * dq, axis=1)")
                    o(f"dq = p{i} - u{i} - half * g{i}")
                    o("fwd += tl.sum(dq * dq, axis=1)")
                o("inv = tl.where(delta > 0.0, 0.5 / tl.where(delta > 0.0, delta * delta, 1.0), 0.0)  # 0 where δ = 0")
                o("log_alpha = lpp - lp + (-rev * inv) - (-fwd * inv)")
                if s.seeded:
                    o("U = " + _call("accept_uniform", "cid", "step", "key0", "key1"))
                else:
                    o("U = tl.load(uptr + rows, mask=rmask, other=0.5)")
                    o("uptr += B")
                o("acc = tl.log(U) < log_alpha  # NaN refuses")
                for i in range(L):
                    o(f"u{i} = tl.where(acc[:, None], p{i}, u{i})")
                    o(f"g{i} = tl.where(acc[:, None], q{i}, g{i})")
                o("lp = tl.where(acc, lpp, lp)")
                if s.ladder:
                    o("fu = tl.where(acc, fp, fu)")
                if s.draws:
                    o("# a draw: the state after the step and its own log π")
                    self.draw_mask()
                    for i in range(L):
                        o(self.state("store_state", "dptr", i, "zk", x=f"u{i}", rmask="rmask & isd"))
                    o("tl.store(dlogp_ptr + dn.to(tl.int64) * B + rows64, lp, mask=rmask & isd)")
                o("nacc += acc.to(tl.float32)")
                o("psum += tl.where(log_alpha >= 0.0, 1.0, tl.where(log_alpha == log_alpha, "
                  "tl.exp(tl.minimum(log_alpha, 0.0)), 0.0))")
                if not s.seeded:
                    o(f"nptr += B * {self.D}")
                if s.ladder:
                    o("# ---- replica exchange: a swap round after every step whose counter swap_every divides")
                    with o.indent("if (step + 1) % swap_every == 0:"):
                        o("E = lam0 * fu")
                        self.swap_round()
                        o("# log π and its gradient of the new state at the chain's own β (as the reference)")
                        self.evaluate("u", "g", "lp")
                        o("fu = fsum")
            if s.store_levels:
                o("lptr = lvl_ptr + j * B * " + str(self.D))
                for i in range(L):
                    o(self.state("store_state", "lptr", i, "zj", x=f"u{i}"))
        for i in range(L):
            o(self.state("store_state", "out_ptr", i, "zero", x=f"u{i}"))
        o("tl.store(acc_ptr + rows, nacc, mask=rmask)")
        o("tl.store(acc_ptr + B + rows, psum, mask=rmask)")
        return "\n".join(self.head() + self.o.lines) + "\n"

    def generate(self) -> str:
        if self.s.metropolis:
            return self.generate_metropolis()
        s, o, L = self.s, self.o, self.L
        self.begin()
        if s.store_levels:
            o("lptr = lvl_ptr")
        with o.indent("for j in range(NLEV):"):
            self.level_entry()
            with o.indent("for k in range(kend):" if s.draws else "for k in range(K):"):
                self.step_head()
                if self.has_en:
                    o("# ---- top-down: T_beta forward, each energy forward + backward")
                    self.top_down("u")
                    o("# ---- bottom-up: back through T_beta, each layer's update as soon as its gradient is complete")
                    o("G = E0")
                for i in range(L):
                    ly = self.lay[i]
                    if self.has_en and i < L - 1:
                        smin = float(s.sigma_min)
                        o("gu, gl = " + _call("cond_grads", "G", f"u{i}", f"ex{i}", SIGMA_MIN=smin,
                                              CLAMP=float(s.sigma_clamp)))
                    else:
                        o("gu = G" if self.has_en else "gu = 0.0")
                    if self.logp:
                        o("lp += " + _call("gauss_terms", f"u{i}", f"un{i}", "alpha", "inv2", KERNEL=s.has_kernel))
                    if s.seeded:
                        o("eps = " + _call("noise_chunk", "cid", "step", "key0", "key1", ly.base // 4, NB=ly.P // 4, c0=0,
                                           LO=ly.sh, HI=ly.hi))
                    else:
                        o("eps = " + self.state("load_state", "nptr", i, "zk"))
                    upd = _call("langevin_update", f"u{i}", "gu", f"un{i}", "eps", "half", "amp", "alpha", "inv2",
                                KERNEL=s.has_kernel)
                    # (the draw's extra sweep keeps the state as it is, whatever its gradient)
                    o(f"u{i} = " + (f"tl.where(live, {upd}, u{i})" if s.draws else upd))
                    if self.has_en and i < L - 1:
                        self.cond_bwd(i, "G", "gl", f"gz{i}")
                        o(f"G = E{i + 1} + gz{i}")
                self.step_tail()
                if s.draws:
                    o("# a draw: the state after the step")
                    self.draw_mask()
                    for i in range(L):
                        o(self.state("store_state", "dptr", i, "zk", x=f"u{i}", rmask="rmask & isd"))
                if s.ladder:
                    self.ula_round()
            if s.store_levels:
                for i in range(L):
                    o(self.state("store_state", "lptr", i, "zj", x=f"u{i}"))
                o(f"lptr += B * {self.D}")
        for i in range(L):
            o(self.state("store_state", "out_ptr", i, "zero", x=f"u{i}"))
        return "\n".join(self.head() + self.o.lines) + "\n"

    def state(self, fn: str, ptr: str, i: int, z: str, x=None, rmask: str = "rmask") -> str:
        ly = self.lay[i]
        args = (ptr,) if x is None else (ptr, x)
        kw = dict(D=self.D, BASE=ly.base) if x is not None else dict(D=self.D, BASE=ly.base, P=ly.P)
        return _call(fn, *args, "rows64", rmask, z, **kw, LO=ly.sh, HI=ly.hi)


# ------------------------------------------------------------------------------------- streamed form
class _StreamedGlue(_Glue):
    """State in the output buffer, activations in a per-program scratch buffer; one call per
    layer."""

    form = "streamed"

    def __init__(self, spec):
        super().__init__(spec)
        self.regions: dict = {}
        lay = self.lay
        mlps = list(spec.conds) + list(spec.energies)
        hmax = max([x.np for m in mlps for x in m.layers[:-1]] + [16])
        pmax = max(ly.P for ly in lay)
        for name in ("Z0", "Z1"):
            self._region(name, pmax)
        for i, ly in enumerate(lay):
            self._region(f"E{i}", ly.P)
        for i in range(self.L - 1):
            self._region(f"EX{i}", lay[i].P)
        for name in ("GMU0", "GL0", "GMU1", "GL1"):
            self._region(name, pmax)
        for name in ("H0", "H1", "GA0", "GA1"):
            self._region(name, hmax)
        self._region("DE", max([sum(x.np for x in m.layers[:-2]) for m in spec.energies] + [0]))
        for i, m in enumerate(spec.conds):
            self._region(f"DC{i}", sum(x.np for x in m.layers[:-1]))
        if spec.has_kernel and spec.unext_from_state:
            self._region("UN", pad(self.D + 4))
        if spec.ladder:  # a swap round's copy of the program's states (the exchange reads it permuted)
            self._region("SW", pad(self.D))

    def _region(self, name: str, width: int) -> None:
        if width > 0:
            self.regions[name] = self.scr_w
            self.scr_w += width

    def r(self, name: str, sub: int = 0) -> str:
        """A scratch region's row pointers.  ``sz = scr + zk``: region pointers are step-variant,
        so the compiler computes them at their use instead of hoisting ~40 of them out of the step
        loop and holding them in registers for the whole chain."""
        return f"sz + {self.regions[name] + sub}"

    def barrier(self) -> None:
        self.o("tl.debug_barrier()")

    def src_of(self, i: int) -> tuple:
        """(row pointer, LO, HI) of z_i as an MLP input: the state for the top layer, else its
        Z region (every column valid: HI = -1)."""
        ly = self.lay[i]
        if i == self.L - 1:
            return f"uz + {ly.base}", ly.sh, ly.hi
        return self.r(f"Z{i % 2}"), 0, -1

    def hidden(self, m, src: tuple, KP: int, dreg, top_seed: bool) -> tuple:
        """Forward through m's hidden layers from ``src`` (KP wide); returns (source of the last
        hidden activation, its width).  Derivatives go to region ``dreg`` (packed per hidden
        layer); with ``top_seed`` the last hidden layer is fused with the 1-wide output (an
        energy: the backward seed goes to GA0)."""
        o, s = self.o, self.s
        ptr, LO, HI = src
        dsub = 0
        for j, lay in enumerate(m.layers[:-1]):
            common = dict(KP=KP, TK=self.t(KP), LO=LO, HI=HI, params_ptr="params_ptr", z="zk", W_OFF=lay.w_off,
                          NP=lay.np, B_OFF=lay.b_off, ROWS=lay.rows, tlev="tlev")
            if top_seed and j == m.n_hidden - 1:
                o(("fsum += " if self.logp else "") + _call(
                    "stream_energy_top", ptr, "rm", **common, WL_OFF=m.layers[-1].w_off, lam="lam",
                    dst_ga=self.r("GA0"), TN=self.t(lay.np), ACT=m.act, SLOPE=float(m.act_param), TRACE=self.logp,
                    PREC="PREC", BLOCK_B="BLOCK_B"))
                self.barrier()
                return None, lay.np
            store_d = dreg is not None
            o(_call("stream_hidden_fwd", ptr, "rm", **common, dst_h=self.r(f"H{j % 2}"),
                    dst_d=self.r(dreg, dsub) if store_d else "scr", TN=self.t(lay.np), ACT=m.act,
                    SLOPE=float(m.act_param), STORE_D=store_d, PREC="PREC", BLOCK_B="BLOCK_B"))
            self.barrier()
            dsub += lay.np
            ptr, LO, HI, KP = self.r(f"H{j % 2}"), 0, -1, lay.np
        return (ptr, LO, HI), KP

    def hidden_bwd(self, m, dreg: str, cur: str) -> str:
        """Back from the gradient at the last hidden pre-activation (region ``cur``) to the first;
        returns the region that holds it."""
        subs, acc = [], 0
        for lay in m.layers[:-1]:
            subs.append(acc)
            acc += lay.np
        for j in range(m.n_hidden - 1, 0, -1):
            lay = m.layers[j]
            nxt = "GA1" if cur == "GA0" else "GA0"
            self.o(_call("stream_hidden_bwd", self.r(cur), "rm", NP=lay.np, TN=self.t(lay.np), params_ptr="params_ptr",
                         z="zk", W_OFF=lay.w_off, src_d=self.r(dreg, subs[j - 1]), dst_g=self.r(nxt), KP=lay.kp,
                         TK=self.t(lay.kp), PREC="PREC", BLOCK_B="BLOCK_B"))
            self.barrier()
            cur = nxt
        return cur

    def energy(self, i: int) -> None:
        m, o, s, ly = self.s.energies[i], self.o, self.s, self.lay[i]
        o(f"# energy f_{i + 1}(z_{i + 1}; t): forward and backward")
        ptr, LO, HI = self.src_of(i)
        last = m.layers[-1]
        if self.logp:
            o(f"fsum += tl.load(params_ptr + {last.b_off})")
        if m.n_hidden == 0:
            o(("fsum += " if self.logp else "") + _call(
                "stream_energy_linear", ptr, "rm", KP=ly.P, TK=self.t(ly.P), LO=LO, HI=HI, params_ptr="params_ptr",
                z="zk", W_OFF=last.w_off, lam="lam", dst_e=self.r(f"E{i}"), TRACE=self.logp, BLOCK_B="BLOCK_B"))
            self.barrier()
            return
        self.hidden(m, (ptr, LO, HI), ly.P, "DE" if m.n_hidden > 1 else None, top_seed=True)
        cur = self.hidden_bwd(m, "DE", "GA0")
        lay = m.layers[0]
        o(_call("stream_input_grad", self.r(cur), "rm", NP=lay.np, TN=self.t(lay.np), params_ptr="params_ptr", z="zk",
                W_OFF=lay.w_off, dst=self.r(f"E{i}"), KP=ly.P, TK=self.t(ly.P), PREC="PREC", BLOCK_B="BLOCK_B"))
        self.barrier()

    def cond_fwd(self, i: int) -> None:
        m, o, s, ly, lx = self.s.conds[i], self.o, self.s, self.lay[i], self.lay[i + 1]
        o(f"# conditional g_{i + 1}(z_{i + 2}) -> (mu_{i + 1}, l_{i + 1}), z_{i + 1}")
        src, KP = self.hidden(m, self.src_of(i + 1), lx.P, f"DC{i}" if m.n_hidden else None, top_seed=False)
        lay = m.layers[-1]
        o(_call("stream_cond_out", src[0], "rm", KP=KP, TK=self.t(KP), LO=src[1], HI=src[2], params_ptr="params_ptr",
                z="zk", W_OFF=lay.w_off, B_OFF=lay.b_off, P=ly.P, u_row=f"uz + {ly.base}", ULO=ly.sh, UHI=ly.hi,
                dst_z=self.r(f"Z{i % 2}"), dst_ex=self.r(f"EX{i}"), TN=self.t(ly.P), SIGMA_MIN=float(s.sigma_min),
                CLAMP=float(s.sigma_clamp),
                PREC="PREC", BLOCK_B="BLOCK_B"))
        self.barrier()

    def cond_bwd(self, i: int) -> None:
        """Back through g_i from ∂μ, ∂ℓ (regions GMU/GL of layer i) to its first hidden
        pre-activation (the update of layer i+1 does the product with the first layer)."""
        m, o, ly = self.s.conds[i], self.o, self.lay[i]
        if m.n_hidden == 0:
            return
        o(f"# backward through g_{i + 1}")
        lay = m.layers[-1]
        dsub = sum(x.np for x in m.layers[:-2])
        o(_call("stream_cond_out_bwd", self.r(f"GMU{i % 2}"), self.r(f"GL{i % 2}"), "rm", P=ly.P, TN=self.t(ly.P),
                params_ptr="params_ptr", z="zk", W_OFF=lay.w_off, src_d=self.r(f"DC{i}", dsub), dst_g=self.r("GA0"),
                KP=lay.kp, TK=self.t(lay.kp), PREC="PREC", BLOCK_B="BLOCK_B"))
        self.barrier()
        self.ga_of_cond[i] = self.hidden_bwd(m, f"DC{i}", "GA0")

    def update(self, i: int) -> None:
        o, s, ly = self.o, self.s, self.lay[i]
        o(f"# layer {i + 1}: gradient complete -> Langevin update")
        kw = dict(LO=ly.sh, HI=ly.hi, NP=ly.P, TN=self.t(ly.P), HAS_E=self.has_en,
                  src_e=self.r(f"E{i}") if self.has_en else "scr")
        gz = dict(GZ=0, src_g="scr", src_g2="scr", GP=16, GT=16, params_ptr="params_ptr", z="zk", GW_OFF=0, GW_NP=16)
        if self.has_en and i > 0:
            m, lb = self.s.conds[i - 1], self.lay[i - 1]
            lay = m.layers[0]
            if m.n_hidden:
                gz.update(GZ=1, src_g=self.r(self.ga_of_cond[i - 1]), GP=lay.np, GT=self.t(lay.np), GW_OFF=lay.w_off,
                          GW_NP=lay.np)
            else:
                gz.update(GZ=2, src_g=self.r(f"GMU{(i - 1) % 2}"), src_g2=self.r(f"GL{(i - 1) % 2}"), GP=lb.P,
                          GT=self.t(lb.P), GW_OFF=lay.w_off, GW_NP=lay.np)
        kw.update(gz)
        has_ex = self.has_en and i < self.L - 1
        kw.update(HAS_EX=has_ex, src_ex=self.r(f"EX{i}") if has_ex else "scr", SIGMA_MIN=float(s.sigma_min),
                  CLAMP=float(s.sigma_clamp),
                  dst_mu=self.r(f"GMU{i % 2}") if has_ex else "scr", dst_l=self.r(f"GL{i % 2}") if has_ex else "scr")
        if s.has_kernel:
            un = f"{self.r('UN')} + {ly.base}" if s.unext_from_state else f"unx + zk + {ly.base}"
        else:
            un = "uz"
        kw.update(KERNEL=s.has_kernel, un_row=un, half="half", amp="amp", alpha="alpha", inv2="inv2")
        kw.update(SEEDED=s.seeded, cid="cid" if s.seeded else 0, step="step", k0="key0" if s.seeded else 0,
                  k1="key1" if s.seeded else 0, BLK0=ly.base // 4, noise_row="uz" if s.seeded else f"nrow + {ly.base}")
        kw.update(TRACE=self.logp, rmask="rm", PREC="PREC", BLOCK_B="BLOCK_B")
        o(("lp += " if self.logp else "") + _call("stream_update", f"uz + {ly.base}", **kw))
        self.barrier()

    def ula_round(self) -> None:
        """The streamed form's swap round after a step (ULA): the top-down pass again for E = λ·F of
        the post-step states (its gradient regions are unused: the next step writes them afresh),
        a draw's log π at this step before the swap, the decisions, and the exchange of the accepted
        pairs' states — the program's state rows copied to its scratch (region SW) and read back
        permuted."""
        o, s, L, D = self.o, self.s, self.L, self.D
        TD = self.t(pad(D))
        cond = "(step + 1) % swap_every == 0"
        o("# ---- replica exchange: a swap round after every step whose counter swap_every divides")
        with o.indent(f"if ({cond}) & live:" if s.draws else f"if {cond}:"):
            o("fsum = tl.zeros([BLOCK_B], dtype=tl.float32)")
            keep, self.logp = self.logp, True
            try:
                if self.has_en:
                    self.energy(L - 1)
                    for i in range(L - 2, -1, -1):
                        self.cond_fwd(i)
                        self.energy(i)
            finally:
                self.logp = keep
            if s.draws:
                un = "unx + zk" if s.has_kernel else "uz"
                o("dlr = " + _call("stream_gauss", "uz", un, "rm", "alpha", "inv2", N=D, TN=TD, KERNEL=s.has_kernel))
                o("isd = (step + 1) % trace_every == 0  # a draw at this step: its log π at the chain's β")
                o("dn = (step + 1) // trace_every - dfirst")
                o("tl.store(dlogp_ptr + dn.to(tl.int64) * B + rows64, lam * fsum + dlr, mask=rmask & isd)")
            o("E = lam0 * fsum")
            self.swap_decide()
            sw = self.regions["SW"]
            o(_call("copy_cols", "uz", f"sz + {sw}", N=D, TN=TD, rmask="rm"))
            o("tl.debug_barrier()")
            o("lsrc = lrow + sw.to(tl.int32) - swd.to(tl.int32)  # the row whose state this chain takes")
            o(f"ssrc = scratch_ptr + (pid * BLOCK_B + lsrc).to(tl.int64)[:, None] * {self.scr_w} + {sw} + zk")
            o(_call("copy_cols", "ssrc", "uz", N=D, TN=TD, rmask="rm"))
            o("tl.debug_barrier()  # every row has its new state before the next step reads any")

    def generate(self) -> str:
        s, o, L, D = self.s, self.o, self.L, self.D
        self.ga_of_cond: dict = {}
        self.prologue()
        o("rm = rmask[:, None]")
        o(f"ust = out_ptr + rows64[:, None] * {D}  # the state: the output buffer's rows")
        o(f"scr = scratch_ptr + (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)[:, None] * {self.scr_w}")
        if s.has_kernel and not s.unext_from_state:
            o(f"unx = unext_ptr + rows64[:, None] * {D}")
        TD = self.t(pad(D))
        o(_call("copy_cols", f"u_ptr + rows64[:, None] * {D}", "ust", N=D, TN=TD, rmask="rm"))
        self.barrier()
        with o.indent("for j in range(NLEV):"):
            if s.has_kernel and s.unext_from_state:
                o(_call("copy_cols", "ust", f"scr + {self.regions['UN']}", N=D, TN=TD, rmask="rm"))
                self.barrier()
            with o.indent("for k in range(kend):" if s.draws else "for k in range(K):"):
                self.step_head()
                o("sz = scr + zk  # step-variant row pointers (see _StreamedGlue.r)")
                o("uz = ust + zk")
                if self.has_en:
                    o("# ---- top-down: T_beta forward, each energy forward + backward")
                    self.energy(L - 1)
                    for i in range(L - 2, -1, -1):
                        self.cond_fwd(i)
                        self.energy(i)
                o("# ---- bottom-up: back through T_beta, each layer's update as soon as its gradient is complete")
                for i in range(L):
                    self.update(i)
                    if self.has_en and i < L - 1:
                        self.cond_bwd(i)
                self.step_tail()
                if s.draws:
                    o("# a draw: the state after the step")
                    self.draw_mask()
                    o(_call("copy_cols", "ust", f"dptr + rows64[:, None] * {D}", N=D, TN=TD, rmask="rm & isd"))
                if s.ladder:
                    self.ula_round()
            if s.draws:
                o("# after the draw's extra sweep: the state as it was drawn (the sweep's update was by 0)")
                self.barrier()
                if s.ladder:  # (no extra sweep ran where a swap round followed the last step: keep its swap)
                    o("dlast = ((step_offset + K) % trace_every == 0) & ((step_offset + K) % swap_every != 0)")
                else:
                    o("dlast = (step_offset + K) % trace_every == 0")
                o(f"dlp = draws_ptr + ((step_offset + K) // trace_every - dfirst).to(tl.int64) * B * {D}")
                o(_call("copy_cols", f"dlp + rows64[:, None] * {D}", "ust", N=D, TN=TD, rmask="rm & dlast"))
                self.barrier()
            if s.store_levels:
                o(_call("copy_cols", "ust", f"lvl_ptr + (j * B + rows64)[:, None] * {D}", N=D, TN=TD, rmask="rm"))
        return "\n".join(self.head() + self.o.lines) + "\n"


def generate_source(spec: LangevinSpec) -> tuple:
    """(source text, scratch floats per row) of the kernel for ``spec``."""
    form = kernel_form(spec)
    if spec.metropolis and form != "register":
        raise ValueError("the Metropolis-adjusted kernel has no streamed form: this network exceeds reg_limit")
    if spec.ladder not in ("", "deo", "even_odd"):
        raise ValueError(f"ladder must be '', 'deo' or 'even_odd', got {spec.ladder!r}")
    g = _RegisterGlue(spec) if form == "register" else _StreamedGlue(spec)
    src = g.generate()
    return src, g.scr_w


# ---------------------------------------------------------------------------------- module cache
_lock = threading.Lock()
_modules: dict = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cache_dir() -> str:
    d = os.environ.get("HEBM_TRITON_CACHE") or os.path.join(
        tempfile.gettempdir(), f"hebm_triton_{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(d, exist_ok=True)
    return d


def load_source(src: str, prefix: str):
    """Import generated source from a file (Triton reads kernels' source through inspect)."""
    interp = _interpret()
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
    interp = _interpret()
    hit = _built.get((spec, interp))
    if hit is None:
        src, scr_w = generate_source(spec)
        hit = _built[(spec, interp)] = (load_source(src, "langevin").langevin_kernel, scr_w)
    return hit
