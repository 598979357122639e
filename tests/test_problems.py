"""The standard benchmark problems of docs/design.md §5."""
from __future__ import annotations

import pytest
import torch

import hebm
from hebm.sampler.problems import PROBLEMS

SHAPES = {"toy": ((2, 2), 64, 64), "small": ((64, 32, 16), 256, 256), "large": ((128,) * 5, 512, 512)}


def test_small_runs_with_documented_shape():
    p = hebm.standard_problem("small", 33)
    out = hebm.langevin_ref(p.prior, p.u, **p.kwargs)
    assert out.shape == torch.Size([33, 112])
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", ["toy", "small", "large"])
def test_shapes_and_kwargs(name):
    B = 5
    p = hebm.standard_problem(name, B)
    dims, ph, eh = SHAPES[name]
    assert PROBLEMS[name] == SHAPES[name]
    assert tuple(p.prior.dims) == dims and p.u.shape == (B, sum(dims)) and p.batch == B
    for cond in p.prior.conditionals:
        assert cond.widths[1:-1] == [ph] and cond.act.name == "gelu"
    for f in p.prior.energies:
        assert f.widths[1:-1] == [eh, eh] and f.act.name == "gelu" and f.widths[-1] == 1
    kw = p.kwargs
    assert kw["n_steps"] == 60 and isinstance(kw["seed"], int)
    for k in ("step_size", "energy_scale", "t"):
        assert kw[k].shape == (B,)
    assert p.prior.n_levels == p.schedule.T
    # a short run of the problem (all levels, kernel on where not top level)
    out = hebm.langevin_ref(p.prior, p.u, **{**kw, "n_steps": 2})
    assert out.shape == p.u.shape and bool(torch.isfinite(out).all())
    assert p.n_params() > 0 and p.flops_per_run() == 4.0 * B * p.n_params() * 60


def test_toy_full_run_is_finite_and_moves():
    p = hebm.standard_problem("toy", 64)
    out, info = hebm.langevin_ref(p.prior, p.u, return_info=True, **p.kwargs)
    assert bool(torch.isfinite(out).all()) and not torch.allclose(out, p.u)
    assert info["log_density"].shape == (60, 64) and bool(torch.isfinite(info["log_density"]).all())


def test_deterministic_in_seed():
    state = torch.random.get_rng_state()
    a = hebm.standard_problem("toy", 7, seed=3)
    b = hebm.standard_problem("toy", 7, seed=3)
    c = hebm.standard_problem("toy", 7, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    for (n, pa), (_, pb) in zip(a.prior.state_dict().items(), b.prior.state_dict().items()):
        assert torch.equal(pa, pb), n
    assert torch.equal(a.u, b.u)
    for k, v in a.kwargs.items():
        assert torch.equal(v, b.kwargs[k]) if isinstance(v, torch.Tensor) else v == b.kwargs[k]
    assert not torch.equal(a.u, c.u)
    assert not torch.equal(a.prior.energies[0].layers[0].weight, c.prior.energies[0].layers[0].weight)
    ra = hebm.langevin_ref(a.prior, a.u, **{**a.kwargs, "n_steps": 3})
    rb = hebm.langevin_ref(b.prior, b.u, **{**b.kwargs, "n_steps": 3})
    assert torch.equal(ra, rb)


def test_batch_prefix_consistency():
    """A larger batch with the same seed shares the prior (weights depend on the seed only)."""
    a = hebm.standard_problem("toy", 4)
    b = hebm.standard_problem("toy", 9)
    assert torch.equal(a.prior.conditionals[0].layers[0].weight, b.prior.conditionals[0].layers[0].weight)


def test_bad_problem_arguments():
    with pytest.raises(ValueError, match="unknown problem 'medium'"):
        hebm.standard_problem("medium", 4)
    with pytest.raises(ValueError, match="batch"):
        hebm.standard_problem("toy", 0)
