"""Streaming scoring (``sparklstm score --stream``, jobs/score_stream.py) on real Spark.

The crash test runs the CLI in subprocesses (one SparkContext per process; a SIGKILL must take
the driver's JVM down with it) and reads the output with ``spark.read.parquet``, which honours
the file sink's ``_spark_metadata`` log: that view must hold every input id exactly once, with
the predictions a batch ``score()`` gives the same rows. The other tests run in the suite's
local[2] session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster import ENV, REPO, SPARK_BIN
from conftest import make_corpus
from sparklstm.artifact import load_artifact, save_model
from sparklstm.errors import SparklstmError
from sparklstm import score
from sparklstm.spark.streaming import PIN_FILE, score_stream
from test_cli import clean_error, invoke

ROWS_PER_FILE = 25


def read_pin(ckpt: Path) -> dict:
    """The checkpoint's model pin: a directory with one text part file, as Spark writes it."""
    (part,) = [f for f in (ckpt / PIN_FILE).iterdir() if f.name.startswith("part-")]
    return json.loads(part.read_text())


class Dropper:
    """Drops Parquet files of fresh, unique ids into the watched directory, each written aside
    and renamed in, so the file source never lists a half-written file."""

    def __init__(self, input_dir: Path, staging: Path):
        self.input_dir, self.staging, self.next_id = input_dir, staging, 0
        input_dir.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True, exist_ok=True)

    def drop(self, files: int) -> None:
        for _ in range(files):
            first = self.next_id
            rows = make_corpus(ROWS_PER_FILE, seed=first)
            table = pa.table({"id": list(range(first, first + ROWS_PER_FILE)),
                              "text": [r["text"] for r in rows], "label": [r["label"] for r in rows]})
            tmp = self.staging / f"{first}.parquet"
            pq.write_table(table, tmp)
            os.rename(tmp, self.input_dir / f"part-{first:05d}.parquet")
            self.next_id += ROWS_PER_FILE


def batch_ids(ckpt: Path, log: str) -> set[int]:
    """Batch ids in the checkpoint's offsets/ (planned) or commits/ (done) log."""
    d = ckpt / log
    return {int(p.name) for p in d.iterdir() if p.name.isdigit()} if d.exists() else set()


def in_flight(ckpt: Path) -> bool:
    return bool(batch_ids(ckpt, "offsets") - batch_ids(ckpt, "commits"))


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the stream exited ({proc.returncode}) before {what}")
        if time.time() > deadline:
            raise TimeoutError(f"no {what} in {timeout} s")
        time.sleep(0.02)


