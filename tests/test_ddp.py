"""Data-parallel training: torchrun with 2 gloo processes on the CPU."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from hebm.train import load_model


def test_ddp_two_gloo_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node", "2", "-m", "hebm.train", "--prior", "ebm", "--steps", "3",
        "--batch-size", "8", "--langevin-steps", "2", "--latent-dims", "4,2", "--energy-hidden", "8",
        "--prior-hidden", "8", "--out", str(tmp_path), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    model, cfg, ck = load_model(str(tmp_path / "ckpt.pt"))
    assert ck["step"] == 3
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
