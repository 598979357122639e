"""Figures: image grids, 2-d scatters, energy profiles (matplotlib / torchvision, files only)."""
from __future__ import annotations

import os

import torch


def to_images(x: torch.Tensor, shape) -> torch.Tensor:
    """Flat [-1, 1] vectors → images in [0, 1] of ``shape`` (C, H, W)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).reshape(-1, *shape)


def save_grid(images: torch.Tensor, path: str, nrow: int = 8, min_size: int = 32) -> None:
    """``torchvision.utils.save_image`` with small images (8×8 digits) upscaled for viewing."""
    from torchvision.utils import save_image

    images = images.detach().float().cpu()
    if images.shape[-1] < min_size:
        f = max(1, min_size // images.shape[-1])
        images = torch.nn.functional.interpolate(images, scale_factor=f, mode="nearest")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_scatter(x: torch.Tensor, ref: torch.Tensor, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(ref[:, 0].cpu(), ref[:, 1].cpu(), s=2, alpha=0.3, label="data")
    ax.scatter(x[:, 0].detach().cpu(), x[:, 1].detach().cpu(), s=4, label="samples")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_profile(values, path: str, title: str, ylabel: str = "mean log π(u) (un-normalised)", labels=None) -> None:
    """One or more curves over Langevin steps (``values``: a 1-d tensor or a dict name → 1-d)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    series = values if isinstance(values, dict) else {None: values}
    for name, v in series.items():
        ax.plot(torch.as_tensor(v).numpy(), label=name)
    if any(k is not None for k in series):
        ax.legend(fontsize=7)
    ax.set_xlabel("Langevin step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


__all__ = ["plot_profile", "pyplot", "save_grid", "save_scatter", "to_images"]
