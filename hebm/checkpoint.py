"""One-file checkpoints (nanoGPT style): model, optimisers, step, RNG states, config.

Written atomically (``<path>.tmp`` then ``os.replace``), so an interrupted save never leaves a
half-written checkpoint behind.  :func:`load_checkpoint` turns every way a file can be wrong —
missing, truncated, not a torch file, not a hebm checkpoint, from an incompatible model — into a
:class:`CheckpointError` whose message names the file and the fix.
"""
from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

FORMAT = "hebm-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """The checkpoint cannot be used; the message says why."""


def rng_state() -> dict:
    st = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: str, payload: dict) -> None:
    payload = dict(payload, format=FORMAT, version=VERSION)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (an interrupted copy?)")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch.load raises many types for bad bytes
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or not a PyTorch file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "use an intact copy or start a new run"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is a PyTorch file but not a hebm checkpoint (written by hebm.train)")
    if ck.get("version", 0) > VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version {ck['version']}; this hebm reads up to {VERSION}; upgrade hebm")
    for key in ("config", "model", "step"):
        if key not in ck:
            raise CheckpointError(f"checkpoint {path!r} lacks {key!r}; it is incomplete")
    return ck


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


def config_mismatch(saved: dict, current: dict, keys) -> Optional[str]:
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    return "; ".join(diffs) if diffs else None


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_state_checked", "rng_state", "set_rng_state", "config_mismatch"]
