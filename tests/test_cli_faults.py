"""Faults at the command line and in checkpoints: malicious pickles, bit rot, a full disk,
concurrent runs, Ctrl-C / SIGTERM, resume with changed knobs, overwriting a run, range-checked
flags — every case asserts the specific error (one line, exit 2, no traceback) or the right result."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from hebm import evaluate, sample
from hebm.checkpoint import CheckpointError, latest_good, load_checkpoint, prev_path, save_checkpoint
from hebm.models import load_model
from hebm.train import main
from hebm.training.trainer import Trainer

FLAGS = {"--steps": "4", "--ckpt-every": "2", "--batch-size": "16", "--langevin-steps": "2", "--enc-hidden": "32",
         "--dec-hidden": "32", "--prior-hidden": "16", "--energy-hidden": "16,16", "--latent-dims": "6,4,2",
         "--eval-every": "0", "--n-samples": "8"}


def flags(**over):
    """The tiny run's flags, with ``over`` (``steps="400"`` → ``--steps 400``) replacing some."""
    f = dict(FLAGS, **{"--" + k.replace("_", "-"): str(v) for k, v in over.items()})
    return [a for k, v in f.items() for a in (k, v)] + ["--quiet"]


TINY = flags()
SETTINGS = dict(steps=4, batch_size=16, langevin_steps=2, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
                energy_hidden=[16, 16], latent_dims=[6, 4, 2], eval_every=0, n_samples=8, quiet=True)
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))


def one_line_error(capsys, pattern: str):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("W1", "  warnings.warn"))]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and pattern in lines[0], err
    return lines[0]


def one_line_stderr(r: subprocess.CompletedProcess, pattern: str) -> str:
    """The one error line of a finished ``hebm.train`` process (no traceback), containing ``pattern``."""
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith(("W1", "  warnings.warn"))]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and pattern in lines[0], r.stderr
    return lines[0]


def _corrupt(path) -> bytes:
    """Overwrite the checkpoint ``path`` with bytes that are no checkpoint; returns them."""
    junk = b"PK\x03\x04 not a checkpoint any more " * 8
    path.write_bytes(junk)
    return junk


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults") / "run"
    assert main(["--out", str(d)] + TINY) == 0
    return d


# ------------------------------------------------------------------------------ code in checkpoints
class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('HEBM_EVIL_MARK', '/tmp/hebm_evil_marker')}",))


