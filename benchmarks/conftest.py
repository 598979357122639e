"""pytest-benchmark configuration of hebm's benchmark suite.

    pytest benchmarks                                   # the default run: ≤ 10 min on 2 CPU cores (below)
    pytest benchmarks --bench-full                      # every provider and cell (CPU: > 1 h on 2 cores)
    pytest benchmarks --bench-quick                     # CI subset (< 1 min on 2 CPU cores)
    pytest benchmarks --benchmark-json=out.json && python -m benchmarks.report --json out.json

The default run (budget: ≤ 10 minutes on a 2-core CPU machine; ~7 min estimated from the timings
in benchmarks/results/*.json, arithmetic in benchmarks/NOTES.md, "Default run and live results"):

* providers: every backend a user would choose (``cpu`` here; ``graph``, ``triton``, ``cuda``
  where there is a GPU) side by side with what a user would otherwise run: ``plain`` (the
  PyTorch autograd loop) and ``torchebm`` (when installed).  Opt-in: ``ref`` (hebm's pure-PyTorch
  reference, slow Philox stream) and ``compile`` (torch.compile: ~40 s of build per shape on 2
  cores) — name them in ``--bench-providers`` or pass ``--bench-full``;
* cells on the CPU: toy and small at B = 64, 256, 1024; large at B = 64, 256.  Opt-in: B = 4096
  and large at B ≥ 1024 (an eager large call at B = 1024 takes 7-18 s, the whole cell minutes)
  — name the batches in ``--bench-batches`` (then every chosen problem runs at every named B)
  or pass ``--bench-full``.  On a GPU the default cells are all three problems at B = 64 … 4096;
* the fixed cost, the torch.mm rate and the training iteration as before.

Every finished cell prints one line (provider, problem, B, median, elapsed) even under output
capture, and ``--benchmark-json=PATH`` is rewritten (atomically) after every cell, with
``"complete": false`` until the session ends (benchmarks/live.py): a run cut short keeps what
it measured.

Options (all optional; an explicit option narrows or widens whatever the default or --bench-full gives):
  --bench-full                 every provider (ref, compile too), problems toy,small,large x B 64,256,1024,4096
  --bench-quick                toy+small, B=64, K=10, short rounds, no torch.compile (ref included)
  --bench-providers=ref,cpu    providers to run (default: plain,torchebm,graph,cpu,triton,cuda)
  --bench-problems=toy,small   standard problems (default toy,small,large)
  --bench-batches=64,256       batch sizes (default CPU 64,256,1024 without large 1024; GPU 64,256,1024,4096)
  --bench-steps=60             Langevin steps K per chain / per diffusion level (default 60)
  --bench-device=cuda          cpu | cuda (default: cuda when available, else cpu)
  --bench-precision=fp32       fp32 | tf32 for the fused backends (default fp32, docs/design.md §5)
  --bench-max-time=2           seconds of timed rounds per benchmark (default 2; quick 0.2)

ESS per second (benchmarks/test_ess_per_second.py, benchmarks/ess.py; CPU only):
  --ess-targets=toy            standard problems whose top level is the target (default toy; full toy,small)
  --ess-seeds=1,2,3            seeds, each a full run of every row (default 1,2,3; quick 1; full 1,2,3,4,5)
  --ess-steps=2000             kept steps per chain; the burn-in is as long (default 2000; quick 100; full 4000)
  --ess-every=10               steps between recorded states (one segment call of the fused rows)
  --ess-pt-backends=ref,cpu    backends that run parallel tempering (a row each; skipped where refused)
  --ess-rows=plain-ula,...     rows to run (default all; plain-ula, the denominator, is always run)
  --ess-ckpt=PATH              also a trained ebm prior's long-run target (checkpoint), at --ess-ckpt-lambda (1)
"""
from __future__ import annotations

import pytest
import torch

from benchmarks import providers as P
from hebm.sampler.problems import PROBLEMS as KNOWN_PROBLEMS

PROBLEMS = ("toy", "small", "large")
BATCHES = (64, 256, 1024, 4096)  # --bench-full; the default on a GPU
#: the default run on the CPU: these batches, and no larger B than CPU_MAX_BATCH for a problem
#: (large at B = 1024: ~6-8 min for plain, torchebm and cpu, both entries; B = 4096: ~4x the B = 1024 cell;
#: estimates in benchmarks/NOTES.md, "Default run and live results")
CPU_BATCHES = (64, 256, 1024)
CPU_MAX_BATCH = {"large": 256}
#: slow baselines a default run leaves out (benchmarks/providers.py): named or --bench-full to run
OPT_IN_PROVIDERS = ("ref", "compile")
DEFAULT_PROVIDERS = tuple(p for p in P.PROVIDERS if p not in OPT_IN_PROVIDERS)
QUICK_PROVIDERS = tuple(p for p in P.PROVIDERS if p != "compile")  # CI smoke run: ref is cheap at K = 10


