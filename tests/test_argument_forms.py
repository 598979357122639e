"""One door into each backend: every form of an argument hebm.args accepts reaches the kernel
the same way (there is no second path for some forms), so every form of the same call gives the
same chain bit for bit, within the parity rule of the reference; a prior changed in place after
a call is never sampled with the old weights; calls from two threads agree with serial ones;
and the dispatch module names no backend."""
from __future__ import annotations

import ast
import pathlib
import threading

import numpy as np
import pytest
import torch

import hebm
import hebm.sampler.backends as backends
from hebm.sampler.backends import ops

pytestmark = pytest.mark.skipif(backends.unavailable("cpu") is not None,
                                reason=f"cpu backend: {backends.unavailable('cpu')}")

B, DIMS, K = 6, (5, 3), 3
D = sum(DIMS)


def fused(prior, u, **kw):
    kw.setdefault("backend", "cpu")
    return hebm.langevin_fused(prior, u, **kw)


def _state(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype))


def _calls(dtype):
    """(id, keyword arguments) of calls on a prior with 3 levels, in their plainest form."""
    g = torch.Generator().manual_seed(7)
    _, nxt = _state(dtype, 1)

    def vec(lo, hi):
        return (lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)).to(dtype)

    return [
        ("scalars", dict(n_steps=K, step_size=0.1, noise_scale=1.0, energy_scale=1, t=2, seed=3)),
        ("per-chain tensors", dict(n_steps=K, step_size=vec(0.05, 0.2), noise_scale=vec(0.5, 1.0),
                                   energy_scale=vec(0.5, 2.0), t=torch.tensor([0, 1, 2, 2, 1, 0]),
                                   chain_ids=torch.tensor([9, 3, 2**32 - 1, 0, 5, 6]), seed=2**63 + 5)),
        ("kernel term", dict(n_steps=K, step_size=0.05, t=1, u_next=nxt, alpha=0.9, sigma=vec(0.3, 0.6), seed=1)),
        ("kernel scalars", dict(n_steps=K, step_size=0.05, t=0, u_next=nxt, alpha=1, sigma=0.5, seed=1,
                                step_offset=2**32 - 1 - K)),
        ("explicit noise", dict(n_steps=K, step_size=0.1, t=1, noise=torch.randn(K, B, D, generator=g,
                                                                                   dtype=torch.float64).to(dtype))),
        ("no noise, no energy", dict(n_steps=1, step_size=0.3, noise_scale=0.0, energy_scale=0, t=1, seed=0,
                                     step_offset=11)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_every_call_matches_the_reference(make_prior, dtype):
    prior = make_prior(DIMS, n_levels=3, dtype=dtype)
    u, _ = _state(dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, kw in _calls(dtype):
        got = fused(prior, u, **kw)
        assert torch.equal(got, fused(prior, u, **kw)), f"{name}: not reproducible"
        torch.testing.assert_close(got, hebm.langevin_ref(prior, u, **kw), rtol=tol, atol=tol, msg=name)


def _other_forms(u):
    """(id, u, keyword overrides): the same call as ``n_steps=K, step_size=0.1, seed=0`` written
    another way (``noise`` cases: against the same noise as a plain float32 tensor)."""
    grad_u = u.clone().requires_grad_(True)
    strided = torch.empty(D, B).t()
    strided.copy_(u)
    noise = torch.randn(K, B, D, generator=torch.Generator().manual_seed(3))
    return [
        ("u requires grad", grad_u, {}, {}),
        ("u not contiguous", strided, {}, {}),
        ("u a Parameter", torch.nn.Parameter(u.clone(), requires_grad=False), {}, {}),
        ("numpy scalar", u, dict(step_size=np.float32(0.1)), {}),
        ("0-d tensor", u, dict(step_size=torch.tensor(0.1)), {}),
        ("[B] step tensor", u, dict(step_size=torch.full((B,), 0.1)), {}),
        ("float64 step tensor", u, dict(step_size=torch.full((B,), 0.1, dtype=torch.float64)), {}),
        ("int32 chain ids", u, dict(chain_ids=torch.arange(B, dtype=torch.int32)), {}),
        ("numpy seed", u, dict(seed=np.int64(0)), {}),
        ("float64 noise", u, dict(seed=None, noise=noise.double()), dict(seed=None, noise=noise)),
        ("noise not contiguous", u, dict(seed=None, noise=noise.transpose(0, 1).contiguous().transpose(0, 1)),
         dict(seed=None, noise=noise)),
    ]


def test_every_form_of_an_argument_gives_the_same_chain_bit_for_bit(make_prior):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    base = dict(n_steps=K, step_size=0.1, seed=0)

    def call(x, over):
        kw = dict(base, **over)
        return fused(prior, x, **{k: v for k, v in kw.items() if v is not None})

    for name, x, over, plain in _other_forms(u):
        assert torch.equal(call(x, over), call(u, plain)), name
    layers = fused(prior, list(u.split(list(DIMS), 1)), **base)  # a list of layers comes back as one
    assert torch.equal(torch.cat(layers, 1), fused(prior, u, **base))


def test_an_explicit_none_is_the_default(make_prior):
    """None passed for a keyword whose default is None (or the chain ids) is that default, in
    Langevin calls and reverse diffusions alike; other keywords refuse None by name."""
    prior = make_prior(DIMS, n_levels=3, dtype=torch.float32)
    u, _ = _state()
    base = dict(n_steps=K, step_size=0.1, seed=0, t=1)
    want = fused(prior, u, **base)
    for over in (dict(chain_ids=None), dict(u_next=None, alpha=None, sigma=None, noise=None, uniforms=None)):
        assert torch.equal(fused(prior, u, **base, **over), want), over
        assert torch.equal(hebm.Sampler(prior, backend="cpu").run(u, **base, **over), want), over
    sched = hebm.DiffusionSchedule(3, 1e-3)
    want = hebm.reverse_diffusion(prior, sched, n_steps=2, batch=B, seed=4, backend="cpu")
    assert torch.equal(hebm.reverse_diffusion(prior, sched, n_steps=2, batch=B, seed=4, chain_ids=None, noise=None,
                                              backend="cpu"), want)
    with pytest.raises(TypeError, match="noise_scale"):
        fused(prior, u, **base, noise_scale=None)


def test_long_runs_are_chunked_exactly(make_prior, monkeypatch):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    want = fused(prior, u, n_steps=5, step_size=0.1, seed=2)
    monkeypatch.setattr(ops, "CHUNK_SECONDS", 1e-12)  # one step per chunk
    calls = []
    real = ops._langevin_call
    monkeypatch.setattr(ops, "_langevin_call", lambda *a: calls.append(1) or real(*a))
    assert torch.equal(fused(prior, u, n_steps=5, step_size=0.1, seed=2), want) and len(calls) == 5


def test_a_prior_changed_in_place_is_never_sampled_with_old_weights(make_prior):
    prior = make_prior(DIMS, n_levels=3, dtype=torch.float32)
    u, _ = _state()
    kw = dict(n_steps=K, step_size=0.1, t=1, seed=0)
    before = fused(prior, u, **kw)
    w = prior.energies[0].layers[0].weight
    old = w.detach().clone()
    with torch.no_grad():
        w.data.mul_(1.5)  # no version counter PyTorch tracks for .data, no registration hook
    changed = fused(prior, u, **kw)
    torch.testing.assert_close(changed, hebm.langevin_ref(prior, u, **kw), rtol=1e-4, atol=1e-4)
    assert not torch.equal(changed, before)
    with torch.no_grad():
        w.copy_(old)
    assert torch.equal(fused(prior, u, **kw), before)
    prior.energies[0].layers[0].weight = torch.nn.Parameter(old * 0.5, requires_grad=False)  # a replaced one
    torch.testing.assert_close(fused(prior, u, **kw), hebm.langevin_ref(prior, u, **kw), rtol=1e-4, atol=1e-4)


def test_calls_from_two_threads_agree_with_serial_calls(make_prior):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    seeds = list(range(8))
    want = [fused(prior, u, n_steps=K, step_size=0.1, seed=s) for s in seeds]
    got, errors = {}, []

    def work(part):
        try:
            for _ in range(20):
                for s in part:
                    got.setdefault(s, []).append(fused(prior, u, n_steps=K, step_size=0.1, seed=s))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seeds[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    for s in seeds:
        assert len(got[s]) == 20 and all(torch.equal(x, want[s]) for x in got[s]), s


def _imports(path: pathlib.Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or "") + ":" + ",".join(a.name for a in node.names))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_dispatch_names_no_backend():
    """hebm/sampler/dispatch.py reaches the backends only through the registry (hebm.sampler.backends)."""
    root = pathlib.Path(hebm.__file__).parent
    mods = set(backends._MODULES.values())
    for line in _imports(root / "sampler" / "dispatch.py"):
        frm, _, names = line.partition(":")
        assert not any(frm == m or frm == "." + m.split(".", 1)[1] for m in mods), line
        if frm in (".backends", "hebm.sampler.backends"):
            assert not set(names.split(",")) & set(backends._MODULES), line
    # and decides nothing by a backend's name (a comparison with one, or a lookup by one)
    for node in ast.walk(ast.parse((root / "sampler" / "dispatch.py").read_text())):
        if isinstance(node, (ast.Compare, ast.Subscript)):
            named = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)} & set(backends._MODULES)
            assert not named, f"dispatch.py line {node.lineno} decides by the backend name {named}"


def test_entry_points_do_not_branch_on_the_prior_name():
    """train, sample, evaluate, training and evaluation ask the model class (hebm.models.MODELS)
    what a prior type does; a comparison with a prior type's name is the table's job."""
    from hebm.config import PRIOR_TYPES
    root = pathlib.Path(hebm.__file__).parent
    names = ["train.py", "sample.py", "evaluate.py"] + [str(p.relative_to(root)) for folder in ("training", "evaluation")
                                                         for p in sorted((root / folder).glob("*.py"))]
    for name in names:
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.Compare):
                named = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)} & set(PRIOR_TYPES)
                assert not named, f"{name} line {node.lineno} branches on the prior name {named}"
