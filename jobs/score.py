"""spark-submit entry for batch scoring: argument parsing + one call.

    spark-submit --master spark://host:7077 jobs/score.py --input corpus/ --model model/ \
        --out scored/
"""

import argparse
import sys

from sparklstm.config import add_score_arguments, score_config_from_args
from sparklstm.errors import SparklstmError
from sparklstm import score
from sparklstm.spark.session import get_spark


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    add_score_arguments(p)
    p.add_argument("--format")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = score_config_from_args(a)
        n = score(get_spark(app_name="sparklstm-score"), input_path=a.input, model_dir=a.model,
                  out=a.out, text_col=cfg.text_col, pred_col=cfg.pred_col,
                  batch_size=cfg.batch_size, device=cfg.device, precision=cfg.precision,
                  fmt=a.format,
                  overwrite=a.overwrite)
    except SparklstmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scored {n} rows -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
