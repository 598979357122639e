"""One training iteration (``hebm.training.trainer.Trainer.train_step``) of each prior type on the default
digits config, with three samplers:

* ``plain`` — the loop a user writes around the same modules: ``prior.log_density``, one
  ``torch.autograd.grad`` a step, ``torch.randn_like`` noise (the eager baseline);
* ``ref``   — hebm's reference sampler (``fused=False``: the counter-based Philox stream in pure
  PyTorch);
* ``auto``  — the fused sampler (``fused=True`` → ``langevin_fused(backend="auto")``; the backend it
  picks is recorded).

Correctness before timing: the fused trainer's first iteration must give the reference trainer's
losses (same seed, same initial weights) to 1e-3 relative.  The plain sampler draws other noise,
so its iteration is not compared number for number (its Langevin loop is checked in
test_langevin.py).
"""
from __future__ import annotations

import contextlib
import math
import time

import pytest
import torch

from benchmarks import providers as P
from hebm.models import base as models
from hebm.training.trainer import Trainer

PRIORS = ("gaussian", "ebm", "diffusion")
SAMPLERS = ("plain", "ref", "auto")


def _init_ckpt(tmp_path_factory, device):
    """Stage 1 of a diffusion run: an (untrained) gaussian run's checkpoint to --init from."""
    d = tmp_path_factory.mktemp("init")
    tr = Trainer.from_settings(dict(prior="gaussian", device=device, out=str(d), quiet=True))
    tr.run_dir.acquire()
    path = tr.save()
    tr.run_dir.release()
    return path


def _trainer(prior, fused, device, out, init):
    extra = {"init": init} if prior == "diffusion" else {}
    return Trainer.from_settings(dict(prior=prior, device=device, out=str(out), quiet=True, fused=fused, **extra))


def _plain_run_langevin(prior, u, *, fused, n_steps, step_size, noise_scale=1.0, seed=None, chain_ids=None,
                        step_offset=0, check="warn", metropolis=False, **target):
    """What a user's training loop does for its negative chains: the same modules, torch.randn
    (unadjusted: the default training chains)."""
    assert not metropolis, "the plain row times the default (unadjusted) training chains"
    half = torch.as_tensor(0.5 * torch.as_tensor(step_size) ** 2, dtype=u.dtype).reshape(-1, 1)
    amp = torch.as_tensor(torch.as_tensor(noise_scale) * torch.as_tensor(step_size), dtype=u.dtype).reshape(-1, 1)
    x = u.detach()
    for _ in range(n_steps):
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            (g,) = torch.autograd.grad(prior.log_density(xg, **target).sum(), xg)
        x = (x.detach() + half * g + amp * torch.randn_like(x)).detach()
    return x


@contextlib.contextmanager
def _sampler(name):
    if name != "plain":
        yield
        return
    real = models.run_langevin
    models.run_langevin = _plain_run_langevin
    try:
        yield
    finally:
        models.run_langevin = real


def _fused_backend(device) -> str:
    from hebm.sampler import backends

    for name in backends.AUTO_ORDER.get(device, ()):
        if backends.unavailable(name) is None:
            return name
    return "ref"


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("prior", PRIORS)
def test_train_iteration(benchmark, bench, tmp_path_factory, prior, sampler):
    provider = sampler
    if bench.quick and prior != "ebm":
        pytest.skip("--bench-quick times the ebm iteration only")
    fused = provider == "auto"
    chosen = _fused_backend(bench.device) if fused else provider
    if fused and chosen == "ref":
        pytest.skip(f"auto: no fused backend is available on {bench.device} (auto would run the reference)")
    if prior == "gaussian" and provider != "ref":
        pytest.skip(f"{provider}: the gaussian prior samples nothing by Langevin (every sampler = ref)")
    init = _init_ckpt(tmp_path_factory, bench.device) if prior == "diffusion" else None
    tr = _trainer(prior, fused, bench.device, tmp_path_factory.mktemp(f"{prior}-{provider}"), init)
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(entry="train_iteration", provider=provider, backend=chosen, problem=f"digits-{prior}",
                B=tr.cfg.batch_size, K=tr.cfg.langevin_steps, precision=bench.precision, flops=None,
                quick=bench.quick)
    benchmark.group = f"train_iteration {prior}"
    with _sampler(provider):
        t0 = time.perf_counter()
        metrics = tr.train_step()
        P.sync(bench.device)
        first = time.perf_counter() - t0
        if fused:  # same first iteration with the reference sampler
            ref = _trainer(prior, False, bench.device, tmp_path_factory.mktemp(f"{prior}-check"), init).train_step()
            checked = [k for k, v in ref.items() if isinstance(v, float) and k != "step" and not k.endswith("_ms")]
            for k in checked:
                assert math.isclose(metrics[k], ref[k], rel_tol=1e-3, abs_tol=1e-4), f"{k}: fused {metrics[k]} vs ref {ref[k]}"
            info["checked_metrics"] = sorted(checked)
        info.update(P.peak_memory(tr.train_step, bench.device))
        P.measure(benchmark, tr.train_step, bench.device, max_time=bench.max_time, min_rounds=bench.min_rounds,
                  max_rounds=bench.max_rounds, first_call_s=first)
    info["median_s"] = benchmark.stats.stats.median
    info["gflops"] = None
