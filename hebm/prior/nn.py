"""The network family every hebm backend takes: MLPs of Linear layers and elementwise activations.

An :class:`MLP` is ``Linear → act → Linear → act → … → Linear`` (no activation after the last
layer), with or without bias, optionally spectrally normalised, optionally *level-conditioned*:
an integer level ``t`` (the diffusion step of paper 2) picks an additive bias for every hidden
layer.  At a fixed ``t`` the network is therefore an ordinary MLP whose hidden biases are
``bias + level_bias[t]`` — which is exactly what the fused kernels read (``hebm.sampler.backends.pack``).

Activations are named by strings (``"gelu"``, ``"gelu_tanh"``, ``"silu"``, ``"leaky_relu"``,
``"tanh"``, ``"relu"``, ``"softplus"``); LeakyReLU carries its slope (``"leaky_relu:0.2"`` or
``Activation("leaky_relu", 0.2)``).  Softplus is PyTorch's default one (β = 1, threshold 20).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Integer codes are part of the packed format the C++/CUDA/Triton kernels read: never renumber.
ACTIVATION_CODES = {
    "relu": 0,
    "leaky_relu": 1,
    "tanh": 2,
    "silu": 3,
    "gelu": 4,  # erf form
    "gelu_tanh": 5,
    "softplus": 6,
}
SUPPORTED_ACTIVATIONS = tuple(ACTIVATION_CODES)


def _apply_activation(name: str, param: float, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, param)
    if name == "tanh":
        return torch.tanh(x)
    if name == "silu":
        return F.silu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "softplus":
        return F.softplus(x)
    raise AssertionError(name)


class Activation(nn.Module):
    """One elementwise activation of the supported family.

    ``param`` is LeakyReLU's negative slope (ignored by the others).
    """

    def __init__(self, name: str = "gelu", param: Optional[float] = None):
        super().__init__()
        if ":" in name:
            name, _, p = name.partition(":")
            if param is None:
                try:
                    param = float(p)
                except ValueError:
                    raise ValueError(f"activation {name + ':' + p!r}: the part after ':' must be a number "
                                     f"(LeakyReLU's negative slope, e.g. 'leaky_relu:0.2'), got {p!r}") from None
        name = name.strip().lower().replace("-", "_")
        if name == "lrelu":
            name = "leaky_relu"
        if name not in ACTIVATION_CODES:
            raise ValueError(
                f"activation {name!r} is not supported; expected one of {', '.join(SUPPORTED_ACTIVATIONS)}"
                " (LeakyReLU as 'leaky_relu:<slope>')"
            )
        if param is None:
            param = 0.2 if name == "leaky_relu" else 0.0
        param = float(param)
        if not math.isfinite(param):
            raise ValueError(f"activation {name!r}: the slope must be a finite number, got {param!r} "
                             f"(e.g. 'leaky_relu:0.2')")
        self.name = name  # the math is read from these at every pack (hebm.sampler.backends.pack)
        self.param = param

    @property
    def code(self) -> int:
        return ACTIVATION_CODES[self.name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply_activation(self.name, self.param, x)

    def spec(self) -> str:
        return f"leaky_relu:{self.param:g}" if self.name == "leaky_relu" else self.name

    def extra_repr(self) -> str:
        return self.spec()


def as_activation(act) -> Activation:
    return act if isinstance(act, Activation) else Activation(str(act))


class SNLinear(nn.Linear):
    """``nn.Linear`` whose weight may be spectrally normalised, ``W / σ_max(W)``.

    Unlike ``torch.nn.utils.spectral_norm`` the power iteration does not run inside
    ``forward``: the forward pass is a pure function of the parameters and buffers, so a
    Langevin chain sees the same weights at every step and every backend packs the same
    numbers.  Call :meth:`power_iteration` once per training iteration (``HierarchicalPrior``
    and the trainers do).  The gradient flows through ``σ = vᵀ W u`` with ``u, v`` fixed, as in
    PyTorch's implementation.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, spectral_norm: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.spectral_norm = bool(spectral_norm)
        if self.spectral_norm:
            g = torch.Generator().manual_seed(in_features * 7919 + out_features)
            u = F.normalize(torch.randn(in_features, generator=g), dim=0)
            self.register_buffer("sn_u", u)
            self.register_buffer("sn_v", F.normalize(self.weight.detach() @ u, dim=0))
            self.power_iteration(5)

    @torch.no_grad()
    def power_iteration(self, n_iter: int = 1) -> None:
        if not self.spectral_norm:
            return
        w = self.weight.detach()
        u, v = self.sn_u.to(w.dtype), self.sn_v.to(w.dtype)
        for _ in range(n_iter):
            v = F.normalize(w @ u, dim=0, eps=1e-12)
            u = F.normalize(w.t() @ v, dim=0, eps=1e-12)
        self.sn_u.copy_(u)
        self.sn_v.copy_(v)

    def effective_weight(self) -> torch.Tensor:
        if not self.spectral_norm:
            return self.weight
        sigma = torch.dot(self.sn_v.to(self.weight.dtype), self.weight @ self.sn_u.to(self.weight.dtype))
        return self.weight / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 1e4) -> torch.Tensor:
    """The authors' sinusoidal embedding of an integer level (docs/papers.md B §3.6): [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None, :].to(t.device)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


@functools.lru_cache(maxsize=64)
def level_embedding(n_levels: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[n_levels, dim]``: the sinusoidal embedding of every level, in ``dtype`` on ``device`` — a
    constant (no weights), made once per (n_levels, dim, dtype, device): a level-conditioned MLP's
    bias table is read at every pack, and recomputing the embedding took ten small ops of it.
    Read-only for its users."""
    with torch.inference_mode(False):  # an inference tensor could not be saved for a later backward
        levels = torch.arange(n_levels, device=device)
        return sinusoidal_embedding(levels, dim).to(dtype)


