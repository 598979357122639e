"""One training iteration (``hebm.train.Trainer.train_step``) of each prior type on the default
digits config, with the reference sampler (``fused=False``: provider ``ref``) and the fused one
(``fused=True`` → ``langevin_fused(backend="auto")``: provider ``auto``, the backend it picks is
recorded).  Issue 7's targets: fused ≥ 10× ref on a GPU, ≥ 5× on the CPU.

Correctness before timing: the fused trainer's first iteration must give the reference trainer's
losses (same seed, same initial weights) to 1e-3 relative.
"""
from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks import providers as P

train = pytest.importorskip("hebm.train", reason="hebm.train (Trainer) is not in this version of hebm")
PRIORS = ("gaussian", "ebm", "diffusion")


def _init_ckpt(tmp_path_factory, device):
    """Stage 1 of a diffusion run: an (untrained) ebm run's checkpoint to --init from."""
    d = tmp_path_factory.mktemp("init")
    tr = train.Trainer(train.default_config("ebm", device=device, out=str(d), quiet=True))
    return tr.save()


def _trainer(prior, fused, device, out, init):
    extra = {"init": init} if prior == "diffusion" else {}
    return train.Trainer(train.default_config(prior, device=device, out=str(out), quiet=True, fused=fused, **extra))


def _fused_backend(device) -> str:
    from hebm import backends

    for name in backends.AUTO_ORDER.get(device, ()):
        if backends.unavailable(name) is None:
            return name
    return "ref"


@pytest.mark.parametrize("sampler", ["ref", "auto"])
@pytest.mark.parametrize("prior", PRIORS)
def test_train_iteration(benchmark, bench, tmp_path_factory, prior, sampler):
    provider = sampler
    if bench.quick and prior != "ebm":
        pytest.skip("--bench-quick times the ebm iteration only")
    if provider not in ("ref",) and not set(bench.providers) - {"ref", "compile"}:
        pytest.skip("no fused provider selected (--bench-providers)")
    fused = provider == "auto"
    chosen = _fused_backend(bench.device) if fused else "ref"
    if fused and chosen == "ref":
        pytest.skip(f"auto: no fused backend is available on {bench.device} (auto would run the reference)")
    if fused and prior == "gaussian":
        pytest.skip("auto: the gaussian prior samples nothing by Langevin (fused = ref)")
    init = _init_ckpt(tmp_path_factory, bench.device) if prior == "diffusion" else None
    tr = _trainer(prior, fused, bench.device, tmp_path_factory.mktemp(f"{prior}-{provider}"), init)
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(entry="train_iteration", provider=provider, backend=chosen, problem=f"digits-{prior}",
                B=tr.cfg["batch_size"], K=tr.cfg["langevin_steps"], precision=bench.precision, flops=None,
                quick=bench.quick)
    benchmark.group = f"train_iteration {prior}"

    t0 = time.perf_counter()
    metrics = tr.train_step()
    P.sync(bench.device)
    first = time.perf_counter() - t0
    if fused:  # same first iteration with the reference sampler
        ref = _trainer(prior, False, bench.device, tmp_path_factory.mktemp(f"{prior}-check"), init).train_step()
        timing = ("step",)  # and anything that is a duration, not a loss
        for k, v in ref.items():
            if k in timing or k.endswith(("_ms", "_s", "_time", "_sec")):
                continue
            assert math.isclose(metrics[k], v, rel_tol=1e-3, abs_tol=1e-4), f"{k}: fused {metrics[k]} vs ref {v}"
        info["checked_metrics"] = sorted(k for k in ref if k not in timing and not k.endswith(("_ms", "_s", "_time", "_sec")))
    info.update(P.peak_memory(tr.train_step, bench.device))
    P.measure(benchmark, tr.train_step, bench.device, max_time=bench.max_time, min_rounds=bench.min_rounds,
              max_rounds=bench.max_rounds, first_call_s=first)
    info["median_s"] = benchmark.stats.stats.median
    info["gflops"] = None
