"""The digits-0/1 experiment's figure (docs/papers.md A, B §5.4): per 2-d latent layer, posterior
means of the data beside prior samples before and after the tilt."""
from __future__ import annotations

import torch

from ..data import load_dataset
from ..errors import UserError
from ..models import load_model
from .figures import pyplot


def latents_figure(path: str, fig_path: str, *, n: int = 500, seed: int = 0, fused: bool = False) -> dict:
    """The digits-0/1 experiment (docs/papers.md A, B §5.4): per layer, posterior means of the data
    coloured by label, prior samples before the EBM tilt (p_β, ancestral) and after it (ũ-space
    Langevin).  Needs 2-d layers (``--latent-dims 2,2``); saves one PNG."""
    plt = pyplot()
    model, mcfg, tcfg, _ = load_model(path)
    if any(d != 2 for d in model.dims):
        raise UserError(f"the latent scatter needs 2-d layers (train with --latent-dims 2,2), got {model.dims}")
    data = load_dataset(tcfg.dataset, data_root=tcfg.data_root)
    if tcfg.classes:
        data = data.select_classes(tcfg.classes)
    with torch.no_grad():
        mu = model.posterior(data.x, mean=True).z
    z0 = model.sample_latents(n, seed=seed, n_steps=0)
    z1 = model.sample_latents(n, seed=seed, n_steps=tcfg.langevin_steps, step_size=tcfg.langevin_step_size, fused=fused)
    L = model.prior.L
    fig, axes = plt.subplots(L, 3, figsize=(9, 3 * L), squeeze=False)
    mus, a0, a1 = model.prior.split(mu), model.prior.split(z0), model.prior.split(z1)
    for i in range(L):
        ax = axes[L - 1 - i]
        for c in sorted(set(data.y.tolist())):
            m = data.y == c
            ax[0].scatter(mus[i][m, 0], mus[i][m, 1], s=3, label=f"digit {c}")
        ax[0].legend(fontsize=7)
        ax[0].set_title(f"z_{i + 1}: posterior means", fontsize=9)
        ax[1].scatter(a0[i][:, 0], a0[i][:, 1], s=3, c="gray")
        ax[1].set_title(f"z_{i + 1}: Gaussian prior p_β", fontsize=9)
        ax[2].scatter(a1[i][:, 0], a1[i][:, 1], s=3, c="C3")
        ax[2].set_title(f"z_{i + 1}: {model.kind} prior", fontsize=9)
        lim = float(torch.cat([mus[i], a1[i]]).abs().quantile(0.99)) * 1.2 + 0.1
        for a in ax:
            a.set_xlim(-lim, lim)
            a.set_ylim(-lim, lim)
    fig.tight_layout()
    fig.savefig(fig_path, dpi=70)
    plt.close(fig)
    return dict(figure=fig_path)


__all__ = ["latents_figure"]
