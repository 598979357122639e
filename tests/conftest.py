"""Shared test fixtures.  The prior factory is :func:`tests.parity.make_prior` (one for every
test); the ``make_prior`` fixture gives it float64 and small odd sizes by default."""
from __future__ import annotations

import pytest
import torch

from tests.parity import make_prior as _make_prior

def _factory(dims=(5, 3), **kw):
    kw.setdefault("prior_hidden", (7,))
    kw.setdefault("energy_hidden", (9, 6))
    kw.setdefault("dtype", torch.float64)
    return _make_prior(dims, **kw)


@pytest.fixture
def make_prior():
    return _factory


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
