"""The CUDA backend (csrc/cuda/, hebm/backends/cuda.py).

Three layers, so that most of it runs on every machine:

1. the CUDA sources compile (nvcc, no torch headers, seconds) — fails CI when they do not;
2. the extension builds (nvcc + torch headers; it also loads without a GPU) and its *block
   emulator* ``torch.ops.hebm_cuda_emu`` — the kernel's own block code (langevin_block.cuh) run on
   256 host threads with a barrier for ``__syncthreads`` — matches ``langevin_ref`` under the same
   2× fp32-error rule as every backend: odd sizes, every activation, per-row parameters, L = 1..4,
   kernel term on/off, level conditioning, seeds and chain ids, every workspace plan (shared vs
   global workspace, staged vs streamed weights, stored vs recomputed activations, 8/16 rows),
   float64, the fused reverse diffusion;
3. on a GPU: the real kernel through ``hebm.langevin_fused(..., backend="cuda")`` (tests/parity.py),
   the standard problems, reverse diffusion, TF32 request, float64, ``opcheck``.

Set ``HEBM_CUDA_ARCH`` to pick build architectures (these tests use ``90`` without a GPU, to
keep the build short).
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import hebm
from hebm.backends import _build
from hebm.sampling import check_langevin_args
from tests.parity import make_kwargs, make_prior, parity, to

CUDA_DIR = Path(_build.csrc_dir()) / "cuda"
GPU = torch.cuda.is_available()


def _nvcc():
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    cand = Path(home) / "bin" / "nvcc"
    if cand.is_file():
        return str(cand)
    return shutil.which("nvcc")


NVCC = _nvcc()


# ---------------------------------------------------------------------------------- 1. compile
@pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA_HOME/bin/nvcc or PATH): cannot check the CUDA sources")
def test_cuda_sources_compile(tmp_path):
    """Every .cu compiles for sm_90 with the backend's exact-math flags (no torch headers)."""
    from hebm.backends import cuda as cb

    assert "--use_fast_math" not in cb.cuda_cflags()
    cus = sorted(CUDA_DIR.glob("*.cu"))
    assert cus, f"no .cu sources in {CUDA_DIR}"
    for cu in cus:
        cmd = [NVCC, "-std=c++17", "-O3", "-gencode=arch=compute_90,code=sm_90", "-c", str(cu),
               "-I", str(CUDA_DIR.parent), "-o", str(tmp_path / (cu.stem + ".o"))]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"nvcc failed on {cu.name}:\n{r.stderr[-4000:]}"


@pytest.fixture(scope="module")
def ext():
    """The CUDA extension (built here if needed; sm_90 only without a GPU to keep CI short)."""
    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA extension cannot be built here")
    os.environ.setdefault("CUDA_HOME", str(Path(NVCC).parent.parent))
    if not GPU:
        os.environ.setdefault("HEBM_CUDA_ARCH", "90")
    from hebm.backends import cuda as cb

    mod, why = cb.load_emulator()
    assert mod is not None, f"the CUDA extension does not build: {why}"
    assert hasattr(torch.ops.hebm_cuda_emu, "langevin")
    return mod


def test_extension_builds(ext):
    """The launcher .cpp (torch binding) and the .cu link and import, also without a GPU."""
    assert ext.with_cuda


def test_prebuilt_module_without_cuda_kernels_is_refused(monkeypatch):
    """A prebuilt hebm._C_cuda compiled without -DHEBM_WITH_CUDA holds only the emulator: using it
    would leave torch.ops.hebm.langevin with no CUDA kernel.  The loader must refuse it (and so
    fall back to the JIT build), and setup.py must pass the define."""
    import importlib
    import types

    fake = types.ModuleType("hebm._C_cuda")
    fake.with_cuda, fake.source_hash = False, ""
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: fake if n == "hebm._C_cuda" else real(n, *a))
    mod, why = _build._prebuilt(_build.CUDA_EXTENSION, [])
    assert mod is None and "HEBM_WITH_CUDA" in why
    setup_py = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "CUDA_DEFINES" in setup_py and "HEBM_WITH_CUDA" in " ".join(_build.CUDA_DEFINES)


