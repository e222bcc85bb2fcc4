"""spark-submit entry for batch scoring: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/score.py --input corpus/ --model model/ \
        --out scored/
"""

import argparse
import sys

try:
    from sparklstm import score
    from sparklstm.config import add_score_arguments, score_config_from_args
    from sparklstm.spark.session import job_spark, run_job
except ImportError as e:  # spark-submit ran a Python without sparklstm: PYSPARK_PYTHON unset?
    sys.exit(f"error: {sys.executable} cannot import {e.name}: run spark-submit with "
             "PYSPARK_PYTHON set to the Python that has sparklstm installed")


def run(argv) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    add_score_arguments(p)
    p.add_argument("--format")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    cfg = score_config_from_args(a)
    n = score(job_spark(app_name="sparklstm-score"), input_path=a.input, model_dir=a.model,
              out=a.out, text_col=cfg.text_col, pred_col=cfg.pred_col, batch_size=cfg.batch_size,
              device=cfg.device, precision=cfg.precision, fmt=a.format, overwrite=a.overwrite)
    return f"scored {n} rows -> {a.out}"


def main(argv=None) -> int:
    return run_job(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
