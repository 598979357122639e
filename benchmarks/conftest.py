"""pytest-benchmark configuration of hebm's benchmark suite.

    pytest benchmarks                                   # everything this machine can run
    pytest benchmarks --bench-quick                     # CI subset (< 3 min on 2 CPU cores)
    pytest benchmarks --benchmark-json=out.json && python -m benchmarks.report --json out.json

Options (all optional):
  --bench-quick                toy+small, B=64, K=10, short rounds, no torch.compile
  --bench-providers=ref,cpu    providers to run (default: ref,graph,compile,cpu,triton,cuda)
  --bench-problems=toy,small   standard problems (default toy,small,large)
  --bench-batches=64,256       batch sizes (default 64,256,1024,4096)
  --bench-steps=60             Langevin steps K per chain / per diffusion level (default 60)
  --bench-device=cuda          cpu | cuda (default: cuda when available, else cpu)
  --bench-precision=fp32       fp32 | tf32 for the fused backends (default fp32, docs/design.md §5)
  --bench-max-time=2           seconds of timed rounds per benchmark (default 2; quick 0.2)
"""
from __future__ import annotations

import pytest
import torch

from benchmarks import providers as P

PROBLEMS = ("toy", "small", "large")
BATCHES = (64, 256, 1024, 4096)


def pytest_addoption(parser):
    g = parser.getgroup("hebm benchmarks")
    g.addoption("--bench-quick", action="store_true", default=False,
                help="small subset for CI: toy+small, B=64, K=10, short rounds, no torch.compile")
    g.addoption("--bench-providers", default=None, help="comma list of providers (default: all)")
    g.addoption("--bench-problems", default=None, help="comma list of standard problems")
    g.addoption("--bench-batches", default=None, help="comma list of batch sizes")
    g.addoption("--bench-steps", type=int, default=None, help="Langevin steps K (default 60; quick 10)")
    g.addoption("--bench-device", default=None, choices=("cpu", "cuda"), help="device (default: cuda if available)")
    g.addoption("--bench-precision", default="fp32", choices=("fp32", "tf32"), help="fused backends' precision")
    g.addoption("--bench-max-time", type=float, default=None, help="seconds of timed rounds per benchmark")


def _csv(value, default, cast=str):
    return tuple(cast(v) for v in value.split(",") if v) if value else tuple(default)


class BenchConfig:
    def __init__(self, config):
        opt = config.getoption
        self.quick = bool(opt("--bench-quick"))
        self.providers = _csv(opt("--bench-providers"), P.PROVIDERS)
        bad = set(self.providers) - set(P.PROVIDERS)
        if bad:
            raise pytest.UsageError(f"unknown providers {sorted(bad)}; expected some of {', '.join(P.PROVIDERS)}")
        self.problems = _csv(opt("--bench-problems"), ("toy", "small") if self.quick else PROBLEMS)
        self.batches = _csv(opt("--bench-batches"), (64,) if self.quick else BATCHES, int)
        self.steps = opt("--bench-steps") or (10 if self.quick else 60)
        self.device = opt("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise pytest.UsageError("--bench-device=cuda but torch.cuda.is_available() is False")
        self.precision = opt("--bench-precision")
        self.max_time = opt("--bench-max-time") or (0.2 if self.quick else 2.0)
        self.min_rounds = 1 if self.quick else 3
        self.max_rounds = 5 if self.quick else 200


def pytest_configure(config):
    config._hebm_bench = cfg = BenchConfig(config)
    # the PyTorch baselines (ref, compile, graph) follow PyTorch's own switch: a TF32 run lets
    # every provider use TF32 (docs/design.md §5: "a CUDA graph with TF32 allowed is the TF32 baseline")
    torch.set_float32_matmul_precision("high" if cfg.precision == "tf32" else "highest")


@pytest.fixture(scope="session")
def bench(request) -> BenchConfig:
    return request.config._hebm_bench


def pytest_generate_tests(metafunc):
    cfg: BenchConfig = metafunc.config._hebm_bench
    if "problem_name" in metafunc.fixturenames:
        metafunc.parametrize("problem_name", cfg.problems)
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", cfg.batches, ids=[f"B{b}" for b in cfg.batches])
    if "provider" in metafunc.fixturenames:
        metafunc.parametrize("provider", cfg.providers)


def pytest_report_header(config):
    cfg: BenchConfig = config._hebm_bench
    env = P.environment(cfg.device)
    return [f"hebm benchmarks: device {env['device_name']}; torch {env['torch']}, triton {env['triton']}; "
            f"providers {','.join(cfg.providers)}; problems {','.join(cfg.problems)}; B {cfg.batches}; "
            f"K {cfg.steps}; precision {cfg.precision}{'; QUICK' if cfg.quick else ''}"]
