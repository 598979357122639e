"""The machine's fp32 matrix-product rate, measured in the same run as the samplers: the 'peak'
of the roofline summary and the yardstick of docs/design.md §5's CPU target ("within 2× of the
machine's fp32 matrix-product rate (torch.mm measured in the same run)")."""
from __future__ import annotations

import torch

from benchmarks import providers as P


def test_mm(benchmark, bench):
    n = 4096 if bench.device == "cuda" else (512 if bench.quick else 1024)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(bench.device)
    b = torch.randn(n, n, generator=g).to(bench.device)
    out = torch.empty(n, n, device=bench.device)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bench.precision == "tf32"
    try:
        fn = lambda: torch.mm(a, b, out=out)  # noqa: E731
        benchmark.group = "mm"
        info = benchmark.extra_info
        info.update(P.environment(bench.device))
        flops = 2.0 * n**3
        info.update(entry="mm", provider="torch.mm", problem=f"mm{n}", B=n, K=None, precision=bench.precision,
                    flops=flops, quick=bench.quick)
        torch.testing.assert_close(fn()[:4, :4], (a[:4].double() @ b[:, :4].double()).float(), rtol=1e-3, atol=1e-2)
        P.measure(benchmark, fn, bench.device, max_time=bench.max_time, min_rounds=3, max_rounds=200,
                  first_call_s=0.0)
        info["median_s"] = benchmark.stats.stats.median
        info["gflops"] = flops / info["median_s"] / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
