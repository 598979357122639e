"""``python -m hebm.train``: train a gaussian / ebm / diffusion prior model (docs/papers.md A, B §2–§4).

    python -m hebm.train --fused                          # joint EBM prior on digits
    python -m hebm.train --prior gaussian --dataset mnist5k
    python -m hebm.train --prior diffusion --init runs/gauss/ckpt.pt --fused
    python -m hebm.train --resume --out runs/ebm --steps 8000 --lr-ebm 1e-5   # continue, with new knobs
    torchrun --nproc_per_node 2 -m hebm.train --steps 100  # data parallel (gloo on CPU, NCCL on GPU)

The loop itself is :mod:`hebm.training` (:class:`hebm.training.trainer.Trainer`, for programs).

Outputs in ``--out`` (default ``runs/<prior>-<dataset>-<time>/``): ``config.json``, ``ckpt.pt`` (and
the previous one, ``ckpt.prev.pt``; see :mod:`hebm.checkpoint`), ``metrics.jsonl`` (one row per
``--log-every`` iterations; every ``--eval-every`` and at the end also ``active_units``,
``kl_per_layer`` and the EBM's ``f_pos``/``f_neg``/``f_gap`` on fresh samples), ``summary.json``,
``samples.png``, ``recon.png``.  A directory holds one run: a second ``hebm.train`` on it waits for
nothing — it is refused (a lock), and a fresh run on a directory with a run in it needs
``--resume`` or ``--overwrite``.  Ctrl-C / SIGTERM end the current iteration, save a checkpoint
and exit (status 130 / 143).

Determinism: everything random in iteration k — the batch rows, the inference network's noise,
the diffusion levels, the Langevin noise (seeded Philox with chain ids = the rows' global
positions, so ``--fused`` and the reference give the same chains) — is a function of
(``--seed``, k, rank).  ``--resume`` therefore continues exactly as an uninterrupted run (unless a
knob is changed on resume, which is printed).

Threads: this entry point sets process-wide thread counts (torch's intra-op pool to ``--threads``,
1 by default — these small networks run fastest so — and the fused C++ sampler's own pool to the
process's share of the cores); a program embedding a Trainer gets the same through
:func:`hebm.training.trainer.configure_threads`.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import cli
from .checkpoint import CKPT_NAME, latest_good, load_checkpoint, prev_path
from .errors import UserError
from .training.trainer import Trainer


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> cli.Parser:
    p = cli.Parser(prog="python -m hebm.train", argument_default=argparse.SUPPRESS,
                   description="Train a hierarchical latent-space prior model: gaussian (hierarchical VAE), ebm (joint "
                               "EBM prior, CVPR'23) or diffusion (u-space EBM diffusion on a trained model, ICML'24).")
    cli.add_arguments(p)
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue the run in --out (its newest good checkpoint) or from CKPT; changed knobs (--lr, "
                        "--lr-ebm, --langevin-step-size, --steps, ...) are applied and printed")
    return p


def _resume_path(args: dict) -> str:
    path = args.pop("resume")
    if path != "auto":
        return path
    if not args.get("out"):
        raise UserError("--resume without a path needs --out DIR (the run directory holding ckpt.pt)")
    ckpt = os.path.join(args["out"], CKPT_NAME)
    good = latest_good(ckpt)
    if good is None:
        if not os.path.exists(ckpt) and not os.path.exists(prev_path(ckpt)):
            raise UserError(f"--resume: no checkpoint in {args['out']!r} (expected {ckpt})")
        # neither verifies: the reason of the newest one there is; its message checks the other
        # copy too, so it says there is no intact copy rather than pointing at a missing or bad file
        good = ckpt if os.path.exists(ckpt) else prev_path(ckpt)
        load_checkpoint(good)  # raises with the reason (unless the file was mended meanwhile)
    if good != ckpt:
        print(f"[hebm.train] {ckpt} does not verify; resuming from the previous checkpoint {good}", file=sys.stderr)
    return good


def main(argv=None) -> int:
    try:
        args = vars(build_parser().parse_args(argv))
    except SystemExit as e:  # a bad flag (one line, status 2) or --help (0)
        return int(e.code or 0)

    def go() -> int:
        if "resume" in args:
            trainer = Trainer.from_checkpoint(_resume_path(args), args)
        else:
            trainer = Trainer.from_settings(args)
        res = trainer.train()
        if trainer.dist.is_main:
            if res["status"] == "io_error":  # reported as a full disk writing a checkpoint is: one line, status 2
                print(f"[hebm.train] error: {res['message']}", file=sys.stderr)
            elif res["status"] == "nonfinite":
                print(f"[hebm.train] {res['message']}", file=sys.stderr)
            elif res["status"] == "interrupted":
                print(f"[hebm.train] {res['message']}", file=sys.stderr)
            else:
                s = res["summary"]
                extra = "".join(f", {k} {s[k]}" for k in ("active_units", "kl_per_layer") if k in s)
                gap = f", f_pos - f_neg {s['eval_f_gap']:.3f}" if "eval_f_gap" in s else ""
                print(f"[hebm.train] ok: step {res['step']}, {res['wall_s']:.1f} s, outputs in {res['out']}{extra}{gap}")
        if trainer.dist.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()
        if res["status"] == "interrupted":
            return 128 + int(res["signal"])
        return {"ok": 0, "io_error": 2}.get(res["status"], 3)

    return cli.run("hebm.train", go)


if __name__ == "__main__":
    sys.exit(main())
