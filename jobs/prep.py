"""spark-submit entry for prep: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/prep.py --input raw/ --out prepped/ \
        --text-col text --label-col label
"""

import argparse
import sys

try:
    from sparklstm import prep
    from sparklstm.config import load_config
    from sparklstm.spark.session import job_spark, run_job
except ImportError as e:  # spark-submit ran a Python without sparklstm: PYSPARK_PYTHON unset?
    sys.exit(f"error: {sys.executable} cannot import {e.name}: run spark-submit with "
             "PYSPARK_PYTHON set to the Python that has sparklstm installed")


def run(argv) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--text-col")
    p.add_argument("--label-col")
    p.add_argument("--format")
    p.add_argument("--max-len", type=int)
    p.add_argument("--min-freq", type=int)
    p.add_argument("--max-vocab", type=int)
    p.add_argument("--config")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    cfg = load_config(path=a.config, overrides={"prep": {
        "text_col": a.text_col, "label_col": a.label_col, "max_len": a.max_len,
        "min_freq": a.min_freq, "max_vocab": a.max_vocab}}).prep
    summary = prep(job_spark(app_name="sparklstm-prep"), input_path=a.input, out=a.out,
                   config=cfg, fmt=a.format, overwrite=a.overwrite)
    return f"prepped {summary['rows_kept']} rows -> {a.out}"


def main(argv=None) -> int:
    return run_job(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
