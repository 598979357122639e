"""The anomaly-detection protocol (docs/papers.md B §5.3): per held-out digit and seed, train a
model (and its gaussian stage 1 for a two-stage prior), then score it
(:func:`hebm.evaluation.detection.anomaly_from_ckpt`).  A protocol rerun on the same runs
directory reuses its finished runs and resumes an interrupted one."""
from __future__ import annotations

import dataclasses
import json
import os

from ..checkpoint import load_checkpoint
from ..config import kind_of
from ..errors import UserError
from ..evaluation.detection import anomaly_from_ckpt
from ..evaluation.metrics import mean_std
from ..models import MODELS
from .settings import resolve_settings
from .trainer import Trainer


def _protocol_run(settings: dict, run: str, log=print) -> dict:
    """Train one model of a protocol in ``run`` and return ``Trainer.train()``'s result — or pick
    up what is already there: a finished run with the same settings is read back, an interrupted
    one resumed from its checkpoint (so a killed protocol continues where it stopped).  A run
    there with other model, data or knob settings is an error: a protocol never replaces a run."""
    ckpt = os.path.join(run, "ckpt.pt")
    settings = dict(settings, out=run)
    settings.pop("overwrite", None)
    if not os.path.isfile(ckpt):
        if os.path.isdir(run) and os.listdir(run):
            settings["overwrite"] = True  # a directory without a checkpoint: nothing trained to keep
        return Trainer.from_settings(settings).train()
    mcfg, tcfg = resolve_settings(settings)
    ck = load_checkpoint(ckpt)
    same = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples vs lists)
    saved = same({**ck["model_config"], **ck["train_config"]})
    asked = same({**dataclasses.asdict(mcfg), **dataclasses.asdict(tcfg)})
    differ = [f"--{k.replace('_', '-')} {saved[k]!r} there, {v!r} asked" for k, v in asked.items()
              if k in saved and saved[k] != v and kind_of(k) != "run"]
    if differ:
        raise UserError(f"--runs-dir: {run!r} holds a run trained with other settings ({'; '.join(differ)}); "
                        f"give the protocol a fresh --runs-dir")
    summary_path = os.path.join(run, "summary.json")
    if int(ck["step"]) >= tcfg.steps and os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        log(f"[hebm.evaluate] {run}: finished run reused (step {ck['step']})")
        return dict(status="ok", step=int(ck["step"]), message="reused", out=run, summary=summary)
    log(f"[hebm.evaluate] {run}: resuming from step {ck['step']}")
    return Trainer.from_checkpoint(ckpt, {}, announce=None).train()


def anomaly_train(prior: str, holdouts, seeds: int, *, runs_dir: str, settings: dict, n_post: int = 4,
                  stage1_settings=None, stage1_runs=None, two_stage: bool = False, device="cpu", log=print,
                  score=None) -> dict:
    """The whole protocol: per held-out digit and seed, train (a two-stage prior — the diffusion, or
    the ebm with ``two_stage`` — on a gaussian stage 1: the matching run of ``stage1_runs``, a
    gaussian protocol's runs directory, or one trained here), then score;
    ``{digit: {"values", "mean", "std", "details"}}`` (details: :func:`anomaly_from_ckpt`'s).
    Rerun with the same ``runs_dir`` after an interruption, it reuses the finished runs and
    resumes the interrupted one (``_protocol_run``)."""
    table = {}
    two_stage = MODELS[prior].is_two_stage(two_stage)
    for h in holdouts:
        vals, details = [], []
        for s in range(seeds):
            run = os.path.join(runs_dir, f"{prior}-holdout{h}-seed{s}")
            base = dict(settings, holdout=h, seed=s, device=device, quiet=True)
            if two_stage:
                reuse = stage1_runs and os.path.join(stage1_runs, f"gaussian-holdout{h}-seed{s}", "ckpt.pt")
                if reuse and os.path.isfile(reuse):
                    base["init"] = reuse
                else:
                    st1 = dict(base, **(stage1_settings or {}), prior="gaussian")
                    # the prior's own settings are not the gaussian stage 1's (and those it refuses, never)
                    for k in ("lr_ebm", "langevin_steps", "langevin_step_size", "diffusion_step", "T", "energy_hidden",
                              "ebm_betas", "weight_decay_ebm", "neutral_init", "spectral_norm",
                              *MODELS["gaussian"].ignored_settings):
                        st1.pop(k, None)
                    res1 = _protocol_run(st1, run + "-stage1", log)
                    if res1["status"] != "ok":
                        raise UserError(f"{run}-stage1 (the gaussian stage 1) ended {res1['status']}: "
                                        f"{res1['message']}")
                    base["init"] = os.path.join(run + "-stage1", "ckpt.pt")
            res = _protocol_run(dict(base, prior=prior), run, log)
            if res["status"] == "interrupted":
                raise UserError(f"{res['message']}; rerun the same command to continue the protocol")
            if res["status"] != "ok":
                log(f"[hebm.evaluate] {run}: {res['status']} {res['message']}")
                vals.append(float("nan"))
                details.append(None)
                continue
            d = anomaly_from_ckpt(os.path.join(run, "ckpt.pt"), h, n_post=n_post, seed=s, device=device, score=score)
            gap = res["summary"].get("eval_f_gap")
            gap = (f"f_gap {gap:.3f} nats" if gap is not None else "no energy")
            sp = d["spread"]
            log(f"[hebm.evaluate] {prior} holdout {h} seed {s}: AUPRC {d['auprc']:.3f} with {d['score']!r} (chosen: "
                f"{d['chosen_on'].split(' (')[0]}); -L>0 {d['auprc_L0']:.3f}, without the tilt {d['auprc_base']:.3f}; std "
                f"over test images: log p(x|z) {sp['log_px']:.2f}, log p_β {sp['log_p_beta']:.2f}, tilt {sp['tilt']:.3g} "
                f"(active units {res['summary'].get('active_units')}, {gap})")
            vals.append(d["auprc"])
            details.append(d)
        m, sd = mean_std(vals)
        table[h] = dict(values=vals, mean=m, std=sd, details=details)
    return table


__all__ = ["anomaly_train"]
