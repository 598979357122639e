"""Bad input gets a clear error that names the argument (ValueError / TypeError /
BackendUnavailable), for langevin_ref and langevin_fused alike."""
from __future__ import annotations

import math

import pytest
import torch

import hebm
import hebm.sampler.backends as backends
from hebm import BackendUnavailable

B, DIMS = 4, (3, 2)
D = sum(DIMS)
_CPU_WHY = backends.unavailable("cpu")


def _fused_cpu(*a, **k):
    return hebm.langevin_fused(*a, backend="cpu", **k)


_SAMPLERS: dict = {}


def _sampler_cpu(prior, u, **k):
    """Through a hebm.Sampler built once per prior (a good call first): a bad call must still be
    refused with the reference's error."""
    s = _SAMPLERS.get(id(prior))
    if s is None or s.prior is not prior:
        s = _SAMPLERS[id(prior)] = hebm.Sampler(prior, backend="cpu")
        good_t = None if prior.n_levels is None else 0
        s.run(torch.zeros(B, D), **good(t=good_t if good_t is not None else _DROP))
    return s.run(u, **k)


def _fused_torch_summaries(*a, **k):
    """langevin_fused with the value rules fed by torch's reductions (the path GPU tensors take)
    instead of the C++ extension's value_ranges (which the reference never uses)."""
    real = backends.value_summaries
    backends.value_summaries = lambda device: None
    try:
        return hebm.langevin_fused(*a, backend="ref", **k)
    finally:
        backends.value_summaries = real


# every path refuses exactly what the reference refuses, with the same words
_ON_CPU = pytest.mark.skipif(_CPU_WHY is not None, reason=f"cpu backend: {_CPU_WHY}")
SAMPLERS = [hebm.langevin_ref, lambda *a, **k: hebm.langevin_fused(*a, backend="ref", **k),
            pytest.param(_fused_cpu, marks=_ON_CPU), pytest.param(_sampler_cpu, marks=_ON_CPU),
            _fused_torch_summaries]
IDS = ["ref", "fused-ref", "fused-cpu", "sampler-cpu", "fused-torch-summaries"]


@pytest.fixture
def prior(make_prior):
    return make_prior(DIMS, dtype=torch.float32)


@pytest.fixture
def level_prior(make_prior):
    return make_prior(DIMS, n_levels=3, dtype=torch.float32)


def good(**over):
    kw = dict(n_steps=2, step_size=0.1, seed=0)
    kw.update(over)
    return {k: v for k, v in kw.items() if v is not _DROP}


_DROP = object()
U = torch.zeros(B, D)
NXT = torch.zeros(B, D)
KERNEL = dict(u_next=NXT, alpha=0.5, sigma=0.7)

