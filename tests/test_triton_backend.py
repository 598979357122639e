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


# ------------------------------------------------------------------------------ replica exchange
# (tests/test_parity.py test_replica_exchange_parity: R = 4, groups that fill a program's rows)
LADDERS = {  # R, metropolis, explicit noise, schedule, trace_every (swap_every = 2, step_offset = 1)
    "R3-ula-seeded-deo": (3, False, False, "deo", 2),
    "R3-mala-explicit-even_odd": (3, True, True, "even_odd", 3),
    "R5-ula-explicit-even_odd": (5, False, True, "even_odd", 3),
    "R5-mala-seeded-deo": (5, True, False, "deo", 2),
}


@pytest.fixture
def register_form(monkeypatch):
    """The register form (the one that runs a ladder) for the small test priors on a GPU too."""
    monkeypatch.setitem(tb.TUNING, "reg_limit", 1 << 16)


def _ladder_call(R, mala, explicit, schedule, every, *, G=None, K=7, off=1, m=2):
    """A ladder call on a small prior in float64 (cast by the caller): G groups of R chains —
    B = G·R rows over two 16-row programs that each leave rows empty (15 = 5·3 = 3·5 rows)."""
    from hebm.sampler.checks import swap_rounds

    G = G or (7 if R == 3 else 4)
    B = G * R
    prior = make_prior((5, 3), n_levels=3, seed=7, dtype=torch.float64)
    g = torch.Generator().manual_seed(10 * R + mala)
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    kw = dict(n_steps=K, temperatures=torch.linspace(0.0, 1.0, R, dtype=torch.float64) ** 2, swap_every=m,
              swap_schedule=schedule, step_offset=off, energy_scale=30.0, metropolis=mala, trace_every=every,
              step_size=(0.3 if mala else 0.08) * (1.0 + torch.rand(B, generator=g, dtype=torch.float64)),
              t=torch.randint(0, 3, (G,), generator=g).repeat_interleave(R))
    if explicit:
        kw["noise"] = torch.randn(K, B, prior.D, generator=g, dtype=torch.float64)
        kw["swap_uniforms"] = torch.rand(swap_rounds(K, off, m), B, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        if mala:
            kw["uniforms"] = torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    else:
        kw.update(seed=11, chain_ids=torch.randperm(1000, generator=g)[:B])
    return prior, u, kw


def _f32(kw, dev=DEVICE):
    return {k: (v.float() if v.dtype.is_floating_point else v).to(dev) if isinstance(v, torch.Tensor) else v
            for k, v in kw.items()}


@pytest.mark.parametrize("case", list(LADDERS))
def test_ladder_matches_the_reference(case, register_form):
    """Ladder groups that leave rows of a program empty (R = 3, 5 in 16-row programs), seeded and
    explicit, ULA and MALA, both schedules, draws (at the rounds and between them): every swap
    decision, the swap and round-trip statistics equal the float64 reference's; the final state,
    the trace and the draws meet the parity rule."""
    from hebm.sampler.reference import ladder_chain_ids  # noqa: F401  (the layout the groups follow)

    R, mala, explicit, schedule, every = LADDERS[case]
    prior, u, kw = _ladder_call(R, mala, explicit, schedule, every)
    _check_ladder_against_the_reference(prior, u, kw, mala)


def _check_ladder_against_the_reference(prior, u, kw, mala):
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert int(wi["swap_accepted"].sum()) > 0 and int((wi["swap_attempts"] - wi["swap_accepted"]).sum()) > 0
    p32 = copy.deepcopy(prior).float()
    ref32, ri32 = hebm.langevin_ref(p32, u.float(), return_info=True, **_f32(kw, "cpu"))
    assert torch.equal(ri32["swapped"], wi["swapped"])  # (this case's decisions are not near a tie)
    got, gi = hebm.langevin_fused(copy.deepcopy(p32).to(DEVICE), u.float().to(DEVICE), backend="triton",
                                  precision="fp32", return_info=True, **_f32(kw))
    assert gi["backend"] == "triton"
    gi = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in gi.items()}
    for k in ("swapped", "swap_attempts", "swap_accepted", "replica", "round_trips"):
        assert torch.equal(gi[k], wi[k]), k
    if mala:
        assert torch.equal(gi["accepted"], wi["accepted"])
    err = float((got.cpu().double() - want).abs().max())
    err_ref = float((ref32.double() - want).abs().max())
    assert err <= 2 * err_ref + 1e-5 * max(1.0, float(want.abs().max())), (err, err_ref)
    assert torch.equal(gi["draw_steps"], wi["draw_steps"])
    for k in ("draws", "draws_log_density", "log_density", "swap_energy"):
        scale = max(1.0, float(wi[k].abs().max()))
        assert float((gi[k].double() - wi[k]).abs().max()) <= 1e-4 * scale, k


