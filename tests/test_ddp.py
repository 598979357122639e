"""Data-parallel training: torchrun with 2 gloo processes on the CPU."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from hebm.models import load_model


def test_ddp_two_gloo_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node", "2", "-m", "hebm.train", "--prior", "ebm", "--steps", "3",
        "--batch-size", "8", "--langevin-steps", "2", "--latent-dims", "4,2", "--energy-hidden", "8",
        "--prior-hidden", "8", "--out", str(tmp_path), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    model, mcfg, tcfg, ck = load_model(str(tmp_path / "ckpt.pt"))
    assert ck["step"] == 3
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _ddp_worker(rank: int, world: int, port: int, out: str, cfg: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from hebm.training.trainer import Trainer

    tr = Trainer.from_settings(dict(cfg, out=out))
    init = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train()
    torch.save(dict(init=init, final=tr.model.state_dict()), os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_stay_in_sync_and_average_gradients(tmp_path):
    """Both ranks start from rank 0's weights and apply the same averaged gradient, so they end
    bit-identical; and the result differs from training on rank 0's shard alone (rank 1's data
    entered the update)."""
    import torch.multiprocessing as mp

    from hebm.training.trainer import Trainer

    cfg = dict(prior="ebm", steps=3, batch_size=8, langevin_steps=2, latent_dims=[4, 2], energy_hidden=[8],
               prior_hidden=[8], enc_hidden=[16], dec_hidden=[16], quiet=True, ckpt_every=0, threads=1, eval_every=0)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), cfg), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for k in r0["final"]:
        assert torch.equal(r0["init"][k], r1["init"][k]), f"{k}: ranks started from different weights"
        assert torch.equal(r0["final"][k], r1["final"][k]), f"{k}: ranks diverged"
    moved = [k for k in r0["final"] if r0["final"][k].is_floating_point() and not torch.equal(r0["final"][k], r0["init"][k])]
    assert moved, "no parameter was updated"
    solo = Trainer.from_settings(dict(cfg, out=str(tmp_path / "solo")))
    solo.train()
    assert any(not torch.equal(solo.model.state_dict()[k], r0["final"][k]) for k in moved), \
        "the 2-process run equals the 1-process run on rank 0's shard: gradients were not averaged"
