"""The Triton backend (``kernels/`` + ``hebm.sampler.backends.triton_backend``): its noise stream, one launch
per reverse diffusion, availability, TF32.  Parity with the reference: tests/test_parity.py.

Without a CUDA device the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, set
here before any kernel is built) on CPU tensors, at small sizes; with one, the same tests run on
CUDA tensors (plus TF32 and autotune checks).  Parity follows tests/parity.py: the fp32 result is
within 2× PyTorch's own fp32 error of the float64 reference, for the same explicit noise or seed.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before any @triton.jit kernel is built

import copy  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("triton")

import hebm  # noqa: E402
from hebm.prior.philox import philox4x32, philox_normal  # noqa: E402
from hebm.sampler.backends import triton_backend as tb  # noqa: E402
from tests.parity import make_kwargs, make_prior, parity  # noqa: E402

# exp overflow to inf inside σ(x) for very negative x is intended (σ → 0); numpy warns about it
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

INTERP = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cpu" if INTERP else "cuda"
if not INTERP and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip("no CUDA device and TRITON_INTERPRET unset", allow_module_level=True)


@pytest.fixture
def tiled():
    """Force the scratch-tiled layer form (the one large widths use) at small sizes."""
    old = dict(tb.TUNING)
    tb.TUNING.update(reg_limit=0, tile=16)
    yield
    tb.TUNING.update(old)


def _run_parity(prior_kw, B, *, n_steps=3, **kw_kw):
    prior = make_prior(**prior_kw)
    u, kw = make_kwargs(prior, B, n_steps=n_steps, **kw_kw)
    return parity(prior.to(DEVICE), u.to(DEVICE), {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v
                                                   for k, v in kw.items()}, "triton")


# ------------------------------------------------------------------------------ noise stream
def _rng(seed, ids, step, D, stream=0):
    kern = __import__("hebm.kernels", fromlist=["rng_debug_kernel"]).rng_debug_kernel()
    B = ids.shape[0]
    nb = (D + 3) // 4
    words = torch.zeros(B, 4 * nb, dtype=torch.int64, device=DEVICE)
    normals = torch.zeros(B, D, dtype=torch.float32, device=DEVICE)
    key = torch.tensor([seed & 0xFFFFFFFF, seed >> 32], dtype=torch.int64, device=DEVICE)
    P = max(16, 1 << (D - 1).bit_length())
    NBP = max(16, 1 << (nb - 1).bit_length())
    kern[((B + 15) // 16,)](words, normals, key, ids.to(DEVICE), step, stream, B, D, BLOCK_B=16, P=P, NBP=NBP)
    return words.cpu(), normals.cpu()


def test_philox_known_answer():
    words, _ = _rng(0, torch.zeros(1, dtype=torch.int64), 0, 4)
    assert [hex(int(w)) for w in words[0]] == ["0x6627e8d5", "0xe169c58d", "0xbc57ac4c", "0x9b00dbd8"]


@pytest.mark.parametrize("stream", [0, 1])
def test_philox_stream_matches_reference(stream):
    seed = (0xDEADBEEF << 32) | 0x9ABCDEF1  # both key words > 2^31
    ids = torch.tensor([0, 1, 7, 12345, 2**32 - 1, 3, 99, 4096, 5, 6, 70000, 2**31, 11], dtype=torch.int64)
    D, step = 11, 2**31 + 5
    words, normals = _rng(seed, ids, step, D, stream)
    nb = (D + 3) // 4
    j = torch.arange(nb)[None, :]
    ref = philox4x32((j, ids[:, None], step, stream), (seed & 0xFFFFFFFF, seed >> 32))
    ref_words = torch.stack(ref, -1).reshape(len(ids), 4 * nb)
    assert torch.equal(words, ref_words)  # bit-exact 32-bit words
    ref_n = philox_normal(seed, ids, step, D, stream=stream)
    # uniforms are exact; the float64 Box–Muller of numpy / libdevice and of torch, rounded once to
    # float32, may differ by one ulp where a double lands next to a rounding boundary (docs/design.md §2)
    assert torch.equal(normals.sign(), ref_n.sign())
    assert int((normals.view(torch.int32).long() - ref_n.view(torch.int32).long()).abs().max()) <= 1


# ------------------------------------------------------------------------------ Langevin parity
ACTS = ["relu", "leaky_relu:0.1", "tanh", "silu", "gelu", "gelu_tanh", "softplus"]


CASES = {
    "L1": (dict(dims=(13,)), dict(B=6)),
    "L3_seeded": (dict(dims=(7, 13, 3)), dict(B=9, explicit_noise=False)),
    "no_bias": (dict(dims=(7, 3), bias=False), dict(B=5)),
    "levels_per_row_t": (dict(dims=(7, 13), n_levels=4), dict(B=7)),
    "levels_scalar_t": (dict(dims=(3, 7), n_levels=3), dict(B=5, per_row=False)),
    "no_kernel_term": (dict(dims=(7, 13)), dict(B=8, kernel=False)),
    "scalar_params_seeded": (dict(dims=(7, 13)), dict(B=5, per_row=False, explicit_noise=False, seed=2**63 + 17)),
    "gaussian_prior": (dict(dims=(7, 13, 3), energy_hidden=None), dict(B=5)),
    "linear_nets": (dict(dims=(3, 7, 13), prior_hidden=(), energy_hidden=()), dict(B=5, explicit_noise=False)),
    "deep_spectral_sigma0": (dict(dims=(7, 3), prior_hidden=(9, 5), energy_hidden=(9, 7, 5), spectral_norm=True,
                                  sigma_min=0.0, energy_act="silu"), dict(B=6)),
    "two_programs": (dict(dims=(7, 13)), dict(B=21, n_steps=2, explicit_noise=False)),
}


# ------------------------------------------------------------------------------ reverse diffusion
@pytest.mark.parametrize("seeded", [True, False])
def test_reverse_diffusion_one_launch(monkeypatch, seeded):
    prior = make_prior(dims=(7, 13), n_levels=3)
    sch = hebm.DiffusionSchedule(T=3)
    B, K = 7, 2
    g = torch.Generator().manual_seed(3)
    uT = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    kw = dict(seed=11, chain_ids=torch.arange(B) * 3 + 1) if seeded else \
        dict(noise=torch.randn(sch.T * K, B, prior.D, generator=g, dtype=torch.float64))
    gold, gold_lv = hebm.reverse_diffusion(copy.deepcopy(prior).double(), sch, uT, n_steps=K, return_levels=True, **kw)
    kw32 = {k: (v.float() if v.dtype.is_floating_point else v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    ref = hebm.reverse_diffusion(prior, sch, uT.float(), n_steps=K, **kw32)
    launches = []
    real = tb._launch
    monkeypatch.setattr(tb, "_launch", lambda *a, **k: launches.append(1) or real(*a, **k))
    kwd = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kw32.items()}
    out, lv = hebm.reverse_diffusion(prior.to(DEVICE), sch, uT.float().to(DEVICE), n_steps=K, backend="triton",
                                     precision="fp32", return_levels=True, **kwd)
    assert len(launches) == 1 and len(lv) == sch.T + 1
    scale = max(1.0, float(gold.abs().max()))
    bound = 2 * float((ref.double() - gold).abs().max()) + 1e-5 * scale
    assert float((out.cpu().double() - gold).abs().max()) <= bound
    for a, b in zip(lv, gold_lv):
        assert float((a.cpu().double() - b).abs().max()) <= 2e-5 * scale


# ------------------------------------------------------------------------------ availability
def test_unsupported_reasons(monkeypatch):
    from hebm.sampler.checks import check_langevin_args

    from hebm.sampler.backends import pack

    prior = make_prior(dims=(3,), dtype=torch.float64)
    net, _ = pack.read(prior)
    cpu = torch.device("cpu")
    assert "float32" in tb.unsupported(net, device=cpu, dtype=torch.float64)
    prior32 = make_prior(dims=(3,))
    net32, _ = pack.read(prior32)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in tb.unsupported(net32, device=cpu, dtype=torch.float32)
    if not torch.cuda.is_available():
        assert "TRITON_INTERPRET" in tb.unavailable()
        with pytest.raises(hebm.BackendUnavailable):
            hebm.langevin_fused(prior32, torch.zeros(2, 3), n_steps=1, step_size=0.1, seed=0, backend="triton")


def test_interpret_mode_set_after_import_is_named():
    """TRITON_INTERPRET=1 set after `import triton` cannot take effect (Triton fixed its own
    functions' mode at import): the backend refuses by name instead of failing in the interpreter."""
    import subprocess
    import sys

    code = ("import os, torch, triton\n"
            "os.environ['TRITON_INTERPRET'] = '1'\n"
            "import hebm\n"
            "from hebm.sampler.backends import triton_backend as tb\n"
            "print(tb.unavailable())\n"
            "from tests.parity import make_prior\n"
            "try:\n"
            "    hebm.langevin_fused(make_prior(dims=(3,)), torch.zeros(2, 3), n_steps=1, step_size=0.1, seed=0,"
            " backend='triton')\n"
            "except hebm.BackendUnavailable as e:\n"
            "    print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("set after `triton` was imported") == 2, out.stdout
    assert "refused:" in out.stdout
    if not torch.cuda.is_available():  # this process: the mode set before the import (conftest)
        assert tb.unavailable() is None


# ------------------------------------------------------------------------------ generated code, launch plan
def test_committed_kernel_is_what_the_generator_writes():
    """kernels/generated/small_seeded_kernel.py is the generator's output for the small problem
    (seeded, kernel term, no trace, GPU defaults), byte for byte."""
    golden = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels", "generated",
                          "small_seeded_kernel.py")
    with open(golden) as f:
        committed = f.read()
    fresh = tb.standard_kernel_source()
    assert fresh == committed, (
        f"{golden} differs from what kernels/codegen.py generates now. If the generator changed on purpose, "
        "review the new kernel and refresh the committed copy with\n"
        "    python -c 'import hebm.sampler.backends.triton_backend as t; t.write_standard_kernel()'\n"
        "and commit it with the generator change.")


def test_one_launch_configuration(monkeypatch):
    """No autotuning: one configuration for every batch size (16 rows, 4 warps, no pipelining);
    the environment pins another one."""
    p = hebm.standard_problem("toy", 4)
    pk, _ = tb.packed(p.prior)
    spec = tb.kernel_spec(pk.network, has_kernel=True, unext_from_state=False, seeded=True, trace=False,
                          store_levels=False, precision="tf32", interpret=False)
    cuda = torch.device("cuda")
    for var in ("HEBM_TRITON_BLOCK_B", "HEBM_TRITON_WARPS", "HEBM_TRITON_STAGES"):
        monkeypatch.delenv(var, raising=False)
    for B in (1, 64, 1024, 100_000):
        assert tb.launch_config(B, spec, cuda) == {"BLOCK_B": 16, "num_warps": 4, "num_stages": 1}
    monkeypatch.setenv("HEBM_TRITON_BLOCK_B", "32")
    monkeypatch.setenv("HEBM_TRITON_WARPS", "2")
    assert tb.launch_config(64, spec, cuda) == {"BLOCK_B": 32, "num_warps": 2, "num_stages": 1}


@pytest.mark.parametrize("name,precision,form", [("toy", "tf32", "register"), ("toy", "fp32", "streamed"),
                                                 ("small", "tf32", "streamed"), ("large", "fp32", "streamed")])
def test_kernel_form_of_standard_problems(name, precision, form):
    """Which form a first GPU call builds (benchmarks/NOTES.md, "Compile time and registers")."""
    from hebm.kernels import kernel_form

    p = hebm.standard_problem(name, 4)
    pk, _ = tb.packed(p.prior)
    spec = tb.kernel_spec(pk.network, has_kernel=True, unext_from_state=False, seeded=True, trace=False,
                          store_levels=False, precision=precision, interpret=False)
    assert kernel_form(spec) == form


@pytest.mark.skipif(not INTERP, reason="on a GPU a tf32 request computes TF32 (test_gpu_tf32_error_and_auto)")
@pytest.mark.parametrize("form", ["register", "streamed"])
def test_both_forms_tf32_request(form):
    """Both forms under a tf32 request (what the GPU runs for toy): under the interpreter the dots
    are plain fp32, so the parity rule holds."""
    old = dict(tb.TUNING)
    tb.TUNING.update(reg_limit=None if form == "register" else 0, tile=32)
    try:
        for dims, B, kw in [((7, 13, 3), 9, dict(explicit_noise=False)), ((7, 13), 7, dict())]:
            prior = make_prior(dims=dims, n_levels=3)
            u, kws = make_kwargs(prior, B, n_steps=3, **kw)
            parity(prior.to(DEVICE), u.to(DEVICE), {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v
                                                     for k, v in kws.items()}, "triton", precision="tf32")
    finally:
        tb.TUNING.update(old)


# ------------------------------------------------------------------------------ GPU only
gpu = pytest.mark.skipif(INTERP, reason="needs a CUDA device (compiled Triton)")


@gpu
def test_gpu_tf32_error_and_auto():
    p = hebm.standard_problem("small", 128, device="cuda")
    kw = dict(p.kwargs, n_steps=10)
    gold = hebm.langevin_ref(copy.deepcopy(p.prior).double(), p.u.double(),
                             **{k: v.double() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point else v
                                for k, v in kw.items()})
    out = hebm.langevin_fused(p.prior, p.u, backend="triton", precision="tf32", **kw)
    err = float((out.double() - gold).abs().max())
    assert err < 1e-2 * max(1.0, float(gold.abs().max())), err
    _, info = hebm.langevin_fused(p.prior, p.u, backend="auto", return_info=True, **kw)
    assert info["backend"] in ("cuda", "triton")