def pytest_addoption(parser):
    g = parser.getgroup("hebm benchmarks")
    g.addoption("--bench-quick", action="store_true", default=False,
                help="small subset for CI: toy+small, B=64, K=10, short rounds, no torch.compile")
    g.addoption("--bench-full", action="store_true", default=False,
                help="every provider (ref and compile too) and every cell (B up to 4096, large included); "
                     "on 2 CPU cores more than an hour")
    g.addoption("--bench-providers", default=None,
                help=f"comma list of providers (default: {','.join(DEFAULT_PROVIDERS)}; "
                     f"{' and '.join(OPT_IN_PROVIDERS)} only when named or with --bench-full)")
    g.addoption("--bench-problems", default=None, help="comma list of standard problems (default toy,small,large)")
    g.addoption("--bench-batches", default=None,
                help="comma list of batch sizes, run for every chosen problem (default on the CPU: 64,256,1024 "
                     "with large only up to 256; on a GPU and with --bench-full: 64,256,1024,4096)")
    g.addoption("--bench-steps", type=int, default=None, help="Langevin steps K (default 60; quick 10)")
    g.addoption("--bench-device", default=None, choices=("cpu", "cuda"), help="device (default: cuda if available)")
    g.addoption("--bench-precision", default="fp32", choices=("fp32", "tf32"), help="fused backends' precision")
    g.addoption("--bench-max-time", type=float, default=None, help="seconds of timed rounds per benchmark")
    g.addoption("--ess-targets", default=None, help="ESS/s: standard problems (default toy; --bench-full toy,small)")
    g.addoption("--ess-seeds", default=None, help="ESS/s: comma list of seeds (default 1,2,3; quick 1; full 1-5)")
    g.addoption("--ess-steps", type=int, default=None,
                help="ESS/s: kept steps per chain, burn-in as long (default 2000; quick 100; full 4000)")
    g.addoption("--ess-every", type=int, default=10, help="ESS/s: steps between recorded states (default 10)")
    g.addoption("--ess-pt-backends", default="ref,cpu",
                help="ESS/s: backends that run parallel tempering, one row each (default ref,cpu)")
    g.addoption("--ess-rows", default=None, help="ESS/s: comma list of rows (default all; benchmarks/ess.py)")
    g.addoption("--ess-ckpt", default=None, help="ESS/s: a trained ebm checkpoint whose prior is a target too")
    g.addoption("--ess-ckpt-lambda", type=float, default=1.0, help="ESS/s: energy_scale of the checkpoint's target")


def _csv(value, default, cast=str):
    return tuple(cast(v) for v in value.split(",") if v) if value else tuple(default)