def start_cli(args: list, log: Path) -> subprocess.Popen:
    """``sparklstm score --stream ...`` in its own process group (the driver JVM joins it), in
    fp32: the output is compared with the Predictor's to 1e-6, and bf16 results move with the
    rows batched together, which a kill and restart changes."""
    return subprocess.Popen([sys.executable, "-m", "sparklstm.cli", "score", "--stream",
                             "--precision", "fp32", *map(str, args)], env=ENV, cwd=REPO, start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def kill_mid_batch(proc: subprocess.Popen, ckpt: Path, *, after_commits: int) -> set[int]:
    """SIGKILL the whole process group while a micro-batch is planned but not committed.

    The group is frozen (SIGSTOP) before the check, so the checkpoint can't move between the
    check and the kill; returns the batch ids that were in flight."""
    while True:
        wait_until(lambda: len(batch_ids(ckpt, "commits")) >= after_commits and in_flight(ckpt),
                   proc, f"a batch in flight after {after_commits} commits")
        os.killpg(proc.pid, signal.SIGSTOP)
        pending = batch_ids(ckpt, "offsets") - batch_ids(ckpt, "commits")
        if pending:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return pending
        os.killpg(proc.pid, signal.SIGCONT)


def test_exactly_once_across_sigkill_ctrl_c_and_restart(spark, model_dir, tmp_path):
    """Files arrive in rounds; the stream is SIGKILLed mid-batch, restarted and stopped with
    Ctrl-C mid-batch, then finished by spark-submit jobs/score_stream.py (available-now).
    Every id is in the output exactly once, scored as batch score() scores it."""
    src, out, ckpt = tmp_path / "incoming", tmp_path / "scored", tmp_path / "ckpt"
    files = Dropper(src, tmp_path / "staging")
    stream = [src, "--model", model_dir, "--out", out, "--checkpoint", ckpt, "--master", "local[2]",
              "--interval", "1 second", "--max-files-per-trigger", "1", "--batch-size", "16"]
    files.drop(3)

    # 1. processing time, one file per batch; more files arrive; SIGKILL while a batch runs.
    first = start_cli(stream, tmp_path / "run1.log")
    wait_until(lambda: batch_ids(ckpt, "commits"), first, "first commit")
    files.drop(3)
    pending = kill_mid_batch(first, ckpt, after_commits=2)
    assert first.returncode == -signal.SIGKILL
    done_before_kill = batch_ids(ckpt, "commits")
    assert pending and max(pending) > max(done_before_kill)

    # 2. more files while it is down; restart on the same checkpoint; Ctrl-C mid-batch.
    files.drop(2)
    second = start_cli(stream, tmp_path / "run2.log")
    wait_until(lambda: len(batch_ids(ckpt, "commits")) > len(done_before_kill) + 1 and in_flight(ckpt),
               second, "batches after the restart")
    os.killpg(second.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    assert second.wait(timeout=120) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    log2 = (tmp_path / "run2.log").read_text()
    assert "stopping" in log2 and "stopped: scored" in log2
    assert "Traceback" not in log2 and "Exception" not in log2  # the abandoned batch is quiet
    assert batch_ids(ckpt, "commits") > done_before_kill  # the restart resumed and committed

    # 3. the rest with spark-submit, available-now: it ends by itself when all files are done.
    files.drop(2)
    job = subprocess.run(
        [str(SPARK_BIN / "spark-submit"), "--master", "local[2]",
         "--conf", f"spark.pyspark.python={sys.executable}", str(REPO / "jobs" / "score_stream.py"),
         "--input", str(src), "--model", str(model_dir), "--out", str(out), "--checkpoint",
         str(ckpt), "--trigger", "available-now", "--max-files-per-trigger", "3"],
        env=ENV, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "done: scored" in job.stdout

    scored = spark.read.parquet(str(out))  # through the sink's _spark_metadata log
    got = {r["id"]: r for r in scored.collect()}
    assert scored.count() == len(got) == files.next_id == 10 * ROWS_PER_FILE  # nothing twice, nothing lost
    assert sorted(got) == list(range(files.next_id))
    model_id = load_artifact(model_dir).model_id
    assert {r["model_id"] for r in got.values()} == {model_id}
    assert read_pin(ckpt)["model_id"] == model_id

    n = score(spark, input_path=str(src), model_dir=model_dir, out=str(tmp_path / "batch"), precision="fp32")
    assert n == files.next_id
    for row in spark.read.parquet(str(tmp_path / "batch")).collect():
        streamed = got[row["id"]]
        assert (streamed["text"], streamed["label"]) == (row["text"], row["label"])
        assert streamed["prediction"]["label"] == row["prediction"]["label"]
        assert streamed["prediction"]["probabilities"] == pytest.approx(
            row["prediction"]["probabilities"], abs=1e-6)


def other_model(model_dir: Path, out: Path) -> Path:
    """The same network with one weight changed: another model id."""
    art = load_artifact(model_dir)
    model = art.build_model()
    with __import__("torch").no_grad():
        next(model.parameters()).add_(0.01)
    config = {k: v for k, v in art.config["model"].items() if k != "vocab_size"}
    return save_model(out, model=model, vocab=art.vocab, labels=art.labels, model_config=config,
                      max_len=art.max_len, metrics={})


def test_model_is_pinned_and_a_change_needs_the_flag(spark, model_dir, tmp_path):
    src, out, ckpt = tmp_path / "incoming", tmp_path / "scored", tmp_path / "ckpt"
    files = Dropper(src, tmp_path / "staging")
    files.drop(1)
    new_model = other_model(model_dir, tmp_path / "model2")
    ids = {name: load_artifact(p).model_id for name, p in (("old", model_dir), ("new", new_model))}
    assert ids["old"] != ids["new"]
    run = dict(input_dir=str(src), out=str(out), checkpoint=str(ckpt), trigger="available-now")
    lines = []
    first = score_stream(spark, model_dir=model_dir, log=lines.append, **run)
    assert (first.rows, first.batches, first.model_id, first.stopped) == (ROWS_PER_FILE, 1, ids["old"], False)
    assert ids["old"] in lines[0] and "batch 0: 25 rows" in "\n".join(lines)
    files.drop(1)

    with pytest.raises(SparklstmError, match=f"was started with model {ids['old'][:12]}, not {ids['new'][:12]}"):
        score_stream(spark, model_dir=new_model, **run)
    args = ["score", "--stream", src, "--model", new_model, "--out", out, "--checkpoint", ckpt,
            "--trigger", "available-now"]
    clean_error(invoke(args), contains="--allow-model-change")
    assert spark.read.parquet(str(out)).count() == ROWS_PER_FILE  # nothing ran

    second = score_stream(spark, model_dir=new_model, allow_model_change=True, **run)
    assert (second.rows, second.model_id) == (ROWS_PER_FILE, ids["new"])
    rows = spark.read.parquet(str(out)).collect()
    assert sorted(r["id"] for r in rows) == list(range(2 * ROWS_PER_FILE))
    assert {r["model_id"] for r in rows if r["id"] < ROWS_PER_FILE} == {ids["old"]}
    assert {r["model_id"] for r in rows if r["id"] >= ROWS_PER_FILE} == {ids["new"]}
    pin = read_pin(ckpt)
    assert pin["model_id"] == ids["new"] and [h["model_id"] for h in pin["history"]] == [ids["old"]]

    # A fresh checkpoint must not write into this output: the sink would skip batch ids 0 and 1.
    with pytest.raises(SparklstmError, match="belongs to another streaming query"):
        score_stream(spark, model_dir=new_model, **{**run, "checkpoint": str(tmp_path / "ckpt2")})
    assert spark.streams.active == []


def test_stream_argument_errors_are_one_clear_line(spark, model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["score", "--stream", empty, "--model", model_dir, "--out", tmp_path / "o"]
    clean_error(invoke(base), contains="--stream needs --checkpoint")
    clean_error(invoke(base + ["--checkpoint", tmp_path / "c", "--overwrite"]), contains="--overwrite")
    clean_error(invoke(["score", empty, "--model", model_dir, "--checkpoint", tmp_path / "c"]),
                contains="--checkpoint applies only with --stream")
    with_ckpt = base + ["--checkpoint", tmp_path / "c"]
    clean_error(invoke(with_ckpt), contains=f"input directory {empty} has no Parquet files")
    missing = ["score", "--stream", tmp_path / "nope"] + with_ckpt[3:]
    clean_error(invoke(missing), contains="input directory not found")
    clean_error(invoke(with_ckpt + ["--schema", "id BIGINT, text"]), contains="invalid schema")
    clean_error(invoke(with_ckpt + ["--schema", "id BIGINT, body STRING"]),
                contains="text column 'text' not found")
    clean_error(invoke(with_ckpt + ["--trigger", "once"]), contains="trigger must be one of")
    clean_error(invoke(with_ckpt + ["--schema", "id BIGINT, text STRING", "--interval", "soon"]),
                contains="invalid interval")

    # An empty directory with a schema is fine: available-now finds nothing and ends.
    summary = score_stream(spark, input_dir=str(empty), model_dir=model_dir, out=str(tmp_path / "o"),
                           checkpoint=str(tmp_path / "c2"), schema="id BIGINT, text STRING",
                           trigger="available-now", precision="fp32")
    assert (summary.rows, summary.batches) == (0, 0)
