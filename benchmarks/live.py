"""Live progress and incremental results for the benchmark suite (a pytest plugin; conftest.py
registers it).

* **Progress**: after every test that recorded a benchmark, one line on the terminal, e.g.

      [hebm bench 12/57 +1:23] langevin small B=256 cpu: median 187 ms (5 rounds)

  written through pytest's terminal reporter between tests (so it shows under output capture,
  also with ``-q``) and flushed at once (so it shows through a pipe such as ``| tee log``).
* **Results as they come**: with ``--benchmark-json=PATH`` the file is rewritten after every cell,
  in pytest-benchmark's own format (the hooks it uses for its final file, so ``benchmarks.report``
  reads it as it is), atomically: a temporary file in the same folder, then ``os.replace``.  A run
  killed part-way leaves a valid file with every cell it finished.  The one field added at the top
  level, ``"complete"``, is ``false`` until the session ends, and stays ``false`` when it ended
  early (Ctrl-C, ``-x``); pytest-benchmark's final write (also made atomic here) sets it.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import pytest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` is at every moment either the old file or the
    whole new one: a temporary file in the same folder, flushed and fsynced, then ``os.replace``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open(path, "w") would make it (mkstemp makes 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dumps(output_json: dict) -> str:
    """The JSON text exactly as pytest-benchmark writes it (``safe_dumps``, ASCII, indent 4)."""
    from pytest_benchmark.utils import safe_dumps

    return safe_dumps(output_json, ensure_ascii=True, indent=4)


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _fmt_elapsed(s: float) -> str:
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def cell_line(meta, index: int, total: int, elapsed: float) -> str:
    """The progress line of one finished benchmark (a pytest-benchmark ``Metadata``)."""
    e = meta.extra_info
    what = " ".join(str(x) for x in (e.get("entry", meta.name), e.get("problem"),
                                     f"B={e['B']}" if e.get("B") is not None else None,
                                     e.get("provider")) if x)
    st = meta.stats
    return (f"[hebm bench {index}/{total} +{_fmt_elapsed(elapsed)}] {what}: median {_fmt_time(st.median)} "
            f"({st.rounds} rounds)")


def _recorded(bs) -> list:
    """The benchmarks pytest-benchmark would write: a timed result, no error."""
    return [b for b in bs.benchmarks if b and not b.has_error]


class LiveResults:
    """The plugin: one instance per session, registered by benchmarks/conftest.py."""

    def __init__(self, config):
        self.config = config
        self.t0 = time.perf_counter()
        self.n_items = 0
        self.n_done = 0
        self.n_seen = 0  # benchmarks already reported
        self.session = None
        self._machine = None
        self._commit = None
        self._warned = False

    # ---------------------------------------------------------------- pytest hooks
    def pytest_sessionstart(self, session):
        self.session = session
        self.t0 = time.perf_counter()
        bs = getattr(self.config, "_benchmarksession", None)
        if bs is not None and getattr(bs, "json", None):
            # pytest-benchmark's final write, made atomic too (it opens PATH with "wb" and writes)
            def save_json(output_json, _bs=bs):
                atomic_write_text(_bs.json, dumps(output_json))
                _bs.logger.info(f"Wrote benchmark data in: {_bs.json}", purple=True)

            bs.save_json = save_json

    def pytest_collection_finish(self, session):
        self.n_items = len(session.items)

    def pytest_runtest_logfinish(self, nodeid, location):
        self.n_done += 1
        bs = getattr(self.config, "_benchmarksession", None)
        if bs is None:
            return
        new = bs.benchmarks[self.n_seen:]
        self.n_seen = len(bs.benchmarks)
        new = [b for b in new if b and not b.has_error]
        if not new:
            return
        if getattr(bs, "json", None):
            self.write_json(bs, complete=False)
        elapsed = time.perf_counter() - self.t0
        for b in new:
            self.say(cell_line(b, self.n_done, self.n_items, elapsed))

    @pytest.hookimpl(optionalhook=True)
    def pytest_benchmark_update_json(self, config, benchmarks, output_json):
        # called for pytest-benchmark's final file (and by write_json, which then overrides it)
        output_json["complete"] = self.finished_normally()

    # ---------------------------------------------------------------- helpers
    def finished_normally(self) -> bool:
        s = self.session
        if s is None:
            return False
        if s.shouldstop or s.shouldfail:
            return False
        return getattr(s, "exitstatus", None) not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR,
                                                      pytest.ExitCode.USAGE_ERROR)

    def write_json(self, bs, *, complete: bool) -> None:
        """(Re)write ``--benchmark-json`` with every benchmark so far, as pytest-benchmark would."""
        hook = self.config.hook
        try:
            if self._machine is None:  # (cpuinfo and git: once per session)
                self._machine = bs.get_machine_info()
                self._commit = hook.pytest_benchmark_generate_commit_info(config=self.config)
                hook.pytest_benchmark_update_commit_info(config=self.config, commit_info=self._commit)
            rec = _recorded(bs)
            out = hook.pytest_benchmark_generate_json(config=self.config, benchmarks=rec, include_data=True,
                                                      machine_info=self._machine, commit_info=self._commit)
            hook.pytest_benchmark_update_json(config=self.config, benchmarks=rec, output_json=out)
            out["complete"] = complete
            atomic_write_text(bs.json, dumps(out))
        except Exception as exc:  # noqa: BLE001 - a results file that cannot be written must not stop the run
            if not self._warned:
                self._warned = True
                self.say(f"[hebm bench] WARNING: could not write {bs.json} ({type(exc).__name__}: {exc}); "
                         f"the run goes on (pytest-benchmark tries again at the end)")

    def say(self, line: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            fspath = getattr(tr, "currentfspath", None)
            tr.ensure_newline()
            if getattr(getattr(tr, "_tw", None), "width_of_current_line", 0):  # -q: after the progress dots
                tr.write("\n")
            tr.write_line(line)
            if fspath is not None:  # the next test's dot goes on the next line, without a blank line and the file again
                tr.currentfspath = fspath
            tr.flush()
        else:  # -p no:terminal
            print(line, file=sys.__stderr__, flush=True)