# ---------------------------------------------------------------------------------- 2. emulator
def _emu(prior, u, kw, *, dtype=torch.float32, trace=True, precision="fp32"):
    from hebm.backends import cuda as cb

    p = copy.deepcopy(prior).to(dtype=dtype)
    kwd = {k: to(v, dtype, "cpu") for k, v in kw.items()}
    a = check_langevin_args(p, u.to(dtype), **kwd)
    out, logd = torch.ops.hebm_cuda_emu.langevin(*cb.langevin_op_args(p, a, precision=precision, trace=trace))
    return out, (logd if trace else None)


def emu_parity(prior, u, kw, *, rel=2.0, atol=1e-5):
    """tests/parity.py's rule for the emulated kernel: fp32 error ≤ 2× PyTorch's own fp32 error."""
    prior64 = copy.deepcopy(prior).double()
    kw64 = {k: to(v, torch.float64, "cpu") for k, v in kw.items()}
    gold, info = hebm.langevin_ref(prior64, u.double(), return_info=True, **kw64)
    ref32 = hebm.langevin_ref(copy.deepcopy(prior).float(), u.float(), **{k: to(v, torch.float32, "cpu") for k, v in kw.items()})
    out, logd = _emu(prior, u, kw)
    scale = max(1.0, float(gold.abs().max()))
    err_ref = float((ref32.double() - gold).abs().max())
    err = float((out.double() - gold).abs().max())
    assert out.dtype == torch.float32 and out.shape == gold.shape
    assert err <= rel * err_ref + atol * scale, f"emulated kernel: error {err:.3e} vs fp32 reference {err_ref:.3e}"
    ld_err = float((logd.double() - info["log_density"]).abs().max())
    assert ld_err <= 1e-3 * max(1.0, float(info["log_density"].abs().max())), f"log_density error {ld_err:.3e}"
    return err, err_ref


def test_emu_default(ext):
    prior = make_prior((7, 13))
    u, kw = make_kwargs(prior, 33, n_steps=3)
    emu_parity(prior, u, kw)


@pytest.mark.parametrize("act", list(hebm.SUPPORTED_ACTIVATIONS) + ["leaky_relu:0.1"])
def test_emu_activations(ext, act):
    prior = make_prior((5, 6), prior_hidden=(9,), energy_hidden=(11, 7), act=act, seed=3)
    u, kw = make_kwargs(prior, 9, n_steps=2)
    emu_parity(prior, u, kw)


@pytest.mark.parametrize("dims", [(7,), (7, 13), (3, 6, 5), (4, 3, 5, 2)])
@pytest.mark.parametrize("kernel", [True, False])
def test_emu_layers_and_kernel(ext, dims, kernel):
    prior = make_prior(dims, seed=len(dims))
    u, kw = make_kwargs(prior, 17, n_steps=2, kernel=kernel, per_row=kernel)
    emu_parity(prior, u, kw)


def test_emu_seeded_chain_ids(ext):
    prior = make_prior((7, 13))
    u, kw = make_kwargs(prior, 20, n_steps=3, explicit_noise=False, seed=2**40 + 17)
    kw["chain_ids"] = torch.arange(20) * 7 + 3
    kw["step_offset"] = 5
    emu_parity(prior, u, kw)


@pytest.mark.parametrize("opts", [dict(n_levels=4), dict(energy_hidden=None), dict(bias=False, spectral_norm=True),
                                  dict(sigma_min=0.0, energy_hidden=(23,)), dict(energy_hidden=())])
def test_emu_network_variants(ext, opts):
    prior = make_prior((7, 13), **opts)
    u, kw = make_kwargs(prior, 19, n_steps=2)
    emu_parity(prior, u, kw)


@pytest.mark.parametrize("env", [{"HEBM_CUDA_WS": "global"}, {"HEBM_CUDA_STAGE": "0"}, {"HEBM_CUDA_STORE": "0"},
                                 {"HEBM_CUDA_STORE": "1", "HEBM_CUDA_ROWS": "16"}, {"HEBM_CUDA_ROWS": "8"},
                                 {"HEBM_CUDA_WS": "global", "HEBM_CUDA_STAGE": "0", "HEBM_CUDA_ROWS": "16"}])
