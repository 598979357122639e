"""``python -m hebm.evaluate``: the papers' evaluations and the checks that make them meaningful.

    python -m hebm.evaluate --ckpt CKPT summary                        # active units, KL, prior hole, f⁺−f⁻, FD
    python -m hebm.evaluate --ckpt CKPT anomaly --holdout 1            # a run trained with --holdout 1
    python -m hebm.evaluate anomaly --train --prior ebm --dataset mnist5k --holdout 1,4,5,7,9 --seeds 3
    python -m hebm.evaluate --ckpt CKPT ood --ood-data photos          # LLR^{>k}, two forms
    python -m hebm.evaluate --ckpt CKPT fd --seeds 3 [--inception-weights PATH]
    python -m hebm.evaluate --ckpt CKPT latents --figure latents.png   # digits 0/1, 2-d layers

A thin command line over :mod:`hebm.evaluation` (what each task measures is said there:
``anomaly`` and ``ood`` in :mod:`hebm.evaluation.detection`, ``fd`` and ``summary`` in
:mod:`hebm.evaluation.quality`, ``hierarchy`` in :mod:`hebm.evaluation.hierarchy`,
``controllable`` in :mod:`hebm.evaluation.controllable`, ``latents`` in
:mod:`hebm.evaluation.latents`) and the anomaly protocol of :mod:`hebm.training.protocol`
(``anomaly --train``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import torch

from . import cli, files
from .config import EVALUATE_SHARED, EVALUATE_TASKS, EvaluateConfig, ModelConfig, TrainConfig
from .errors import UserError
from .evaluation.controllable import controllable_eval
from .evaluation.detection import anomaly_from_ckpt, ood_eval
from .evaluation.hierarchy import hierarchy_eval
from .evaluation.latents import latents_figure
from .evaluation.quality import fd_eval, summary_eval
from .models import MODELS
from .training.protocol import anomaly_train


def build_parser():
    """Generated from :mod:`hebm.config`: :class:`~hebm.config.EvaluateConfig` and one subcommand
    per :data:`~hebm.config.EVALUATE_TASKS` entry, the flags shared with training taken from
    training's fields (the same types and ranges)."""
    p = cli.Parser(prog="python -m hebm.evaluate", description="Evaluate a hebm checkpoint the way the papers do.")
    cli.add_arguments(p, (EvaluateConfig,), defaults={})
    cli.add_arguments(p, (TrainConfig,), only=list(EVALUATE_SHARED), defaults=EVALUATE_SHARED)
    sub = p.add_subparsers(dest="task", required=True, parser_class=cli.Parser)
    for name, (help_, task, shared) in EVALUATE_TASKS.items():
        t = sub.add_parser(name, help=help_, description=help_)
        cli.add_arguments(t, (task,), defaults={})
        cli.add_arguments(t, (ModelConfig, TrainConfig), only=list(shared), defaults=shared)
    return p


