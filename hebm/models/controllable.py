"""Controllable synthesis: attribute-coupled energies on a trained model (docs/controllable.md).

Paper 2 couples a symbol vector y with the latent EBM, ``p(z̃, y) ∝ exp(⟨y, h(z̃)⟩ + F(z̃)) p_β(z̃)``,
with layer-wise terms, so that ``p(z̃ | y) ∝ exp(Σ_i g_i(z_i, y) + F(z̃)) p_β(z̃)`` draws latents
with the chosen attributes, and each attribute can sit on the layer whose level of abstraction
fits it.  hebm's coupling term on layer i is a **y-conditioned MLP** ``g_i(z_i, y)``: the MLP of
that layer whose hidden biases are shifted by ``Σ_{a on layer i} B_a[y_a]`` (one learned row per
attribute value) — the same device as the diffusion's level conditioning.  At a fixed y it is an
ordinary MLP, so the energy of layer i, ``f_i(z_i) + g_i(z_i, y)``, is one MLP of the kernels'
family with a per-chain bias table (:func:`merge_energy`): chains with *different* attribute
values run in one fused launch, ``t`` selecting each chain's row (the combination index of its
values, :func:`combination_index`).

Learning (the fine-tuning stage, ``python -m hebm.train --init RUN/ckpt.pt --attributes …``): the
trained model is frozen bit for bit (its F too); only the heads learn, by the conditional EBM's
maximum-likelihood gradient — positives ``(z̃⁺ ~ q(z̃ | x), y(x))`` of labelled images, negatives
``z̃⁻`` from the conditional prior chain at the same y (ũ-space Langevin from N(0, I) on
``F + G(·, y) − ½‖u‖²``), loss ``mean G(z̃⁻, y) − mean G(z̃⁺, y)``, ``G = Σ_i g_i``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..prior.hierarchical import HierarchicalPrior
from ..prior.nn import MLP, as_activation
from ..prior.philox import initial_noise
from . import base  # base.run_langevin, called through the module: the one seam that replaces the sampler
from .attributes import ATTRIBUTES, check_names
from .base import energy_penalty


def parse_layers(names: Sequence[str], spec: Optional[Sequence[str]], L: int, default: dict) -> list:
    """0-based layer of every attribute: ``spec`` entries ``name:layer`` (1-based, z₁ the bottom
    layer, as the papers count), else ``default[name]`` (1-based; clipped to the top layer)."""
    chosen = {}
    for item in spec or []:
        name, sep, layer = str(item).partition(":")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(f"--attribute-layers {item!r}: expected NAME:LAYER for an attribute of --attributes "
                             f"({', '.join(names)}), e.g. digit:{L}")
        try:
            k = int(layer)
        except ValueError:
            raise ValueError(f"--attribute-layers {item!r}: the layer must be an integer 1..{L}") from None
        if not 1 <= k <= L:
            raise ValueError(f"--attribute-layers {item!r}: the model has layers 1..{L} (1 = z_1, the bottom)")
        if name in chosen:
            raise ValueError(f"--attribute-layers: {name} is given twice ({chosen[name]} and {k}); give each attribute "
                             f"one layer")
        chosen[name] = k
    return [chosen.get(n, min(int(default.get(n, L)), L)) - 1 for n in names]


def combination_index(y: torch.Tensor, n_values: Sequence[int]) -> torch.Tensor:
    """``[B]``: the mixed-radix index of each row of attribute values ``y`` ``[B, A]`` (first
    attribute most significant) — the row of the merged energies' bias tables."""
    idx = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
    for j, n in enumerate(n_values):
        idx = idx * int(n) + y[:, j].long()
    return idx


def combinations(n_values: Sequence[int]) -> torch.Tensor:
    """``[Π n, A]``: every combination of attribute values, in :func:`combination_index` order."""
    grids = torch.meshgrid(*[torch.arange(int(n)) for n in n_values], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], 1)


