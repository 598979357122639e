"""What hebm writes, written safely: standard JSON, destinations checked before the work that
fills them, and directories one process writes at a time.

* **Standard JSON** (``evaluate --json``, the sample reports, a run's ``config.json``,
  ``summary.json`` and ``metrics.jsonl``): Python's ``json`` writes ``NaN`` and ``Infinity`` by
  default, which no JSON parser outside Python reads (``jq``, browsers and most languages refuse
  the whole file).  Here a non-finite number becomes ``null`` — the value is undefined (an FD
  with no samples, a level no chain visited) — and NumPy or torch numbers and arrays become plain
  numbers and lists; anything else JSON cannot hold is written as its ``str``.
* **Destinations** (:func:`writable_directory`, :func:`writable_file`): a directory is created and
  a file written in it *before* minutes of training, sampling or evaluating are spent on what
  goes there, so a path that is a file, lies under a file, or sits on a read-only file system is
  one line naming the flag, not a traceback at the end.
* **Directory locks** (:class:`DirectoryLock`): an exclusive ``flock`` on ``DIR/.lock`` while a
  process writes ``DIR``; a second process is refused at once, naming the first one's pid.
"""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from typing import Optional

from .errors import UserError

LOCK_NAME = ".lock"


# ---------------------------------------------------------------------------------- standard JSON
def standard(obj):
    """``obj`` with every non-finite float as None and NumPy / torch values as plain Python."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else str(k): standard(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [standard(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return standard(tolist())
    return str(obj)


def json_text(obj, **kw) -> str:
    """``json.dumps`` of :func:`standard` ``(obj)``: never ``NaN`` or ``Infinity`` in the text."""
    return json.dumps(standard(obj), allow_nan=False, **kw)


def dump_json(obj, fp, **kw) -> None:
    """:func:`json_text` into the open file ``fp``."""
    fp.write(json_text(obj, **kw))


# ---------------------------------------------------------------------------------- destinations
def unwritable(flag: str, path: str, e: OSError, name: Optional[str] = None) -> str:
    """The one-line message for an OSError writing under the directory ``path`` of ``flag``."""
    return (f"{flag} {path!r} is not writable: cannot write {name or e.filename or path} ({e.strerror or e}); "
            f"pick a writable {flag}")


def _blocking_file(path: str) -> Optional[str]:
    """The nearest existing ancestor of ``path`` that is not a directory (None if there is none)."""
    p = os.path.abspath(path)
    while True:
        if os.path.lexists(p):
            return None if os.path.isdir(p) else p
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def make_directory(flag: str, path: str, given: Optional[str] = None) -> None:
    """``path`` created with its parents, or :class:`UserError` naming ``flag`` (and ``given``, the
    value the user passed, when ``path`` is derived from it) and the reason: the path is a file, a
    file lies on the way, or the file system refuses (read-only, permission)."""
    shown = f"{flag} {given if given is not None else path!r}"
    blocking = _blocking_file(path)
    if blocking == os.path.abspath(path) and given is None:
        raise UserError(f"{shown} is a file, not a directory; pick a directory")
    if blocking is not None:
        raise UserError(f"{shown}: {blocking!r} on its path is a file, not a directory; pick another {flag}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{shown}: cannot create the directory {path!r} ({e.strerror or e}); pick another "
                        f"{flag}") from None


def writable_directory(flag: str, path: str, given: Optional[str] = None) -> None:
    """``path`` exists as a directory (created if need be) in which a file can be written — proven
    by writing and removing one — or :class:`UserError` naming ``flag`` (see :func:`make_directory`)."""
    make_directory(flag, path, given)
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".hebm-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(unwritable(flag, given if given is not None else path, e, path)) from None


def writable_file(flag: str, path: str) -> None:
    """A file that ``flag`` will write at ``path``: not a directory, in a directory that exists (or
    is created) and takes files — checked before the work whose result it holds."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path!r} is a directory; name a file")
    writable_directory(flag, os.path.dirname(os.path.abspath(path)), given=path)


# ---------------------------------------------------------------------------------- directory locks
class DirectoryLock:
    """Exclusive use of a directory by this process: ``flock`` on ``DIR/.lock``, which holds the
    owner's pid.  :meth:`acquire` creates the directory; a directory another process holds is
    refused at once (a wait would let two writers interleave their files)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = None

    @property
    def file(self) -> str:
        return os.path.join(self.path, LOCK_NAME)

    def acquire(self, flag: str, program: str) -> None:
        """Lock the directory of ``flag`` for ``program`` (named in the refusal the next one gets)."""
        import fcntl

        make_directory(flag, self.path)
        # every OSError here (a read-only file system, no permission, no space) is a property of
        # the directory the user chose: one line naming it
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(unwritable(flag, self.path, e, self.file)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = ""
                try:
                    with open(self.file) as f:
                        who = f.read().strip()
                except OSError:
                    pass
                raise UserError(f"{flag} {self.path!r} is in use by another {program} ({who or 'unknown pid'}); wait "
                                f"for it or pick another {flag}") from None
            raise UserError(f"{flag} {self.path!r}: cannot lock {self.file} ({e.strerror or e}); pick another "
                            f"{flag}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            raise UserError(unwritable(flag, self.path, e, self.file)) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


__all__ = ["DirectoryLock", "LOCK_NAME", "dump_json", "json_text", "make_directory", "standard", "unwritable",
           "writable_directory", "writable_file"]
