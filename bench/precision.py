"""Does bf16 scoring change answers, and is it faster? fp32 against bf16 on the real corpora of
bench/accuracy.py.

    python bench/precision.py --name spam --corpus W/spam.parquet --prepped W/spam-prepped \
        --model W/spam-model-s0 [--model W/spam-model-s1 ...] [--threads 1] [--json out.json]

``W`` is a bench/accuracy.py work directory (its corpus Parquet, prepped/ and trained models).
bf16 is what ``precision="auto"`` scores in where it measures faster than fp32.
For each model, the local ``Predictor`` (the code the Spark UDF runs in each worker) scores every
text of the corpus in fp32 and in bf16; the script prints test macro-F1 in both precisions (the
test split recomputed with prep's hash and checked against prepped/, as bench/accuracy.py does),
and the share of rows, test and all, whose label is the same in both, with the largest
probability difference and the time of each pass.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import macro_f1, same_split  # noqa: E402

from sparklstm.config import PrepConfig  # noqa: E402
from sparklstm.device import auto_precision  # noqa: E402
from sparklstm.predictor import Predictor  # noqa: E402
from sparklstm.spark.prep import load_prepped  # noqa: E402
from sparklstm.spark.session import get_spark  # noqa: E402


def score(model_dir: Path, texts: list[str], precision: str) -> tuple[np.ndarray, float]:
    """Probabilities (N, C) and seconds for one pass of the Predictor over ``texts``."""
    predictor = Predictor.from_dir(model_dir, precision=precision)
    started = time.perf_counter()
    _, _, probs = predictor.predict_arrays(texts)
    return probs, time.perf_counter() - started


def compare(model_dir: Path, texts: list[str], test: np.ndarray, y_test: list[str]) -> dict:
    labels = Predictor.from_dir(model_dir).labels
    p32, s32 = score(model_dir, texts, "fp32")
    p16, s16 = score(model_dir, texts, "bf16")
    valid = ~np.isnan(p32).any(axis=1)
    a32, a16 = p32[valid].argmax(axis=1), p16[valid].argmax(axis=1)
    y = [labels.index(v) for v in y_test]
    t32, t16 = p32[test].argmax(axis=1), p16[test].argmax(axis=1)  # class indices (n_test,)
    f32 = macro_f1(y, t32, labels)["macro_f1"]
    f16 = macro_f1(y, t16, labels)["macro_f1"]
    return {
        "model": str(model_dir), "rows": int(valid.sum()), "test_rows": int(test.sum()),
        "test_macro_f1_fp32": round(f32, 4), "test_macro_f1_bf16": round(f16, 4),
        "macro_f1_delta": round(f16 - f32, 4),
        "label_agreement_test": float(np.mean(t32 == t16)),
        "label_agreement_all": float(np.mean(a32 == a16)),
        "max_probability_diff": float(np.abs(p32[valid] - p16[valid]).max()),
        "seconds_fp32": round(s32, 1), "seconds_bf16": round(s16, 1),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--corpus", type=Path, required=True, help="the corpus Parquet (text, label)")
    ap.add_argument("--prepped", type=Path, required=True)
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(f"scoring precision auto on this machine's CPU: {auto_precision('auto', 'cpu')}")
    df = pd.read_parquet(args.corpus)
    df = df[df["text"].str.strip().astype(bool)].reset_index(drop=True)
    spark = get_spark(master="local[2]")
    _, _, info = load_prepped(args.prepped)
    cfg = PrepConfig(**info["settings"])  # the settings prep ran with (hash seed, fractions)
    split = same_split(spark, df, args.prepped, cfg)
    texts = split["test"]["text"].tolist() + split["train"]["text"].tolist() + split["val"]["text"].tolist()
    test = np.zeros(len(texts), dtype=bool)
    test[: len(split["test"])] = True
    results = []
    for model_dir in args.model:
        r = compare(model_dir, texts, test, split["test"]["label"].tolist())
        results.append(r)
        print(f"[{args.name}] {model_dir.name}: test macro-F1 fp32 {r['test_macro_f1_fp32']:.4f} "
              f"bf16 {r['test_macro_f1_bf16']:.4f} (delta {r['macro_f1_delta']:+.4f}); labels agree "
              f"{100 * r['label_agreement_test']:.2f}% of {r['test_rows']:,} test rows, "
              f"{100 * r['label_agreement_all']:.3f}% of all {r['rows']:,}; max |dp| "
              f"{r['max_probability_diff']:.4f}; {r['seconds_fp32']} s fp32, {r['seconds_bf16']} s bf16",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"corpus": args.name, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
