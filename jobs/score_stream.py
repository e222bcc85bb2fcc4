"""spark-submit entry for streaming scoring: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/score_stream.py --input incoming/ \
        --model model/ --out scored/ --checkpoint ckpt/ [--trigger available-now]
"""

import argparse
import sys

try:
    from sparklstm.config import add_score_arguments, score_config_from_args
    from sparklstm.spark.session import job_spark, run_job
    from sparklstm.spark.streaming import TRIGGERS, score_stream
except ImportError as e:  # spark-submit ran a Python without sparklstm: PYSPARK_PYTHON unset?
    sys.exit(f"error: {sys.executable} cannot import {e.name}: run spark-submit with "
             "PYSPARK_PYTHON set to the Python that has sparklstm installed")


def run(argv) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="directory of Parquet files to watch")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--trigger", choices=TRIGGERS, default="processing-time")
    p.add_argument("--interval", default="10 seconds")
    p.add_argument("--max-files-per-trigger", type=int)
    p.add_argument("--schema", help="DDL, e.g. 'id BIGINT, text STRING'")
    p.add_argument("--allow-model-change", action="store_true")
    add_score_arguments(p)
    a = p.parse_args(argv)
    cfg = score_config_from_args(a)
    summary = score_stream(
        job_spark(app_name="sparklstm-score-stream"), input_dir=a.input, model_dir=a.model,
        out=a.out, checkpoint=a.checkpoint, trigger=a.trigger, interval=a.interval,
        max_files_per_trigger=a.max_files_per_trigger, schema=a.schema,
        allow_model_change=a.allow_model_change, text_col=cfg.text_col,
        pred_col=cfg.pred_col, batch_size=cfg.batch_size, device=cfg.device,
        precision=cfg.precision, log=lambda m: print(m, file=sys.stderr, flush=True))
    return (f"{'stopped' if summary.stopped else 'done'}: scored {summary.rows} rows in "
            f"{summary.batches} batches -> {a.out} (model {summary.model_id})")


def main(argv=None) -> int:
    return run_job(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
