"""Resumable training: a real ``sparklstm train`` is SIGKILLed after an epoch's checkpoint, then
``--resume`` finishes it with the metrics and weights of an uninterrupted run with the same seed.

All runs use one torch thread so CPU training is bitwise deterministic across processes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import SMALL_MODEL
from sparklstm.training.checkpoint import CHECKPOINT_DIR, checkpoint_path, read_checkpoint
from sparklstm.cli import app
from sparklstm.config import TrainConfig
from sparklstm.training.data import batch_indices, read_split
from sparklstm.errors import SparklstmError
from sparklstm import train

EPOCHS, KILL_AFTER = 4, 2
# Early stopping off (patience > epochs): every run trains all EPOCHS epochs.
CFG = TrainConfig(epochs=EPOCHS, batch_size=32, lr=5e-3, patience=EPOCHS + 1, seed=3, device="cpu",
                  precision="fp32", num_threads=1)
# The same settings as CLI flags (SMALL_MODEL + CFG).
FLAGS = ["--embed-dim", "32", "--hidden-size", "32", "--dropout", "0.1", "--epochs", str(EPOCHS),
         "--batch-size", "32", "--lr", "0.005", "--patience", str(EPOCHS + 1), "--seed", "3",
         "--device", "cpu", "--precision", "fp32", "--threads", "1", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def cli_train(prepped, out, *extra) -> list[str]:
    return [sys.executable, "-m", "sparklstm.cli", "train", str(prepped), "--out", str(out), *FLAGS,
            *extra]


@pytest.fixture
def restore_threads():
    """train(num_threads=1) sets torch's process-wide thread count; give the suite its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def killed_run(prepped_dir, tmp_path_factory):
    """A CLI training SIGKILLed once epoch KILL_AFTER is checkpointed; returns (model dir, the
    checkpointed epoch, a copy of the checkpoint directory for the error tests).

    The poll decodes the checkpoint while the trainer keeps replacing it: every read must parse
    (a torn file would raise), which is what the atomic write promises."""
    root = tmp_path_factory.mktemp("resume")
    out = root / "model"
    proc = subprocess.Popen(cli_train(prepped_dir, out), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline, epoch, reads = time.monotonic() + 300, 0, 0
    try:
        while epoch < KILL_AFTER:
            assert proc.poll() is None, f"training ended before the kill: {proc.stdout.read()!r}"
            assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 300 s"
            if checkpoint_path(out).exists():
                epoch, reads = read_checkpoint(out).epoch, reads + 1
            else:
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = root / "saved_checkpoint"
    shutil.copytree(out / CHECKPOINT_DIR, saved)
    return out, read_checkpoint(out).epoch, saved


def with_checkpoint(killed_run, tmp_path) -> Path:
    """A fresh model dir holding a copy of the interrupted run's checkpoint."""
    out = tmp_path / "model"
    shutil.copytree(killed_run[2], out / CHECKPOINT_DIR)
    return out


def test_checkpoint_holds_the_loop_state(prepped_dir, killed_run):
    """The killed run left no model, and a checkpoint of an unfinished epoch with weights, best
    weights, Adam moments, RNG states, history and the settings; safetensors + JSON only."""
    out, epoch, _ = killed_run
    assert KILL_AFTER <= epoch < EPOCHS
    assert not (out / "config.json").exists()
    ckpt = read_checkpoint(out)
    loop = ckpt.meta["loop"]
    assert loop["done"] is False and len(loop["history"]) == epoch
    assert 1 <= loop["best_epoch"] <= epoch and loop["best_f1"] > 0
    assert [h["epoch"] for h in loop["history"]] == list(range(1, epoch + 1))
    model, best = ckpt.prefixed("model."), ckpt.prefixed("best.")
    assert model and model.keys() == best.keys()
    adam = ckpt.prefixed("optim.")
    # Adam holds the recurrent path's parameters; the wide path is fitted before the loop.
    assert len([k for k in adam if k.endswith(".exp_avg_sq")]) == len(
        [k for k in model if not k.startswith("wide.")])
    # Adam counts one step per batch, for every parameter.
    batches = len(batch_indices(read_split(prepped_dir / "train").lengths, batch_size=32,
                                rng=np.random.default_rng(0)))
    assert {float(v) for k, v in adam.items() if k.endswith(".step")} == {float(batches * epoch)}
    assert ckpt.tensors["rng.torch"].dtype == torch.uint8
    assert ckpt.meta["settings"]["train"]["lr"] == 5e-3
    assert ckpt.meta["rng"]["batch_order"]["bit_generator"] == "PCG64"
    load_file(checkpoint_path(out))  # plain safetensors


def test_resume_after_sigkill_matches_uninterrupted(prepped_dir, killed_run, tmp_path,
                                                    restore_threads):
    """--resume after the SIGKILL ends with the uninterrupted run's metrics (1e-5) and weights,
    and removes the checkpoint once the model directory is written."""
    out, epoch, _ = killed_run
    ref = train(prepped=prepped_dir, out=tmp_path / "ref", model_config=SMALL_MODEL, train_config=CFG,
                progress=False, log=lambda m: None)
    done = subprocess.run(cli_train(prepped_dir, out, "--resume"), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {epoch}" in done.stderr
    got = json.loads((out / "metrics.json").read_text())

    assert [h["epoch"] for h in got["history"]] == list(range(1, EPOCHS + 1))
    for h_ref, h_got in zip(ref["history"], got["history"]):
        for key in ("train_loss", "val_accuracy", "val_macro_f1"):
            assert h_got[key] == pytest.approx(h_ref[key], abs=1e-5), (h_ref["epoch"], key)
    assert got["best_epoch"] == ref["best_epoch"]
    for split in ("val", "test"):
        for key in ("accuracy", "macro_f1"):
            assert got[split][key] == pytest.approx(ref[split][key], abs=1e-5), (split, key)
        assert got[split]["confusion_matrix"] == ref[split]["confusion_matrix"]
    w_ref, w_got = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert w_ref.keys() == w_got.keys()
    for k in w_ref:
        np.testing.assert_allclose(w_got[k].numpy(), w_ref[k].numpy(), atol=1e-6, err_msg=k)
    assert not (out / CHECKPOINT_DIR).exists() and not (tmp_path / "ref" / CHECKPOINT_DIR).exists()


def test_resume_without_checkpoint_is_an_error(prepped_dir, tmp_path, restore_threads):
    with pytest.raises(SparklstmError, match="no checkpoint to resume"):
        train(prepped=prepped_dir, out=tmp_path / "m", model_config=SMALL_MODEL, train_config=CFG,
              progress=False, log=lambda m: None, resume=True)


@pytest.mark.parametrize("model_config, train_config, message", [
    (SMALL_MODEL, dataclasses.replace(CFG, lr=1e-3), "train.lr: 0.005 in the checkpoint, 0.001 now"),
    (dataclasses.replace(SMALL_MODEL, hidden_size=16), CFG, "model.hidden_size: 32 in the checkpoint, 16 now"),
    (SMALL_MODEL, dataclasses.replace(CFG, epochs=EPOCHS + 2), "train.epochs"),
])
def test_resume_with_other_settings_is_an_error(prepped_dir, killed_run, tmp_path, restore_threads,
                                                model_config, train_config, message):
    out = with_checkpoint(killed_run, tmp_path)
    with pytest.raises(SparklstmError, match="made with different settings") as e:
        train(prepped=prepped_dir, out=out, model_config=model_config, train_config=train_config,
              progress=False, log=lambda m: None, resume=True)
    assert message in str(e.value)


def test_truncated_checkpoint_is_an_error(prepped_dir, killed_run, tmp_path, restore_threads):
    out = with_checkpoint(killed_run, tmp_path)
    path = checkpoint_path(out)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SparklstmError, match="not a readable checkpoint"):
        train(prepped=prepped_dir, out=out, model_config=SMALL_MODEL, train_config=CFG,
              progress=False, log=lambda m: None, resume=True)


@pytest.mark.parametrize("extra, message", [
    ([], "holds an interrupted run's checkpoint (pass --resume"),
    (["--resume", "--seed", "4"], "train.seed: 3 in the checkpoint, 4 now"),
])
def test_cli_errors_with_a_checkpoint(prepped_dir, killed_run, tmp_path, restore_threads, extra,
                                      message):
    """A fresh run never overwrites an interrupted run's checkpoint silently; a resume with other
    settings is refused. One `error:` line, exit 2."""
    out = with_checkpoint(killed_run, tmp_path)
    result = CliRunner().invoke(app, cli_train(prepped_dir, out, *extra)[3:])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert read_checkpoint(out).epoch == killed_run[1]  # left as it was


def test_cli_resume_without_checkpoint(prepped_dir, tmp_path, restore_threads):
    result = CliRunner().invoke(app, cli_train(prepped_dir, tmp_path / "m", "--resume")[3:])
    assert result.exit_code == 2 and result.stderr.startswith("error: no checkpoint to resume")
