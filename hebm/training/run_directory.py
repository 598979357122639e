"""One run's directory: its files, an exclusive lock while a trainer uses it, the metrics log, and
the faults on them (a read-only file system, a full disk, a second process on the same
directory), each a one-line error naming the file."""
from __future__ import annotations

import errno
import json
import os
from typing import Optional

from .. import files
from ..checkpoint import CKPT_NAME, PREV_SUFFIX

RUN_FILES = (CKPT_NAME, CKPT_NAME[:-3] + PREV_SUFFIX, "config.json", "metrics.jsonl", "summary.json", "samples.png",
             "recon.png")


class RunFileError(RuntimeError):
    """A run file could not be written (a full disk, a file-size limit, ...); the message names it
    and ``errno`` says why."""

    def __init__(self, message: str, errno_: Optional[int] = None):
        super().__init__(message)
        self.errno = errno_


class RunDirectory:
    """One run's directory: its files, an exclusive lock while a trainer uses it, the metrics log."""

    def __init__(self, path: str):
        self.path = path
        self._lock = files.DirectoryLock(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def ckpt(self) -> str:
        return self.file(CKPT_NAME)

    @property
    def metrics(self) -> str:
        return self.file("metrics.jsonl")

    def holds_run(self) -> list:
        return [n for n in RUN_FILES if os.path.exists(self.file(n))]

    def acquire(self) -> None:
        """Exclusive use of the directory for this process (:class:`hebm.files.DirectoryLock`)."""
        self._lock.acquire("--out", "hebm.train")

    def unwritable(self, e: OSError, name: Optional[str] = None) -> str:
        """The one-line message for an OSError writing the run directory at the start of a run."""
        return files.unwritable("--out", self.path, e, name)

    def release(self) -> None:
        self._lock.release()

    def run_paths(self) -> list:
        """The files of a run here — what :meth:`clear` removes: :data:`RUN_FILES` and the bad
        checkpoints :func:`hebm.checkpoint.save_checkpoint` moved aside."""
        import glob

        aside = glob.glob(glob.escape(self.file(CKPT_NAME[:-3])) + ".corrupt-*.pt")
        return [self.file(n) for n in RUN_FILES] + aside

    def holds(self, path: str) -> bool:
        """Whether ``path`` is one of this directory's run files (which :meth:`clear` removes)."""
        real = os.path.realpath(path)
        return any(os.path.realpath(p) == real for p in self.run_paths())

    def clear(self) -> None:
        for p in self.run_paths():
            try:
                os.remove(p)
            except FileNotFoundError:
                pass

    def write_json(self, name: str, obj: dict) -> None:
        tmp = self.file(f".{name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                files.dump_json(obj, f, indent=2)
            os.replace(tmp, self.file(name))
        except OSError as e:  # no half-written temporary left behind; the error names the real file
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise OSError(e.errno, e.strerror, self.file(name)) from None

    def append_metrics(self, row: dict) -> None:
        """Append one row to metrics.jsonl, all of it or nothing.  The row goes out in one
        ``os.write`` (not through a buffer flushed in pieces); if writing fails — a full disk, a
        file-size limit (ENOSPC, EFBIG, EDQUOT) or anything else — the file is cut back to its
        previous length, so it never ends in half a row, and :class:`RunFileError` names the file."""
        data = (files.json_text(row) + "\n").encode()
        try:
            fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFileError(f"cannot write {self.metrics} ({e.strerror or e})", e.errno) from None
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # a write cut short by a limit returns a short count; the next one fails
                    n = os.write(fd, view)
                    if n <= 0:
                        raise OSError(errno.EIO, "the write made no progress")
                    view = view[n:]
            except OSError as e:
                try:
                    os.ftruncate(fd, size)
                    how = "the row was not written, the file is intact"
                except OSError:
                    how = "its last line may be incomplete (it is dropped on --resume)"
                raise RunFileError(f"cannot write {self.metrics} ({e.strerror or e}; {how})", e.errno) from None
        finally:
            os.close(fd)

    def truncate_metrics(self, step: int) -> int:
        """Drop the rows logged after iteration ``step`` (a resume from that checkpoint repeats
        them); returns how many were dropped."""
        if not os.path.exists(self.metrics):
            return 0
        keep, dropped = [], 0
        with open(self.metrics) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    dropped += 1  # a half-written last line of a killed run
                    continue
                if int(row.get("step", 0)) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
                else:
                    dropped += 1
        tmp = self.metrics + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.metrics)
        return dropped


__all__ = ["CKPT_NAME", "RUN_FILES", "RunDirectory", "RunFileError"]
