"""The CPU kernel's thread pool after it has slept: toy B = 64 through one ``hebm.Sampler``, calls of
K = 1 and K = 21 steps either back to back ("interleaved": the workers still spin from the last
call) or each after 2 ms of sleep ("sleep-between": the workers are asleep).  Prints the medians
and the fixed cost in steps, ``(t(1) − s) / s`` with ``s = (t(21) − t(1)) / 20``.

    python -m benchmarks.pool_wake [--tag NAME]

Compare two builds by running it from each checkout in turn (PYTHONPATH=<checkout>), several
times alternately, on one machine (benchmarks/NOTES.md, "Waking the pool at the op's entry")."""
from __future__ import annotations

import argparse
import statistics
import time

import hebm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="")
    ap.add_argument("--rounds", type=int, default=300)
    a = ap.parse_args()
    p = hebm.standard_problem("toy", 64)
    s = hebm.Sampler(p.prior, backend="cpu")
    k1, k21 = dict(p.kwargs, n_steps=1), dict(p.kwargs, n_steps=21)

    def f1():
        return s.run(p.u, **k1)

    def f21():
        return s.run(p.u, **k21)

    def timed(f):
        t0 = time.perf_counter()
        f()
        return time.perf_counter() - t0

    for _ in range(50):
        f1(), f21()
    hot1, hot21, cold1, cold21 = [], [], [], []
    for _ in range(a.rounds):
        hot1.append(timed(f1))
        hot21.append(timed(f21))
    for _ in range(a.rounds // 2):
        time.sleep(0.002)
        cold1.append(timed(f1))
        time.sleep(0.002)
        cold21.append(timed(f21))
    h1, h21, c1, c21 = (statistics.median(x) * 1e6 for x in (hot1, hot21, cold1, cold21))
    sh, sc = (h21 - h1) / 20, (c21 - c1) / 20
    print(f"{a.tag}: interleaved t1 {h1:.0f} µs, t21 {h21:.0f} µs, step {sh:.1f} µs, fixed/step {(h1 - sh) / sh:.2f} | "
          f"sleep-between t1 {c1:.0f} µs, t21 {c21:.0f} µs, step {sc:.1f} µs, fixed/step {(c1 - sc) / sc:.2f}")


if __name__ == "__main__":
    main()