# (id, u, keyword overrides, exception, regex the message must match)
CASES = [
    # shapes
    ("u wrong D", torch.zeros(B, D + 1), {}, ValueError, r"\bu\b.*shape"),
    ("u 1-d", torch.zeros(D), {}, ValueError, r"\bu\b.*shape"),
    ("u 3-d", torch.zeros(1, B, D), {}, ValueError, r"\bu\b.*shape"),
    ("u empty batch", torch.zeros(0, D), {}, ValueError, r"\bu\b.*no chains"),
    ("u list wrong count", [torch.zeros(B, 3)], {}, ValueError, r"per-layer"),
    ("u list wrong dims", [torch.zeros(B, 2), torch.zeros(B, 3)], {}, ValueError, r"per-layer"),
    ("u list batch", [torch.zeros(B, 3), torch.zeros(B + 1, 2)], {}, ValueError, r"\bu\b.*batch"),
    ("u not tensor", "abc", {}, TypeError, r"\bu\b"),
    ("u_next shape", U, dict(KERNEL, u_next=torch.zeros(B + 1, D)), ValueError, r"u_next"),
    ("noise shape", U, dict(seed=_DROP, noise=torch.zeros(3, B, D)), ValueError, r"noise.*\[K, B, D\]"),
    ("noise 2-d", U, dict(seed=_DROP, noise=torch.zeros(B, D)), ValueError, r"noise"),
    ("step_size rows", U, dict(step_size=torch.full((B + 1,), 0.1)), ValueError, r"step_size.*\[4\]"),
    ("step_size 2-d", U, dict(step_size=torch.full((B, 1), 0.1)), ValueError, r"step_size"),
    ("energy_scale rows", U, dict(energy_scale=torch.ones(B - 1)), ValueError, r"energy_scale"),
    ("noise_scale rows", U, dict(noise_scale=torch.ones(2 * B)), ValueError, r"noise_scale"),
    ("alpha rows", U, dict(KERNEL, alpha=torch.ones(B + 2)), ValueError, r"alpha"),
    ("sigma rows", U, dict(KERNEL, sigma=torch.ones(1, B)), ValueError, r"sigma"),
    ("chain_ids rows", U, dict(chain_ids=torch.arange(B + 1)), ValueError, r"chain_ids"),
    # dtypes
    ("u int", torch.zeros(B, D, dtype=torch.int64), {}, TypeError, r"\bu\b.*float32 or float64"),
    ("u float16", torch.zeros(B, D, dtype=torch.float16), {}, TypeError, r"\bu\b.*float16"),
    ("u bfloat16", torch.zeros(B, D, dtype=torch.bfloat16), {}, TypeError, r"\bu\b"),
    ("u float64 vs prior float32", torch.zeros(B, D, dtype=torch.float64), {}, TypeError, r"\bu\b.*prior"),
    ("u_next dtype", U, dict(KERNEL, u_next=torch.zeros(B, D, dtype=torch.float64)), TypeError, r"u_next"),
    ("noise int", U, dict(seed=_DROP, noise=torch.zeros(2, B, D, dtype=torch.int32)), TypeError, r"noise"),
    ("step_size bool", U, dict(step_size=torch.ones(B, dtype=torch.bool)), TypeError, r"step_size"),
    ("step_size str", U, dict(step_size="big"), TypeError, r"step_size"),
    ("alpha complex", U, dict(KERNEL, alpha=torch.ones(B, dtype=torch.complex64)), TypeError, r"alpha"),
    ("chain_ids float", U, dict(chain_ids=torch.zeros(B)), ValueError, r"chain_ids"),
    ("chain_ids bool", U, dict(chain_ids=torch.ones(B, dtype=torch.bool)), ValueError, r"chain_ids"),
    ("n_steps float", U, dict(n_steps=2.5), TypeError, r"n_steps"),
    ("n_steps bool", U, dict(n_steps=True), TypeError, r"n_steps"),
    ("seed float", U, dict(seed=1.5), TypeError, r"seed"),
    ("seed str", U, dict(seed="x"), TypeError, r"seed"),
    # NaN / Inf
    ("u nan", torch.full((B, D), math.nan), {}, ValueError, r"\bu\b.*NaN or Inf"),
    ("u inf", torch.tensor([[math.inf] + [0.0] * (D - 1)] * B), {}, ValueError, r"\bu\b.*NaN or Inf"),
    ("u_next nan", U, dict(KERNEL, u_next=torch.full((B, D), math.nan)), ValueError, r"u_next.*NaN or Inf"),
    ("noise inf", U, dict(seed=_DROP, noise=torch.full((2, B, D), -math.inf)), ValueError, r"noise.*NaN or Inf"),
    ("step_size nan", U, dict(step_size=math.nan), ValueError, r"step_size.*NaN or Inf"),
    ("step_size inf row", U, dict(step_size=torch.tensor([0.1, math.inf, 0.1, 0.1])), ValueError, r"step_size"),
    ("energy_scale inf", U, dict(energy_scale=math.inf), ValueError, r"energy_scale"),
    ("noise_scale nan", U, dict(noise_scale=math.nan), ValueError, r"noise_scale"),
    ("alpha nan", U, dict(KERNEL, alpha=math.nan), ValueError, r"alpha"),
    ("sigma inf", U, dict(KERNEL, sigma=math.inf), ValueError, r"sigma"),
    # values
    ("step_size negative", U, dict(step_size=-0.1), ValueError, r"step_size.*>= 0"),
    ("noise_scale negative", U, dict(noise_scale=torch.tensor([1.0, -1.0, 1.0, 1.0])), ValueError, r"noise_scale"),
    ("sigma zero", U, dict(KERNEL, sigma=0.0), ValueError, r"sigma.*> 0"),
    ("n_steps negative", U, dict(n_steps=-1), ValueError, r"n_steps"),
    ("step_offset negative", U, dict(step_offset=-2), ValueError, r"step_offset"),
    ("seed negative", U, dict(seed=-1), ValueError, r"seed"),
    ("seed too big", U, dict(seed=2**64), ValueError, r"seed"),
    ("chain_ids negative", U, dict(chain_ids=torch.tensor([0, 1, -1, 2])), ValueError, r"chain_ids"),
    ("chain_ids too big", U, dict(chain_ids=torch.tensor([0, 1, 2**32, 2])), ValueError, r"chain_ids"),
    # combinations
    ("alpha without u_next", U, dict(alpha=0.5, sigma=0.5), ValueError, r"alpha.*u_next"),
    ("sigma without u_next", U, dict(sigma=0.5), ValueError, r"sigma.*u_next"),
    ("u_next without alpha", U, dict(u_next=NXT, sigma=0.5), ValueError, r"u_next.*alpha"),
    ("u_next without sigma", U, dict(u_next=NXT, alpha=0.5), ValueError, r"u_next.*sigma"),
    ("noise and seed", U, dict(noise=torch.zeros(2, B, D)), ValueError, r"noise.*seed"),
    ("neither noise nor seed", U, dict(seed=_DROP), ValueError, r"noise.*seed"),
    ("chain_ids with noise", U, dict(seed=_DROP, noise=torch.zeros(2, B, D), chain_ids=torch.arange(B)),
     ValueError, r"chain_ids"),
    ("t for unconditioned prior", U, dict(t=1), ValueError, r"\bt\b.*level-conditioned"),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments(prior, sampler, case):
    _, u, over, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        sampler(prior, u, **good(**over))


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - compared below
        return type(e), str(e)
    return None


@pytest.mark.skipif(_CPU_WHY is not None, reason=f"cpu backend: {_CPU_WHY}")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_backend_refuses_with_the_reference_words(prior, case):
    """The CPU backend (the C++ value summaries), a Sampler built before the bad call, and the torch
    summaries give the reference's error, type and message alike."""
    _, u, over, _, _ = case
    ref = _raised(lambda: hebm.langevin_ref(prior, u, **good(**over)))
    assert ref is not None
    assert _raised(lambda: _fused_cpu(prior, u, **good(**over))) == ref
    assert _raised(lambda: _sampler_cpu(prior, u, **good(**over))) == ref
    assert _raised(lambda: _fused_torch_summaries(prior, u, **good(**over))) == ref


@pytest.mark.skipif(_CPU_WHY is not None, reason=f"cpu backend: {_CPU_WHY}")
def test_a_prior_converted_after_a_call_is_seen(make_prior):
    """langevin_fused reads the prior at every call: a conversion in place after a call (the
    parameters' .data change dtype; no version counter moves) is refused or followed; a Sampler
    sees it at refresh()."""
    prior = make_prior(DIMS, dtype=torch.float32)
    sampler = hebm.Sampler(prior, backend="cpu")
    _fused_cpu(prior, U, **good())
    prior.energies[0].double()  # in place: the parameters' .data change dtype
    with pytest.raises(TypeError, match="mix dtypes"):
        _fused_cpu(prior, U, **good())
    with pytest.raises(TypeError, match="mix dtypes"):
        sampler.refresh()
    prior.double()
    with pytest.raises(TypeError, match=r"\bu\b is torch.float32 but the prior's parameters are torch.float64"):
        _fused_cpu(prior, U, **good())
    out = _fused_cpu(prior, U.double(), **good())
    # float64 chains; the seeded normals are float32 on both paths (the stated bound: <= 4 ulp apart)
    torch.testing.assert_close(out, hebm.langevin_ref(prior, U.double(), **good()), rtol=1e-6, atol=1e-6)
    sampler.refresh()
    assert sampler.dtype == torch.float64
    assert torch.equal(sampler.run(U.double(), **good()), out)


@pytest.mark.skipif(_CPU_WHY is not None, reason=f"cpu backend: {_CPU_WHY}")
def test_chunked_cpu_run_reports_divergence_instead_of_refusing(prior, monkeypatch):
    """A long run is cut into chunks; the value checks apply to the call's arguments only, so
    chains that diverge inside the run are reported by the result check, not refused as bad input."""
    from hebm.sampler.backends import ops
    monkeypatch.setattr(ops, "CHUNK_SECONDS", 1e-12)  # one step per chunk
    with pytest.warns(RuntimeWarning, match="diverged"):
        out = _fused_cpu(prior, U + 1.0, **good(n_steps=40, step_size=50.0))
    assert not torch.isfinite(out).all()
    with pytest.raises(hebm.DivergenceError):
        _fused_cpu(prior, U + 1.0, **good(n_steps=40, step_size=50.0), check="raise")


LEVEL_CASES = [
    ("t missing", {}, ValueError, r"level-conditioned: pass t"),
    ("t float", dict(t=1.5), TypeError, r"\bt\b"),
    ("t float tensor", dict(t=torch.ones(B)), TypeError, r"\bt\b"),
    ("t out of range", dict(t=3), ValueError, r"\bt\b.*\[0, 2\]"),
    ("t negative row", dict(t=torch.tensor([0, 1, -1, 2])), ValueError, r"\bt\b"),
    ("t rows", dict(t=torch.zeros(B + 1, dtype=torch.long)), ValueError, r"\bt\b.*\[4\]"),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
@pytest.mark.parametrize("case", LEVEL_CASES, ids=[c[0] for c in LEVEL_CASES])
def test_bad_levels(level_prior, sampler, case):
    _, over, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        sampler(level_prior, U, **good(**over))


def test_prior_type():
    with pytest.raises(TypeError, match="prior"):
        hebm.langevin_ref(torch.nn.Linear(2, 2), U, **good())


def test_log_density_missing_t_and_kernel_args(level_prior, prior):
    with pytest.raises(ValueError, match=r"pass t"):
        level_prior.log_density(U)
    with pytest.raises(ValueError, match="alpha and sigma"):
        prior.log_density(U, u_next=NXT)
    with pytest.raises(ValueError, match=r"shape \[B, 5\]"):
        prior.T(torch.zeros(B, 4))


# ------------------------------------------------------------------------- devices
def test_device_mismatch_meta(prior):
    meta = torch.zeros(B, D, device="meta")
    with pytest.raises(ValueError, match=r"\bu\b is on meta but the prior is on cpu"):
        hebm.langevin_ref(prior, meta, **good())
    for name, val in [("step_size", torch.full((B,), 0.1, device="meta")),
                      ("energy_scale", torch.ones(B, device="meta")),
                      ("noise_scale", torch.ones(B, device="meta"))]:
        with pytest.raises(ValueError, match=name):
            hebm.langevin_ref(prior, U, **good(**{name: val}))
    with pytest.raises((ValueError, TypeError), match="u_next"):
        hebm.langevin_ref(prior, U, **good(**dict(KERNEL, u_next=torch.zeros(B, D, device="meta"))))
    with pytest.raises(ValueError, match="alpha"):
        hebm.langevin_ref(prior, U, **good(**dict(KERNEL, alpha=torch.ones(B, device="meta"))))
    with pytest.raises(ValueError, match="noise"):
        hebm.langevin_ref(prior, U, **good(seed=_DROP, noise=torch.zeros(2, B, D, device="meta")))


def test_device_mismatch_t_meta(level_prior):
    with pytest.raises(ValueError, match=r"\bt\b is on meta"):
        hebm.langevin_ref(level_prior, U, **good(t=torch.zeros(B, dtype=torch.long, device="meta")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_mismatch_cuda(prior):
    with pytest.raises(ValueError, match=r"\bu\b is on cuda"):
        hebm.langevin_ref(prior, U.cuda(), **good())
    with pytest.raises(ValueError, match="step_size"):
        hebm.langevin_ref(prior, U, **good(step_size=torch.full((B,), 0.1, device="cuda")))


# ------------------------------------------------------------------------- backends
def test_unknown_backend_and_precision(prior):
    with pytest.raises(ValueError, match=r"backend must be one of .*'tpu'"):
        hebm.langevin_fused(prior, U, backend="tpu", **good())
    with pytest.raises(ValueError, match=r"precision must be one of .*'fp8'"):
        hebm.langevin_fused(prior, U, precision="fp8", **good())


@pytest.mark.parametrize("name", ["cpu", "triton", "cuda", "graph"])
def test_unavailable_backend_is_reported(prior, name):
    """Whatever is built today: a backend that cannot run here raises BackendUnavailable with the
    same reason ``hebm.sampler.backends.unavailable`` gives; one that can run reports its name."""
    why = backends.unavailable(name)
    if why is None:
        pytest.skip(f"backend {name!r} is available here (its own tests cover it)")
    assert isinstance(why, str) and why
    with pytest.raises(BackendUnavailable) as e:
        hebm.langevin_fused(prior, U, backend=name, **good())
    assert str(e.value) == why


@pytest.mark.parametrize("name", ["cpu", "triton", "cuda", "graph"])
def test_backend_not_built(prior, monkeypatch, name):
    monkeypatch.setitem(backends._MODULES, name, "hebm.sampler.backends._not_built_for_this_test")
    why = backends.unavailable(name)
    assert why is not None and "not built" in why and repr(name) in why and "backend='ref'" in why
    with pytest.raises(BackendUnavailable, match=rf"backend '{name}' is not built"):
        hebm.langevin_fused(prior, U, backend=name, **good())
    assert issubclass(BackendUnavailable, RuntimeError)


def test_auto_falls_back_to_ref_with_one_warning(prior, monkeypatch):
    for name in list(backends._MODULES):
        if name != "ref":  # (the reference loop is part of hebm itself)
            monkeypatch.setitem(backends._MODULES, name, f"hebm.sampler.backends._not_built_{name}")
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(RuntimeWarning, match="using the reference"):
        out, info = hebm.langevin_fused(prior, U, return_info=True, **good())
    assert info["backend"] == "ref"
    assert torch.equal(out, hebm.langevin_ref(prior, U, **good()))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        hebm.langevin_fused(prior, U, **good())


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation 'swish' is not supported"):
        hebm.HierarchicalPrior([2, 2], act="swish")
    with pytest.raises(ValueError, match=r"activation 'mish'"):
        hebm.HierarchicalPrior([2, 2], energy_act="mish")
    with pytest.raises(ValueError, match=r"leaky_relu:abc.*must be a number"):
        hebm.HierarchicalPrior([2, 2], act="leaky_relu:abc")


def test_bad_prior_construction():
    with pytest.raises(ValueError, match="dims"):
        hebm.HierarchicalPrior([])
    with pytest.raises(ValueError, match="dims"):
        hebm.HierarchicalPrior([3, 0])
    with pytest.raises(ValueError, match="sigma_min"):
        hebm.HierarchicalPrior([3], sigma_min=-0.1)
    with pytest.raises(ValueError, match="n_levels"):
        hebm.HierarchicalPrior([3], energy_hidden=None, n_levels=3)
    with pytest.raises(ValueError, match="n_levels"):
        hebm.HierarchicalPrior([3], n_levels=0)


def test_backend_with_broken_dependency(prior, monkeypatch, tmp_path):
    """A backend module that exists but cannot import a dependency is reported unavailable (so
    'auto' moves on) and requesting it names the import error."""
    pkg = tmp_path / "hebm_broken_backend_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("import hebm_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(backends._MODULES, "cpu", "hebm_broken_backend_pkg.mod")
    why = backends.unavailable("cpu")
    assert why is not None and "hebm_no_such_dependency_xyz" in why
    with pytest.raises(BackendUnavailable, match="hebm_no_such_dependency_xyz"):
        hebm.langevin_fused(prior, U, backend="cpu", **good())


# ------------------------------------------------------------------------- found since (each named)
@pytest.mark.skipif(_CPU_WHY is not None, reason=f"cpu backend: {_CPU_WHY}")
def test_u_on_meta_is_named_on_every_path(prior):
    """u on the meta device (shapes, no values): the error names u and the devices, never a torch
    internal ("Cannot copy out of meta tensor")."""
    meta = torch.zeros(B, D, device="meta")
    for fn in (hebm.langevin_ref, _fused_cpu, hebm.langevin_fused, _sampler_cpu):
        with pytest.raises(ValueError, match=r"^u is on meta but the prior is on cpu"):
            fn(prior, meta, **good())
    prior.to("meta")
    with pytest.raises(ValueError, match=r"^u is on the meta device, which holds no values"):
        hebm.langevin_ref(prior, meta, **good())
    for fn in (_fused_cpu, hebm.langevin_fused, lambda p, u, **k: hebm.Sampler(p).run(u, **k)):
        with pytest.raises(ValueError, match=r"^the prior is on the meta device, which holds no values"):
            fn(prior, meta, **good())


_MALA_SAMPLERS = [hebm.langevin_ref, pytest.param(_fused_cpu, marks=_ON_CPU),
                  pytest.param(lambda p, u, **k: hebm.Sampler(p, backend="cpu").run(u, **k), marks=_ON_CPU)]


@pytest.mark.parametrize("sampler", _MALA_SAMPLERS, ids=["ref", "fused-cpu", "sampler-cpu"])
def test_a_nan_weight_is_reported_by_mala_as_by_ula(prior, sampler, monkeypatch):
    """A NaN weight: ULA's chains end at NaN (diverged); MALA refuses every proposal and keeps a
    finite state, which the divergence check must see all the same (Σ min(1, α) = 0 per chain)."""
    from hebm.sampler import results as hargs
    monkeypatch.setattr(hargs, "_warned", set())
    with torch.no_grad():
        prior.energies[0].layers[0].weight[0, 0] = math.nan
    u = torch.randn(B, D, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="diverged to NaN/Inf"):
        sampler(prior, u, **good())
    with pytest.warns(RuntimeWarning, match=rf"{B} of {B} chains refused every Metropolis proposal"):
        out = sampler(prior, u, **good(metropolis=True))
    assert torch.equal(out, u)  # (the reason the state alone shows nothing)
    with pytest.raises(hebm.DivergenceError, match="refused every Metropolis proposal"):
        sampler(prior, u, **good(metropolis=True, check="raise"))


@pytest.mark.parametrize("sampler", _MALA_SAMPLERS, ids=["ref", "fused-cpu", "sampler-cpu"])
def test_mala_does_not_report_healthy_chains(prior, sampler):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sampler(prior, torch.zeros(B, D), **good(metropolis=True, n_steps=5))


@pytest.mark.parametrize("sampler", _MALA_SAMPLERS, ids=["ref", "fused-cpu", "sampler-cpu"])
def test_accept_rate_after_a_warm_up_of_every_step_is_undefined(prior, sampler):
    """adapt_steps = n_steps leaves no step after the warm-up: the rate of no proposals is NaN,
    not 0 (0 would read as "every proposal refused"); the counts are 0 and the step is adapted."""
    _, info = sampler(prior, torch.zeros(B, D), return_info=True, **good(metropolis=True, n_steps=3, adapt_steps=3))
    assert torch.isnan(info["accept_rate"]).all() and info["accept_rate"].shape == (B,)
    assert torch.equal(info["accepted"], torch.zeros(B, dtype=torch.long))
    assert info["step_size"].shape == (B,) and not torch.equal(info["step_size"], torch.full((B,), 0.1))
    _, info = sampler(prior, torch.zeros(B, D), return_info=True, **good(metropolis=True, n_steps=4, adapt_steps=3))
    assert not torch.isnan(info["accept_rate"]).any()


def test_reverse_diffusion_names_itself_for_an_unknown_keyword(level_prior):
    sched = hebm.DiffusionSchedule(3, 1e-3)
    for fn, where in ((hebm.reverse_diffusion_ref, "reverse_diffusion_ref"), (hebm.reverse_diffusion,
                                                                              "reverse_diffusion")):
        with pytest.raises(TypeError, match=rf"^{where}\(\) got an unexpected keyword argument 'adapt_steps'") as e:
            fn(level_prior, sched, n_steps=2, batch=B, seed=0, metropolis=True, adapt_steps=1)
        assert "check_reverse_args" not in str(e.value)
