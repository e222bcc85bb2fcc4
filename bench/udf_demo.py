"""Scoring docs/s on the demo corpus: the Spark UDF against in-process inference, in one run.

    python bench/udf_demo.py [--model sparklstm-demo/model] [--repeat 5] [--master local[2]]

(a) in-process: ``Predictor.predict`` on all texts in one Python process (no Spark);
(b) Spark: ``classify_udf`` over the same texts (repeated ``--repeat`` times) through local[2],
    written to Spark's no-op sink so only scoring is timed. Spark gets both cores; (a) uses
    torch's default threads (also both cores).
"""

import argparse
import time

import pandas as pd

from sparklstm.cli import DEMO_CORPUS
from sparklstm.predictor import Predictor
from sparklstm import classify_udf
from sparklstm.spark.session import get_spark


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sparklstm-demo/model")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--master", default="local[2]")
    a = p.parse_args()
    texts = pd.read_json(DEMO_CORPUS, lines=True)["text"].tolist() * a.repeat

    predictor = Predictor.from_dir(a.model)
    predictor.predict(texts[:256])  # warm-up
    started = time.perf_counter()
    predictor.predict(texts)
    local = len(texts) / (time.perf_counter() - started)

    spark = get_spark(master=a.master)
    df = spark.createDataFrame(pd.DataFrame({"text": texts})).repartition(4).cache()
    df.count()
    classify = classify_udf(spark, a.model)
    df.limit(100).withColumn("p", classify("text")).write.format("noop").mode("overwrite").save()
    started = time.perf_counter()
    df.withColumn("p", classify("text")).write.format("noop").mode("overwrite").save()
    udf = len(texts) / (time.perf_counter() - started)
    print(f"rows {len(texts)}, master {a.master}")
    print(f"(a) in-process Predictor : {local:8.1f} docs/s")
    print(f"(b) Spark classify_udf   : {udf:8.1f} docs/s")
    print(f"b/a                      : {udf / local:8.2f}")


if __name__ == "__main__":
    main()