def test_emu_workspace_plans(ext, env, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    prior = make_prior((7, 13, 5), n_levels=3, seed=5)
    u, kw = make_kwargs(prior, 21, n_steps=2)
    emu_parity(prior, u, kw)


def test_emu_wide_layers(ext):
    """Widths past one 64-column chunk, sums with a ragged tail (Min % 4 != 0), both GEMM forms."""
    prior = make_prior((6, 10), prior_hidden=(130,), energy_hidden=(97, 66), seed=7)
    u, kw = make_kwargs(prior, 16, n_steps=2)
    emu_parity(prior, u, kw)


def test_emu_float64(ext):
    prior = make_prior((7, 13), n_levels=3)
    u, kw = make_kwargs(prior, 11, n_steps=3, dtype=torch.float64)
    gold, info = hebm.langevin_ref(copy.deepcopy(prior).double(), u.double(), return_info=True,
                                   **{k: to(v, torch.float64, "cpu") for k, v in kw.items()})
    out, logd = _emu(prior, u, kw, dtype=torch.float64)
    assert out.dtype == torch.float64
    assert float((out - gold).abs().max()) < 1e-10
    assert float((logd - info["log_density"]).abs().max()) < 1e-9


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("T", [1, 3])
def test_emu_reverse_diffusion(ext, noise, T):
    from hebm.backends import cuda as cb

    prior = make_prior((5, 6), n_levels=3, seed=9).double()
    sched = hebm.DiffusionSchedule(T, base_step_size=1e-2)
    B, K = 10, 2
    uT = torch.randn(B, prior.D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    nz = torch.randn(T * K, B, prior.D, generator=torch.Generator().manual_seed(5), dtype=torch.float64) if noise else None
    seed = None if noise else 77
    gold, levels = hebm.reverse_diffusion(prior, sched, uT, n_steps=K, seed=seed, noise=nz, backend="ref",
                                          return_levels=True)
    a = cb.reverse_op_args(prior, sched, uT, n_steps=K, seed=seed, chain_ids=None, noise=nz, noise_scale=0.7 if noise else 1.0,
                           precision="fp64", return_levels=True)
    if noise:  # the reference with the same noise scale
        gold, levels = hebm.reverse_diffusion(prior, sched, uT, n_steps=K, noise=nz, noise_scale=0.7, backend="ref",
                                              return_levels=True)
    res = torch.ops.hebm_cuda_emu.reverse_diffusion(*a)
    assert res.shape == (T + 1, B, prior.D)
    # seeded: the fp32 Box–Muller normals may differ by an ulp (C logf/sinf vs torch) — DESIGN.md §2
    tol = 1e-9 if noise else 1e-6
    for got, want in zip(res.unbind(0), levels):
        assert float((got - want).abs().max()) < tol
    a = cb.reverse_op_args(prior, sched, uT, n_steps=K, seed=seed, chain_ids=None, noise=nz, noise_scale=0.7 if noise else 1.0,
                           precision="fp64", return_levels=False)
    assert float((torch.ops.hebm_cuda_emu.reverse_diffusion(*a) - gold).abs().max()) < tol


def test_backend_reports_unavailable_without_gpu():
    if GPU:
        pytest.skip("a GPU is visible")
    from hebm.backends import cuda as cb

    why = cb.unavailable()
    assert why is not None and "CUDA" in why
    with pytest.raises(hebm.BackendUnavailable):
        prior = make_prior((3, 4))
        hebm.langevin_fused(prior, torch.zeros(2, 7), n_steps=1, step_size=0.1, seed=0, backend="cuda")


# ---------------------------------------------------------------------------------- 3. GPU
gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (the CPU emulator tests above cover the block code)")


@gpu
@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("dims", [(7, 13), (97,), (7, 13, 97), (4, 3, 5, 2)])
def test_gpu_parity(dims, explicit):
    prior = make_prior(dims, seed=len(dims))
    u, kw = make_kwargs(prior, 33, n_steps=5, explicit_noise=explicit)
    parity(prior, u.cuda(), {k: to(v, torch.float32, "cuda") for k, v in kw.items()}, "cuda")


@gpu
@pytest.mark.parametrize("act", list(hebm.SUPPORTED_ACTIVATIONS))
@pytest.mark.parametrize("kernel", [True, False])
def test_gpu_activations(act, kernel):
    prior = make_prior((7, 13), act=act, n_levels=3)
    u, kw = make_kwargs(prior, 33, n_steps=5, kernel=kernel, per_row=kernel)
    parity(prior, u.cuda(), {k: to(v, torch.float32, "cuda") for k, v in kw.items()}, "cuda")


@gpu
@pytest.mark.parametrize("env", [{}, {"HEBM_CUDA_WS": "global"}, {"HEBM_CUDA_STAGE": "0"}, {"HEBM_CUDA_STORE": "0"},
                                 {"HEBM_CUDA_ROWS": "8"}, {"HEBM_CUDA_ROWS": "16", "HEBM_CUDA_STORE": "1"}])
def test_gpu_workspace_plans(env, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    prior = make_prior((7, 13, 97), prior_hidden=(130,), energy_hidden=(97, 66), n_levels=3)
    u, kw = make_kwargs(prior, 33, n_steps=5)
    parity(prior, u.cuda(), {k: to(v, torch.float32, "cuda") for k, v in kw.items()}, "cuda")


@gpu
@pytest.mark.parametrize("name", ["toy", "small", "large"])
def test_gpu_standard_problems(name):
    p = hebm.standard_problem(name, 33, device="cuda")
    kw = dict(p.kwargs)
    kw["n_steps"] = 10 if name == "large" else 20
    parity(p.prior, p.u, kw, "cuda")


@gpu
def test_gpu_tf32_request():
    """precision='tf32' runs the exact path today: it must be at least as accurate as fp32's bound."""
    prior = make_prior((7, 13), n_levels=3)
    u, kw = make_kwargs(prior, 33, n_steps=5)
    parity(prior, u.cuda(), {k: to(v, torch.float32, "cuda") for k, v in kw.items()}, "cuda", precision="tf32")


@gpu
def test_gpu_float64():
    prior = make_prior((7, 13), n_levels=3).double().cuda()
    u, kw = make_kwargs(prior, 33, n_steps=5, dtype=torch.float64, device="cuda")
    out = hebm.langevin_fused(prior, u, backend="cuda", **kw)
    gold = hebm.langevin_ref(copy.deepcopy(prior).cpu(), u.cpu(), **{k: to(v, torch.float64, "cpu") for k, v in kw.items()})
    assert float((out.cpu() - gold).abs().max()) < 1e-10


@gpu
def test_gpu_matches_emulator(ext):
    """The device kernel and its host emulator agree to float rounding (same code, two compilers)."""
    prior = make_prior((7, 13, 5), n_levels=3)
    u, kw = make_kwargs(prior, 33, n_steps=3, explicit_noise=False)
    out_emu, _ = _emu(prior, u, kw)
    out = hebm.langevin_fused(copy.deepcopy(prior).cuda(), u.cuda(), backend="cuda", precision="fp32",
                              **{k: to(v, torch.float32, "cuda") for k, v in kw.items()})
    assert float((out.cpu() - out_emu).abs().max()) < 1e-4


@gpu
@pytest.mark.parametrize("noise", [False, True])
def test_gpu_reverse_diffusion(noise):
    prior = make_prior((7, 13), n_levels=3, seed=2).cuda()
    sched = hebm.DiffusionSchedule(3, base_step_size=1e-2)
    B, K = 33, 4
    uT = torch.randn(B, prior.D, device="cuda")
    nz = torch.randn(3 * K, B, prior.D, device="cuda") if noise else None
    seed = None if noise else 5
    out, lv = hebm.reverse_diffusion(prior, sched, uT, n_steps=K, seed=seed, noise=nz, backend="cuda",
                                     precision="fp32", return_levels=True)
    p64 = copy.deepcopy(prior).cpu().double()
    gold, glv = hebm.reverse_diffusion(p64, sched, uT.cpu().double(), n_steps=K, seed=seed,
                                       noise=None if nz is None else nz.cpu().double(), backend="ref", return_levels=True)
    assert len(lv) == 4
    for a, b in zip(lv, glv):
        assert float((a.cpu().double() - b).abs().max()) < 1e-3


@gpu
def test_gpu_opcheck():
    from hebm.backends import cuda as cb

    prior = make_prior((7, 13), n_levels=3).cuda()
    u, kw = make_kwargs(prior, 9, n_steps=2, explicit_noise=False, device="cuda")
    a = check_langevin_args(prior, u, **kw)
    args = cb.langevin_op_args(prior, a, precision="fp32", trace=True)
    torch.library.opcheck(torch.ops.hebm.langevin.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
