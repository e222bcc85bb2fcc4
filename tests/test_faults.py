"""Lost workers (issue 5.3): a scoring job that loses a Python worker, or a whole executor JVM,
in the middle of a task still writes every input row exactly once, with the right predictions.

Both tests run ``spark-submit jobs/score.py`` in a process of their own and watch the load log the
UDF writes when a Python worker has decoded the model (``SPARKLSTM_LOAD_LOG``: "pid model
device"). The first line means that worker's first task is scoring: the test kill -9s that worker
(or the executor JVM above it) at once. What Spark then did (failed and retried task attempts,
executors lost and added) is read from the job's event log, asserted and printed.
"""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest

from cluster import (ENV, ancestor, cmdline, event_log_summary, parent_pid, score_submit,
                     standalone, wait_for_lines)  # noqa: F401  (standalone is a fixture)
from conftest import make_corpus
from sparklstm.predictor import Predictor

ROWS = 2000
FILES = 4


@pytest.fixture(scope="module")
def corpus(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "corpus"
    rows = [dict(r, id=i) for i, r in enumerate(make_corpus(ROWS, seed=61))]
    spark.createDataFrame(rows).repartition(FILES).write.parquet(str(path))
    assert len(list(path.glob("*.parquet"))) == FILES
    return path, rows


def submit_and_kill(cmd: list[str], *, loads, work, choose_victim, env=ENV) -> dict:
    """Run ``cmd``; when the first Python worker has loaded the model, kill -9 the process
    ``choose_victim(worker_pid)`` names. The job must exit 0; returns the first worker's pid,
    the victim's, what the event log says and the job's stdout."""
    with open(work / "job.out", "w") as out, open(work / "job.err", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        try:
            worker = int(wait_for_lines(loads, 1, proc=proc)[0].split()[0])
            victim = choose_victim(worker)
            os.kill(victim, signal.SIGKILL)
            code = proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, (work / "job.err").read_text()[-3000:]
    summary = event_log_summary(work / "events")
    print(f"\nkilled {choose_victim.__doc__} pid {victim}; event log: {summary}")
    return {"worker": worker, "victim": victim, "events": summary,
            "stdout": (work / "job.out").read_text()}


def check_output(spark, out, rows, model_dir) -> None:
    """Every input id exactly once, with its text and the local Predictor's prediction."""
    got = spark.read.parquet(str(out)).select("id", "text", "prediction").collect()
    ids = [r["id"] for r in got]
    print(f"rows in {len(rows)}, rows out {len(got)}, duplicates {len(ids) - len(set(ids))}")
    assert sorted(ids) == list(range(len(rows)))
    assert all(r["text"] == rows[r["id"]]["text"] for r in got)
    local = Predictor.from_dir(model_dir, precision="fp32").predict([r["text"] for r in got])
    assert [r["prediction"]["label"] for r in got] == [e["label"] for e in local]
    np.testing.assert_allclose([r["prediction"]["probabilities"] for r in got],
                               [e["probabilities"] for e in local], atol=1e-6, rtol=0)


def fault_job(master: str, work, corpus_path, model_dir, conf: dict) -> list[str]:
    (work / "events").mkdir()
    return score_submit(master, corpus=corpus_path, model_dir=model_dir, out=work / "scored",
                        args=("--batch-size", "32", "--precision", "fp32"), conf={
                            "spark.eventLog.enabled": "true",
                            "spark.eventLog.dir": (work / "events").as_uri(),
                            "spark.eventLog.compress": "false",  # one plain JSON-lines file
                            "spark.eventLog.rolling.enabled": "false",
                            "spark.sql.execution.arrow.maxRecordsPerBatch": 50,
                            **conf,
                        })


def test_job_survives_a_killed_python_worker(spark, corpus, model_dir, tmp_path):
    """local[2,4] (a task may fail 4 times; plain local[2] fails the job on the first): the Python
    worker of the first task dies; Spark retries that task in a new worker."""
    path, rows = corpus
    loads = tmp_path / "loads.log"
    cmd = fault_job("local[2,4]", tmp_path, path, model_dir, {})

    def the_worker(pid: int) -> int:
        """the Python worker"""
        assert "pyspark.daemon" in cmdline(parent_pid(pid))  # a worker forked by the daemon
        return pid

    run = submit_and_kill(cmd, loads=loads, work=tmp_path, choose_victim=the_worker,
                          env={**ENV, "SPARKLSTM_LOAD_LOG": str(loads)})
    assert f"scored {ROWS} rows" in run["stdout"]
    tasks, failures = run["events"]["tasks"], run["events"]["failures"]
    assert tasks["failed"] >= 1 and tasks["succeeded_on_retry"] >= 1
    assert all("Python worker exited unexpectedly" in why for why in failures), failures
    pids = [line.split()[0] for line in loads.read_text().splitlines()]
    assert pids[0] == str(run["worker"]) and len(pids) >= 2  # a new worker loaded the model
    check_output(spark, tmp_path / "scored", rows, model_dir)


def test_job_survives_a_killed_executor(standalone, spark, corpus, model_dir, tmp_path):
    """Standalone master + worker: the executor JVM running the first task dies. With
    spark.cores.max=1 the job has a single executor, so it can only finish on the one the
    standalone worker launches to replace it."""
    path, rows = corpus
    loads = tmp_path / "loads.log"
    cmd = fault_job(standalone, tmp_path, path, model_dir, {
        "spark.executorEnv.SPARKLSTM_LOAD_LOG": loads,
        "spark.cores.max": 1,
        "spark.executor.memory": "768m",
    })

    def its_executor(pid: int) -> int:
        """the executor JVM (CoarseGrainedExecutorBackend) of the Python worker"""
        jvm = ancestor(pid, "CoarseGrainedExecutorBackend")
        assert jvm, f"no executor JVM above Python worker {pid}"
        return jvm

    run = submit_and_kill(cmd, loads=loads, work=tmp_path, choose_victim=its_executor)
    assert f"scored {ROWS} rows" in run["stdout"]
    tasks, executors = run["events"]["tasks"], run["events"]["executors"]
    assert executors["removed"] >= 1 and executors["added"] >= 2
    assert tasks["failed"] >= 1 and tasks["succeeded_on_retry"] >= 1
    assert any(why.startswith("ExecutorLostFailure") for why in run["events"]["failures"])
    check_output(spark, tmp_path / "scored", rows, model_dir)
