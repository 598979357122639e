"""The training loop and its run directory: :class:`Trainer` (one model, its optimisers, data,
checkpoints and metrics), :class:`RunDirectory` (the lock, the run's files, the faults on them),
the two-stage and attribute stages' loaders (:func:`load_stage1`), and :func:`resolve_settings`
(the settings of a run: typed configs with the prior type's defaults).  The command line is
:mod:`hebm.train`; :mod:`hebm.evaluate`'s anomaly protocol trains through this module too.

Programmatic use::

    tr = hebm.trainer.Trainer.from_settings(dict(prior="ebm", steps=100, out="runs/x"))
    metrics = tr.train_step(); result = tr.train()
    tr = hebm.trainer.Trainer.from_checkpoint("runs/x/ckpt.pt", {"steps": 200})

Determinism: everything random in iteration k — the batch rows, the inference network's noise,
the diffusion levels, the Langevin noise (seeded Philox with chain ids = the rows' global
positions, so ``--fused`` and the reference give the same chains) — is a function of
(``--seed``, k, rank).  ``--resume`` therefore continues exactly as an uninterrupted run (unless a
knob is changed on resume, which is printed).

Threads: :func:`configure_threads` sets process-wide thread counts (torch's intra-op pool to
``--threads``, 1 by default — these small networks run fastest so — and the fused C++ sampler's
own pool to the process's share of the cores).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Optional

import numpy as np
import torch

from . import cli
from . import backends
from .attributes import labels as attribute_labels
from .checkpoint import (CheckpointError, latest_good, load_checkpoint, load_state_checked, rng_state,
                         save_checkpoint, set_rng_state)
from .config import (LADDER_WARMUP, PRIOR_DEFAULTS, SPLIT_SETTINGS, ModelConfig, TrainConfig, build, defaults, resume_changes,
                     split_settings)
from .data import batch_indices, run_data_for
from .figures import save_grid, save_scatter, to_images
from .metrics import latent_report, stationarity
from .dispatch import Sampler
from .models import MODELS, LatentModel, NonFiniteError, build_model
from .prior import HierarchicalPrior

CKPT_NAME = "ckpt.pt"
RUN_FILES = (CKPT_NAME, CKPT_NAME[:-3] + ".prev.pt", "config.json", "metrics.jsonl", "summary.json", "samples.png",
             "recon.png")


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A 63-bit seed, a pure function of (run seed, step, salt)."""
    st = np.random.SeedSequence([int(seed) % 2**32, int(seed) // 2**32 % 2**32, int(step), int(salt)])
    w = st.generate_state(2, np.uint32)
    return (int(w[0]) | (int(w[1]) << 32)) % 2**63


def configure_threads(tcfg: TrainConfig, device: torch.device) -> None:
    """torch's intra-op threads to ``tcfg.threads`` (CPU); the C++ sampler's threads to
    ``tcfg.kernel_threads`` or this process's share of the cores (it runs one call per K steps
    and gains from every core, unlike torch's tiny eager ops)."""
    if device.type != "cpu":
        return
    torch.set_num_threads(int(tcfg.threads))
    if tcfg.fused:  # (an unavailable kernel is left alone: --fused falls back and says so)
        n = int(tcfg.kernel_threads)
        if n <= 0:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            n = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        backends.set_kernel_threads(n)


# ---------------------------------------------------------------------------------- the run directory
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
        self._lock_fd: Optional[int] = None

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
        """Exclusive use of the directory for this process (``flock`` on ``.lock``)."""
        import fcntl

        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise cli.UserError(f"--out {self.path!r}: cannot create the run directory ({e.strerror})") from None
        # Every OSError here (a read-only file system, no permission, no space) is a property of
        # the --out the user chose: one line naming it, not a traceback.
        try:
            fd = os.open(self.file(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise cli.UserError(self.unwritable(e, self.file(".lock"))) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = ""
                try:
                    with open(self.file(".lock")) as f:
                        who = f.read().strip()
                except OSError:
                    pass
                raise cli.UserError(f"run directory {self.path!r} is in use by another hebm.train ({who or 'unknown pid'});"
                                    f" wait for it or pick another --out") from None
            raise cli.UserError(f"--out {self.path!r}: cannot lock {self.file('.lock')} ({e.strerror or e}); "
                                f"pick another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            raise cli.UserError(self.unwritable(e, self.file(".lock"))) from None
        self._lock_fd = fd

    def unwritable(self, e: OSError, name: Optional[str] = None) -> str:
        """The one-line message for an OSError writing the run directory at the start of a run."""
        return (f"--out {self.path!r} is not writable: cannot write {name or e.filename or self.path} "
                f"({e.strerror or e}); pick a writable --out")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clear(self) -> None:
        import glob

        # the bad checkpoints hebm.checkpoint.save_checkpoint moved aside belong to the run too
        aside = glob.glob(glob.escape(self.file(CKPT_NAME[:-3])) + ".corrupt-*.pt")
        for p in [self.file(n) for n in RUN_FILES] + aside:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass

    def write_json(self, name: str, obj: dict) -> None:
        tmp = self.file(f".{name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(obj, f, indent=2, default=float)
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
        data = (json.dumps(row, default=float) + "\n").encode()
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


# ---------------------------------------------------------------------------------- data parallel
class _Dist:
    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.device = device
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            if device.startswith("cuda"):
                self.device = f"cuda:{self.local_rank}"
                torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, tensors: list) -> None:
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off: off + n].view_as(t))
            off += n

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        for p in module.state_dict().values():
            dist.broadcast(p, 0)

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


# ---------------------------------------------------------------------------------- settings
def resolve_settings(settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a fresh run from flat settings (CLI flags or a dict): the prior's defaults
    (an ebm with ``init`` gets the two-stage ones), the user's values, what the data set fixes
    (x_dim, image shape, the conv/mlp default), and for a two-stage run the stage-1 run's
    architecture (``init``)."""
    settings = dict(settings)
    if settings.get("attributes"):
        return resolve_attribute_stage(settings)
    prior = settings.pop("prior", "ebm")
    if prior not in MODELS:  # (build() names the flag and the choices)
        build(ModelConfig, {"prior": prior})
    two_stage = MODELS[prior].is_two_stage(settings.get("init"))
    mdef, tdef = defaults(prior, two_stage=two_stage)
    mset, tset = split_settings(settings)
    tcfg = build(TrainConfig, {**tdef, **tset})
    if tcfg.init and not two_stage:
        raise cli.UserError(f"--init is for the two-stage priors (--prior ebm or diffusion on a trained run); a "
                            f"{prior} run trains from scratch")
    if two_stage:
        if not tcfg.init:
            raise cli.UserError("--prior diffusion is two-stage: pass --init CKPT of a trained gaussian or ebm run")
        if tcfg.posterior != "q":
            raise cli.UserError("--init (two-stage) takes its positives from the frozen model's inference network: "
                                "drop --posterior langevin")
        init = load_stage1(tcfg.init, tcfg.dataset)
        base = init["model_config"]
        for k in STAGE1_KEYS:
            if k in mset and mset[k] != base[k]:
                raise cli.UserError(f"--{k.replace('_', '-')} must match the stage-1 run --init ({base[k]!r})")
            mdef[k] = base[k]
        mdef.update(MODELS[prior].stage1_settings(base))
        for k in SPLIT_SETTINGS:  # the frozen model's data split, unless asked otherwise
            if k not in tset and k in init["train_config"]:
                tcfg = dataclasses.replace(tcfg, **{k: init["train_config"][k]})
    data = run_data_for(tcfg, download=tcfg.download)
    shape = list(data.train.shape) if data.train.shape else None
    mdef.update(x_dim=data.train.dim, image_shape=shape)
    if mdef.get("arch") is None and mset.get("arch") is None:
        mdef["arch"] = "conv" if shape and shape[1] in (28, 32) and shape[1] == shape[2] else "mlp"
    mcfg = build(ModelConfig, {**mdef, **mset, "prior": prior})
    if mcfg.arch == "conv" and not (shape and shape[1] in (28, 32)):
        raise cli.UserError(f"--arch conv takes 28x28 or 32x32 images; --dataset {tcfg.dataset} has shape {shape}")
    if tcfg.ladder_warmup is None:
        warm = LADDER_WARMUP[mcfg.arch] if mcfg.generator == "ladder" and not two_stage else 0
        tcfg = dataclasses.replace(tcfg, ladder_warmup=warm)
    return mcfg, tcfg


def load_stage1(path: str, dataset) -> dict:
    """The checkpoint of the trained run a later stage builds on (``--init``), checked: a gaussian
    or ebm run without attribute heads, trained on ``dataset`` (None: any)."""
    init = load_checkpoint(path)
    base, itc = init["model_config"], init["train_config"]
    if base.get("prior") not in MODELS or not MODELS[base.get("prior")].serves_as_stage1:
        ok = " or ".join(k for k, c in MODELS.items() if c.serves_as_stage1)
        raise CheckpointError(f"--init {path!r} is a {base.get('prior')} run; it must be a {ok} run")
    if base.get("attributes"):
        raise CheckpointError(f"--init {path!r} already has attribute heads ({', '.join(base['attributes'])}); "
                              f"start from the run it was fine-tuned on")
    if dataset is not None and itc.get("dataset") != dataset:
        raise CheckpointError(f"--init {path!r} was trained on {itc.get('dataset')}, not {dataset} (--dataset)")
    return init


def resolve_attribute_stage(settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs of an attribute fine-tuning run (``--attributes`` on ``--init RUN``): the
    trained run's model, unchanged, plus the heads; its data split; the attribute stage's
    defaults (config.PRIOR_DEFAULTS["attributes"]) under the user's values."""
    from .attributes import check_names
    from .controllable import default_layers, parse_layers

    init_path = settings.get("init")
    if not init_path:
        raise cli.UserError("--attributes fine-tunes a trained run: pass --init RUN/ckpt.pt (a gaussian or ebm run)")
    init = load_stage1(init_path, settings.get("dataset"))
    base = dict(init["model_config"])
    if "prior" in settings and settings["prior"] != base["prior"]:
        raise cli.UserError(f"--prior {settings['prior']}: --init {init_path!r} is a {base['prior']} run (attribute "
                            f"fine-tuning keeps its prior; drop --prior)")
    settings.pop("prior", None)
    mset, tset = split_settings(settings)
    heads = {"attributes", "attribute_layers", "attribute_hidden"}
    changed = sorted(k for k in mset if k not in heads and mset[k] != base.get(k))
    if changed:
        raise cli.UserError(f"--{changed[0].replace('_', '-')}: attribute fine-tuning keeps the trained run's model "
                            f"(it is frozen); only --attributes, --attribute-layers and --attribute-hidden apply")
    try:
        names = check_names(mset["attributes"])
        L = len(base["latent_dims"])
        parse_layers(names, mset.get("attribute_layers"), L, default_layers(base.get("generator", "bottom"), L))
    except ValueError as e:
        raise cli.UserError(str(e)) from None
    itc = init["train_config"]
    _, tdef = defaults(base["prior"])
    tdef.update({k: v for k, v in PRIOR_DEFAULTS["attributes"].items() if k in tdef})
    for k in ("dataset", "data_root", "seed", *SPLIT_SETTINGS):
        tdef[k] = itc.get(k, tdef[k])
    tcfg = build(TrainConfig, {**tdef, **tset})
    mcfg = build(ModelConfig, {**base, **{k: v for k, v in mset.items() if k in heads}, "attributes": names})
    return mcfg, tcfg


#: the model settings a two-stage run takes from its stage-1 run (the frozen networks' shapes)
STAGE1_KEYS = ("arch", "generator", "x_dim", "image_shape", "latent_dims", "inference", "enc_hidden", "dec_hidden", "channels",
               "prior_hidden", "act", "sigma_x", "sigma_min", "sigma_clamp")


def init_from_stage1(model: LatentModel, path: str) -> None:
    """Stage 2 (docs/design.md §2b): load the trained model of the stage-1 run ``path`` into a
    two-stage model — everything but the energies it learns afresh (``model.stage2_prefixes``:
    the diffusion's level energies, the two-stage EBM's energies)."""
    fresh = model.stage2_prefixes
    ck = load_checkpoint(path)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(fresh)}
    state = {k: v for k, v in ck["model"].items() if not k.startswith(fresh)}
    missing = [k for k in own if k not in state]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shapes:
        raise CheckpointError(f"--init {path!r} does not match the model (missing {missing[:4]}, "
                              f"shape mismatches {shapes[:4]})")
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in own}})


