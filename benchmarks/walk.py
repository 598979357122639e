"""The walk of ``prior`` from an entry point to the kernel: which files a warm call passes through.

    python -m benchmarks.walk [--fused | --sampler]

Traces one warm call (toy problem, B = 64, backend "cpu"; the call before it warms every cache)
with ``sys.setprofile`` and keeps the Python frames of hebm's own files that hold the prior — as
an argument or a local (``prior``, or an object whose ``prior`` attribute it is) — in the order
they run; then every frame of hebm's files, whatever it holds.  A *stay* is a maximal run of events in one file; a *return* is a return from a frame
to a caller in another file.  The C++ side is one hop: the op's boxed kernel (csrc/ops.cpp) and
the kernel it calls (csrc/cpu/langevin_cpu.cpp).  ``--fused``: ``hebm.langevin_fused`` (default);
``--sampler``: ``Sampler.run`` on a Sampler built before.
"""
from __future__ import annotations

import os
import sys

import hebm


def _holds(frame, prior) -> bool:
    for v in frame.f_locals.values():
        if v is prior or getattr(v, "prior", None) is prior:
            return True
    return False


def walk(call, prior, root: str) -> list:
    """``[(event, file, function)]`` of hebm's frames that hold ``prior`` during ``call()`` (every
    hebm frame with ``prior=None``)."""
    events = []

    def prof(frame, event, arg):
        if event not in ("call", "return"):
            return
        f = frame.f_code.co_filename
        if not f.startswith(root) or (prior is not None and not _holds(frame, prior)):
            return
        events.append((event, os.path.relpath(f, os.path.dirname(root)), frame.f_code.co_name))

    sys.setprofile(prof)
    try:
        call()
    finally:
        sys.setprofile(None)
    return events


def summary(events) -> dict:
    stays, files, returns, stack = [], [], 0, []
    for event, f, fn in events:
        if not stays or stays[-1] != f:
            stays.append(f)
        if f not in files:
            files.append(f)
        if event == "call":
            stack.append(f)
        else:
            here = stack.pop() if stack else f
            if stack and stack[-1] != here:
                returns += 1
    return {"files": files, "stays": stays, "returns": returns}


def main(argv) -> int:
    p = hebm.standard_problem("toy", 64)
    kw = dict(p.kwargs, n_steps=1)
    if "--sampler" in argv:
        sampler = hebm.Sampler(p.prior, backend="cpu")

        def call():
            return sampler.run(p.u, **kw)
        what = "hebm.Sampler.run"
    else:
        def call():
            return hebm.langevin_fused(p.prior, p.u, backend="cpu", **kw)
        what = "hebm.langevin_fused"
    call()
    root = os.path.dirname(os.path.abspath(hebm.__file__))
    for title, prior in (("frames holding the prior", p.prior), ("every hebm frame", None)):
        ev = walk(call, prior, root)
        s = summary(ev)
        print(f"{what}, {title}: {len(s['files'])} Python files, {len(s['stays'])} stays, {s['returns']} returns to "
              f"another file, {sum(e == 'call' for e, _, _ in ev)} calls (then the op: csrc/ops.cpp → "
              f"csrc/cpu/langevin_cpu.cpp)")
        print("  files:", " → ".join(s["files"]))
        print("  stays:", " → ".join(s["stays"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
