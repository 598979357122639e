"""The encoder and decoder networks: ``h(x)`` for the inference network and the generator
``g``, an MLP or a DCGAN-like convolution net, and the ladder generators through which every latent
layer reaches the image (:class:`LadderMLPDecoder`, :class:`LadderConvDecoder`)."""
from __future__ import annotations

import torch
from torch import nn

from ..prior.nn import MLP, as_activation


def _conv_geometry(shape) -> tuple[int, int, int]:
    C, H, W = (int(v) for v in shape)
    if H != W or H not in (28, 32):
        raise ValueError(f"the conv encoder/decoder take 28x28 or 32x32 images, got {C}x{H}x{W}; use --arch mlp")
    return C, H, H // 4


class MLPEncoder(nn.Module):
    """``h(x)``: an MLP with the activation after every layer."""

    def __init__(self, x_dim: int, hidden, act):
        super().__init__()
        self.net = MLP([x_dim, *hidden], act)
        self.act = as_activation(act)
        self.out_dim = int(hidden[-1])

    def forward(self, x):
        return self.act(self.net(x))


class ConvEncoder(nn.Module):
    """``h(x)`` for 28×28 / 32×32 images (DCGAN-like): two 4×4 stride-2 convolutions
    (C → c → 2c, spatial /4), flatten, one Linear to ``out_dim``."""

    def __init__(self, image_shape, channels: int, out_dim: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        self.shape = (C, H, H)
        c = int(channels)
        self.convs = nn.ModuleList([nn.Conv2d(C, c, 4, 2, 1), nn.Conv2d(c, 2 * c, 4, 2, 1)])
        self.fc = nn.Linear(2 * c * h0 * h0, out_dim)
        self.act = as_activation(act)
        self.out_dim = int(out_dim)

    def forward(self, x):
        h = x.reshape(-1, *self.shape)
        for conv in self.convs:
            h = self.act(conv(h))
        return self.act(self.fc(h.flatten(1)))


class MLPDecoder(nn.Module):
    """``g(z_1) = tanh(MLP(z_1))``, flat images."""

    def __init__(self, z_dim: int, hidden, x_dim: int, act):
        super().__init__()
        self.net = MLP([z_dim, *hidden, x_dim], act)

    def forward(self, z1):
        return torch.tanh(self.net(z1))


class ConvDecoder(nn.Module):
    """``g(z_1)`` for 28×28 / 32×32 images (DCGAN-like): Linear to 2c × H/4 × W/4, two 4×4
    stride-2 transposed convolutions (2c → c → C), tanh; flat output."""

    def __init__(self, z_dim: int, image_shape, channels: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        c = int(channels)
        self.h0, self.c = h0, c
        self.fc = nn.Linear(z_dim, 2 * c * h0 * h0)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ConvTranspose2d(c, C, 4, 2, 1)])
        self.act = as_activation(act)

    def forward(self, z1):
        h = self.act(self.fc(z1)).reshape(-1, 2 * self.c, self.h0, self.h0)
        h = self.act(self.deconvs[0](h))
        return torch.tanh(self.deconvs[1](h)).flatten(1)


def ladder_entries(L: int, stages: int) -> list[int]:
    """The stage (0 = the first, coarsest or deepest) at which each latent layer enters a ladder
    generator of ``stages`` stages, bottom-up: z_L enters at stage 0 and passes every later
    stage, z_1 at the last (the finest scale, the shallowest path to the image), the layers
    between spread over the stages between (VLAE's ladder; NVAE injects every group at its own
    resolution the same way).  ``[entry of z_1, …, entry of z_L]``."""
    if L == 1:
        return [0]
    last = stages - 1
    return [round(last * (L - 1 - i) / (L - 1)) for i in range(L)]


class _Ladder(nn.Module):
    """What the ladder generators share: the per-layer weights ``fade`` ``[L]`` their injections
    are multiplied by (a buffer, so a checkpoint decodes as it was trained), 1 after training's
    progressive warm-up (:meth:`progressive`)."""

    def _init_fade(self, L: int):
        self.register_buffer("fade", torch.ones(L))

    @torch.no_grad()
    def progressive(self, step: int, per_layer: int) -> None:
        """pro-VLAE's progressive ladder (Li et al., ICLR 2020), the top layer first: z_L alone for
        ``per_layer`` iterations, then z_{L−1} fades in linearly over the next ``per_layer``, then
        z_{L−2}, …; so the deepest path learns the most abstract factor before the shallower
        paths can take it (``per_layer`` = 0: every layer at full weight)."""
        L = self.fade.numel()
        for i in range(L):
            phase = L - 1 - i  # 0 for the top layer
            w = 1.0 if per_layer <= 0 or phase == 0 else min(1.0, max(0.0, (step + 1 - phase * per_layer) / per_layer))
            self.fade[i] = w


