"""The CUDA backend (csrc/cuda/, hebm/sampler/backends/cuda.py).

Three layers, so that most of it runs on every machine:

1. the CUDA sources compile (nvcc, no torch headers, seconds) — fails CI when they do not;
2. the extension builds (nvcc + torch headers; it also loads without a GPU) and its *block
   emulator* ``torch.ops.hebm_cuda_emu`` — the kernel's own block code (langevin_block.cuh) run on
   256 host threads with a barrier for ``__syncthreads`` — matches ``langevin_ref`` under the same
   2× fp32-error rule as every backend: odd sizes, every activation, per-row parameters, L = 1..4,
   kernel term on/off, level conditioning, seeds and chain ids, every workspace plan (shared vs
   global workspace, staged vs streamed weights, stored vs recomputed activations, 8/16 rows),
   float64, the fused reverse diffusion;
3. on a GPU: the real kernel against its emulator, the TF32 request, ``opcheck``.

The emulator's and the GPU kernel's parity with the reference (every activation, L = 1..4, kernel
term on/off, per-row parameters, seeds and chain ids, level conditioning, every workspace plan,
wide layers, float64, the fused reverse diffusion) is in tests/test_parity.py, the one matrix.

Set ``HEBM_CUDA_ARCH`` to pick build architectures (these tests use ``90`` without a GPU, to
keep the build short).
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch

import hebm
from hebm.sampler.backends import _build
from hebm.sampler.backends import ops
from hebm.sampler.checks import check_langevin_args
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
def test_cuda_flags_keep_exact_math():
    """The backend's nvcc flags never trade exactness for speed.  (That every .cu compiles for sm_90
    with them, ptxas included, is the extension build: test_extension_builds and every emulator
    test need it; a separate PTX-only compile of the same sources cost 85 s of CI and checked
    nothing the build does not.)"""
    from hebm.sampler.backends import cuda as cb

    assert "--use_fast_math" not in cb.cuda_cflags()
    assert sorted(CUDA_DIR.glob("*.cu")), f"no .cu sources in {CUDA_DIR}"


@pytest.fixture(scope="module")
def ext():
    """The CUDA extension (built here if needed; sm_90 only without a GPU to keep CI short)."""
    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA extension cannot be built here")
    os.environ.setdefault("CUDA_HOME", str(Path(NVCC).parent.parent))
    if not GPU:
        os.environ.setdefault("HEBM_CUDA_ARCH", "90")
    from hebm.sampler.backends import cuda as cb

    mod, why = cb.load_emulator()
    assert mod is not None, f"the CUDA extension does not build: {why}"
    assert hasattr(torch.ops.hebm_cuda_emu, "langevin")
    return mod


def test_extension_builds(ext):
    """The launcher .cpp (torch binding) and the .cu link and import, also without a GPU."""
    assert ext.with_cuda


def test_prebuilt_module_without_cuda_kernels_is_refused(monkeypatch, tmp_path):
    """A prebuilt hebm._C_cuda compiled without -DHEBM_WITH_CUDA holds only the emulator: using it
    would leave torch.ops.hebm.langevin with no CUDA kernel.  The loader must refuse it (and so
    fall back to the JIT build), and setup.py must pass the define."""
    import importlib
    import importlib.util
    import types

    so = tmp_path / "_C_cuda.so"
    srcs = [str(p) for p in sorted(CUDA_DIR.glob("*.c*"))]
    so.write_bytes(b"\0elf" + b"hebm-source-hash:h" + _build.source_hash(srcs).encode() + b"\0")
    fake = types.ModuleType("hebm._C_cuda")
    fake.with_cuda = False
    real_import, real_find = importlib.import_module, importlib.util.find_spec
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: fake if n == "hebm._C_cuda" else real_import(n, *a))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: types.SimpleNamespace(origin=str(so)) if n == "hebm._C_cuda" else real_find(n, *a))
    mod, why = _build._prebuilt(_build.CUDA_EXTENSION, srcs)
    assert mod is None and "HEBM_WITH_CUDA" in why
    setup_py = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "CUDA_DEFINES" in setup_py and "HEBM_WITH_CUDA" in " ".join(_build.CUDA_DEFINES)


def test_stale_prebuilt_module_is_not_imported(monkeypatch, tmp_path):
    """A prebuilt module whose source hash differs from the sources is never imported (importing
    would register its old kernels in this process): the loader reads the hash from the file."""
    import importlib
    import importlib.util
    import types

    so = tmp_path / "_C.so"
    so.write_bytes(b"junk hebm-source-hash:h0123456789abcdef junk")
    imported = []
    real_import, real_find = importlib.import_module, importlib.util.find_spec
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: imported.append(n) or real_import(n, *a))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: types.SimpleNamespace(origin=str(so)) if n == "hebm._C" else real_find(n, *a))
    mod, why = _build._prebuilt(_build.CPU_EXTENSION, _build.cpu_sources())
    assert mod is None and "older than the sources" in why and "hebm._C" not in imported


def test_backend_reports_unavailable_without_gpu():
    if GPU:
        pytest.skip("a GPU is visible")
    from hebm.sampler.backends import cuda as cb

    why = cb.unavailable()
    assert why is not None and "CUDA" in why
    with pytest.raises(hebm.BackendUnavailable):
        prior = make_prior((3, 4))
        hebm.langevin_fused(prior, torch.zeros(2, 7), n_steps=1, step_size=0.1, seed=0, backend="cuda")


# ---------------------------------------------------------------------------------- 3. GPU
gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (the CPU emulator tests above cover the block code)")


@gpu
def test_gpu_tf32_request():
    """precision='tf32' runs the exact path today: it must be at least as accurate as fp32's bound."""
    prior = make_prior((7, 13), n_levels=3)
    u, kw = make_kwargs(prior, 33, n_steps=5)
    parity(prior, u.cuda(), {k: to(v, torch.float32, "cuda") for k, v in kw.items()}, "cuda", precision="tf32")


