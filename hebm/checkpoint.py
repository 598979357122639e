"""Checkpoints that never run code, never silently rot, and never leave a run without a good copy.

One file per checkpoint (nanoGPT style): the model and optimiser states, the step, the torch RNG
states and both configs (plain dicts of :class:`hebm.config.ModelConfig` / ``TrainConfig``),
plus an integrity record — a SHA-256 over every tensor's bytes and every value, in a fixed order.

* Loading uses ``torch.load(weights_only=True)``: a file holding anything but tensors and plain
  data (a pickled ``os.system``, say) is refused with a clear message, never executed.
* The hash is checked on every load; a flipped byte makes :class:`CheckpointError` naming the file.
* Saving writes the bytes to a uniquely named temporary file in the same directory, checks what
  landed on disk, then rotates: the previous checkpoint becomes ``<name>.prev.pt`` and the new
  one takes its place (``os.replace``, atomic).  A bad new file therefore never replaces the only
  good copy, and :func:`latest_good` finds the newest checkpoint that verifies.  Only a
  checkpoint that verifies is rotated into ``<name>.prev.pt``: one that does not (bit rot, a
  truncated copy — a run resumed from ``.prev.pt`` because of it) is moved aside to
  ``<name>.corrupt-<time>.pt`` and the existing ``.prev.pt`` is kept, so the last good copy is
  never overwritten by a bad one and no bytes are deleted.
* A checkpoint that cannot be used says so and points to the run's other copy only if that copy
  exists and verifies; otherwise it says there is no intact copy.
* A full disk (or a file-size limit) gives ``CheckpointError("no space left writing PATH …")``
  and removes the temporary file; the previous checkpoint is untouched.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import secrets
import time
import warnings
from typing import Optional

import torch

FORMAT = "hebm-checkpoint"
VERSION = 2
PREV_SUFFIX = ".prev.pt"
#: the checkpoint file of a run directory (``hebm.train --out DIR`` writes ``DIR/ckpt.pt``)
CKPT_NAME = "ckpt.pt"


class CheckpointError(RuntimeError):
    """The checkpoint cannot be used (or written); the message says why and names the file."""


# ---------------------------------------------------------------------------------- integrity
def _feed(h, x) -> None:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(x, dict):
        h.update(b"{")
        for k in sorted(x, key=repr):
            h.update(repr(k).encode())
            _feed(h, x[k])
        h.update(b"}")
    elif isinstance(x, (list, tuple)):
        h.update(b"[" if isinstance(x, list) else b"(")
        for v in x:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(f"{type(x).__name__}:{x!r}".encode())


def content_hash(payload: dict) -> str:
    """SHA-256 over the payload (every key but ``integrity``), tensors by dtype, shape and bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "integrity"})
    return h.hexdigest()


# ---------------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """The torch RNG states (CPU, CUDA) as tensors.  Training randomness is keyed by (seed, step),
    so these only restore what user code drew from the global generators."""
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = list(torch.cuda.get_rng_state_all())
    return st


def set_rng_state(st: dict) -> None:
    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if st.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ---------------------------------------------------------------------------------- save
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def prev_path(path: str) -> str:
    return (path[:-3] if path.endswith(".pt") else path) + PREV_SUFFIX


def _aside_path(path: str) -> str:
    """A new name for a bad checkpoint: ``<name>.corrupt-<YYYYmmdd-HHMMSS>.pt`` (never an existing file)."""
    stem = path[:-3] if path.endswith(".pt") else path
    aside = f"{stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.pt"
    while os.path.exists(aside):
        aside = f"{stem}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}.pt"
    return aside


def save_checkpoint(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically, verified, keeping the previous one as ``*.prev.pt``.

    The checkpoint now at ``path`` becomes ``*.prev.pt`` only if it verifies.  If it does not
    (corrupt on disk), the existing ``*.prev.pt`` — perhaps the only good copy — is kept and the
    bad file is moved aside to ``<name>.corrupt-<time>.pt`` (with a RuntimeWarning naming it):
    nothing good is overwritten, nothing is deleted."""
    payload = dict(payload, format=FORMAT, version=VERSION)
    payload["integrity"] = {"sha256": content_hash(payload)}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp, "rb") as f:
            if hashlib.sha256(f.read()).digest() != hashlib.sha256(data).digest():
                raise CheckpointError(f"checkpoint {path!r}: the bytes read back differ from the bytes written "
                                      f"(a failing disk?); the previous checkpoint is kept")
        if os.path.exists(path):
            why = verify(path, advise=False)
            if why is None:
                os.replace(path, prev_path(path))
            else:
                # Rotating a bad file would overwrite .prev.pt, which may be the only good copy (a
                # run resumed from it because ``path`` is corrupt).  Keep .prev.pt; move the bad
                # file aside rather than delete it (it may be wanted for a post-mortem).
                aside = _aside_path(path)
                os.replace(path, aside)
                warnings.warn(f"checkpoint {path} did not verify ({why}); moved it aside to {aside} (safe to delete) "
                              f"and kept {prev_path(path)} as the previous checkpoint", RuntimeWarning, stacklevel=2)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.errno in _NO_SPACE:
            raise CheckpointError(f"no space left writing {path} ({os.strerror(e.errno)}); the temporary file was "
                                  f"removed and the previous checkpoint is intact — free some space and resume") from None
        raise CheckpointError(f"cannot write checkpoint {path} ({type(e).__name__}: {e})") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: str) -> None:
    try:
        os.remove(p)
    except OSError:
        pass


# ---------------------------------------------------------------------------------- load
def _other_copy(path: str) -> str:
    """The run's other checkpoint: ``*.prev.pt`` for ``*.pt``, and ``*.pt`` for ``*.prev.pt``."""
    if path.endswith(PREV_SUFFIX):
        return path[: -len(PREV_SUFFIX)] + ".pt"
    return prev_path(path)


