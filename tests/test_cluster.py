"""Scoring on real multi-process Spark: a standalone master + two workers started by the test,
and a local-cluster whose discovery script reports fake GPUs.

Both run in subprocesses (one SparkContext per process; the suite's local[2] session stays up).
Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from cluster import ENV, score_submit, standalone  # noqa: F401  (standalone is a fixture)
from conftest import make_corpus


def test_spark_submit_on_standalone_cluster_scores_every_row_once(standalone, spark, model_dir,
                                                                   tmp_path):
    """jobs/score.py on 2 workers: each input row once in the output; one model load per worker."""
    corpus = tmp_path / "corpus"
    rows = [dict(r, id=i) for i, r in enumerate(make_corpus(3000, seed=11))]
    spark.createDataFrame(rows).repartition(6).write.parquet(str(corpus))
    assert len(list(corpus.glob("*.parquet"))) == 6
    loads = tmp_path / "loads.log"
    out = tmp_path / "scored"
    cmd = score_submit(standalone, corpus=corpus, model_dir=model_dir, out=out,
                       args=("--batch-size", "64"), conf={
                           "spark.executorEnv.SPARKLSTM_LOAD_LOG": loads,
                           "spark.sql.execution.arrow.maxRecordsPerBatch": 50,  # many batches per task
                           "spark.sql.files.maxPartitionBytes": "4k",  # several tasks per file
                           "spark.executor.memory": "768m",
                       })
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 3000 rows" in result.stdout

    scored = spark.read.parquet(str(out))
    assert scored.count() == 3000
    ids = [r["id"] for r in scored.select("id").collect()]
    assert sorted(ids) == list(range(3000))  # every row exactly once
    assert scored.where("prediction.label IS NULL").count() == 0

    lines = [line.split() for line in loads.read_text().splitlines()]
    pids = [pid for pid, _, _ in lines]
    assert len(pids) == len(set(pids)), "a Python worker loaded the model twice"
    assert {device for _, _, device in lines} == {"cpu"}
    assert 2 <= len(pids) <= 4  # one per Python worker (1 per 1-core executor, maybe respawned)
    # ... while there were 60 Arrow batches of 50 rows: not once per batch.


GPU_SCRIPT = """#!/usr/bin/env bash
echo '{"name": "gpu", "addresses": ["5", "7"]}'
"""

GPU_JOB = """
import json, os, sys
from pyspark.sql import SparkSession

spark = (SparkSession.builder.master("local-cluster[1,2,1024]")
         .config("spark.worker.resource.gpu.amount", "2")
         .config("spark.worker.resource.gpu.discoveryScript", sys.argv[1])
         .config("spark.executor.resource.gpu.amount", "2")
         .config("spark.executor.resource.gpu.discoveryScript", sys.argv[1])
         .config("spark.task.resource.gpu.amount", "1")
         .config("spark.executorEnv.CUDA_VISIBLE_DEVICES", "5,7")
         .getOrCreate())


def choose(batches):
    import pandas as pd
    from pyspark import TaskContext
    from sparklstm.spark.scoring import _task_device

    ctx = TaskContext.get()
    for _ in batches:
        yield pd.DataFrame({"addresses": [list(ctx.resources()["gpu"].addresses)],
                            "auto": [_task_device("auto")], "cuda": [_task_device("cuda")],
                            "cpu": [_task_device("cpu")]})


rows = spark.range(12, numPartitions=12).mapInPandas(
    choose, "addresses array<string>, auto string, cuda string, cpu string").collect()
print(json.dumps([r.asDict() for r in rows]))
"""


def test_device_choice_follows_the_task_gpu_on_local_cluster(tmp_path):
    """Each task uses the GPU Spark assigned it, mapped through CUDA_VISIBLE_DEVICES (5,7 -> 0,1)."""
    script = tmp_path / "gpus.sh"
    script.write_text(GPU_SCRIPT)
    script.chmod(0o755)
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(GPU_JOB))
    result = subprocess.run([sys.executable, str(job), str(script)], env=ENV, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 12
    for r in rows:
        assert len(r["addresses"]) == 1 and r["addresses"][0] in ("5", "7")
        expected = {"5": "cuda:0", "7": "cuda:1"}[r["addresses"][0]]
        assert r["auto"] == expected and r["cuda"] == expected
        assert r["cpu"] == "cpu"  # an explicit cpu request wins over the task's GPU
