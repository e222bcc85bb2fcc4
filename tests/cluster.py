"""Shared helpers for tests that run Spark in other processes: a standalone master + workers on
127.0.0.1, spark-submit, the Spark event log, and the processes of a running job.

A test module uses the cluster with ``from cluster import standalone`` (a module-scoped fixture).
Everything binds to 127.0.0.1: the hostname resolves to an unreachable address here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyspark
import pytest

REPO = Path(__file__).resolve().parents[1]
SPARK_BIN = Path(pyspark.__file__).parent / "bin"
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
       "PYSPARK_DRIVER_PYTHON": sys.executable}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """spark://127.0.0.1:PORT with two workers of one core each."""
    work = tmp_path_factory.mktemp("standalone")
    port, ui = free_port(), free_port()
    procs = [subprocess.Popen(
        [str(SPARK_BIN / "spark-class"), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        env=ENV, stdout=open(work / "master.log", "w"), stderr=subprocess.STDOUT)]
    wait_for_port(port)
    url = f"spark://127.0.0.1:{port}"
    for n in range(2):
        procs.append(subprocess.Popen(
            [str(SPARK_BIN / "spark-class"), "org.apache.spark.deploy.worker.Worker", url,
             "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
             "--webui-port", str(free_port()), "--work-dir", str(work / f"worker{n}")],
            env=ENV, stdout=open(work / f"worker{n}.log", "w"), stderr=subprocess.STDOUT))
    yield url
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def score_submit(master: str, *, corpus: Path, model_dir: Path, out: Path, conf: dict,
                 args: tuple = ()) -> list[str]:
    """The spark-submit command line of jobs/score.py on ``master`` with extra ``--conf``s."""
    cmd = [str(SPARK_BIN / "spark-submit"), "--master", master,
           "--conf", f"spark.pyspark.python={sys.executable}"]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    return cmd + [str(REPO / "jobs" / "score.py"), "--input", str(corpus), "--model", str(model_dir),
                  "--out", str(out), *args]


# ------------------------------------------------------------------------- a running job


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ancestor(pid: int, marker: str) -> int:
    """The nearest ancestor of ``pid`` whose command line contains ``marker`` (0 if none)."""
    while pid > 1:
        pid = parent_pid(pid)
        if marker in cmdline(pid):
            return pid
    return 0


def wait_for_lines(path: Path, n: int, *, proc: subprocess.Popen, timeout: float = 180) -> list[str]:
    """The first ``n`` lines of ``path`` once it has them (fails if ``proc`` ends first)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return lines[:n]
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {path} had {n} lines")
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not reach {n} lines in {timeout} s")


def event_log_summary(log_dir: Path) -> dict:
    """What the Spark event log in ``log_dir`` (one application, written with
    spark.eventLog.compress=false and spark.eventLog.rolling.enabled=false) says about the job: task attempts
    that succeeded, failed (with why) and succeeded on a retry; executors added and removed."""
    (log,) = [p for p in Path(log_dir).iterdir() if not p.name.startswith(".")]
    tasks, reasons, executors = Counter(), Counter(), Counter()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        kind = event["Event"]
        if kind == "SparkListenerTaskEnd":
            end = event["Task End Reason"]
            if end["Reason"] == "Success":
                tasks["succeeded"] += 1
                tasks["succeeded_on_retry"] += event["Task Info"]["Attempt"] > 0
            else:
                tasks["failed"] += 1
                why = end.get("Description") or end.get("Loss Reason") or ""
                reasons[f"{end['Reason']}: {why.splitlines()[0][:100] if why else ''}"] += 1
        elif kind == "SparkListenerExecutorAdded":
            executors["added"] += 1
        elif kind == "SparkListenerExecutorRemoved":
            executors["removed"] += 1
    return {"tasks": dict(tasks), "failures": dict(reasons), "executors": dict(executors)}


# ------------------------------------------------------------------------- Spark Connect


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """A Spark Connect server (local[2]) on 127.0.0.1, in its own JVM, as `start-connect-server.sh`
    starts one; yields (sc:// URL, the file its Python workers log model loads to, the server's
    working directory, against which Spark resolves relative paths)."""
    work = tmp_path_factory.mktemp("connect")
    port, loads = free_port(), work / "loads.log"
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [str(SPARK_BIN / "spark-submit"), "--class",
         "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[2]",
         "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=4"],
        env={**ENV, "SPARKLSTM_LOAD_LOG": str(loads)}, cwd=work, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=120)
    except TimeoutError:
        proc.kill()
        raise AssertionError("the Connect server did not start:\n" + (work / "server.log").read_text()[-3000:])
    yield f"sc://127.0.0.1:{port}", loads, work
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