class MLP(nn.Module):
    """``widths = [in, h_1, …, h_n, out]``; the activation follows every hidden layer.

    ``n_levels``: if given, the network is level-conditioned — a sinusoidal embedding of the
    integer level ``t ∈ {0 … n_levels−1}`` goes through a small MLP whose output is split into
    one additive bias per hidden layer (the authors' time injection, reduced to what keeps the
    network an MLP at fixed t).  ``level_source="table"`` instead: the per-level hidden biases
    are a free parameter ``level_table`` ``[n_levels, Σ hidden]`` (a categorical condition, e.g.
    attribute values, that has no order to embed).
    """

    def __init__(
        self,
        widths: Sequence[int],
        act="gelu",
        *,
        bias: bool = True,
        spectral_norm: bool = False,
        n_levels: Optional[int] = None,
        level_embed_dim: int = 32,
        level_source: str = "embedding",
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"MLP widths must be at least [in, out] with positive entries, got {widths}")
        self.widths = widths  # [in, h_1, …, h_n, out]
        self.act = as_activation(act)
        self.bias = bool(bias)
        self.spectral_norm = bool(spectral_norm)
        self.layers = nn.ModuleList(
            SNLinear(a, b, bias=bias, spectral_norm=spectral_norm) for a, b in zip(widths[:-1], widths[1:])
        )
        self.n_levels = None if n_levels is None else int(n_levels)
        self.level_embed_dim = int(level_embed_dim)
        hidden = widths[1:-1]
        if self.n_levels is not None:
            if self.n_levels < 1:
                raise ValueError(f"n_levels must be >= 1, got {n_levels}")
            if not hidden:
                raise ValueError("a level-conditioned MLP needs at least one hidden layer to carry the level biases")
            if level_source == "table":
                self.level_table = nn.Parameter(torch.zeros(self.n_levels, sum(hidden)))
            elif level_source == "embedding":
                e = self.level_embed_dim
                self.level_net = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, sum(hidden)))
            else:
                raise ValueError(f"level_source must be 'embedding' or 'table', got {level_source!r}")
        self.level_source = level_source

    @property
    def hidden_widths(self) -> list[int]:
        return self.widths[1:-1]

    def power_iteration(self, n_iter: int = 1) -> None:
        for layer in self.layers:
            layer.power_iteration(n_iter)

    def level_bias_table(self) -> Optional[torch.Tensor]:
        """``[n_levels, Σ hidden]``: the additive hidden-layer biases of every level."""
        if self.n_levels is None:
            return None
        if self.level_source == "table":
            return self.level_table
        p = self.layers[0].weight
        emb = level_embedding(self.n_levels, self.level_embed_dim, p.dtype, p.device)
        net = self.level_net
        mods = tuple(net._modules.values())
        if len(mods) == 3 and type(mods[0]) is nn.Linear and type(mods[1]) is nn.SiLU and type(mods[2]) is nn.Linear:
            # the Sequential's own ops without its three module calls (a fused sampler reads this table
            # at every call, and the calls cost more than the ops)
            first, last = mods[0]._parameters, mods[2]._parameters
            return F.linear(F.silu(F.linear(emb, first["weight"], first["bias"])), last["weight"], last["bias"])
        return net(emb)

    def level_biases(self, t) -> Optional[list[torch.Tensor]]:
        """Per hidden layer, the bias added at level ``t`` (int or int tensor ``[B]``)."""
        if self.n_levels is None:
            return None
        if t is None:
            raise ValueError("this network is level-conditioned: pass t (an int or an integer tensor [B])")
        table = self.level_bias_table()
        t = torch.as_tensor(t, device=table.device)
        rows = table[t.long()]
        return list(torch.split(rows, self.hidden_widths, dim=-1))

    def forward(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.shifted(x, self.level_biases(t) if self.n_levels is not None else None)

    def shifted(self, x: torch.Tensor, shifts=None) -> torch.Tensor:
        """The network with ``shifts[j]`` (``[B, h_j]`` or broadcastable) added to hidden layer j's
        pre-activation — the level biases, or any per-row condition (hebm.models.controllable's heads)."""
        n = len(self.layers)
        for j, layer in enumerate(self.layers):
            x = layer(x)
            if j < n - 1:
                if shifts is not None:
                    x = x + shifts[j]
                x = self.act(x)
        return x

    def config(self) -> dict:
        return dict(
            widths=list(self.widths),
            act=self.act.spec(),
            bias=self.bias,
            spectral_norm=self.spectral_norm,
            n_levels=self.n_levels,
            level_embed_dim=self.level_embed_dim,
            level_source=self.level_source,
        )
