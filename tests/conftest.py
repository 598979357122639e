"""Shared test helpers (nothing backend-specific: backend test files set up their own environment).

``make_prior`` builds a small prior whose weights come from a private generator (independent of
the global RNG), with deliberately odd sizes by default.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch

import hebm


def build_prior(
    dims: Sequence[int] = (5, 3),
    *,
    prior_hidden: Sequence[int] = (7,),
    energy_hidden: Optional[Sequence[int]] = (9, 6),
    act: str = "gelu",
    energy_act: Optional[str] = None,
    n_levels: Optional[int] = None,
    sigma_min: float = 0.01,
    spectral_norm: bool = False,
    bias: bool = True,
    seed: int = 0,
    scale: float = 1.0,
    dtype=torch.float64,
) -> hebm.HierarchicalPrior:
    g = torch.Generator().manual_seed(seed)
    prior = hebm.HierarchicalPrior(dims, prior_hidden=prior_hidden, energy_hidden=energy_hidden, act=act,
                                   energy_act=energy_act, n_levels=n_levels, sigma_min=sigma_min,
                                   spectral_norm=spectral_norm, bias=bias)
    with torch.no_grad():
        for p in prior.parameters():
            bound = scale / max(1, p.shape[-1]) ** 0.5
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound)
    prior.power_iteration(3)
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior.to(dtype).eval()


@pytest.fixture
def make_prior():
    return build_prior


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
