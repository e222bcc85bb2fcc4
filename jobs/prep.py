"""spark-submit entry for prep: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/prep.py --input raw/ --out prepped/ \
        --text-col text --label-col label
"""

import argparse
import sys

from sparklstm.config import load_config
from sparklstm.errors import SparklstmError
from sparklstm import prep
from sparklstm.spark.session import get_spark


def main(argv=None) -> int:
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
    try:
        cfg = load_config(path=a.config, overrides={"prep": {
            "text_col": a.text_col, "label_col": a.label_col, "max_len": a.max_len,
            "min_freq": a.min_freq, "max_vocab": a.max_vocab}}).prep
        summary = prep(get_spark(app_name="sparklstm-prep"), input_path=a.input, out=a.out,
                       config=cfg, fmt=a.format, overwrite=a.overwrite)
    except SparklstmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prepped {summary['rows_kept']} rows -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
