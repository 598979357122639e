"""ESS per second of hebm's fused ULA, MALA and parallel tempering against the plain PyTorch loop
and TorchEBM, side by side in one run (issue 32; rows, target and timing: benchmarks/ess.py).

    pytest benchmarks/test_ess_per_second.py --benchmark-json=ess.json               # toy, 3 seeds
    pytest benchmarks/test_ess_per_second.py --ess-seeds=1,2,3,4,5 --ess-targets=toy,small
    pytest benchmarks/test_ess_per_second.py --ess-ckpt=PATH --ess-ckpt-lambda=1      # + a trained prior

For each target the whole study runs once (the first row's test): every row for every seed, seed
by seed, the rows' kept segments in lockstep (one segment of each row in turn) — so a ratio to the
plain loop compares the same seconds of a shared machine.  Each row's test then stores its numbers in ``extra_info``: ESS/s
(the minimum bulk ESS over log π, u₀ and ‖u‖, over the kept draws' sampler seconds) mean and
sample std (ddof 1) over seeds, the ratio to ``plain-ula`` per seed and its mean/std, R-hat, ESS
per 1,000 steps of the batch and its ratio to the plain loop (the sanity check: the ULA rows run the same
update at the same δ, so this ratio must be 1 within the spread), the MALA pilot's δ and
acceptance, PT's swap rates.  pytest-benchmark's own timing (``stats``) is of one segment call of
the row (``every`` steps, the unit the ESS/s pays for), as the other benchmarks time one call.

Options (benchmarks/conftest.py): ``--ess-targets`` (default toy; ``--bench-full``: toy,small),
``--ess-seeds`` (default 1,2,3; quick 1; full 1-5), ``--ess-steps`` kept steps per chain (the
burn-in is as long; default 2000, quick 100, full 4000), ``--ess-every`` (10),
``--ess-pt-backends`` (ref,cpu: the backend that runs parallel tempering is this one parameter),
``--ess-rows`` (a subset of the rows; plain-ula always runs),
``--ess-ckpt PATH`` / ``--ess-ckpt-lambda``.
"""
from __future__ import annotations

import time

import pytest
import torch

from benchmarks import ess as E
from benchmarks import providers as P

_STUDIES: dict = {}


def _rows(cfg) -> tuple:
    rows = tuple(E.BASE_ROWS) + tuple(f"pt-{b}" for b in cfg.ess_pt_backends)
    if cfg.ess_rows:  # the plain loop is the denominator of every ratio: always run
        rows = tuple(r for r in rows if r in cfg.ess_rows or r == E.BASELINE)
    return rows


def pytest_generate_tests(metafunc):
    if "ess_target" in metafunc.fixturenames:
        cfg = metafunc.config._hebm_bench
        targets = list(cfg.ess_targets) + (["ckpt"] if cfg.ess_ckpt else [])
        metafunc.parametrize("ess_target", targets)
        metafunc.parametrize("row", _rows(cfg))


_TARGETS: dict = {}


def _target(cfg, name: str) -> E.Target:
    if name not in _TARGETS:
        _TARGETS[name] = (E.checkpoint_target(cfg.ess_ckpt, 64, cfg.ess_ckpt_lambda) if name == "ckpt"
                          else E.standard_target(name, 64))
    return _TARGETS[name]


def _study(cfg, name: str, log) -> dict:
    if name not in _STUDIES:
        target = _target(cfg, name)
        rows = tuple(r for r in _rows(cfg) if E.row_skip_reason(r, target) is None)
        t0 = time.perf_counter()
        _STUDIES[name] = E.study(target, rows, cfg.ess_seeds, burn=cfg.ess_steps, keep=cfg.ess_steps,
                                 every=cfg.ess_every, pt_backends=cfg.ess_pt_backends,
                                 pilot_steps=200 if cfg.quick else None, log=log)
        _STUDIES[name]["info"]["study_wall_s"] = time.perf_counter() - t0
    return _STUDIES[name]


def test_ess_per_second(benchmark, bench, request, ess_target, row):
    if bench.device != "cpu":
        pytest.skip("the ESS/s study runs on the CPU (the plain loop and the cpu kernel)")
    try:
        import arviz_stats  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("the ESS comes from arviz-stats, not installed here: pip install 'hebm[bench]'")
    target = _target(bench, ess_target)
    why = E.row_skip_reason(row, target)
    if why is not None:
        pytest.skip(f"{row}: {why}")
    live = request.config.pluginmanager.get_plugin("hebm-live-results")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def log(line):  # one line per finished chain, past the output capture (benchmarks/live.py)
        if live is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                live.say(f"[hebm bench] {line}")

    res = _study(bench, ess_target, log)
    r = res["rows"][row]
    info = benchmark.extra_info
    info.update(P.environment(bench.device))
    info.update(res["info"])
    info.update(entry="ess_per_second", row=row, problem=ess_target, K=bench.ess_every, quick=bench.quick,
                precision="fp32", flops=None)
    info.update({k: v for k, v in r.items()})
    benchmark.group = f"ess_per_second {ess_target} B={target.batch}"

    # pytest-benchmark's timing: one segment call of the row (``every`` steps), warm
    u = target.start(0)
    step = E.make_step(row, target, 0, every=bench.ess_every, mala_step_size=res["info"].get("mala_step_size"))
    fn = lambda: step(u, 0)  # noqa: E731
    fn()
    benchmark.pedantic(fn, rounds=3 if bench.quick else 20, iterations=1, warmup_rounds=1)
    info["median_s"] = benchmark.stats.stats.median

    # the sanity check: the ULA rows are one update at one δ, so ESS per step agrees with the plain
    # loop's within the seeds' spread (quick runs keep too few draws to say)
    if row in E.ULA_ROWS and row != E.BASELINE and not bench.quick:
        q = r["ratio_ess_per_step_vs_plain_mean"]
        assert q is not None and 0.67 < q < 1.5, (
            f"{row}: ESS per step {q:.2f}× the plain loop's — the same update at the same δ should give 1")
    assert all(torch.isfinite(torch.tensor(n["ess_bulk_min"])) for n in r["per_seed"]), f"{row}: an ESS is not finite"
    # a traced row is its segmented twin's chain recorded inside one call: the same states, the same ESS
    twin = E.TRACED_ROWS.get(row)
    if twin in res["rows"]:
        same = [(a["ess_bulk_min"], b["ess_bulk_min"]) for a, b in zip(r["per_seed"], res["rows"][twin]["per_seed"])]
        assert all(a == b for a, b in same), f"{row}: the traced chain's ESS differs from {twin}'s: {same}"
