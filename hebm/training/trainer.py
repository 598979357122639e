"""The training loop: :class:`Trainer` (one model, its optimisers, data, checkpoints and metrics).
Its run directory is :mod:`hebm.training.run_directory`, the settings of a run
:mod:`hebm.training.settings`, data parallelism :mod:`hebm.training.distributed`.  The command
line is :mod:`hebm.train`; the anomaly protocol (:mod:`hebm.training.protocol`) trains through
this module too.

Programmatic use::

    from hebm.training.trainer import Trainer
    tr = Trainer.from_settings(dict(prior="ebm", steps=100, out="runs/x"))
    metrics = tr.train_step(); result = tr.train()
    tr = Trainer.from_checkpoint("runs/x/ckpt.pt", {"steps": 200})

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
import math
import os
import signal
import sys
import threading
import time
from typing import Optional

import numpy as np
import torch

from ..checkpoint import CheckpointError, latest_good, load_checkpoint, load_state_checked, rng_state, save_checkpoint, set_rng_state
from ..config import ModelConfig, TrainConfig, build, resume_changes
from ..data import batch_indices, run_data_for
from ..errors import UserError
from ..evaluation.figures import save_grid, save_scatter, to_images
from ..evaluation.metrics import latent_report, stationarity
from ..models import NonFiniteError, build_model, model_class
from ..models.attributes import labels as attribute_labels
from ..prior.hierarchical import HierarchicalPrior
from ..sampler import backends
from ..sampler.dispatch import Sampler
from .distributed import Distributed
from .run_directory import RunDirectory, RunFileError
from .settings import check_ladder, init_from_stage1, refuse_unused, resolve_settings


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
        self.dist = Distributed(tcfg.device)
        self.device = torch.device(self.dist.device)
        configure_threads(tcfg, self.device)
        torch.manual_seed(tcfg.seed)
        self.data = run_data_for(tcfg, download=tcfg.download)
        if self.data.train.dim != mcfg.x_dim:
            raise CheckpointError(f"the data have dimension {self.data.train.dim}, the model {mcfg.x_dim}")
        self.x_train = self.data.train.x.to(self.device)
        # attribute fine-tuning: every training image's attribute values (hebm.models.attributes), on the CPU
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
            raise UserError(f"cannot resume {path!r} with a different model or data: " + "; ".join(refused)
                            + " (start a new run with another --out instead)")
        tset = dict(ck["train_config"])
        tset.update({k: v for k, v in applied.items() if k in tset})
        if "out" not in changes:
            tset["out"] = os.path.dirname(os.path.abspath(path))
        tset.pop("overwrite", None)
        mcfg = build(ModelConfig, ck["model_config"])
        refuse_unused(model_class(mcfg), applied)
        tcfg = build(TrainConfig, tset)
        check_ladder(tcfg.temperatures, tcfg.swap_every)
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
        if joint is not None:  # one backward for both parameter sets (hebm.models.ebm.EBMModel.losses says why)
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
            raise error if error is not None else UserError("rank 0 could not prepare the run directory")

    def _prepare_main(self, resuming: bool) -> None:
        try:
            self._prepare_files(resuming)
        except OSError as e:  # a read-only file system, no permission, no space: the user's --out
            raise UserError(self.run_dir.unwritable(e)) from None

    def _prepare_files(self, resuming: bool) -> None:
        existing = self.run_dir.holds_run()
        if resuming:
            dropped = self.run_dir.truncate_metrics(self.step)
            if dropped:
                print(f"[hebm.train] dropped {dropped} metrics.jsonl row(s) logged after step {self.step}", file=sys.stderr)
        elif existing:
            if self.cfg.init and self.run_dir.holds(self.cfg.init):  # --overwrite would delete what this run loaded
                raise UserError(f"--out {self.out!r} holds --init {self.cfg.init!r}, the trained run this run builds on; "
                                f"pick another --out (replacing the run there would delete it)")
            if not self.cfg.overwrite:
                raise UserError(f"--out {self.out!r} already holds a run ({', '.join(existing)}); continue it with "
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