def _extra_settings(items) -> dict:
    out = {}
    known = {f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)}
    for it in items:
        key, _, val = it.partition("=")
        if key not in known:
            raise UserError(f"--set {it!r}: unknown setting {key!r}")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag (one line, status 2) or --help (0)
        return int(e.code or 0)

    def need_ckpt():
        if not a.ckpt:
            raise UserError(f"{a.task} needs --ckpt CKPT")

    def go() -> int:
        if a.device == "cpu":
            torch.set_num_threads(1)
        for flag, path in (("--json", a.json), ("--figure", getattr(a, "figure", None))):
            if path:  # checked before the evaluation, not after it
                files.writable_file(flag, path)
        if a.task == "anomaly":
            if a.train:
                settings = dict(dataset=a.dataset, fused=a.fused, **_extra_settings(a.set))
                if a.steps is not None:
                    settings["steps"] = a.steps
                runs = a.runs_dir or os.path.join("runs", f"anomaly-{a.prior}-{time.strftime('%Y%m%d-%H%M%S')}")
                st1 = {"steps": a.stage1_steps} if a.stage1_steps else None
                if a.two_stage and not MODELS[a.prior].two_stage_optional:
                    raise UserError(f"--two-stage applies to a prior that can be trained either way (--prior ebm); "
                                    f"{a.prior} is " + ("always two-stage" if MODELS[a.prior].two_stage_only
                                                            else "trained from scratch"))
                table = anomaly_train(a.prior, a.holdout, a.seeds, runs_dir=runs, settings=settings, n_post=a.n_post,
                                      stage1_settings=st1, stage1_runs=a.stage1_runs, two_stage=a.two_stage,
                                      device=a.device, score=a.score)
                print(f"anomaly AUPRC, prior {a.prior}, {a.dataset}, {a.seeds} seed(s), each run's score "
                      f"{'as given' if a.score else 'chosen on its validation slice'}:")
                for h, r in table.items():
                    chosen = [d["score"] for d in r["details"] if d]
                    print(f"  held-out {h}: {r['mean']:.3f} ± {r['std']:.3f}   {['%.3f' % v for v in r['values']]}  "
                          f"scores {chosen}")
                result = dict(task="anomaly", prior=a.prior, two_stage=MODELS[a.prior].is_two_stage(a.two_stage), dataset=a.dataset,
                              seeds=a.seeds, table=table)
            else:
                need_ckpt()
                result = dict(task="anomaly", ckpt=a.ckpt, auprc={})
                for h in a.holdout:
                    d = anomaly_from_ckpt(a.ckpt, h, n_post=a.n_post, seed=a.seed, device=a.device, score=a.score)
                    result["auprc"][h] = d
                    print(f"anomaly AUPRC, held-out {h}: {d['auprc']:.3f} with the score {d['score']!r}, "
                          f"{d['chosen_on']}; the papers' -L>0: {d['auprc_L0']:.3f}")
        elif a.task == "ood":
            need_ckpt()
            result = dict(task="ood", ckpt=a.ckpt, **ood_eval(a.ckpt, a.ood_data, data_root=a.data_root, seed=a.seed,
                                                               n_post=a.n_post, device=a.device, score=a.score))
            print(f"OOD: in = held-out split ({result['n_in']}), out = {a.ood_data} ({result['n_out']}); the score "
                  f"{result['score']!r} was {result['chosen_on']}")
            print(f"  {'score':>18} {'AUROC':>6} {'AUPRC':>6} {'FPR80':>6}")
            for r in result["rows"]:
                print(f"  {r['score']:>18} {r['auroc']:.3f}  {r['auprc']:.3f}  {r['fpr80']:.3f}{'  <- chosen' if r['chosen'] else ''}")
        elif a.task == "controllable":
            need_ckpt()
            result = dict(task="controllable", ckpt=a.ckpt, **controllable_eval(
                a.ckpt, n=a.n, seeds=a.seeds, seed=a.seed, fused=a.fused, device=a.device, figure=a.figure))
            acc = ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
            ign = ", ".join(f"{k} {v['mean']:.3f}" for k, v in result["ignore_y"].items())
            ch = ", ".join(f"{k} {v:.3f}" for k, v in result["chance"].items())
            form = ", ".join(f"{k} {v['mean']:.3f}" for k, v in result["formula"].items())
            print(f"controllable ({result['n']} samples x {result['seeds']} seeds, attributes on layers "
                  f"{result['attribute_layers']}): accuracy {acc}; joint {result['joint_accuracy']:.3f}")
            print(f"  ignore-y baseline {ign}; chance {ch}; by formula {form or '-'}")
            print(f"  FD vs held-out: conditional {result['fd']['conditional']:.2f} vs unconditional "
                  f"{result['fd']['unconditional']:.2f}")
        elif a.task == "latents":
            need_ckpt()
            result = latents_figure(a.ckpt, a.figure, seed=a.seed, fused=a.fused)
            print(f"wrote {a.figure}")
        elif a.task == "hierarchy":
            need_ckpt()
            result = dict(task="hierarchy", ckpt=a.ckpt, **hierarchy_eval(a.ckpt, n=a.n, seed=a.seed, device=a.device))
            print("per layer, bottom-up (z_1 … z_L):")
            print(f"  class change when only its u is resampled: {['%.3f' % v for v in result['class_change']]} "
                  f"(independent draws: {result['class_change_independent']:.3f})")
            print(f"  linear probe of the label (held-out): {['%.3f' % v for v in result['probe']]} "
                  f"(chance {result['probe_chance']:.3f})")
            print(f"  KL (nats): {['%.2f' % v for v in result['kl_per_layer']]}; hierarchical: {result['hierarchical']}")
        elif a.task == "summary":
            need_ckpt()
            result = dict(task="summary", ckpt=a.ckpt, **summary_eval(a.ckpt, n=a.n, seed=a.seed, fused=a.fused,
                                                                     device=a.device))
            print(files.json_text(result, indent=1))
        else:
            need_ckpt()
            result = dict(task="fd", ckpt=a.ckpt, **fd_eval(a.ckpt, n=a.n, seeds=a.seeds, seed=a.seed, fused=a.fused,
                                                           device=a.device, inception_weights=a.inception_weights,
                                                           langevin_steps=a.langevin_steps))
            for b in (result, result["features2"]):
                print(f"FD vs held-out images ({b['features']} features, {result['n_generated']} samples x "
                      f"{result['seeds']} seeds): {b['fd']:.3f} ± {b['fd_std']:.3f}; same generator: p_β "
                      f"{b['fd_gaussian']:.3f}, Recon (floor) {b['fd_recon']:.3f}; gap closed {100 * b['gap_closed']:.1f} %; "
                      f"real held-out images {b['fd_data']:.3f}; vs train {b['fd_train']:.3f} (held-out vs train "
                      f"{b['fd_heldout_vs_train']:.3f}{'; MEMORISATION WARNING' if b['memorisation_warning'] else ''}); "
                      f"classifier acc {b['classifier_acc']:.3f}")
            if "fid" in result:
                print(f"FID (torchmetrics Inception, local weights): {result['fid']:.3f} ± {result['fid_std']:.3f}")
        if a.json:
            with open(a.json, "w") as fh:
                files.dump_json(result, fh, indent=2)
        return 0

    return cli.run("hebm.evaluate", go)


if __name__ == "__main__":
    sys.exit(main())