class AttributeHeads(nn.Module):
    """``G(z̃, y) = Σ_i g_i(z_i, y)``: one y-conditioned MLP per layer that carries attributes."""

    def __init__(self, dims: Sequence[int], names: Sequence[str], layers: Sequence[int], hidden: Sequence[int], act):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.names = list(check_names(names))
        self.layers = [int(i) for i in layers]
        self.n_values = [ATTRIBUTES[n].n_values for n in self.names]
        self.n_combos = int(math.prod(self.n_values))
        self.hidden = [int(h) for h in hidden]
        if not self.hidden:
            raise ValueError("attribute heads need at least one hidden layer (the values enter through its biases)")
        self.act = as_activation(act)
        self.nets = nn.ModuleDict()
        for i in sorted(set(self.layers)):
            net = MLP([self.dims[i], *self.hidden, 1], self.act.spec())
            with torch.no_grad():  # G ≡ 0 at the start: the fine-tuning starts from the trained prior
                net.layers[-1].weight.zero_()
                net.layers[-1].bias.zero_()
            self.nets[str(i)] = net
        g = torch.Generator().manual_seed(12345)
        self.value_bias = nn.ParameterList(
            nn.Parameter(torch.randn(n, sum(self.hidden), generator=g)) for n in self.n_values)

    def shift(self, i: int, values: torch.Tensor):
        """``Σ_{a on layer i} B_a[values[:, a]]``: layer i's hidden-bias shift for rows of attribute
        values ``[B, A]`` (0 when no attribute sits there)."""
        out = 0
        for a, (layer, bias) in enumerate(zip(self.layers, self.value_bias)):
            if layer == i:
                out = out + bias[values[:, a].long()]
        return out

    def layer_table(self, i: int) -> Optional[torch.Tensor]:
        """``[n_combos, Σ hidden]``: layer i's shift for every combination (None: no head)."""
        if str(i) not in self.nets:
            return None
        return self.shift(i, combinations(self.n_values).to(self.value_bias[0].device))

    def terms(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[B, L]``: ``g_i(z_i, y)`` per layer (0 where no attribute sits)."""
        cols = []
        for i, zi in enumerate(torch.split(z, self.dims, dim=1)):
            net = self.nets[str(i)] if str(i) in self.nets else None
            if net is None:
                cols.append(zi.new_zeros(zi.shape[0]))
            else:
                cols.append(net.shifted(zi, torch.split(self.shift(i, y), net.hidden_widths, dim=1))[:, 0])
        return torch.stack(cols, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.terms(z, y).sum(1)


@torch.no_grad()
def merge_energy(d: int, f: Optional[MLP], g: Optional[MLP], g_table: Optional[torch.Tensor], n_combos: int,
                 act: str, like: torch.Tensor) -> MLP:
    """One MLP of the kernels' family computing ``f(z) + g(z, y)`` at row ``c`` of its bias
    table: the two networks' hidden units side by side (f's first; block-diagonal weights past
    the first layer), their outputs summed, ``g``'s value shift in the table (zeros under f's
    units).  Effective weights are copied (a spectrally normalised ``f`` enters normalised), so
    the merged network is a snapshot, rebuilt when the weights change."""
    parts = [net for net in (f, g) if net is not None]
    if len({len(net.layers) for net in parts}) > 1:
        raise ValueError(f"the attribute heads need as many hidden layers as the energies ({len(f.layers) - 1}): "
                         f"set --attribute-hidden")
    depth = len(parts[0].layers) if parts else 2
    hidden = [sum(net.widths[j + 1] for net in parts) or 1 for j in range(depth - 1)]
    m = MLP([d, *hidden, 1], act, n_levels=n_combos, level_source="table").to(device=like.device, dtype=like.dtype)
    for lin in m.layers:
        lin.weight.zero_()
        lin.bias.zero_()
    m.level_table.zero_()
    for j, lin in enumerate(m.layers):
        last = j == depth - 1
        r = c = 0  # where this network's units start among the merged layer's outputs / inputs
        for net in parts:
            src = net.layers[j]
            w = src.effective_weight().detach().to(lin.weight)
            rows = slice(0, 1) if last else slice(r, r + w.shape[0])
            cols = slice(0, d) if j == 0 else slice(c, c + w.shape[1])
            lin.weight[rows, cols] = w
            if src.bias is not None:
                lin.bias[rows] += src.bias.detach().to(lin.bias)
            r += 0 if last else w.shape[0]
            c += 0 if j == 0 else w.shape[1]
    if g is not None and g_table is not None:
        off_m = off_g = 0
        for j in range(depth - 1):
            hf = f.widths[j + 1] if f is not None else 0
            hg = g.widths[j + 1]
            m.level_table[:, off_m + hf: off_m + hf + hg] = g_table[:, off_g: off_g + hg].to(m.level_table)
            off_m += hf + hg
            off_g += hg
    return m


def conditional_prior(prior: HierarchicalPrior, heads: AttributeHeads) -> HierarchicalPrior:
    """The hierarchy with energies ``f_i + g_i(·, y)`` merged per layer (:func:`merge_energy`):
    a level-conditioned :class:`HierarchicalPrior` with ``n_levels`` = the number of attribute
    combinations, sharing ``prior``'s conditionals.  Sample it with ``t = combination_index(y)``."""
    if prior.n_levels is not None:
        raise ValueError("attribute coupling needs an unconditional prior (a gaussian or ebm run), not a diffusion")
    p0 = next(prior.parameters())
    act = heads.act.spec()
    out = HierarchicalPrior(prior.dims, prior_hidden=[1], energy_hidden=[1], act="gelu", energy_act=act,
                            n_levels=heads.n_combos, sigma_min=prior.sigma_min, sigma_clamp=prior.sigma_clamp)
    out.conditionals = prior.conditionals
    ens = []
    for i, d in enumerate(prior.dims):
        f = prior.energies[i] if prior.energies is not None else None
        if f is not None and f.act.spec() != act:
            raise ValueError(f"the energies' activation ({f.act.spec()}) and the heads' ({act}) must agree to merge")
        g = heads.nets[str(i)] if str(i) in heads.nets else None
        ens.append(merge_energy(d, f, g, heads.layer_table(i), heads.n_combos, act, p0))
    out.energies = nn.ModuleList(ens)
    return out




