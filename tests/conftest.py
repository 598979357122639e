"""Shared test fixtures.  The prior factory is :func:`tests.parity.make_prior` (one for every
test); the ``make_prior`` fixture gives it float64 and small odd sizes by default."""
from __future__ import annotations

import os

import torch

# Triton picks interpreter or compiler mode for its own functions when it is first imported, and
# test modules import it at collection (test_compile_report): without a GPU the Triton tests run
# in the interpreter, so the mode is set here, before any of them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from tests.parity import make_prior as _make_prior  # noqa: E402

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
