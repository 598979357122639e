"""``python -m hebm.train``: train a gaussian / ebm / diffusion prior model (PAPERS.md A, B §2–§4).

    python -m hebm.train --fused                          # joint EBM prior on digits, a few minutes
    python -m hebm.train --prior gaussian --steps 2000
    python -m hebm.train --prior diffusion --init runs/gaussian-digits-…/ckpt.pt
    torchrun --nproc_per_node 2 -m hebm.train --steps 100  # data parallel (gloo on CPU, NCCL on GPU)

Programmatic use (stable names)::

    cfg = hebm.train.default_config(prior="ebm", steps=100)
    tr = hebm.train.Trainer(cfg); metrics = tr.train_step(); tr.train()

Outputs in ``--out`` (default ``runs/<prior>-<dataset>-<time>/``): ``config.json``, ``ckpt.pt``
(model, optimisers, step, RNG states, config; written atomically), ``samples.png``,
``recon.png``, ``metrics.jsonl``.

Determinism: everything random in step k — the batch rows, the encoder's reparametrisation
noise, the diffusion levels, the Langevin noise (seeded Philox with chain ids = the rows'
global positions, so ``--fused`` and the reference give the same chains) — is a function of
(``--seed``, k, rank).  ``--resume`` therefore continues exactly as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import torch

from .checkpoint import (CheckpointError, config_mismatch, load_checkpoint, load_state_checked, rng_state,
                         save_checkpoint, set_rng_state)
from .data import anomaly_split, batch_indices, load_dataset, split
from .models import HEBMModel, NonFiniteError, PRIOR_TYPES, default_model_config

CKPT_NAME = "ckpt.pt"
# architecture keys shared with hebm.models.default_model_config (defaults taken from there)
ARCH_KEYS = ("latent_dims", "enc_hidden", "dec_hidden", "prior_hidden", "energy_hidden", "act", "energy_act",
             "spectral_norm", "sigma_x")
# keys that define the model / data stream: a resume must not change them
MODEL_KEYS = ("prior", "dataset", "latent_dims", "enc_hidden", "dec_hidden", "prior_hidden", "energy_hidden", "act",
              "energy_act", "spectral_norm", "sigma_x", "T", "classes", "holdout", "posterior", "seed", "batch_size")
RUNTIME_KEYS = ("threads", "kernel_threads", "steps", "fused", "device", "out", "log_every", "ckpt_every", "sample_every", "quiet", "data_root",
                "download", "resume")


def default_config(prior: str = "ebm", **overrides) -> dict:
    """All training settings with their defaults for ``prior`` (overrides win)."""
    if prior not in PRIOR_TYPES:
        raise ValueError(f"prior must be one of {', '.join(PRIOR_TYPES)}, got {prior!r}")
    arch = default_model_config()
    cfg = dict(
        prior=prior,
        dataset="digits",
        data_root=None,
        download=False,
        classes=None,  # e.g. [0, 1]: keep only these labels
        holdout=None,  # anomaly protocol: train on the 80 % normal split without this digit
        test_fraction=0.1,
        steps=4000,
        batch_size=64,
        lr=1e-3,  # generator / encoder / conditionals (diffusion: the energies)
        lr_ebm=1e-4,  # joint EBM energies
        **{k: arch[k] for k in ARCH_KEYS},  # the network defaults live in models.default_model_config
        posterior="q",  # "q": variational (inference network); "langevin": MLE with posterior Langevin
        posterior_steps=40,
        posterior_step_size=0.1,
        langevin_steps=30,
        langevin_step_size=0.4,  # δ (ebm); for diffusion the base variance s of the schedule
        T=3,
        seed=0,
        device="cpu",
        fused=False,
        out=None,
        resume=None,
        init=None,
        base_model=None,  # diffusion: the stage-1 run's energy settings (filled from --init)
        log_every=10,
        ckpt_every=250,
        sample_every=0,
        n_samples=64,
        quiet=False,
        threads=1,  # CPU intra-op threads: 1 is ~20x faster than 2 for these tiny MLPs (oversubscription)
        kernel_threads=0,  # threads of the fused C++ sampler (--fused on CPU); 0: this process's share of the cores
    )
    if prior == "diffusion":
        cfg.update(lr=1e-4, langevin_steps=30, langevin_step_size=1e-3, steps=1500)
    if prior == "gaussian":
        cfg.update(langevin_steps=0)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    cfg.update(overrides)
    return cfg


def _set_kernel_threads(n: int) -> None:
    """The C++ sampler runs one call per K steps, so unlike torch's tiny eager ops it gains
    from every core: give it this process's share (cores / local processes) unless told."""
    from .backends import cpu as cpu_backend

    if n <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if cpu_backend.unavailable() is None:  # otherwise --fused falls back to the reference and says so
        cpu_backend.set_num_threads(n)


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """A 63-bit seed, a pure function of (run seed, step, salt)."""
    return _mix(seed, step, salt)


