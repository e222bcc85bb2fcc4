"""Data-parallel training: two DDP ranks on this machine against one process, a rank killed and
resumed, a rank that cannot read its data, and the streamed split dealt out to ranks.

Every rank and the single process use one torch thread, so runs are bitwise repeatable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster import cmdline, standalone  # noqa: F401 (a fixture)
from sparklstm.training.checkpoint import checkpoint_path, read_checkpoint
from sparklstm.training.distributed import default_processes
from sparklstm.training.shards import ShardedSplit

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4
# The test model (conftest's SMALL_MODEL) with early stopping off: every run trains all epochs.
FLAGS = ["--embed-dim", "32", "--hidden-size", "32", "--dropout", "0.1", "--epochs", str(EPOCHS),
         "--batch-size", "32", "--lr", "0.005", "--patience", str(EPOCHS + 1), "--seed", "3",
         "--device", "cpu", "--precision", "fp32", "--threads", "1", "--no-progress"]
# Two ranks see the same global batches as one process, but other dropout masks and a sum of
# two half-batch gradients: test macro-F1 may differ by this much on the 360-row test split.
TOLERANCE = 0.03
MODEL_FILES = {"config.json", "model.safetensors", "vocab.json", "metrics.json", "training_curves.png"}


def cli_train(prepped, out, *extra) -> list[str]:
    return [sys.executable, "-m", "sparklstm.cli", "train", str(prepped), "--out", str(out), *FLAGS,
            *extra]


def run(cmd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def metrics(model: Path) -> dict:
    return json.loads((model / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(prepped_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "model"
    done = run(cli_train(prepped_dir, out, "--processes", "1"))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def two_ranks(prepped_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks") / "model"
    done = run(cli_train(prepped_dir, out, "--processes", "2"))
    assert done.returncode == 0, done.stderr
    assert "training with 2 processes of 1 thread" in done.stderr
    return out


def test_two_ranks_write_a_complete_model_close_to_one_process(single, two_ranks):
    assert MODEL_FILES <= {p.name for p in two_ranks.iterdir()}
    assert not (two_ranks / "checkpoint").exists()
    one, two = metrics(single), metrics(two_ranks)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(two["history"]) == EPOCHS
    assert abs(two["test"]["macro_f1"] - one["test"]["macro_f1"]) <= TOLERANCE, (one["test"], two["test"])
    assert two["test"]["macro_f1"] > 0.9
    # The ranks counted their tokens together: both runs read the same rows each epoch.
    assert two["train_tokens_per_s"] * two["train_seconds"] == pytest.approx(
        one["train_tokens_per_s"] * one["train_seconds"], rel=0.02)


def rank_pid(parent: int, rank: int) -> int:
    """The pid of training rank ``rank`` started by the CLI process ``parent`` (0 if not yet)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or "sparklstm.training.distributed" not in cmdline(int(proc.name)):
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            ppid = int(next(l for l in (proc / "status").read_text().splitlines()
                            if l.startswith("PPid:")).split()[1])
        except (OSError, StopIteration):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return 0


def test_a_killed_rank_stops_the_run_and_resume_finishes_it(prepped_dir, two_ranks, tmp_path):
    out = tmp_path / "model"
    proc = subprocess.Popen(cli_train(prepped_dir, out, "--processes", "2"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        pid = 0
        while not pid:  # found before the first checkpoint, so the kill follows it closely
            pid = rank_pid(proc.pid, 1)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        while not checkpoint_path(out).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: training rank 1 was killed by SIGKILL"), err
    assert "--resume" in line and "Traceback" not in err
    epoch = read_checkpoint(out).epoch
    assert 1 <= epoch < EPOCHS

    done = run(cli_train(prepped_dir, out, "--processes", "2", "--resume"))
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {epoch}" in done.stderr
    resumed, whole = metrics(out), metrics(two_ranks)
    # The same run as the uninterrupted one: sums of two gradients do not depend on the order.
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    assert resumed["test"] == whole["test"]


def test_a_rank_that_cannot_read_its_shards_fails_in_one_line(prepped_dir, tmp_path):
    broken = tmp_path / "prepped"
    shutil.copytree(prepped_dir, broken)
    for part in (broken / "train").glob("*.parquet"):
        part.write_bytes(b"not parquet")
    done = run(cli_train(broken, tmp_path / "model", "--processes", "2"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "cannot read" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "model" / "config.json").exists()


def test_ranks_share_a_streamed_split(prepped_dir):
    """Two ranks read disjoint shards, take the same number of steps, and keep the shared batch
    order generator in step."""
    split = ShardedSplit(prepped_dir / "train", buffer_rows=100)
    assert len(split.shards) >= 2
    seen, steps, states = [], [], []
    for rank in range(2):
        rng = np.random.default_rng(7)
        batches = list(split.batches(batch_size=16, rng=rng, rank=rank, world=2))
        steps.append(len(batches))
        seen.append({(id(part), tuple(part.ids[r].tolist())) for part, rows in batches for r in rows})
        states.append(rng.bit_generator.state)
    assert steps[0] == steps[1] > 0
    texts = [{ids for _, ids in s} for s in seen]
    assert not texts[0] & texts[1]
    assert states[0] == states[1]


def test_default_layout():
    assert default_processes(device="cpu", batch_size=64, planned_tokens=10**7, cores=2) == 2
    assert default_processes(device="cpu", batch_size=64, planned_tokens=10**7, cores=16) == 2
    assert default_processes(device="cpu", batch_size=256, planned_tokens=10**7, cores=16) == 8
    assert default_processes(device="cpu", batch_size=64, planned_tokens=10**5, cores=2) == 1
    assert default_processes(device="cuda", batch_size=64, planned_tokens=10**7, cores=2) == 1


def test_two_ranks_on_a_spark_cluster(prepped_dir, single, standalone, tmp_path):
    """`--cluster`: TorchDistributor runs the ranks as barrier tasks on a standalone master with
    two one-core workers; rank 0 writes the model directory (on a path both workers reach)."""
    from cluster import ENV

    out = tmp_path / "model"
    done = subprocess.run(cli_train(prepped_dir, out, "--processes", "2", "--cluster",
                                    "--master", standalone),
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert MODEL_FILES <= {p.name for p in out.iterdir()}
    two, one = metrics(out), metrics(single)
    assert two["processes"] == 2
    assert abs(two["test"]["macro_f1"] - one["test"]["macro_f1"]) <= TOLERANCE


def test_a_cluster_rank_that_cannot_read_prepped_fails_in_one_line(spark, prepped_dir, tmp_path):
    """Through the Python API on the session's local[2]: the ranks run as TorchDistributor
    tasks, and the rank's own line comes back as the error (Spark's says "view stdout logs")."""
    from sparklstm import train
    from sparklstm.config import TrainConfig
    from sparklstm.errors import SparklstmError

    broken = tmp_path / "prepped"
    shutil.copytree(prepped_dir, broken)
    for part in (broken / "train").glob("*.parquet"):
        part.write_bytes(b"not parquet")
    with pytest.raises(SparklstmError) as info:
        train(prepped=broken, out=tmp_path / "model", train_config=TrainConfig(processes=2),
              cluster=True, progress=False, log=lambda m: None)
    message = str(info.value)
    assert message.startswith("rank ") and "cannot read" in message and "every executor" in message
    assert "\n" not in message