class BenchConfig:
    def __init__(self, config):
        opt = config.getoption
        self.quick = bool(opt("--bench-quick"))
        self.full = bool(opt("--bench-full"))
        if self.quick and self.full:
            raise pytest.UsageError("--bench-quick and --bench-full contradict each other: pass one")
        self.device = opt("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise pytest.UsageError("--bench-device=cuda but torch.cuda.is_available() is False")
        default_providers = P.PROVIDERS if self.full else QUICK_PROVIDERS if self.quick else DEFAULT_PROVIDERS
        self.providers = _csv(opt("--bench-providers"), default_providers)
        bad = set(self.providers) - set(P.PROVIDERS)
        if bad:
            raise pytest.UsageError(f"unknown providers {sorted(bad)}; expected some of {', '.join(P.PROVIDERS)}")
        self.problems = _csv(opt("--bench-problems"), ("toy", "small") if self.quick else PROBLEMS)
        bad = set(self.problems) - set(KNOWN_PROBLEMS)
        if bad:
            raise pytest.UsageError(f"unknown problems {sorted(bad)}; expected some of {', '.join(KNOWN_PROBLEMS)}")
        budgeted = not (self.quick or self.full or opt("--bench-batches")) and self.device == "cpu"
        default_batches = (64,) if self.quick else CPU_BATCHES if budgeted else BATCHES
        self.batches = _csv(opt("--bench-batches"), default_batches, int)
        max_batch = CPU_MAX_BATCH if budgeted else {}
        #: the (problem, B) cells of the Langevin and reverse-diffusion benchmarks, in run order
        self.cells = tuple((p, b) for p in self.problems for b in self.batches if b <= max_batch.get(p, b))
        self.left_out = tuple((p, b) for p in self.problems for b in self.batches if b > max_batch.get(p, b))
        self.steps = opt("--bench-steps") or (10 if self.quick else 60)
        self.precision = opt("--bench-precision")
        self.max_time = opt("--bench-max-time") or (0.2 if self.quick else 2.0)
        self.min_rounds = 1 if self.quick else 3
        self.max_rounds = 5 if self.quick else 200
        # ESS per second (benchmarks/test_ess_per_second.py)
        self.ess_targets = _csv(opt("--ess-targets"), ("toy", "small") if self.full else ("toy",))
        bad = set(self.ess_targets) - set(KNOWN_PROBLEMS)
        if bad:
            raise pytest.UsageError(f"unknown --ess-targets {sorted(bad)}; expected some of {', '.join(KNOWN_PROBLEMS)}")
        self.ess_seeds = _csv(opt("--ess-seeds"), (1,) if self.quick else (1, 2, 3, 4, 5) if self.full else (1, 2, 3), int)
        self.ess_steps = opt("--ess-steps") or (100 if self.quick else 4000 if self.full else 2000)
        self.ess_every = opt("--ess-every")
        if self.ess_every < 1 or self.ess_steps % self.ess_every:
            raise pytest.UsageError(f"--ess-steps ({self.ess_steps}) must be a multiple of --ess-every ({self.ess_every})")
        self.ess_pt_backends = _csv(opt("--ess-pt-backends"), ())
        self.ess_rows = _csv(opt("--ess-rows"), ())
        self.ess_ckpt = opt("--ess-ckpt")
        self.ess_ckpt_lambda = opt("--ess-ckpt-lambda")

    def describe(self) -> str:
        """What this run covers, and what it leaves to an explicit option (the report header)."""
        by_problem = {}
        for p, b in self.cells:
            by_problem.setdefault(p, []).append(str(b))
        cells = "; ".join(f"{p} B {','.join(bs)}" for p, bs in by_problem.items())
        out = [f"hebm benchmarks: providers {','.join(self.providers)}; cells {cells}"]
        skipped = [p for p in OPT_IN_PROVIDERS if p not in self.providers]
        if self.left_out or (skipped and not self.quick):
            opt_in = []
            if skipped and not self.quick:
                opt_in.append(f"providers {','.join(skipped)} (name them in --bench-providers)")
            if self.left_out:
                opt_in.append(", ".join(f"{p} B={b}" for p, b in self.left_out) + " (name B in --bench-batches)")
            out.append(f"hebm benchmarks: opt-in, not run: {'; '.join(opt_in)}; or --bench-full for everything")
        return "\n".join(out)


def pytest_configure(config):
    config._hebm_bench = cfg = BenchConfig(config)
    # the PyTorch baselines (ref, compile, graph) follow PyTorch's own switch: a TF32 run lets
    # every provider use TF32 (docs/design.md §5: "a CUDA graph with TF32 allowed is the TF32 baseline")
    torch.set_float32_matmul_precision("high" if cfg.precision == "tf32" else "highest")
    # one line per finished cell, and --benchmark-json rewritten after every cell (benchmarks/live.py)
    from benchmarks.live import LiveResults

    config.pluginmanager.register(LiveResults(config), "hebm-live-results")


@pytest.fixture(scope="session")
def bench(request) -> BenchConfig:
    return request.config._hebm_bench


def pytest_generate_tests(metafunc):
    cfg: BenchConfig = metafunc.config._hebm_bench
    names = metafunc.fixturenames
    if "problem_name" in names and "batch" in names:
        # one parameter for the (problem, B) cell, so the default run can leave out large B;
        # the test ids stay "toy-B64-…" as before
        metafunc.parametrize(("problem_name", "batch"), cfg.cells, ids=[f"{p}-B{b}" for p, b in cfg.cells])
    else:
        if "problem_name" in names:
            metafunc.parametrize("problem_name", cfg.problems)
        if "batch" in names:
            metafunc.parametrize("batch", cfg.batches, ids=[f"B{b}" for b in cfg.batches])
    if "provider" in names:
        metafunc.parametrize("provider", cfg.providers)


def pytest_report_header(config):
    cfg: BenchConfig = config._hebm_bench
    env = P.environment(cfg.device)
    json_path = config.getoption("benchmark_json", None)
    return [f"hebm benchmarks: device {env['device_name']}; torch {env['torch']}, triton {env['triton']}; "
            f"K {cfg.steps}; precision {cfg.precision}"
            f"{'; QUICK' if cfg.quick else '; FULL' if cfg.full else ''}",
            *cfg.describe().splitlines(),
            f"hebm benchmarks: results {json_path} (rewritten after every cell)" if json_path else
            "hebm benchmarks: no results file (pass --benchmark-json=PATH; it is rewritten after every cell)"]