def _advice(path: str, advise: bool, flag: Optional[str] = None) -> str:
    """What to do about the unusable ``path``.  The other copy is advised only after checking that
    it exists and verifies: advice naming a missing or corrupt file sends the user nowhere.  For
    ``--init`` (a trained run a new one builds on) the advice is about that run, not a new one."""
    if not advise:
        return ""
    other = _other_copy(path)
    if os.path.isfile(other):
        if verify(other, advise=False) is None:
            if flag == "--init":
                return f"; the run's other copy {other!r} is intact: pass that as --init"
            return f"; use the intact copy {other!r} or start a new run"
        state = f"{other!r} is unusable too"
    else:
        state = f"{other!r} does not exist"
    if flag == "--init":
        return f"; there is no intact copy ({state}): retrain the run it came from, or pass another --init"
    return f"; there is no intact copy ({state}): start a new run (hebm.train --overwrite, or another --out)"


def load_checkpoint(path: str, map_location="cpu", *, advise: bool = True, flag: Optional[str] = None) -> dict:
    """The verified payload of ``path``, or :class:`CheckpointError` saying what is wrong (and, if
    ``advise``, whether the run's other copy is usable).  ``flag``: the argument that named
    ``path`` (``"--init"``), named in the error and the advice instead of "checkpoint"."""
    name = f"{flag} {path!r}" if flag else f"checkpoint {path!r}"
    if os.path.isdir(path):
        inside = os.path.join(path, CKPT_NAME)
        if os.path.isfile(inside):
            raise CheckpointError(f"{name} is a directory, not a checkpoint file: pass {inside!r}")
        raise CheckpointError(f"{name} is a directory, not a checkpoint file, and holds no {CKPT_NAME} (a run "
                              f"directory keeps its checkpoint as {inside!r})")
    if not os.path.isfile(path):
        raise CheckpointError(f"{name} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name} is empty (an interrupted copy?){_advice(path, advise, flag)}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        blocked = [line.strip() for line in text.splitlines() if "GLOBAL" in line or "global" in line.lower()]
        if not blocked:  # the unpickler choked on the bytes themselves: not a (complete) torch file
            raise CheckpointError(f"{name} is corrupt or not a PyTorch file (unreadable pickle data)"
                                  f"{_advice(path, advise, flag)}") from None
        raise CheckpointError(
            f"{name} was refused by torch.load(weights_only=True): it holds objects other than tensors "
            f"and plain data ({blocked[0][:160]}). hebm never writes such files — it may be from elsewhere or "
            f"malicious, so it is not loaded") from None
    except Exception as e:  # torch.load raises many types for bad bytes
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise CheckpointError(
            f"{name} is corrupt or not a PyTorch file ({type(e).__name__}: {first})"
            f"{_advice(path, advise, flag)}") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{name} is a PyTorch file but not a hebm checkpoint (written by hebm.train)")
    version = ck.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{name} has checkpoint format version {version!r}; this hebm reads up to {VERSION}; "
                              "upgrade hebm")
    if version < VERSION:
        raise CheckpointError(f"{name} has checkpoint format version {version} (an older hebm); retrain, or load it "
                              f"with that hebm and save it again")
    want = (ck.get("integrity") or {}).get("sha256")
    if not want:
        raise CheckpointError(f"{name} carries no integrity record; it was not written by hebm.train")
    if content_hash(ck) != want:
        raise CheckpointError(f"{name} fails its integrity check (its contents changed after it was "
                              f"written: disk error or an edit){_advice(path, advise, flag)}")
    for key in ("model_config", "train_config", "model", "step"):
        if key not in ck:
            raise CheckpointError(f"{name} lacks {key!r}; it is incomplete")
    # Settings added after a checkpoint was written take the value that reproduces the run it
    # holds (not the new default): one entry per such setting.
    for part, added in CONFIG_KEYS_ADDED.items():
        if isinstance(ck[part], dict):
            for key, then in added.items():
                ck[part].setdefault(key, then)
    return ck


#: settings added since format version 2 was introduced, with the value every earlier checkpoint
#: implies: the generator g(z_1), no validation slice (the run trained on its whole split), no warm-up
CONFIG_KEYS_ADDED = {"model_config": {"generator": "bottom"},
                     "train_config": {"validation_fraction": 0.0, "ladder_warmup": 0}}


def verify(path: str, *, advise: bool = True) -> Optional[str]:
    """None if ``path`` loads and verifies, else why not (``advise``: as for :func:`load_checkpoint`)."""
    try:
        load_checkpoint(path, advise=advise)
    except CheckpointError as e:
        return str(e)
    return None


def latest_good(path: str) -> Optional[str]:
    """``path`` if it verifies, else its ``*.prev.pt`` if that does, else None."""
    for p in (path, prev_path(path)):
        if os.path.isfile(p) and verify(p, advise=False) is None:
            return p
    return None


def load_state_checked(module: torch.nn.Module, state: dict, path: str, what: str = "model") -> None:
    """``module.load_state_dict(state)`` with a readable error for shape/key mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:4]))
        if missing:
            parts.append(f"missing keys: {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected[:4]}")
        raise CheckpointError(
            f"checkpoint {path!r} does not match this {what} (" + " | ".join(parts) + "); "
            "the model flags (--latent-dims, --prior, hidden sizes, dataset) must match the run that wrote it"
        )
    module.load_state_dict(state)


__all__ = ["CKPT_NAME", "CheckpointError", "content_hash", "latest_good", "load_checkpoint", "load_state_checked",
           "prev_path", "rng_state", "save_checkpoint", "set_rng_state", "verify"]