@pytest.mark.parametrize("case", list(LADDERS))
def test_ladder_record_is_the_reference_round_on_the_kernels_states(case, register_form):
    """The swap record on the same inputs: with a draw before every round (trace_every = swap_every)
    the draws are the states entering the rounds, and each round's E equals λ·F of those states
    (float64), its codes the reference's swap_round of the record's E with the same uniforms (stream
    3 or the explicit ones) wherever fp32 rounding cannot flip the decision."""
    from hebm.prior.philox import philox_swap_uniforms
    from hebm.sampler.backends import pack
    from hebm.sampler.checks import check_langevin_args
    from hebm.sampler.reference import start_draws, swap_codes, swap_energy, swap_round

    R, mala, explicit, schedule, _ = LADDERS[case]
    off, m, K = 1, 2, 9
    prior, u, kw = _ladder_call(R, mala, explicit, schedule, m, K=K, off=off, m=m)
    p32 = copy.deepcopy(prior).float().to(DEVICE)
    a = check_langevin_args(p32, u.float().to(DEVICE), **_f32(kw))
    start_draws(a, True, "test")
    out, logd, ran, stats, record = tb.run_replica(pack.of(p32), a, precision="fp32", trace=True)
    n = (off + K) // m - off // m
    assert record.shape == (n, 2, a.B) and logd.shape == (K, a.B) and ran == "fp32"
    record = record.cpu().double()
    draws = a.draws[0][0].cpu().double()
    assert draws.shape == (n, a.B, prior.D)
    a64 = check_langevin_args(prior, u, **kw)
    beta = a64.temperatures
    flips = 0
    for r in range(n):
        k = (r + 1) * m - off - 1  # the step the round follows
        E = swap_energy(prior, a64, draws[r])
        torch.testing.assert_close(record[r, 0], E, rtol=1e-4, atol=1e-4 * max(1.0, float(E.abs().max())))
        if explicit:
            U = kw["swap_uniforms"][r]
        else:
            U = philox_swap_uniforms(kw["seed"], kw["chain_ids"], off + k, R).double()
        Ek = record[r, 0]
        _, att, acc = swap_round(beta, Ek, U, (off + k + 1) // m - 1, schedule)
        code = swap_codes(att, acc)
        # where fp32 rounding could flip a decision: |log U − log α| within rounding of log α
        G = a.B // R
        la = (beta[1:] - beta[:-1])[None, :] * (Ek.view(G, R)[:, :-1] - Ek.view(G, R)[:, 1:])
        margin = (torch.log(U.view(G, R)[:, :-1]) - la).abs()
        sure = torch.nn.functional.pad(margin > 1e-4 * (1.0 + la.abs()), (0, 1), value=True).reshape(-1)
        assert torch.equal(record[r, 1][sure], code[sure]), (r, record[r, 1], code)
        flips += int((~sure).sum())
        assert set(record[r, 1].tolist()) <= {0.0, 1.0, 2.0}
        assert (record[r, 1].view(G, R)[:, R - 1] == 0).all()  # the cold slot never is a lower chain
    assert flips <= a.B  # (nearly every decision is compared)


def test_the_registry_lets_triton_take_a_ladder(register_form):
    """A ladder is no reason for the registry to pass triton over (the record's LADDER_BACKENDS)."""
    from hebm.sampler.backends import why_not
    net = tb.packed(make_prior((5, 3), seed=7))[0].network
    assert why_not("triton", net, torch.device(DEVICE), torch.float32, "fp32", needs=("temperatures",)) is None


def test_ladder_longer_than_a_program_is_refused(register_form):
    """R > BLOCK_B: a group would not fit in one program's rows — refused by the registry
    (``max_ladder``: so "auto" moves on to graph) naming temperatures, the limit and the backends
    that run it, and by the launcher's own guard."""
    R = tb.max_ladder(torch.device(DEVICE)) + 1
    assert R - 1 == tb.launch_config(0, None, DEVICE)["BLOCK_B"]
    prior = make_prior((5, 3), seed=7)
    u = torch.randn(R, prior.D)
    with pytest.raises(hebm.BackendUnavailable, match=rf"temperatures has R = {R} .*at most {R - 1} .*backend='graph'"):
        hebm.langevin_fused(prior.to(DEVICE), u.to(DEVICE), backend="triton", n_steps=2, step_size=0.1, seed=1,
                            temperatures=torch.linspace(0.0, 1.0, R), energy_scale=1.0)
    with pytest.raises(ValueError, match=rf"temperatures has R = {R} .*backend='graph' or 'cpu'"):
        tb._check_ladder(None, R, R - 1)


@pytest.mark.parametrize("case", ["R3-ula-seeded-deo", "R5-ula-explicit-even_odd"])
def test_streamed_form_runs_a_ladder(case, tiled):
    """The streamed form (the fp32 GPU kernel of most priors) runs ULA on a ladder: its round
    evaluates E by the top-down pass again and exchanges the states through the program's scratch;
    the same checks as the register form's."""
    from hebm.kernels import kernel_form

    R, mala, explicit, schedule, every = LADDERS[case]
    prior, u, kw = _ladder_call(R, mala, explicit, schedule, every)
    net = tb.packed(copy.deepcopy(prior).float())[0].network
    assert kernel_form(tb.kernel_spec(net, has_kernel=False, unext_from_state=False, seeded=True, trace=False,
                                      store_levels=False, precision="fp32")) == "streamed"
    _check_ladder_against_the_reference(prior, u, kw, mala)


def test_streamed_form_refuses_a_metropolis_ladder(tiled):
    """MALA has no streamed form, ladder or not: refused naming it, not run without the test (by the
    registry, or — where it kept an earlier verdict for this structure under other tuning — the
    generator)."""
    prior, u, kw = _ladder_call(3, True, False, "deo", 2)
    with pytest.raises((hebm.BackendUnavailable, ValueError), match="streamed form"):
        hebm.langevin_fused(copy.deepcopy(prior).float().to(DEVICE), u.float().to(DEVICE), backend="triton",
                            precision="fp32", return_info=True, **_f32(kw))


def test_ladder_kernel_source_only_for_ladders():
    """Only a ladder kernel carries the swap rounds and their parameters, in both forms (the plain
    kernels' source is unchanged: test_committed_kernel_is_what_the_generator_writes, a streamed one)."""
    from hebm.kernels import generate_source

    p = make_prior((5, 3), n_levels=3, seed=7)
    net = tb.packed(p)[0].network
    kw = dict(has_kernel=False, unext_from_state=False, seeded=True, trace=True, store_levels=False, precision="tf32",
              interpret=False)
    plain = generate_source(tb.kernel_spec(net, **kw))[0]
    lad = generate_source(tb.kernel_spec(net, ladder="deo", **kw))[0]
    assert "swap_every" not in plain and "rec_ptr" not in plain and "debug_barrier" not in plain
    assert lad.count("tl.debug_barrier()") == 5 and "dev.swap_uniform(" in lad
    # the streamed form (fp32 on a GPU): the plain kernel's barriers, and the round's
    kw["precision"] = "fp32"
    plain, w0 = generate_source(tb.kernel_spec(net, **kw))
    lad, w1 = generate_source(tb.kernel_spec(net, ladder="deo", **kw))
    assert "form=streamed" in lad and "swap_every" not in plain and "dev.swap_uniform(" in lad
    assert lad.count("tl.debug_barrier()") > plain.count("tl.debug_barrier()") and w1 > w0  # (the SW region)
    with pytest.raises(ValueError, match="Metropolis-adjusted kernel has no streamed form"):
        generate_source(tb.kernel_spec(net, ladder="deo", metropolis=True, **kw))


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
