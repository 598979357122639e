"""The Triton kernels' own parameter layout, derived from each layer's ``W [out, in]`` and bias table.

hebm's networks give, per Linear layer, ``W [out, in]`` row-major and a bias table ``[rows, out]``
(``hebm.sampler.backends.pack.unpack``).  Read tile by tile in a kernel, such tensors mean masked scalar
gathers: odd offsets (no vector loads), a mask per element, and a shift for every latent input or
output that does not start on a padded boundary.  The kernels instead read one buffer in which
every layer is laid out for them:

* ``Wᵀ`` as a zero-padded ``[KP, NP]`` block (row k = input feature, column n = output unit),
  ``KP``, ``NP`` powers of two ≥ 16, every block starting on a 16-float (64-byte) boundary;
* the input rows of a layer that reads latent layer j sit at the layer's block-aligned column
  (``sh_j + k``, see :mod:`hebm.kernels.device`), so a latent tile multiplies the block as is;
* a conditional's output ``[μ_i | ℓ_i]`` is two ``P_i``-wide column blocks (μ at ``sh_i + n``,
  ℓ at ``P_i + sh_i + n``), so both come out in layer i's own tile coordinates;
* the bias table ``[rows, NP]`` padded the same way; an energy's 1-wide output layer is a ``KP``
  vector and one bias.

Every tile a kernel loads is then a dense, unmasked, aligned block.  :func:`layout` computes the
offsets (pure Python, from the widths alone: they are literals of the generated kernels);
:func:`build` fills the buffer from the layers' tensors (torch; once per copy of the values, kept
by the launcher).
"""
from __future__ import annotations

from dataclasses import dataclass

from .codegen import MLPSpec, TLayer, latent_geometry, pad

_ALIGN = 16


def _up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass(frozen=True)
class _Src:
    """Where a kernel layer's values go in the buffer."""

    rsh: int  # destination row of input feature 0
    cols: tuple  # destination column of output unit n, per n


def layout(dims, conds, energies) -> tuple:
    """``(cond MLPSpecs, energy MLPSpecs, total floats, sources)`` of the kernel buffer.

    ``conds`` / ``energies``: per MLP ``(layers, act, act_param)`` with one ``(in, out, b_rows)``
    per layer; conditional i reads latent layer i+1 and writes layer i, energy i reads layer i.
    ``sources`` (one per layer, conditionals then energies) says where :func:`build` puts each."""
    geo = latent_geometry(dims)
    off = 0
    sources = []

    def mlp(rows_in, act, ap, reads: int, writes=None):
        nonlocal off
        layers = []
        n = len(rows_in)
        for j, (IN, OUT, rows) in enumerate(rows_in):
            first, last = j == 0, j == n - 1
            kp = geo[reads].P if first else pad(IN)
            rsh = geo[reads].sh if first else 0
            if last and writes is not None:  # conditional output: μ and ℓ blocks in layer coordinates
                g = geo[writes]
                np_ = 2 * g.P
                d = OUT // 2
                cols = tuple(g.sh + c for c in range(d)) + tuple(g.P + g.sh + c for c in range(d))
            elif last:  # energy output: a KP vector and one bias
                np_, cols = 1, (0,)
            else:
                np_, cols = pad(OUT), tuple(range(OUT))
            w_off = off
            off += _up(kp * np_)
            b_off = off
            off += _up(rows * np_)
            layers.append(TLayer(IN, OUT, rows, w_off, kp, np_, b_off))
            sources.append(_Src(rsh, cols))
        return MLPSpec(layers=tuple(layers), act=int(act), act_param=float(ap))

    cspecs = tuple(mlp(m[0], m[1], m[2], reads=i + 1, writes=i) for i, m in enumerate(conds))
    especs = tuple(mlp(m[0], m[1], m[2], reads=i) for i, m in enumerate(energies))
    return cspecs, especs, off, tuple(sources)


def build(weights, biases, specs, sources, total: int):
    """The kernel buffer (the layers' dtype and device) for the layout :func:`layout` returned
    (``specs``: the MLPSpecs, conditionals then energies): ``weights`` ``W [out, in]`` and
    ``biases`` (bias tables ``[rows, out]``), one per layer in the same order."""
    import torch

    w0 = weights[0] if weights else torch.zeros(0)
    out = torch.zeros(total, dtype=w0.dtype, device=w0.device)
    layers = [lay for m in specs for lay in m.layers]
    for lay, src, w, b in zip(layers, sources, weights, biases):
        IN, rows = lay.in_, lay.rows
        cols = torch.tensor(src.cols, dtype=torch.long, device=w.device)
        wt = out[lay.w_off: lay.w_off + lay.kp * lay.np].view(lay.kp, lay.np)
        wt[src.rsh: src.rsh + IN].index_copy_(1, cols, w.t())
        bt = out[lay.b_off: lay.b_off + rows * lay.np].view(rows, lay.np)
        bt.index_copy_(1, cols, b)
    return out