def _grads(loss, params) -> list:
    """d loss / d params; parameters the loss does not reach (the encoder in the MLE scheme) get zeros."""
    if loss is None or not params:
        return []
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def _all_finite(tensors: list) -> bool:
    # the 2-norm of a tensor is NaN/Inf iff it holds a NaN/Inf (or overflows: exploding, also
    # worth stopping for); one fused norm per tensor is ~6x cheaper than isfinite over a concat
    return not tensors or bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all())


def _scalar(v):
    if torch.is_tensor(v):
        v = v.detach()
        return float(v) if v.numel() == 1 else [float(x) for x in v.reshape(-1)]
    return v


# ---------------------------------------------------------------------------------- the trainer
class Trainer:
    """One training run: data, model, optimisers, the run directory, the loop.

    Use :meth:`from_settings` for a fresh run and :meth:`from_checkpoint` to resume one."""

    def __init__(self, mcfg: ModelConfig, tcfg: TrainConfig, *, checkpoint: Optional[dict] = None,
                 checkpoint_path: Optional[str] = None):
        self.mcfg, self.cfg = mcfg, tcfg
        self.dist = _Dist(tcfg.device)
        self.device = torch.device(self.dist.device)
        configure_threads(tcfg, self.device)
        torch.manual_seed(tcfg.seed)
        self.data = run_data_for(tcfg, download=tcfg.download)
        if self.data.train.dim != mcfg.x_dim:
            raise CheckpointError(f"the data have dimension {self.data.train.dim}, the model {mcfg.x_dim}")
        self.x_train = self.data.train.x.to(self.device)
        # attribute fine-tuning: every training image's attribute values (hebm.attributes), on the CPU
        self.attr_train = attribute_labels(self.data.train, mcfg.attributes) if mcfg.attributes else None
        self.model = build_model(mcfg).to(self.device)
        if self.model.two_stage:  # the stage-1 model frozen bit for bit; only the new energies learn
            if checkpoint is None:
                init_from_stage1(self.model, tcfg.init)
            for name, p in self.model.named_parameters():
                if not name.startswith(self.model.stage2_prefixes):
                    p.requires_grad_(False)
        self.gparams = [p for p in self.model.generator_parameters() if p.requires_grad]
        self.eparams = self.model.energy_parameters()
        self.opt_g = self._adam(self.gparams, tcfg.lr, tcfg.betas, 0.0)
        self.opt_e = self._adam(self.eparams, tcfg.lr_ebm, tcfg.ebm_betas, tcfg.weight_decay_ebm)
        self.step = 0
        if checkpoint is not None:
            self._restore(checkpoint, checkpoint_path)
        else:
            self.dist.broadcast(self.model)
        if not tcfg.out:
            tcfg.out = os.path.join("runs", f"{mcfg.prior}-{tcfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.run_dir = RunDirectory(tcfg.out)
        self.out = tcfg.out
        self.last_good_ckpt = checkpoint_path
        self._stop_signal = None
        self._eval_x = self.x_train[: min(len(self.x_train), 1000)]
        self.samplers = None  # --fused: the training chains' hebm.Sampler per prior (_training_samplers)

    @staticmethod
    def _adam(params, lr, betas, weight_decay):
        if not params:
            return None
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=True)

    def _restore(self, ck: dict, path: str) -> None:
        load_state_checked(self.model, ck["model"], path)
        try:
            for opt, key in ((self.opt_g, "opt_g"), (self.opt_e, "opt_e")):
                if opt is not None:
                    opt.load_state_dict(ck[key])
                    for group in opt.param_groups:  # the knobs of this run, not the checkpoint's
                        lr = self.cfg.lr if opt is self.opt_g else self.cfg.lr_ebm
                        betas = self.cfg.betas if opt is self.opt_g else self.cfg.ebm_betas
                        group.update(lr=lr, betas=tuple(betas))
                        if opt is self.opt_e:
                            group["weight_decay"] = self.cfg.weight_decay_ebm
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"optimiser state in {path!r} does not match this model ({e})") from None
        self.step = int(ck["step"])
        if "rng" in ck:
            set_rng_state(ck["rng"])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: dict) -> "Trainer":
        """A fresh run from flat settings (``python -m hebm.train`` flags, as a dict)."""
        mcfg, tcfg = resolve_settings(settings)
        return cls(mcfg, tcfg)

    @classmethod
    def from_checkpoint(cls, path: str, changes: Optional[dict] = None, *, announce=print) -> "Trainer":
        """Resume the run that wrote ``path`` (``--resume``): knob and bookkeeping ``changes`` are
        applied and announced; a model or data change is an error naming the flag."""
        ck = load_checkpoint(path)
        changes = dict(changes or {})
        changes.pop("resume", None)
        changes.pop("prior", None) if changes.get("prior") == ck["model_config"].get("prior") else None
        saved = {**ck["model_config"], **ck["train_config"]}
        applied, refused = resume_changes(saved, changes)
        if refused:
            raise cli.UserError(f"cannot resume {path!r} with a different model or data: " + "; ".join(refused)
                                + " (start a new run with another --out instead)")
        tset = dict(ck["train_config"])
        tset.update({k: v for k, v in applied.items() if k in tset})
        if "out" not in changes:
            tset["out"] = os.path.dirname(os.path.abspath(path))
        tset.pop("overwrite", None)
        mcfg = build(ModelConfig, ck["model_config"])
        tcfg = build(TrainConfig, tset)
        tr = cls(mcfg, tcfg, checkpoint=ck, checkpoint_path=path)
        if applied and tr.dist.is_main and announce is not None:
            announce("[hebm.train] resuming with changed settings: " +
                     ", ".join(f"--{k.replace('_', '-')} {saved[k]!r} -> {v!r}" for k, v in applied.items()))
        return tr

    # ------------------------------------------------------------------ one iteration
    def _batch(self, step: int) -> tuple:
        """``(x, labels)`` of iteration ``step``: the images and, for attribute fine-tuning, their
        attribute values (None otherwise)."""
        rows = batch_indices(len(self.x_train), self.cfg.batch_size, step, seed=self.cfg.seed, rank=self.dist.rank,
                             world=self.dist.world)
        labels = self.attr_train[rows] if self.attr_train is not None else None
        return self.x_train[rows.to(self.device)], labels

    def _training_samplers(self):
        """What the training chains run on (``fused`` of the model's chains): with ``--fused`` one
        :class:`hebm.Sampler` per prior of the model, built on first use and refreshed after every
        change of the weights (:meth:`_refresh_samplers`); else False, the reference."""
        if not self.cfg.fused:
            return False
        if self.samplers is None:
            self.samplers = {p: Sampler(p) for p in self.model.modules() if isinstance(p, HierarchicalPrior)}
        return self.samplers

    def _refresh_samplers(self) -> None:
        """The weights moved (an optimiser step, a power iteration): the samplers read them again."""
        for s in (self.samplers or {}).values():
            s.refresh()

    def _chain_ids(self, B: int) -> torch.Tensor:
        off = self.dist.rank * self.cfg.batch_size
        return torch.arange(off, off + B, dtype=torch.long, device=self.device)

    def train_step(self) -> dict:
        """One iteration: samplers (timed), losses, gradients (all-reduced under DDP), the NaN
        guard, the update.  Raises :class:`NonFiniteError` (parameters untouched) on NaN/Inf."""
        cfg, m, k = self.cfg, self.model, self.step
        t_start = time.perf_counter()
        x, labels = self._batch(k)
        gen = torch.Generator(device=self.device).manual_seed(step_seed(cfg.seed, k, 1000 + self.dist.rank))
        if m.ladder and not m.two_stage:  # the progressive ladder's fade-in, a function of the step (resume-exact)
            m.decoder.progressive(k, cfg.ladder_warmup or 0)
        if self.mcfg.spectral_norm:  # one power iteration per update, as torch's spectral_norm (frozen energies: none)
            m.power_iteration()
            self._refresh_samplers()
        t0 = time.perf_counter()
        chains = m.chains(x, generator=gen, seed=step_seed(cfg.seed, k, 1), chain_ids=self._chain_ids(x.shape[0]),
                          settings=cfg, fused=self._training_samplers(), labels=labels)
        sampling_ms = (time.perf_counter() - t0) * 1e3
        out = m.losses(x, chains, generator=gen, settings=cfg, step=k, labels=labels)
        joint = out.pop("loss_joint", None)
        if joint is not None:  # one backward for both parameter sets (hebm.models.EBMModel.losses says why)
            both = _grads(joint, self.gparams + self.eparams)
            grads_g, grads_e = both[: len(self.gparams)], both[len(self.gparams):]
        else:
            grads_g = _grads(out.get("loss_g"), self.gparams)
            grads_e = _grads(out.get("loss_e"), self.eparams)
        self.dist.all_reduce_mean(grads_g + grads_e)
        metrics = {key: _scalar(v) for key, v in out.items()}
        bad = [key for key, v in metrics.items() if isinstance(v, float) and (not math.isfinite(v) or abs(v) > 1e9)
               and key != "f_gap_per_level"]
        if not _all_finite(grads_g):
            bad.append("grad(generator)")
        if not _all_finite(grads_e):
            bad.append("grad(energies)")
        if bad:
            raise NonFiniteError(self._nan_advice(k, bad, metrics))
        for p, g in zip(self.gparams, grads_g):
            p.grad = g
        for p, g in zip(self.eparams, grads_e):
            p.grad = g
        if self.opt_g is not None and grads_g:
            self.opt_g.step()
        if self.opt_e is not None and grads_e:
            lr_e = cfg.lr_ebm * cfg.lr_ebm_decay ** (k / 1000.0)  # a function of the step: resume-exact
            for group in self.opt_e.param_groups:
                group["lr"] = lr_e
            self.opt_e.step()
        self._refresh_samplers()
        self.step += 1
        metrics.update(step=self.step, sampling_ms=sampling_ms, step_ms=(time.perf_counter() - t_start) * 1e3)
        return metrics

    def _nan_advice(self, k, bad, metrics) -> str:
        knobs = []
        gen_side = any(b in ("grad(generator)", "loss_g", "recon", "kl", "elbo") for b in bad)
        if gen_side or not self.model.learns_energies:
            knobs.append(f"lower --lr (now {self.cfg.lr:g})")
        if self.model.learns_energies:
            knobs.append(f"lower --lr-ebm (now {self.cfg.lr_ebm:g})")
            if self.model.trains_chain_step:
                knobs.append(f"lower --langevin-step-size (now {self.cfg.langevin_step_size:g})")
            knobs.append("add --spectral-norm" if not self.mcfg.spectral_norm else "raise --langevin-steps")
        shown = ", ".join(f"{b}={metrics[b]:.4g}" if isinstance(metrics.get(b), float) else b for b in bad)
        good = latest_good(self.run_dir.ckpt) if os.path.isdir(self.out) else None
        last = good or "none written yet"
        return (f"non-finite or exploding values at step {k + 1} ({shown}); training stopped, parameters not updated. "
                f"Last good checkpoint: {last}. Try: {'; '.join(knobs)} (resume with --resume --out {self.out} and the "
                f"new value).")

    # ------------------------------------------------------------------ evaluation during training
    def evaluate(self, *, final: bool = False) -> dict:
        """Active units and KL per layer over (up to 1,000) training examples; for an EBM prior
        ``f_pos``/``f_neg``/``f_gap`` on fresh samples (z⁺ ~ q, z⁻ from training-length chains)."""
        m, cfg = self.model, self.cfg
        m.eval()
        try:
            rep = latent_report(m, self._eval_x, samples=16, seed=cfg.seed)
            res = dict(active_units=rep["active_units"], kl_per_layer=rep["kl_per_layer"])
            st = stationarity(m, self.x_train, n=2048 if final else 512, seed=step_seed(cfg.seed, self.step, 77),
                              n_steps=cfg.langevin_steps, step_size=cfg.langevin_step_size, fused=cfg.fused,
                              labels=self.attr_train)
            if st is not None:
                res.update({f"eval_{k}": v for k, v in st.items()})
        finally:
            m.train()
        return res

    # ------------------------------------------------------------------ files
    def checkpoint_payload(self) -> dict:
        return dict(model_config=dataclasses.asdict(self.mcfg), train_config=dataclasses.asdict(self.cfg),
                    model=self.model.state_dict(), opt_g=self.opt_g.state_dict() if self.opt_g else None,
                    opt_e=self.opt_e.state_dict() if self.opt_e else None, step=self.step, rng=rng_state())

    def save(self, path: Optional[str] = None) -> str:
        path = path or self.run_dir.ckpt
        if self.dist.is_main:
            save_checkpoint(path, self.checkpoint_payload())
        self.last_good_ckpt = path
        self._saved_step = self.step
        return path

    def save_samples(self) -> None:
        if not self.dist.is_main:
            return
        m, cfg, tr = self.model, self.cfg, self.data.train
        m.eval()
        try:
            x = m.sample(cfg.n_samples, seed=step_seed(cfg.seed, 0, 7), n_steps=cfg.langevin_steps,
                         step_size=cfg.langevin_step_size, fused=cfg.fused)
            with torch.no_grad():
                xt = self.data.test.x[: min(32, len(self.data.test))].to(self.device)
                rec = m.decode(m.posterior(xt, mean=True).z)
            if tr.shape is not None:
                save_grid(to_images(x, tr.shape), self.run_dir.file("samples.png"))
                save_grid(to_images(torch.cat([xt, rec]), tr.shape), self.run_dir.file("recon.png"), nrow=16)
            else:
                save_scatter(x, tr.x, self.run_dir.file("samples.png"))
        finally:
            m.train()

    def _log(self, metrics: dict) -> bool:
        """Append a metrics row (rank 0); False if it could not be written.  A failed row (a full
        disk, a file-size limit) does not raise out of the loop: it is kept in ``_metrics_error``
        and :meth:`train` stops at the next iteration on every rank, tries to save a checkpoint and
        reports status ``"io_error"`` naming the file.  Later rows are not attempted."""
        if not self.dist.is_main:
            return True
        if getattr(self, "_metrics_error", None) is not None:
            return False
        try:
            self.run_dir.append_metrics(dict(metrics, time=time.time()))
        except RunFileError as e:
            self._metrics_error = e
            return False
        return True

    def _metrics_failure(self, save_error: Optional[Exception]) -> str:
        """One line: which file could not be written, what became of the checkpoint, what to do."""
        e = self._metrics_error
        if save_error is None:
            ckpt = f"checkpoint saved to {self.run_dir.ckpt}"
        else:
            good = latest_good(self.run_dir.ckpt)
            ckpt = (f"the checkpoint could not be saved either ({save_error}); last good checkpoint: "
                    f"{good or 'none'}")
        if e.errno == errno.EFBIG:
            fix = "raise the file-size limit (ulimit -f) or free some space"
        elif e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            fix = "free some space"
        else:
            fix = "fix the cause"
        return (f"{e} at step {self.step}: training stopped; {ckpt}. {fix[0].upper() + fix[1:]}, then continue with "
                f"--resume --out {self.out}")

    # ------------------------------------------------------------------ the loop
    def _prepare_directory(self, resuming: bool) -> None:
        """Rank 0 locks and prepares the directory; every rank learns whether that worked."""
        error = None
        if self.dist.is_main:
            try:
                self.run_dir.acquire()
                self._prepare_main(resuming)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
                error = e
        if self.dist.any(error is not None):
            raise error if error is not None else cli.UserError("rank 0 could not prepare the run directory")

    def _prepare_main(self, resuming: bool) -> None:
        try:
            self._prepare_files(resuming)
        except OSError as e:  # a read-only file system, no permission, no space: the user's --out
            raise cli.UserError(self.run_dir.unwritable(e)) from None

    def _prepare_files(self, resuming: bool) -> None:
        existing = self.run_dir.holds_run()
        if resuming:
            dropped = self.run_dir.truncate_metrics(self.step)
            if dropped:
                print(f"[hebm.train] dropped {dropped} metrics.jsonl row(s) logged after step {self.step}", file=sys.stderr)
        elif existing:
            if not self.cfg.overwrite:
                raise cli.UserError(f"--out {self.out!r} already holds a run ({', '.join(existing)}); continue it with "
                                    f"--resume, or pass --overwrite to replace it")
            self.run_dir.clear()
        self.run_dir.write_json("config.json", dict(model=dataclasses.asdict(self.mcfg), train=dataclasses.asdict(self.cfg)))

    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def train(self) -> dict:
        """Run to ``steps``; returns ``{"status": "ok"|"nonfinite"|"interrupted"|"io_error", "step",
        "message", "wall_s", "out", "summary"}`` (``io_error``: metrics.jsonl could not be written;
        the run stopped and tried to save a checkpoint; the message says which file and what to do)."""
        from tqdm import tqdm

        cfg = self.cfg
        self._metrics_error = None
        resuming = self.last_good_ckpt is not None
        try:
            self._prepare_directory(resuming)
        except BaseException:
            self.run_dir.release()
            raise
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                handlers[s] = signal.signal(s, self._on_signal)
        t0 = time.time()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=cfg.quiet or not self.dist.is_main, dynamic_ncols=True,
                   mininterval=1.0)
        status, msg, summary = "ok", "", {}
        try:
            while self.step < cfg.steps:
                if self.dist.any(self._stop_signal is not None or self._metrics_error is not None):
                    status = "interrupted"  # or "io_error": decided below, with every rank
                    break
                try:
                    metrics = self.train_step()
                except NonFiniteError as e:
                    status, msg = "nonfinite", str(e)
                    break
                bar.update(1)
                bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("loss_g", "loss_e", "f_gap") if k in metrics},
                                refresh=False)
                logged = True
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    metrics.update(self.evaluate())
                    logged = self._log(metrics)
                elif self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    logged = self._log(metrics)
                if not logged:
                    continue  # stop at the top of the loop, with the other ranks; the checkpoint is saved below
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_samples()
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
        if status != "nonfinite" and self.dist.any(self._metrics_error is not None):
            status = "io_error"  # rank 0 could not write metrics.jsonl (a full disk?)
        save_error = None
        if status in ("ok", "interrupted", "io_error") and getattr(self, "_saved_step", None) != self.step:
            try:
                self.save()
            except CheckpointError as e:
                if status != "io_error":
                    raise
                save_error = e  # the same full disk, most likely: reported with the metrics failure
        if status == "ok":
            summary = dict(step=self.step, **self.evaluate(final=True))
            if self.dist.is_main:
                if self._log(dict(summary, final=True)):
                    self.run_dir.write_json("summary.json", summary)
                else:
                    status = "io_error"
            if status == "ok":
                self.save_samples()
        elif status == "interrupted":
            name = signal.Signals(self._stop_signal).name if self._stop_signal else "signal"
            msg = f"{name} at step {self.step}: checkpoint saved to {self.run_dir.ckpt}; continue with --resume --out {self.out}"
            self._log(dict(step=self.step, status="interrupted"))
        elif status == "nonfinite" and self.dist.is_main:
            self._log(dict(step=self.step, status="nonfinite", message=msg))
        if status == "io_error" and self.dist.is_main:
            msg = self._metrics_failure(save_error)
        elif self._metrics_error is not None:
            msg += f" ({self._metrics_error})"
        self.dist.barrier()
        self.run_dir.release()
        return dict(status=status, step=self.step, message=msg, wall_s=time.time() - t0, out=self.out, summary=summary,
                    signal=self._stop_signal)