def _emu(prior, u, kw):
    from hebm.sampler.backends import cuda as cb

    a = check_langevin_args(prior, u, **kw)
    out, logd, _, _ = cb.run(hebm.sampler.backends.pack.of(prior), a, precision="fp32", trace=True, namespace="hebm_cuda_emu")
    return out, logd


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
def test_gpu_opcheck():
    from hebm.sampler.backends import cuda as cb

    prior = make_prior((7, 13), n_levels=3).cuda()
    u, kw = make_kwargs(prior, 9, n_steps=2, explicit_noise=False, device="cuda")
    a = check_langevin_args(prior, u, **kw)
    args = (*ops._network_args(hebm.sampler.backends.pack.of(prior)), *ops._field_values(a, ops.LANGEVIN_FIELDS), True, "fp32")
    torch.library.opcheck(ops.op("langevin").default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


# ---------------------------------------------------------------------------------- replica exchange
@pytest.mark.parametrize("plan", [{}, {"HEBM_CUDA_ROWS": "8"}, {"HEBM_CUDA_WS": "global", "HEBM_CUDA_STAGE": "0"}],
                         ids=["default", "rows=8", "global"])
@pytest.mark.parametrize("R,G", [(3, 7), (5, 2), (16, 2)])
def test_emulator_ladder_groups_fill_blocks(ext, monkeypatch, plan, R, G):
    """A block holds the whole ladder groups that fit (R = 3: 15 of 16 rows, or 6 of 8; R = 16
    takes 16-row blocks even when 8 are asked), the last block a part; every plan makes the
    reference's swaps in fp64 (the rule: tests/test_parity.py test_replica_exchange_parity)."""
    from hebm.sampler.backends import cuda as cb
    from hebm.sampler.reference import swap_record_info

    for k, v in plan.items():
        monkeypatch.setenv(k, v)
    prior = make_prior((5, 3), n_levels=3, seed=4, dtype=torch.float64)
    B = G * R
    g = torch.Generator().manual_seed(R)
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    ladder = [i / (R - 1) for i in range(R)]
    kw = dict(n_steps=9, temperatures=ladder, swap_every=2, step_offset=1, energy_scale=20.0, seed=5,
              step_size=0.1 * (1.0 + torch.rand(B, generator=g, dtype=torch.float64)), t=1)
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    a = check_langevin_args(prior, u, **kw)
    out, _, _, _, record = cb.run_replica(hebm.sampler.backends.pack.of(prior), a, precision="fp32", trace=True,
                                          namespace="hebm_cuda_emu")
    info = swap_record_info(a, record, trace=True)
    assert int(wi["swap_accepted"].sum()) > 0
    for k in ("swap_attempts", "swap_accepted", "replica", "round_trips", "swapped"):
        assert torch.equal(info[k], wi[k]), k
    torch.testing.assert_close(info["swap_energy"], wi["swap_energy"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


def test_ladder_longer_than_a_block_is_refused_by_name():
    from hebm.sampler.backends import cuda as cb

    prior = make_prior((5, 3), n_levels=3)
    u = torch.zeros(17, prior.D)
    a = check_langevin_args(prior, u, n_steps=2, step_size=0.1, seed=0, t=0, temperatures=[i / 16 for i in range(17)])
    with pytest.raises(ValueError, match=r"temperatures has R = 17 .* at most 16 .* backend='graph'"):
        cb.run_replica(hebm.sampler.backends.pack.of(prior), a, precision="fp32", trace=False)
