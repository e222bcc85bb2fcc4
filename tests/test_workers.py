"""Python workers that cannot import sparklstm: one line naming the module and PYSPARK_PYTHON,
not a worker traceback at the first action. The workers here run a bare virtual environment of
this same Python (pyspark reaches them through Spark's own PYTHONPATH; pyarrow, pandas, torch
and sparklstm do not), as a notebook's workers do when PYSPARK_PYTHON is not set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster import ENV, REPO


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def test_cli_scoring_with_workers_that_lack_sparklstm_is_one_line(bare_python, model_dir, corpus_path, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "sparklstm.cli", "score", str(corpus_path), "--model", str(model_dir),
         "--out", str(tmp_path / "scored"), "--master", "local[1]"],
        env={**ENV, "PYSPARK_PYTHON": bare_python}, cwd=REPO, capture_output=True, text=True,
        timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-3000:]
    assert "Spark's Python workers cannot run sparklstm (No module named 'pyarrow')" in lines[0]
    assert "PYSPARK_PYTHON" in lines[0] and sys.executable in lines[0]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "scored").exists()  # stopped before any output


def test_a_fresh_notebook_gets_the_same_line_from_classify_udf_and_prep(bare_python, model_dir, corpus_path, tmp_path):
    code = f"""
from pyspark.sql import SparkSession
import sparklstm
from sparklstm.errors import SparklstmError
spark = SparkSession.builder.master("local[1]").getOrCreate()
for call in (lambda: sparklstm.classify_udf(spark, {str(model_dir)!r}, precision="fp32"),
             lambda: sparklstm.prep(spark, input_path={str(corpus_path)!r}, out={str(tmp_path / 'p')!r})):
    try:
        call()
    except SparklstmError as e:
        print("ERROR", e)
"""
    # A fresh notebook: PYSPARK_PYTHON unset, so the workers run the first python3 on PATH.
    env = {k: v for k, v in ENV.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{Path(bare_python).parent}:{env['PATH']}"
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    errors = [line for line in run.stdout.splitlines() if line.startswith("ERROR")]
    assert run.returncode == 0 and len(errors) == 2, run.stdout + run.stderr[-3000:]
    assert all("No module named 'pyarrow'" in e and "PYSPARK_PYTHON" in e for e in errors)