class LadderMLPDecoder(_Ladder):
    """``g(z̃)`` with every latent layer reaching the image, MLP form (flat data): the stream starts
    from ``z_L`` and passes ``len(hidden) + 1`` Linear layers; ``z_i`` joins the stream at the
    layer :func:`ladder_entries` gives it (a Linear of its own added to that layer's
    pre-activation), so the top layer has the deepest path to the image and ``z_1`` the
    shallowest (it enters at the output layer with the default two hidden layers and three
    latent layers).  ``tanh`` output, flat images."""

    def __init__(self, dims, hidden, x_dim: int, act):
        super().__init__()
        self.dims = [int(d) for d in dims]
        widths = [*(int(h) for h in hidden), int(x_dim)]
        self.entry = ladder_entries(len(self.dims), len(widths))
        self.layers = nn.ModuleList(nn.Linear(widths[j - 1], widths[j]) for j in range(1, len(widths)))
        self.inject = nn.ModuleList(nn.Linear(d, widths[e], bias=(i == len(self.dims) - 1))
                                    for i, (d, e) in enumerate(zip(self.dims, self.entry)))
        self.act = as_activation(act)
        self._init_fade(len(self.dims))

    def forward(self, z):
        zs = z.split(self.dims, dim=1)
        h = None
        for j in range(len(self.layers) + 1):
            pre = None if j == 0 else self.layers[j - 1](h)
            for i, e in enumerate(self.entry):
                if e == j:
                    a = self.inject[i](zs[i]) * self.fade[i]
                    pre = a if pre is None else pre + a
            h = torch.tanh(pre) if j == len(self.layers) else self.act(pre)
        return h


class LadderConvDecoder(_Ladder):
    """``g(z̃)`` for 28×28 / 32×32 images with every latent layer reaching the image at its own
    scale (VLAE's ladder generator, NVAE's per-resolution groups): ``z_L`` → Linear → a 2c × H/4
    map (the coarsest: the layout); a 4×4 stride-2 transposed convolution to c × H/2, where the
    middle layers join (each a Linear to a c × H/2 map, added); another to c/2 × H, the finest
    map, which ``z_1`` *modulates* (a Linear to a per-channel scale and shift, FiLM / StyleGAN's
    fine styles); a 3×3 convolution to C channels, tanh; flat output.

    Why z₁ modulates rather than paints (RESULTS.md §9): added as a full-resolution map, z₁ could
    draw any image as a sum of 16 pixel templates — it carried the digit's class (resampling it
    alone changed the class 44 % of the time) and its prior draws left pixel noise on every
    sample; as a per-channel scale and shift of the finest features it can change how the
    strokes the layers above laid out are drawn (thickness, contrast) but not where they are."""

    def __init__(self, dims, image_shape, channels: int, act):
        super().__init__()
        C, H, h0 = _conv_geometry(image_shape)
        c = int(channels)
        self.dims = [int(d) for d in dims]
        self.maps = [(2 * c, h0), (c, 2 * h0), (max(c // 2, 1), 4 * h0)]  # (channels, side) per stage
        self.entry = ladder_entries(len(self.dims), len(self.maps))
        # the finest stage is modulated (FiLM) unless the ladder has one layer, which must draw the layout itself
        self.film = [e == len(self.maps) - 1 and len(self.dims) > 1 for e in self.entry]
        self.inject = nn.ModuleList(nn.Linear(d, 2 * self.maps[e][0] if film else self.maps[e][0] * self.maps[e][1] ** 2)
                                    for d, e, film in zip(self.dims, self.entry, self.film))
        self.ups = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 4, 2, 1),
                                  nn.ConvTranspose2d(c, self.maps[2][0], 4, 2, 1)])
        self.out = nn.Conv2d(self.maps[2][0], C, 3, 1, 1)
        self.act = as_activation(act)
        self._init_fade(len(self.dims))

    def forward(self, z):
        zs = z.split(self.dims, dim=1)
        h = None
        for j, (ch, side) in enumerate(self.maps):
            pre = None if j == 0 else self.ups[j - 1](h)
            for i, e in enumerate(self.entry):
                if e != j:
                    continue
                a = self.inject[i](zs[i]) * self.fade[i]
                if self.film[i]:
                    scale, shift = a.reshape(-1, 2 * ch, 1, 1).chunk(2, 1)
                    pre = pre * (1 + scale) + shift
                else:
                    a = a.reshape(-1, ch, side, side)
                    pre = a if pre is None else pre + a
            h = self.act(pre)
        return torch.tanh(self.out(h)).flatten(1)


__all__ = ["ConvDecoder", "ConvEncoder", "LadderConvDecoder", "LadderMLPDecoder", "MLPDecoder", "MLPEncoder",
           "ladder_entries"]