# ---------------------------------------------------------------------------------- the model
class ControllableMixin:
    """A trained model (gaussian or ebm prior) with attribute heads: everything the trained run
    learned is frozen bit for bit; only ``heads`` learn (module docstring).  Composed with the
    model's class by :func:`hebm.models.build.build_model` when ``cfg.attributes`` is set."""

    #: the heads' chains take --metropolis, their loss --energy-l2; a ladder is not run for them
    ignored_settings: dict = {"temperatures": "the attribute heads' chains p(z | y) take no temperature ladder",
                              "swap_every": "the attribute heads' chains p(z | y) take no temperature ladder"}

    def __init__(self, cfg):
        super().__init__(cfg)
        names = list(cfg.attributes)
        layers = parse_layers(names, cfg.attribute_layers, len(self.dims), default_layers(cfg.generator, len(self.dims)))
        hidden = cfg.attribute_hidden or cfg.energy_hidden
        self.heads = AttributeHeads(self.dims, names, layers, hidden, cfg.energy_act)

    @property
    def attributes(self) -> list:
        return list(self.heads.names)

    @property
    def two_stage(self) -> bool:
        return True

    @property
    def stage2_prefixes(self) -> tuple:
        return ("heads.",)

    def generator_parameters(self) -> list:
        return []

    def energy_parameters(self) -> list:
        return list(self.heads.parameters())

    def power_iteration(self) -> None:
        """Nothing: the trained model's (spectrally normalised) energies are frozen, buffers included."""

    def conditional_prior(self) -> HierarchicalPrior:
        """The hierarchy with the merged energies ``f_i + g_i(·, y)`` (a snapshot of the weights)."""
        return conditional_prior(self.prior, self.heads)

    def attribute_rows(self, y: torch.Tensor) -> torch.Tensor:
        """``[B]`` rows of the merged bias tables for attribute values ``y`` ``[B, A]`` (checked)."""
        y = torch.as_tensor(y, dtype=torch.long)
        if y.dim() != 2 or y.shape[1] != len(self.heads.names):
            raise ValueError(f"attribute values must be [B, {len(self.heads.names)}] ({', '.join(self.heads.names)}), "
                             f"got shape {tuple(y.shape)}")
        for a, (name, n) in enumerate(zip(self.heads.names, self.heads.n_values)):
            bad = (y[:, a] < 0) | (y[:, a] >= n)
            if bool(bad.any()):
                raise ValueError(f"attribute {name} takes values 0..{n - 1}, got {int(y[:, a][bad][0])}")
        return combination_index(y, self.heads.n_values)

    @torch.no_grad()
    def sample_latents_given(self, y: torch.Tensor, *, seed: int, n_steps: int, step_size: float, fused: bool = False,
                             chain_offset: int = 0, check: str = "warn", return_u: bool = False,
                             metropolis: bool = False):
        """Latents from ``p(z̃ | y)``: ũ-space Langevin from N(0, I) on ``F + G(·, y) − ½‖u‖²``, each
        chain with its own attribute values (one fused call), then ``z̃ = T_β(ũ)``; ``metropolis``:
        Metropolis-adjusted steps."""
        n = int(y.shape[0])
        p0 = next(self.parameters())
        t = self.attribute_rows(y).to(p0.device)
        ids = torch.arange(chain_offset, chain_offset + n, dtype=torch.long, device=p0.device)
        u = initial_noise(seed, n, self.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
        if n_steps > 0:
            u = base.run_langevin(self.conditional_prior(), u, fused=fused, n_steps=n_steps, step_size=step_size, seed=seed,
                             chain_ids=ids, t=t, check=check, metropolis=metropolis)
        z = self.prior.T(u)
        return (z, u) if return_u else z

    def chains(self, x, *, generator, seed: int, chain_ids, settings, fused: bool, labels=None) -> dict:
        if labels is None:
            raise ValueError("attribute fine-tuning needs the batch's attribute values (labels)")
        z = self.sample_latents_given(labels, seed=seed, n_steps=settings.langevin_steps,
                                      step_size=settings.langevin_step_size, fused=fused,
                                      chain_offset=int(chain_ids[0]) if len(chain_ids) else 0,
                                      metropolis=settings.metropolis)
        return dict(z_neg=z)

    def losses(self, x, chains: dict, *, generator, settings, step: int, labels=None) -> dict:
        with torch.no_grad():
            z_pos = self.posterior(x, generator).z
        gp = self.heads(z_pos, labels)
        gn = self.heads(chains["z_neg"], labels)
        return dict(loss_e=gn.mean() - gp.mean() + energy_penalty(settings, gp, gn), f_pos=gp.mean().detach(),
                    f_neg=gn.mean().detach(),
                    f_gap=(gp.mean() - gn.mean()).detach())

    @torch.no_grad()
    def stationarity(self, x, *, n: int, seed: int, n_steps: int, step_size: float, fused: bool = False, labels=None):
        """The heads' f⁺ − f⁻ (nats of G) on n labelled training rows and conditional chains at
        their values; without labels the frozen model's own."""
        if labels is None:
            return super().stationarity(x, n=n, seed=seed, n_steps=n_steps, step_size=step_size, fused=fused)
        g = torch.Generator(device=x.device).manual_seed(seed)
        idx = torch.randint(0, x.shape[0], (n,), generator=g, device=x.device)
        y = labels[idx.cpu()]
        zp = torch.cat([self.posterior(x[idx][j: j + 512], g).z for j in range(0, n, 512)])
        zn = self.sample_latents_given(y, seed=seed + 7, n_steps=n_steps, step_size=step_size, fused=fused,
                                       chain_offset=10**6)
        fp, fn = float(self.heads(zp, y).mean()), float(self.heads(zn, y).mean())
        return dict(f_pos=fp, f_neg=fn, f_gap=fp - fn)


def default_layers(generator: str, L: int) -> dict:
    """Where an attribute sits by default (1-based layer), by the layer that carries it
    (RESULTS.md §7, §9): on the ladder generator the digit's identity is held by the top layer,
    stroke thickness and slant by z₁ (the papers' layer-wise control); on the bottom generator
    g(z₁) z₁ carries ~40 of ~42 nats of KL and the digit was read from z₁/z₂/z₃ at 0.73/0.33/0.20,
    so every attribute goes on z₁."""
    if generator == "ladder":
        return {"digit": L, "thickness": 1, "slant": 1}
    return {"digit": 1, "thickness": 1, "slant": 1}


def controllable_class(base: type) -> type:
    """``base`` (a :class:`hebm.models.base.LatentModel` subclass) with attribute heads."""
    return type(f"Controllable{base.__name__}", (ControllableMixin, base), {"__doc__": ControllableMixin.__doc__})




# ---------------------------------------------------------------------------------- choosing values
def parse_fixed(items: Sequence[str], names: Sequence[str], what: str = "--attribute") -> dict:
    """``["digit=3", "thickness=1"]`` → ``{"digit": 3, "thickness": 1}``, checked against the
    attributes a model was trained for (``names``) and their value ranges."""
    out = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{what} {item!r}: expected NAME=VALUE, e.g. digit=3")
        if name not in ATTRIBUTES:
            raise ValueError(f"{what} {item!r}: unknown attribute {name!r}; the attributes are {', '.join(ATTRIBUTES)}")
        if name not in names:
            raise ValueError(f"{what} {item!r}: this checkpoint was fine-tuned for {', '.join(names)}, not {name}")
        n = ATTRIBUTES[name].n_values
        try:
            v = int(value)
        except ValueError:
            v = -1
        if not 0 <= v < n or str(v) != value.strip():
            raise ValueError(f"{what} {item!r}: {name} takes the values 0..{n - 1}")
        if name in out:
            raise ValueError(f"{what}: {name} is given twice")
        out[name] = v
    return out


def draw_values(train_labels: torch.Tensor, names: Sequence[str], fixed: dict, n: int, seed: int) -> torch.Tensor:
    """``[n, A]`` attribute values for n chains: the attributes in ``fixed`` as given; the others
    drawn with the training images' frequencies given the fixed ones (each chain copies the
    values of a random training image that has the fixed values), so an attribute left open is
    marginalised as the data would."""
    rows = torch.ones(len(train_labels), dtype=torch.bool)
    for a, name in enumerate(names):
        if name in fixed:
            rows &= train_labels[:, a] == int(fixed[name])
    idx = torch.nonzero(rows).flatten()
    if len(idx) == 0:
        shown = ", ".join(f"{k}={v}" for k, v in fixed.items())
        raise ValueError(f"no training image has {shown}: that combination cannot be sampled as the data define it")
    g = torch.Generator().manual_seed(int(seed) % 2**63)
    pick = idx[torch.randint(0, len(idx), (int(n),), generator=g)]
    return train_labels[pick].clone()


__all__ = ["AttributeHeads", "ControllableMixin", "default_layers", "combination_index", "combinations",
           "conditional_prior", "controllable_class", "draw_values", "merge_energy", "parse_fixed", "parse_layers"]