def _mix(seed: int, step: int, salt: int) -> int:
    st = np.random.SeedSequence([int(seed) % 2**32, int(seed) // 2**32 % 2**32, int(step), int(salt)]).generate_state(2, np.uint32)
    return (int(st[0]) | (int(st[1]) << 32)) % 2**63


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
                backend = "nccl" if device.startswith("cuda") else "gloo"
                dist.init_process_group(backend)
            if device.startswith("cuda"):
                self.device = f"cuda:{self.local_rank}"
                torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, tensors: list[torch.Tensor]) -> None:
        if not self.enabled or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off : off + n].view_as(t))
            off += n

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


class Trainer:
    """One training run.  ``Trainer(config)`` builds data, model, optimisers (resuming or
    initialising from a checkpoint when ``config["resume"]`` / ``config["init"]`` say so);
    :meth:`train_step` runs one iteration; :meth:`train` runs to ``config["steps"]``."""

    def __init__(self, config: dict):
        config = dict(config)
        base = default_config(config.get("prior", "ebm"))
        unknown = set(config) - set(base)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        base.update(config)
        cfg = base
        resume_ck = None
        if cfg.get("resume"):
            path = cfg["resume"]
            if path == "auto":
                if not cfg.get("out"):
                    raise CheckpointError("--resume without a path needs --out DIR (the run directory holding ckpt.pt)")
                path = os.path.join(cfg["out"], CKPT_NAME)
            resume_ck = load_checkpoint(path)
            saved = resume_ck["config"]
            diff = config_mismatch(saved, cfg, [k for k in MODEL_KEYS if k in config])
            if diff:
                raise CheckpointError(f"cannot resume from {path!r}: the settings differ from that run ({diff})")
            runtime = {k: cfg[k] for k in RUNTIME_KEYS if k in config}
            cfg = dict(saved)
            cfg.update(runtime)
            cfg["resume"] = path
            if not cfg.get("out"):
                cfg["out"] = os.path.dirname(os.path.abspath(path))
        self.cfg = cfg
        self.dist = _Dist(cfg["device"])
        self.device = torch.device(self.dist.device)
        if cfg.get("threads") and self.device.type == "cpu":
            torch.set_num_threads(int(cfg["threads"]))
        if cfg.get("fused") and self.device.type == "cpu":
            _set_kernel_threads(int(cfg.get("kernel_threads") or 0))
        torch.manual_seed(cfg["seed"])
        np.random.seed(cfg["seed"] % 2**32)

        # ---- data
        data = load_dataset(cfg["dataset"], data_root=cfg["data_root"], download=cfg["download"])
        if cfg["classes"]:
            data = data.select_classes(cfg["classes"])
        if cfg["holdout"] is not None:
            self.train_data, self.test_data, self.test_labels = anomaly_split(data, int(cfg["holdout"]))
        else:
            self.train_data, self.test_data = split(data, test_fraction=cfg["test_fraction"])
            self.test_labels = None
        self.x_train = self.train_data.x.to(self.device)

        # ---- model
        init_ck = None
        mcfg = {k: cfg[k] for k in ("latent_dims", "enc_hidden", "dec_hidden", "prior_hidden", "energy_hidden", "act",
                                    "energy_act", "spectral_norm", "sigma_x", "T")}
        mcfg.update(prior=cfg["prior"], x_dim=data.dim, image_shape=list(data.shape) if data.shape else None,
                    diffusion_base_step=cfg["langevin_step_size"])
        if cfg["prior"] == "diffusion":
            if resume_ck is None:
                if not cfg.get("init"):
                    raise ValueError("--prior diffusion is two-stage: pass --init CKPT of a trained gaussian or ebm run")
                init_ck = load_checkpoint(cfg["init"])
                icfg = init_ck["config"]
                if icfg["prior"] not in ("gaussian", "ebm"):
                    raise CheckpointError(f"--init {cfg['init']!r} is a {icfg['prior']} run; it must be a gaussian or ebm run")
                if icfg["dataset"] != cfg["dataset"]:
                    raise CheckpointError(f"--init {cfg['init']!r} was trained on {icfg['dataset']}, not {cfg['dataset']}")
                for k in ("latent_dims", "enc_hidden", "dec_hidden", "prior_hidden", "act", "sigma_x"):
                    cfg[k] = icfg[k]
                    mcfg[k] = icfg[k]
                mcfg.update(base_energy=icfg["prior"] == "ebm", base_energy_hidden=icfg["energy_hidden"],
                            base_energy_act=icfg["energy_act"], base_spectral_norm=icfg["spectral_norm"])
                cfg["base_model"] = {k: mcfg[k] for k in ("base_energy", "base_energy_hidden", "base_energy_act", "base_spectral_norm")}
            else:
                mcfg.update(cfg["base_model"])
        self.model_cfg = mcfg
        self.model = build_model(mcfg).to(self.device)
        if init_ck is not None:
            base_sd = {k: v for k, v in init_ck["model"].items() if not k.startswith("dprior.")}
            own = {k: v for k, v in self.model.state_dict().items() if not k.startswith("dprior.")}
            _load_partial(self.model, base_sd, own, cfg["init"])
        if cfg["prior"] == "diffusion":
            for p in [*self.model.encoder.parameters(), *self.model.decoder.parameters(), *self.model.prior.parameters()]:
                p.requires_grad_(False)
        self.gparams = [p for p in self.model.generator_parameters() if p.requires_grad]
        self.eparams = self.model.energy_parameters()
        self.opt_g = torch.optim.Adam(self.gparams, lr=cfg["lr"], foreach=True) if self.gparams else None
        elr = cfg["lr"] if cfg["prior"] == "diffusion" else cfg["lr_ebm"]
        self.opt_e = torch.optim.Adam(self.eparams, lr=elr, foreach=True) if self.eparams else None
        self.step = 0
        self.last_good_ckpt = None
        if resume_ck is not None:
            load_state_checked(self.model, resume_ck["model"], cfg["resume"])
            try:
                if self.opt_g is not None:
                    self.opt_g.load_state_dict(resume_ck["opt_g"])
                if self.opt_e is not None:
                    self.opt_e.load_state_dict(resume_ck["opt_e"])
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"optimiser state in {cfg['resume']!r} does not match this model ({e})") from None
            self.step = int(resume_ck["step"])
            if "rng" in resume_ck:
                set_rng_state(resume_ck["rng"])
            self.last_good_ckpt = cfg["resume"]
        else:
            self.dist.broadcast(self.model)

        # ---- output
        if not cfg.get("out"):
            stamp = time.strftime("%Y%m%d-%H%M%S")
            cfg["out"] = os.path.join("runs", f"{cfg['prior']}-{cfg['dataset']}-{stamp}")
        self.out = cfg["out"]
        if self.dist.is_main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(self.cfg, f, indent=2)

    # ------------------------------------------------------------------ one iteration
    def _batch(self, step: int) -> torch.Tensor:
        rows = batch_indices(len(self.x_train), self.cfg["batch_size"], step, seed=self.cfg["seed"],
                             rank=self.dist.rank, world=self.dist.world)
        return self.x_train[rows.to(self.device)]

    def _chain_ids(self, B: int) -> torch.Tensor:
        off = self.dist.rank * self.cfg["batch_size"]
        return torch.arange(off, off + B, dtype=torch.long, device=self.device)

    def train_step(self) -> dict:
        """One iteration: sample, losses, gradients (all-reduced under DDP), NaN guard, update.
        Raises :class:`NonFiniteError` (parameters untouched) when anything is NaN/Inf."""
        cfg, m, k = self.cfg, self.model, self.step
        x = self._batch(k)
        gen = torch.Generator(device=self.device).manual_seed(_mix(cfg["seed"], k, 1000 + self.dist.rank))
        lseed = _mix(cfg["seed"], k, 1)
        ids = self._chain_ids(x.shape[0])
        if cfg["spectral_norm"]:
            m.sampling_prior.power_iteration()
        if m.kind == "gaussian":
            out = m.loss_gaussian(x, gen)
        elif m.kind == "ebm":
            out = m.loss_ebm(x, gen, lseed=lseed, chain_ids=ids, n_steps=cfg["langevin_steps"],
                             step_size=cfg["langevin_step_size"], fused=cfg["fused"], posterior=cfg["posterior"],
                             post_seed=_mix(cfg["seed"], k, 2000 + self.dist.rank), post_steps=cfg["posterior_steps"],
                             post_step_size=cfg["posterior_step_size"])
        else:
            out = m.loss_diffusion(x, gen, lseed=lseed, chain_ids=ids, n_steps=cfg["langevin_steps"], fused=cfg["fused"])
        joint = out.pop("loss_joint", None)
        if joint is not None:  # one backward for both parameter sets (models.HEBMModel.loss_ebm says why)
            both = _grads(joint, self.gparams + self.eparams)
            grads_g, grads_e = both[: len(self.gparams)], both[len(self.gparams):]
        else:
            grads_g = _grads(out.get("loss_g"), self.gparams)
            grads_e = _grads(out.get("loss_e"), self.eparams)
        self.dist.all_reduce_mean(grads_g + grads_e)
        metrics = {key: float(v.detach()) if torch.is_tensor(v) else float(v) for key, v in out.items()}
        bad = [key for key, v in metrics.items() if not math.isfinite(v) or abs(v) > 1e9]
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
            self.opt_e.step()
        self.step += 1
        metrics["step"] = self.step
        return metrics

    def _nan_advice(self, k, bad, metrics) -> str:
        knobs = ["lower --lr"]
        if self.model.kind in ("ebm", "diffusion"):
            knobs = ["lower --langevin-step-size", "lower --lr-ebm" if self.model.kind == "ebm" else "lower --lr",
                     "add --spectral-norm"]
        shown = ", ".join(f"{b}={metrics.get(b, float('nan')):.4g}" if b in metrics else b for b in bad)
        last = self.last_good_ckpt or "none written yet"
        return (f"non-finite or exploding values at step {k + 1} ({shown}); training stopped, parameters not updated. "
                f"Last good checkpoint: {last}. Try: {'; '.join(knobs)}.")

    # ------------------------------------------------------------------ files
    def checkpoint_payload(self) -> dict:
        return dict(config=self.cfg, model_config=self.model_cfg, model=self.model.state_dict(),
                    opt_g=self.opt_g.state_dict() if self.opt_g else None,
                    opt_e=self.opt_e.state_dict() if self.opt_e else None, step=self.step, rng=rng_state())

    def save(self, path: Optional[str] = None) -> str:
        path = path or os.path.join(self.out, CKPT_NAME)
        if self.dist.is_main:
            save_checkpoint(path, self.checkpoint_payload())
        self.last_good_ckpt = path
        return path

    def save_samples(self) -> None:
        if not self.dist.is_main:
            return
        from .sample import save_grid, save_scatter

        m, cfg = self.model, self.cfg
        m.eval()
        x = m.sample(cfg["n_samples"], seed=_mix(cfg["seed"], 0, 7), n_steps=cfg["langevin_steps"],
                     step_size=cfg["langevin_step_size"], fused=cfg["fused"])
        with torch.no_grad():
            xt = self.test_data.x[: min(32, len(self.test_data))].to(self.device)
            rec = m.decode(m.q_sample(xt, mean=True)[0])
        if self.train_data.shape is not None:
            save_grid(self.train_data.to_images(x), os.path.join(self.out, "samples.png"))
            save_grid(self.train_data.to_images(torch.cat([xt, rec])), os.path.join(self.out, "recon.png"), nrow=16)
        else:
            save_scatter(x, self.train_data.x, os.path.join(self.out, "samples.png"))
        m.train()

    def _log(self, metrics: dict) -> None:
        if self.dist.is_main:
            with open(os.path.join(self.out, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(dict(metrics, time=time.time())) + "\n")

    # ------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Run to ``config["steps"]``; returns ``{"status": "ok"|"nonfinite", "step", "message", "wall_s"}``."""
        from tqdm import tqdm

        cfg = self.cfg
        total = int(cfg["steps"])
        t0 = time.time()
        bar = tqdm(total=total, initial=self.step, disable=cfg["quiet"] or not self.dist.is_main, dynamic_ncols=True,
                   mininterval=1.0)
        status, msg = "ok", ""
        try:
            while self.step < total:
                try:
                    metrics = self.train_step()
                except NonFiniteError as e:
                    status, msg = "nonfinite", str(e)
                    break
                bar.update(1)
                post = {k: f"{metrics[k]:.3g}" for k in ("loss_g", "loss_e", "f_pos", "f_neg") if k in metrics}
                if "langevin_ms" in metrics:
                    post["lgv_ms/step"] = f"{metrics['langevin_ms']:.2f}"
                bar.set_postfix(post, refresh=False)
                if self.step % cfg["log_every"] == 0 or self.step == total:
                    self._log(metrics)
                if cfg["ckpt_every"] and self.step % cfg["ckpt_every"] == 0:
                    self.save()
                if cfg["sample_every"] and self.step % cfg["sample_every"] == 0:
                    self.save_samples()
        finally:
            bar.close()
        if status == "ok":
            self.save()
            self.save_samples()
        elif self.dist.is_main:
            print(f"[hebm.train] {msg}", file=sys.stderr)
            self._log(dict(step=self.step, status="nonfinite", message=msg))
        self.dist.barrier()
        return dict(status=status, step=self.step, message=msg, wall_s=time.time() - t0, out=self.out)


def _all_finite(tensors: list) -> bool:
    # the 2-norm of a tensor is NaN/Inf iff it holds a NaN/Inf (or overflows: exploding, also
    # worth stopping for); one fused norm per tensor is ~6x cheaper than isfinite over a concat
    return not tensors or bool(torch.stack(torch._foreach_norm(tensors)).isfinite().all())


def _grads(loss, params) -> list:
    """d loss / d params; parameters the loss does not reach (the encoder in the MLE scheme) get zeros."""
    if loss is None or not params:
        return []
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def _load_partial(model, state: dict, own: dict, path: str) -> None:
    missing = [k for k in own if k not in state]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shapes:
        raise CheckpointError(f"--init {path!r} does not match the model (missing {missing[:4]}, shape mismatches {shapes[:4]})")
    model.load_state_dict({**model.state_dict(), **{k: state[k] for k in own}})


def build_model(mcfg: dict) -> HEBMModel:
    """The model of a run from its model config."""
    return HEBMModel(dict(mcfg))


def load_model(path: str, device="cpu") -> tuple[HEBMModel, dict, dict]:
    """``(model, run config, checkpoint)`` from a ``ckpt.pt`` written by :class:`Trainer`."""
    ck = load_checkpoint(path, map_location=device)
    if "model_config" not in ck:
        raise CheckpointError(f"checkpoint {path!r} lacks its model config; it was not written by hebm.train")
    try:
        model = build_model(ck["model_config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path!r} holds an unusable model config ({e})") from None
    load_state_checked(model, ck["model"], path)
    model.to(device).eval()
    return model, ck["config"], ck


# ---------------------------------------------------------------------------------- CLI
def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 16,8,4, got {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hebm.train",
        description="Train a hierarchical latent-space prior model: gaussian (hierarchical VAE), ebm (joint EBM prior, "
                    "CVPR'23) or diffusion (u-space EBM diffusion on a trained model, ICML'24).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--prior", choices=PRIOR_TYPES, default="ebm", help="prior type")
    a("--dataset", help="digits (embedded, default) | toy2d | mnist | fashion-mnist | svhn | cifar10")
    a("--data-root", dest="data_root", help="directory with torchvision data sets")
    a("--download", action="store_true", help="allow torchvision to download --dataset into --data-root")
    a("--classes", type=_ints, help="keep only these labels, e.g. 0,1")
    a("--holdout", type=int, help="anomaly protocol: train on 80%% of the digits other than this one")
    a("--steps", type=int, help="training iterations (default 4000)")
    a("--batch-size", dest="batch_size", type=int, help="per-process batch size (default 64)")
    a("--lr", type=float, help="Adam lr of generator/encoder/conditionals (diffusion: of the energies) (default 1e-3; diffusion 1e-4)")
    a("--lr-ebm", dest="lr_ebm", type=float, help="Adam lr of the joint EBM energies (default 1e-4)")
    a("--latent-dims", dest="latent_dims", type=_ints, help="latent sizes bottom→top (default 16,8,4)")
    a("--energy-hidden", dest="energy_hidden", type=_ints, help="energy MLP hidden widths (default 64,64)")
    a("--prior-hidden", dest="prior_hidden", type=_ints, help="conditional MLP hidden widths (default 128)")
    a("--spectral-norm", dest="spectral_norm", action="store_true", help="spectral norm on energies and conditionals")
    a("--posterior", choices=("q", "langevin"), help="q: inference network (variational, default); langevin: MLE scheme "
                                                     "with z-space posterior Langevin (ebm only)")
    a("--langevin-steps", dest="langevin_steps", type=int, help="prior Langevin steps K (default 30)")
    a("--langevin-step-size", dest="langevin_step_size", type=float,
      help="ebm: delta of u-space prior Langevin (default 0.4); diffusion: base variance s of the schedule (default 1e-3)")
    a("--posterior-steps", dest="posterior_steps", type=int, help="posterior Langevin steps (default 40)")
    a("--posterior-step-size", dest="posterior_step_size", type=float, help="posterior Langevin delta (default 0.1)")
    a("--T", type=int, help="diffusion levels (default 3)")
    a("--seed", type=int, help="run seed (default 0)")
    a("--device", help="cpu | cuda (default cpu)")
    a("--fused", action="store_true", help="Langevin through hebm.langevin_fused(backend='auto') (same chains as the reference)")
    a("--out", help="run directory (default runs/<prior>-<dataset>-<time>/)")
    a("--resume", nargs="?", const="auto", help="continue from CKPT (or --out/ckpt.pt when no path is given)")
    a("--init", help="diffusion: checkpoint of a trained gaussian or ebm run (frozen)")
    a("--log-every", dest="log_every", type=int, help="metrics.jsonl interval (default 10)")
    a("--ckpt-every", dest="ckpt_every", type=int, help="checkpoint interval (default 250)")
    a("--sample-every", dest="sample_every", type=int, help="sample-grid interval, 0: only at the end")
    a("--quiet", action="store_true", help="no progress bar")
    a("--threads", type=int, help="torch CPU threads (default 1: fastest for these small networks)")
    a("--kernel-threads", dest="kernel_threads", type=int,
      help="threads of the fused C++ sampler with --fused on CPU (default: all cores of this process's share)")
    return p


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    prior = args.pop("prior", "ebm")
    try:
        trainer = Trainer(dict(args, prior=prior))
    except CheckpointError as e:
        print(f"[hebm.train] error: {e}", file=sys.stderr)
        return 2
    res = trainer.train()
    if trainer.dist.is_main:
        print(f"[hebm.train] {res['status']}: step {res['step']}, {res['wall_s']:.1f} s, outputs in {res['out']}")
    if trainer.dist.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0 if res["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