def test_a_malicious_pickle_never_runs(tmp_path, run_dir, capsys, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("HEBM_EVIL_MARK", str(mark))
    evil = tmp_path / "ckpt.pt"
    payload = torch.load(run_dir / "ckpt.pt", weights_only=True)
    payload["extra"] = _Evil()
    torch.save(payload, evil)
    for call in (lambda: sample.main(["--ckpt", str(evil), "--n", "2", "--out", str(tmp_path / "s")]),
                 lambda: evaluate.main(["--ckpt", str(evil), "fd", "--n", "40"]),
                 lambda: main(["--resume", str(evil), "--quiet"]),
                 lambda: main(["--prior", "diffusion", "--init", str(evil), "--out", str(tmp_path / "d")] + TINY)):
        assert call() == 2
        one_line_error(capsys, "weights_only")
    assert not mark.exists(), "the pickled os.system ran"
    with pytest.raises(CheckpointError, match="refused by torch.load"):
        load_checkpoint(str(evil))


# ------------------------------------------------------------------------------ integrity
def test_bit_rot_is_detected_and_the_previous_checkpoint_is_used(tmp_path, run_dir, capsys):
    d = tmp_path / "rot"
    import shutil

    shutil.copytree(run_dir, d)
    ck = d / "ckpt.pt"
    data = bytearray(ck.read_bytes())
    # flip one byte inside a tensor's data (past the zip headers): the file still unzips
    ref = torch.load(ck, weights_only=True)
    w = ref["model"]["decoder.layers.0.weight"].reshape(-1)[:4].numpy().tobytes()  # (the ladder decoder)
    i = bytes(data).find(w)
    assert i > 0
    data[i + 1] ^= 0x40
    ck.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(str(ck))
    assert latest_good(str(ck)) == prev_path(str(ck))
    with pytest.warns(RuntimeWarning, match="moved it aside"):  # not rotated over the good ckpt.prev.pt
        assert main(["--resume", "--out", str(d), "--steps", "5", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "does not verify; resuming from the previous checkpoint" in err
    assert load_checkpoint(str(ck))["step"] == 5


def test_save_keeps_the_previous_checkpoint(tmp_path):
    p = str(tmp_path / "c.pt")
    base = dict(model_config={}, train_config={}, model={"w": torch.ones(3)}, step=1)
    save_checkpoint(p, base)
    save_checkpoint(p, dict(base, step=2))
    assert load_checkpoint(p)["step"] == 2 and load_checkpoint(prev_path(p))["step"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_corrupt_checkpoint_is_never_rotated_over_the_good_previous_one(tmp_path, run_dir, capsys):
    """ckpt.pt corrupt, ckpt.prev.pt good: --resume falls back to ckpt.prev.pt, and the next save
    must not move the corrupt ckpt.pt over it (the only good copy).  The bad file is moved aside,
    not deleted, and the warning names it."""
    import shutil

    d = tmp_path / "rotate"
    shutil.copytree(run_dir, d)
    junk = _corrupt(d / "ckpt.pt")
    assert load_checkpoint(str(d / "ckpt.prev.pt"))["step"] == 2
    with pytest.warns(RuntimeWarning, match=r"did not verify .* moved it aside to .*ckpt\.corrupt-.*\.pt .*kept .*ckpt\.prev\.pt"):
        assert main(["--resume", "--out", str(d), "--steps", "3", "--quiet"]) == 0
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    assert load_checkpoint(str(d / "ckpt.pt"))["step"] == 3
    assert load_checkpoint(str(d / "ckpt.prev.pt"))["step"] == 2, "the good previous checkpoint was overwritten"
    aside = [f for f in os.listdir(d) if f.startswith("ckpt.corrupt-")]
    assert len(aside) == 1 and (d / aside[0]).read_bytes() == junk
    # later saves (steps 4, 5: --ckpt-every 2) rotate normally; --overwrite clears the set-aside file
    assert main(["--resume", "--out", str(d), "--steps", "5", "--quiet"]) == 0
    assert load_checkpoint(str(d / "ckpt.prev.pt"))["step"] == 4 and load_checkpoint(str(d / "ckpt.pt"))["step"] == 5
    assert main(["--out", str(d), "--overwrite"] + TINY) == 0
    assert not [f for f in os.listdir(d) if f.startswith("ckpt.corrupt-")]


def test_save_over_a_corrupt_checkpoint_without_a_previous_one(tmp_path):
    p = tmp_path / "c.pt"
    junk = _corrupt(p)
    with pytest.warns(RuntimeWarning, match="moved it aside"):
        save_checkpoint(str(p), dict(model_config={}, train_config={}, model={"w": torch.ones(3)}, step=7))
    assert load_checkpoint(str(p))["step"] == 7
    assert not os.path.exists(prev_path(str(p))), "a corrupt file became the previous checkpoint"
    assert [f.read_bytes() for f in tmp_path.glob("c.corrupt-*.pt")] == [junk]


def test_advice_names_the_previous_checkpoint_only_if_it_is_intact(tmp_path, run_dir, capsys):
    import shutil

    d = tmp_path / "advice"
    shutil.copytree(run_dir, d)
    ck, prev = d / "ckpt.pt", d / "ckpt.prev.pt"
    _corrupt(ck)
    # the previous checkpoint verifies: advised
    with pytest.raises(CheckpointError, match=r"use the intact copy '.*ckpt\.prev\.pt'"):
        load_checkpoint(str(ck))
    # the only checkpoint is corrupt, no ckpt.prev.pt: no advice pointing at a missing file
    prev.rename(d / "kept.pt")
    assert main(["--resume", "--out", str(d), "--quiet"]) == 2
    line = one_line_error(capsys, "there is no intact copy")
    assert f"{str(prev)!r} does not exist" in line and "--overwrite" in line and "another --out" in line
    assert "use the intact copy" not in line
    assert sample.main(["--ckpt", str(ck)]) == 2
    one_line_error(capsys, "there is no intact copy")
    # both corrupt: ckpt.prev.pt is not advised either
    _corrupt(prev)
    assert main(["--resume", "--out", str(d), "--quiet"]) == 2
    line = one_line_error(capsys, "there is no intact copy")
    assert str(ck) in line and f"{str(prev)!r} is unusable too" in line and "use the intact copy" not in line
    # only a corrupt ckpt.prev.pt left: its own error, not "ckpt.pt does not exist"
    ck.unlink()
    assert main(["--resume", "--out", str(d), "--quiet"]) == 2
    line = one_line_error(capsys, "there is no intact copy")
    assert f"checkpoint {str(prev)!r} is corrupt" in line and f"{str(ck)!r} does not exist" in line


def test_disk_full_names_the_file_and_leaves_no_temporary(tmp_path):
    """A real write failure: the process's file-size limit (RLIMIT_FSIZE) stops the write
    half-way (EFBIG, as a full disk would with ENOSPC)."""
    script = tmp_path / "full.py"
    script.write_text(textwrap.dedent(f"""
        import resource, signal, sys, torch
        from hebm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
        p = {str(tmp_path / 'c.pt')!r}
        save_checkpoint(p, dict(model_config={{}}, train_config={{}}, model={{"w": torch.ones(10)}}, step=1))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        try:
            save_checkpoint(p, dict(model_config={{}}, train_config={{}}, model={{"w": torch.ones(100_000)}}, step=2))
        except CheckpointError as e:
            print("ERR", e)
        print("STEP", load_checkpoint(p)["step"])
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=120)
    assert "ERR no space left writing" in r.stdout and str(tmp_path / "c.pt") in r.stdout, r.stdout + r.stderr
    assert "STEP 1" in r.stdout
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------ run directories
def test_fresh_run_refuses_an_existing_run(tmp_path, run_dir, capsys):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    before = (d / "ckpt.pt").read_bytes()
    assert main(["--out", str(d)] + TINY) == 2
    one_line_error(capsys, "already holds a run")
    assert (d / "ckpt.pt").read_bytes() == before
    assert main(["--out", str(d), "--overwrite"] + TINY) == 0
    assert load_checkpoint(str(d / "ckpt.pt"))["step"] == 4


def test_two_runs_on_one_directory(tmp_path):
    """A second hebm.train on a directory in use is refused (lock); the first one is unharmed."""
    d = tmp_path / "busy"
    slow = flags(steps=400)
    first = subprocess.Popen([sys.executable, "-m", "hebm.train", "--out", str(d)] + slow, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if (d / ".lock").exists() and (d / "config.json").exists():
                break
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "hebm.train", "--out", str(d), "--overwrite"] + TINY, env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by another hebm.train" in second.stderr, second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    rows = [json.loads(line) for line in open(d / "metrics.jsonl")]
    steps = [r["step"] for r in rows if "loss_g" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert load_checkpoint(str(d / "ckpt.pt"))["step"] == 400


@pytest.mark.parametrize("ckpt_fits", [False, True], ids=["no-room-for-the-checkpoint", "checkpoint-fits"])
def test_metrics_file_too_large_stops_cleanly(tmp_path, run_dir, ckpt_fits):
    """A real write failure in metrics.jsonl: the process's file-size limit (RLIMIT_FSIZE, EFBIG —
    as a full disk with ENOSPC) is reached mid-run.  One line naming metrics.jsonl and what to do,
    exit 2, no traceback, no half row left in metrics.jsonl, and the checkpoint either saved (room
    for it) or the previous good one intact (no room)."""
    import shutil

    d = tmp_path / "full"
    shutil.copytree(run_dir, d)
    metrics = d / "metrics.jsonl"
    ck_size = (d / "ckpt.pt").stat().st_size
    if ckpt_fits:  # the limit leaves room for a checkpoint; metrics.jsonl (padded) reaches it first
        limit = ck_size + 20_000
        with open(metrics, "a") as f:  # a row at step 0: kept by the resume, which drops only rows after step 4
            f.write(json.dumps({"step": 0, "pad": "x" * (limit - 1_200 - metrics.stat().st_size)}) + "\n")
    else:  # room for about three more rows, not for a checkpoint (nor a config.json larger than the rows)
        limit = max(metrics.stat().st_size, (d / "config.json").stat().st_size + 2_000) + 1_100
        if metrics.stat().st_size < limit - 1_100:  # padded up to three rows short of the limit
            with open(metrics, "a") as f:
                f.write(json.dumps({"step": 0, "pad": "x" * (limit - 1_100 - 40 - metrics.stat().st_size)}) + "\n")
    assert metrics.stat().st_size < limit
    script = tmp_path / "full.py"
    script.write_text(textwrap.dedent(f"""
        import resource, signal, sys
        from hebm.train import main
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        sys.exit(main(["--resume", "--out", {str(d)!r}, "--steps", "100", "--log-every", "1", "--ckpt-every", "0",
                       "--quiet"]))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_line_stderr(r, f"cannot write {metrics} (File too large; the row was not written")
    assert "training stopped" in line and f"--resume --out {d}" in line and "ulimit -f" in line
    raw = metrics.read_bytes()
    assert raw.endswith(b"\n") and len(raw) <= limit
    rows = [json.loads(x) for x in raw.decode().splitlines()]  # every line a whole row
    steps = [row["step"] for row in rows if "loss_g" in row]
    assert steps[-1] > 4 and steps == sorted(steps) and steps[-1] < 100
    if ckpt_fits:  # saved at the step whose row failed; the previous one rotated
        assert f"checkpoint saved to {d / 'ckpt.pt'}" in line
        assert load_checkpoint(str(d / "ckpt.pt"))["step"] == steps[-1] + 1
        assert load_checkpoint(str(d / "ckpt.prev.pt"))["step"] == 4
    else:
        assert "the checkpoint could not be saved either (no space left writing" in line
        assert f"last good checkpoint: {d / 'ckpt.pt'}" in line
        assert load_checkpoint(str(d / "ckpt.pt"))["step"] == 4 and load_checkpoint(str(d / "ckpt.prev.pt"))["step"] == 2
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]
    # after "freeing space" the run continues from the checkpoint
    assert main(["--resume", "--out", str(d), "--steps", str(steps[-1] + 3), "--quiet"]) == 0


_READ_ONLY_OUT = """
    import builtins, errno, os, sys
    out = sys.argv[1]

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    # a read-only file system under --out: every open for writing there fails with EROFS (the run
    # directory itself exists, as a mount point would)
    real_os_open, real_open = os.open, builtins.open
    def os_open(path, flags, *a, **k):
        if {which!r} == "lock" and str(path).startswith(out) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)
    def open_(file, mode="r", *a, **k):
        if {which!r} == "config" and str(file).startswith(out) and set(mode) & set("wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)
    os.open, builtins.open = os_open, open_
    from hebm.train import main
    sys.exit(main(["--out", out] + sys.argv[2:]))
"""


@pytest.mark.parametrize("which", ["lock", "config", "chmod"])
def test_read_only_out_is_one_line_naming_out(tmp_path, which):
    """--out on a read-only file system (emulated: EROFS from every open for writing under it —
    the lock file, then config.json — so it runs as root too) or in a directory without write
    permission (chmod 0o555; root ignores permissions, so that case needs a non-root user)."""
    d = tmp_path / "ro"
    d.mkdir()
    if which == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions (the EROFS cases cover this as root)")
        d.chmod(0o555)
        cmd = [sys.executable, "-m", "hebm.train", "--out", str(d)] + TINY
    else:
        script = tmp_path / "ro.py"
        script.write_text(textwrap.dedent(_READ_ONLY_OUT.format(which=which)))
        cmd = [sys.executable, str(script), str(d)] + TINY
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    finally:
        d.chmod(0o755)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_line_stderr(r, f"--out {str(d)!r} is not writable")
    reason = "Permission denied" if which == "chmod" else "Read-only file system"
    name = "config.json" if which == "config" else ".lock"
    assert reason in line and str(d / name) in line and "pick a writable --out" in line, line
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]


def _train_in_a_process(d, args, ready, polls: int):
    """Start ``python -m hebm.train --out d`` and poll (0.1 s) until ``ready()`` or ``polls`` run out."""
    proc = subprocess.Popen([sys.executable, "-m", "hebm.train", "--out", str(d)] + args, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(polls):
        if ready():
            break
        time.sleep(0.1)
    return proc


def _assert_resume_equals_straight_run(d, tmp_path, steps: int):
    """``--resume`` of the interrupted run in ``d`` to ``steps`` gives bit for bit the weights of a
    run that went straight to ``steps``."""
    assert main(["--resume", "--out", str(d), "--steps", str(steps), "--quiet"]) == 0
    straight = Trainer.from_settings(dict(SETTINGS, prior="ebm", out=str(tmp_path / "straight"), steps=steps,
                                          ckpt_every=0))
    straight.train()
    got = load_checkpoint(str(d / "ckpt.pt"))["model"]
    for name, v in straight.model.state_dict().items():
        torch.testing.assert_close(got[name], v, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_then_resume_is_exact(tmp_path, sig, code):
    d = tmp_path / "sig"
    metrics = d / "metrics.jsonl"
    proc = _train_in_a_process(d, flags(steps=100000, log_every=1, ckpt_every=0),
                               lambda: metrics.exists() and metrics.stat().st_size > 2000, polls=600)
    try:
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == code, err
    assert "checkpoint saved" in err and "--resume" in err
    ck = load_checkpoint(str(d / "ckpt.pt"))
    k = ck["step"]
    assert k > 0
    # the interrupted run resumed to k + 3 equals a straight run to k + 3
    _assert_resume_equals_straight_run(d, tmp_path, k + 3)


def test_sigkill_then_resume_is_exact(tmp_path):
    """A run killed without warning (SIGKILL: nothing saved, its lock and metrics rows left) resumes
    from its last periodic checkpoint to the same weights as a run that was never interrupted."""
    d = tmp_path / "kill"
    proc = _train_in_a_process(d, flags(steps=100000, log_every=1, ckpt_every=4),
                               lambda: (d / "ckpt.prev.pt").exists() and (d / "metrics.jsonl").stat().st_size > 3000,
                               polls=900)
    try:
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    k = load_checkpoint(str(d / "ckpt.pt"))["step"]
    assert k > 0 and k % 4 == 0
    _assert_resume_equals_straight_run(d, tmp_path, k + 3)
    steps = [json.loads(line)["step"] for line in open(d / "metrics.jsonl")]
    assert steps == sorted(steps) and steps[-1] == k + 3, "rows logged after the checkpoint were dropped"


# ------------------------------------------------------------------------------ resume
def test_resume_applies_knobs_and_refuses_shape_changes(tmp_path, run_dir, capsys):
    import shutil

    d = tmp_path / "res"
    shutil.copytree(run_dir, d)
    with open(d / "metrics.jsonl", "a") as f:  # a row from after the checkpoint (a run killed later)
        f.write(json.dumps({"step": 99, "loss_g": 1.0}) + "\n")
    assert main(["--resume", "--out", str(d), "--steps", "6", "--lr", "3e-4", "--lr-ebm", "7e-6",
                 "--langevin-step-size", "0.25"]) == 0
    out = capsys.readouterr()
    assert "--lr 0.001 -> 0.0003" in out.out and "--lr-ebm" in out.out and "--langevin-step-size 0.4 -> 0.25" in out.out
    assert "dropped 1 metrics.jsonl row" in out.err
    ck = load_checkpoint(str(d / "ckpt.pt"))
    assert ck["step"] == 6 and ck["train_config"]["lr"] == 3e-4 and ck["train_config"]["lr_ebm"] == 7e-6
    assert ck["opt_g"]["param_groups"][0]["lr"] == 3e-4
    assert ck["model_config"]["prior"] == "ebm"  # read from the checkpoint, --prior not repeated
    steps = [json.loads(line)["step"] for line in open(d / "metrics.jsonl")]
    assert 99 not in steps
    for flag, val in [("--latent-dims", "8,4"), ("--energy-hidden", "32"), ("--dataset", "mnist5k"), ("--seed", "3"),
                      ("--prior", "gaussian")]:
        assert main(["--resume", "--out", str(d), flag, val]) == 2
        one_line_error(capsys, flag)


def test_resume_without_checkpoint_or_out(tmp_path, capsys):
    assert main(["--resume", "--quiet"]) == 2
    one_line_error(capsys, "--out")
    assert main(["--resume", "--out", str(tmp_path / "nothing")]) == 2
    one_line_error(capsys, "no checkpoint")


def test_nan_advice_names_the_generator_lr(tmp_path, monkeypatch):
    tr = Trainer.from_settings(dict(SETTINGS, prior="gaussian", out=str(tmp_path / "g"), lr=1e-3))
    orig = tr.model.decoder.forward
    monkeypatch.setattr(tr.model.decoder, "forward", lambda z: orig(z) * float("inf"))
    res = tr.train()
    assert res["status"] == "nonfinite" and "--lr (now 0.001)" in res["message"]


# ------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("args,pattern", [
    (["--steps", "-1"], "--steps: must be >= 1"),
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--log-every", "0"], "--log-every: must be >= 1"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--lr", "nan"], "--lr"),
    (["--langevin-step-size", "-0.1"], "--langevin-step-size"),
    (["--latent-dims", "4,0"], "--latent-dims"),
    (["--latent-dims", "4,x"], "--latent-dims"),
    (["--free-bits", "-1"], "--free-bits"),
    (["--holdout", "12"], "--holdout"),
    (["--prior", "vae"], "--prior"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--act", "swish"], "activation 'swish'"),
    (["--batch-size", "100000"], "batch size"),
    (["--prior", "diffusion"], "--init"),
    (["--arch", "conv"], "--arch conv"),
])
def test_train_flags_are_checked(tmp_path, capsys, args, pattern):
    assert main(["--out", str(tmp_path / "x")] + TINY + args) == 2
    one_line_error(capsys, pattern)


def test_classes_that_no_example_has_are_named(tmp_path):
    """--classes 10 on a data set with labels 0-9 names --classes, the missing label and the labels
    there are (it used to select nothing and fail as "exceeds the data set size 0")."""
    d = tmp_path / "cls"
    r = subprocess.run([sys.executable, "-m", "hebm.train", "--dataset", "digits", "--classes", "10", "--steps", "1",
                        "--out", str(d)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    one_line_stderr(r, "--classes 10: no example has label 10; the labels of digits are 0-9")
    assert not d.exists()
    from hebm.data import load_digits_data, toy2d_data

    with pytest.raises(ValueError, match=r"--classes 3,10,11: no example has labels 10, 11; the labels of digits are 0-9"):
        load_digits_data().select_classes([3, 10, 11])
    odd = load_digits_data().select_classes([1, 2, 3, 7, 9])
    with pytest.raises(ValueError, match=r"label 4; the labels of digits are 1-3, 7, 9"):
        odd.select_classes([4])
    assert len(toy2d_data().select_classes([0, 7])) > 0


@pytest.mark.parametrize("args,pattern", [
    (["--n", "-3"], "--n: must be >= 1"),
    (["--n", "0"], "--n"),
    (["--langevin-step-size", "0"], "--langevin-step-size"),
    (["--langevin-steps", "-2"], "--langevin-steps"),
    (["--langevin-step-size", "1e4"], "--langevin-step-size"),
    (["--langevin-step-size", "9", "--langevin-steps", "200"], "diverged"),
])
def test_sample_flags_are_checked(run_dir, tmp_path, capsys, args, pattern):
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--out", str(tmp_path / "s")] + args) == 2
    one_line_error(capsys, pattern)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("args,pattern", [
    (["fd", "--n", "0"], "--n"),
    (["fd", "--seeds", "0"], "--seeds"),
    (["anomaly", "--holdout", "11"], "--holdout"),
    (["anomaly", "--holdout", "1"], "not trained with --holdout"),
    (["summary", "--n", "-1"], "--n"),
])
def test_evaluate_flags_are_checked(run_dir, capsys, args, pattern):
    assert evaluate.main(["--ckpt", str(run_dir / "ckpt.pt")] + args) == 2
    one_line_error(capsys, pattern)


def test_missing_and_corrupt_checkpoint_files(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with open(tmp_path / "pickle.pt", "wb") as f:
        pickle.dump({"a": 1}, f)
    for name, pattern in [("missing.pt", "does not exist"), ("empty.pt", "empty"), ("junk.pt", "corrupt"),
                          ("other.pt", "not a hebm checkpoint"), ("pickle.pt", "corrupt")]:
        assert sample.main(["--ckpt", str(tmp_path / name)]) == 2
        one_line_error(capsys, pattern)


def test_model_mismatch_is_named(tmp_path, run_dir):
    ck = torch.load(run_dir / "ckpt.pt", weights_only=True)
    ck["model_config"]["latent_dims"] = [5, 4, 2]
    from hebm.checkpoint import content_hash

    ck["integrity"] = {"sha256": content_hash(ck)}
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(str(tmp_path / "mismatch.pt"))


def test_entry_points_share_trainings_flag_ranges(capsys):
    """hebm.sample and hebm.evaluate generate the flags they share with training from training's
    fields: the same values are accepted and refused with the same words (issue 24: --seed and
    --steps once had other ranges there)."""
    from hebm import config, evaluate, sample
    from hebm.train import build_parser as train_parser

    def outcome(parser, argv):
        try:
            parser.parse_args(argv)
            return "ok"
        except SystemExit:
            return capsys.readouterr().err.split("error: ")[-1].strip()

    cases = {"seed": ["--seed", str(2**63 - 1)], "langevin_steps": ["--langevin-steps", "1000001"],
             "steps": ["--steps", str(10**9)], "fused": ["--fused"], "device": ["--device", "cpu"],
             "langevin_step_size": ["--langevin-step-size", "0"], "prior": ["--prior", "vae"],
             "dataset": ["--dataset", "mnist5k"], "data_root": ["--data-root", "d"]}
    bad = {"seed": ["--seed", "-1"], "steps": ["--steps", "0"], "langevin_steps": ["--langevin-steps", "-2"]}
    for name in {**config.SAMPLE_SHARED, **config.EVALUATE_SHARED, **config.ANOMALY_SHARED}:
        for argv in filter(None, (cases.get(name), bad.get(name))):
            want = outcome(train_parser(), argv)
            if name in config.SAMPLE_SHARED:
                assert outcome(sample.build_parser(), ["--ckpt", "c"] + argv) == want, (name, argv)
            if name in config.EVALUATE_SHARED:
                assert outcome(evaluate.build_parser(), argv + ["latents"]) == want, (name, argv)
            if name in config.ANOMALY_SHARED:
                assert outcome(evaluate.build_parser(), ["anomaly", "--holdout", "1"] + argv) == want, (name, argv)


# ------------------------------------------------------------------------------ destinations, checked first
def _no_sampling(monkeypatch):
    """Any prior chain from here on fails the test: a destination must be refused before sampling."""
    def refuse(*a, **k):
        raise AssertionError("sampled before the destination was checked")
    monkeypatch.setattr("hebm.models.base.run_langevin", refuse)


def _read_only(monkeypatch, root):
    """Writing anything under ``root`` fails with EROFS, as on a read-only file system (emulated:
    root ignores permissions)."""
    import errno as _errno
    real = os.open

    def os_open(path, flags, *a, **k):
        if str(path).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(_errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", os_open)


@pytest.mark.parametrize("where", ["file", "under-a-file", "read-only"])
def test_sample_save_is_checked_before_sampling(run_dir, tmp_path, capsys, monkeypatch, where):
    """``--save PATH``: a regular file, a path under a file, a read-only file system — one line
    naming --save before any chain runs, not a traceback after all the sampling."""
    (tmp_path / "f").write_text("not a directory")
    path = {"file": tmp_path / "f", "under-a-file": tmp_path / "f" / "set", "read-only": tmp_path / "ro"}[where]
    if where == "read-only":
        path.mkdir()
        _read_only(monkeypatch, path)
    _no_sampling(monkeypatch)
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--n", "4", "--save", str(path),
                        "--out", str(tmp_path / "grid")]) == 2
    line = one_line_error(capsys, f"--save {str(path)!r}")
    want = {"file": "is a file, not a directory", "under-a-file": f"{str(tmp_path / 'f')!r} on its path is a file",
            "read-only": "is not writable"}[where]
    assert want in line, line
    assert (tmp_path / "f").read_text() == "not a directory" and not (tmp_path / "grid.png").exists()


def test_sample_out_on_a_read_only_file_system(run_dir, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    _no_sampling(monkeypatch)
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--n", "4", "--out", str(ro / "s")]) == 2
    line = one_line_error(capsys, f"--out {str(ro / 's')!r} is not writable")
    assert "Read-only file system" in line and "pick a writable --out" in line, line


def test_evaluate_json_and_figure_are_checked_before_evaluating(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("hebm.evaluate.fd_eval", lambda *a, **k: pytest.fail("evaluated before --json was checked"))
    assert evaluate.main(["--ckpt", str(run_dir / "ckpt.pt"), "--json", str(tmp_path), "fd"]) == 2
    one_line_error(capsys, f"--json {str(tmp_path)!r} is a directory")
    (tmp_path / "f").write_text("")
    assert evaluate.main(["--ckpt", str(run_dir / "ckpt.pt"), "latents", "--figure", str(tmp_path / "f" / "l.png")]) == 2
    one_line_error(capsys, "--figure")


def test_two_samples_into_one_save_directory(run_dir, tmp_path, capsys):
    """While one hebm.sample writes ``--save DIR`` (it holds ``DIR/.lock``), a second one is refused at
    once, naming the first; the empty-directory check alone let both write and one set replace the
    other.  (The lock is a ``flock`` on its own open file, so a holder in this process conflicts
    with the sample run here exactly as another process would.)"""
    from hebm.files import DirectoryLock

    d = tmp_path / "set"
    holder = DirectoryLock(str(d))
    holder.acquire("--save", "hebm.sample")
    try:
        assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--n", "3", "--save", str(d),
                            "--out", str(tmp_path / "grid")]) == 2
        one_line_error(capsys, f"--save {str(d)!r} is in use by another hebm.sample (pid {os.getpid()})")
        assert not [n for n in os.listdir(d) if n.endswith(".png")]
    finally:
        holder.release()
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--n", "3", "--save", str(d),
                        "--out", str(tmp_path / "grid")]) == 0
    assert len([n for n in os.listdir(d) if n.endswith(".png")]) == 3
    capsys.readouterr()
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--n", "3", "--save", str(d)]) == 2  # a finished set stays
    one_line_error(capsys, "already holds images")


@pytest.mark.parametrize("flag", [["--long-run", "5"], ["--hierarchical"]])
def test_sample_attribute_is_not_ignored(run_dir, tmp_path, capsys, monkeypatch, flag):
    """``--attribute`` conditions the --n samples; --long-run and --hierarchical draw from the
    unconditional prior, so together they are refused rather than dropping the attribute."""
    _no_sampling(monkeypatch)
    assert sample.main(["--ckpt", str(run_dir / "ckpt.pt"), "--attribute", "digit=3", *flag,
                        "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, f"--attribute conditions the --n samples (and --save); {flag[0]} draws from the "
                           f"unconditional prior")


# ------------------------------------------------------------------------------ FD sizes, standard JSON
def test_fd_needs_more_samples_than_feature_dimensions(run_dir, capsys):
    from hebm.config import FD_MIN_SAMPLES, FEATURE_DIM
    from hebm.evaluation.metrics import frechet_distance

    assert FD_MIN_SAMPLES == FEATURE_DIM + 1
    for n in ("2", str(FEATURE_DIM)):
        assert evaluate.main(["--ckpt", str(run_dir / "ckpt.pt"), "fd", "--n", n]) == 2
        one_line_error(capsys, f"--n: must be >= {FD_MIN_SAMPLES}")
    rs = np.random.RandomState(0)
    with pytest.raises(ValueError, match="more samples than dimensions"):
        frechet_distance(rs.randn(2, FEATURE_DIM), rs.randn(500, FEATURE_DIM))
    frechet_distance(rs.randn(FD_MIN_SAMPLES, FEATURE_DIM), rs.randn(500, FEATURE_DIM))


def _strict(text: str):
    """``json.loads`` that refuses NaN and Infinity, as every parser outside Python does."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_written_json_is_standard(run_dir, tmp_path, capsys):
    """NaN and Infinity are written as null everywhere hebm writes JSON (one place: hebm.files):
    an FD over one seed has no spread (NaN); the run's own files; a metrics row with NaN."""
    from hebm.files import json_text
    from hebm.training.run_directory import RunDirectory

    j = tmp_path / "fd.json"
    assert evaluate.main(["--ckpt", str(run_dir / "ckpt.pt"), "--json", str(j), "fd", "--n", "40", "--seeds", "1"]) == 0
    r = _strict(j.read_text())
    assert r["fd_std"] is None and isinstance(r["fd"], float)
    for name in ("config.json", "summary.json"):
        _strict((run_dir / name).read_text())
    for line in open(run_dir / "metrics.jsonl"):
        _strict(line)
    rd = RunDirectory(str(tmp_path / "run"))
    os.makedirs(rd.path)
    rd.append_metrics({"step": 1, "f_gap_per_level": [0.5, float("nan")], "loss": float("inf"),
                       "kl": torch.tensor([1.0, float("nan")]), "acc": np.float32(0.25)})
    assert _strict(open(rd.metrics).read()) == {"step": 1, "f_gap_per_level": [0.5, None], "loss": None,
                                                 "kl": [1.0, None], "acc": 0.25}
    assert json_text({"x": np.float64("nan")}) == '{"x": null}'


# ------------------------------------------------------------------------------ --init and the settings of a run
def test_overwrite_never_deletes_the_run_it_builds_on(run_dir, tmp_path, capsys):
    """``--init RUN/ckpt.pt --out RUN --overwrite`` would replace the stage-1 run it has just loaded
    (clear() removes RUN/ckpt.pt): refused before anything is removed."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    before = {n: (d / n).read_bytes() for n in ("ckpt.pt", "metrics.jsonl")}
    for extra in ([], ["--overwrite"]):
        assert main(["--prior", "ebm", "--init", str(d / "ckpt.pt"), "--out", str(d)] + extra + TINY) == 2
        one_line_error(capsys, f"--out {str(d)!r} holds --init {str(d / 'ckpt.pt')!r}, the trained run this run builds "
                               f"on; pick another --out")
    assert {n: (d / n).read_bytes() for n in before} == before


def test_init_messages_name_the_file_and_the_fix(run_dir, tmp_path, capsys):
    """``--init DIR`` says it is a directory and names the checkpoint expected in it; a corrupt
    ``--init`` gets advice about the run it came from, not about a run directory of its own."""
    import shutil

    d = tmp_path / "stage1"
    shutil.copytree(run_dir, d)
    out = ["--out", str(tmp_path / "new")]
    assert main(["--prior", "ebm", "--init", str(d)] + out + TINY) == 2
    one_line_error(capsys, f"--init {str(d)!r} is a directory, not a checkpoint file: pass {str(d / 'ckpt.pt')!r}")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--prior", "ebm", "--init", str(empty)] + out + TINY) == 2
    one_line_error(capsys, f"holds no ckpt.pt (a run directory keeps its checkpoint as {str(empty / 'ckpt.pt')!r})")
    (d / "ckpt.prev.pt").unlink(missing_ok=True)
    _corrupt(d / "ckpt.pt")
    assert main(["--prior", "ebm", "--init", str(d / "ckpt.pt")] + out + TINY) == 2
    line = one_line_error(capsys, f"--init {str(d / 'ckpt.pt')!r} is corrupt")
    assert "hebm.train --overwrite" not in line and "retrain the run it came from, or pass another --init" in line, line
    shutil.copy(run_dir / "ckpt.pt", d / "ckpt.prev.pt")
    assert main(["--prior", "ebm", "--init", str(d / "ckpt.pt")] + out + TINY) == 2
    one_line_error(capsys, f"the run's other copy {str(d / 'ckpt.prev.pt')!r} is intact: pass that as --init")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--prior", "gaussian", "--metropolis"], "--metropolis: a gaussian prior has no Langevin chains in training"),
    (["--prior", "gaussian", "--energy-l2", "0.1"], "--energy-l2: a gaussian prior has no energies to penalise"),
    (["--attribute-layers", "digit:1"], "--attribute-layers shapes the attribute heads of --attributes"),
    (["--attribute-hidden", "8"], "--attribute-hidden shapes the attribute heads of --attributes"),
    (["--prior", "diffusion", "--init", "RUN", "--energy-l2", "0.1"], "--energy-l2: the diffusion's recovery-likelihood"),
    (["--prior", "gaussian", "--temperatures", "0.5,1"], "--temperatures: a gaussian prior has no Langevin chains"),
    (["--prior", "diffusion", "--init", "RUN", "--temperatures", "0.5,1"], "--temperatures: the diffusion's per-level"),
    (["--temperatures", "0.5,0.3,1"], "--temperatures must be increasing"),
    (["--temperatures", "0.5,0.8"], "--temperatures must end at β_R = 1"),
    (["--temperatures", "0.5,1.5"], "--temperatures"),
    (["--swap-every", "2"], "--swap-every belongs to --temperatures"),
])
def test_settings_a_run_does_not_use_are_refused(run_dir, tmp_path, capsys, args, pattern):
    """A flag the run has no use for is refused by name instead of being accepted without a word."""
    args = [str(run_dir / "ckpt.pt") if a == "RUN" else a for a in args]
    assert main(args + ["--out", str(tmp_path / "r")] + TINY) == 2
    one_line_error(capsys, pattern)
    assert not (tmp_path / "r").exists()
