"""Scoring throughput: sparklstm's UDF against the alternatives, on one corpus and one model.

    python bench/score.py [--rows 20000] [--precisions fp32,bf16,int8] [--mean-tokens 160] [--large 0]
                          [--no-wide]

One generated corpus (log-normal lengths, mean ~150 tokens, max_len 256; ``--mean-tokens``
changes the mean) and one trained model (the default architecture), measured in one run:

  (a) bare in-process pipeline: tokenize + encode + forward with ``Predictor``, no Spark
  (b) sparklstm ``classify_udf`` end to end through Spark local[2] (noop sink)
  (c) ``pyspark.ml.functions.predict_batch_udf`` with a predict function that pads every batch
      to max_len in fp32 (what a user writes today)
  (d) a naive pandas UDF that loads the model in every batch

Prints docs/s, tokens/s, the ratios b/c and b/a, the corpus's padded/real steps (what b/c can
reach at one precision) and the share of it that b/c reaches, each precision's agreement with
fp32, and the peak RSS of Spark's Python workers. ``--large N`` also scores N generated rows made inside Spark
(never on the driver) and reports peak worker RSS, to show memory stays bounded.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from roofline import forward_flops_per_token, gemm_peak  # bench/roofline.py

from sparklstm import classify_udf, prep, train
from sparklstm.config import ModelConfig, PrepConfig, TrainConfig
from sparklstm.device import auto_precision
from sparklstm.predictor import Predictor
from sparklstm.spark.session import get_spark

# Letter-only words ("ba", "bb", ...): one token each under sparklstm's tokenizer.
WORDS = ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) for i in range(5000)]
SIGNAL = {0: ["refund", "invoice", "payment", "overdue"], 1: ["match", "goal", "league", "coach"]}


def make_texts(n: int, seed: int, *, mean_tokens: float = 160, max_tokens: int = 400):
    """Log-normal lengths with the given mean (sigma 0.6); Zipf-ish filler plus class words."""
    rng = np.random.default_rng(seed)
    sigma = 0.6
    lengths = np.clip(rng.lognormal(np.log(mean_tokens) - sigma**2 / 2, sigma, n), 3, max_tokens)
    probs = 1.0 / np.arange(1, len(WORDS) + 1)
    probs /= probs.sum()
    texts, labels = [], []
    for i, length in enumerate(lengths.astype(int)):
        label = i % 2
        words = list(rng.choice(WORDS, size=length, p=probs))
        for j in rng.integers(0, length, size=3):
            words[j] = SIGNAL[label][rng.integers(0, 4)]
        texts.append(" ".join(words))
        labels.append(str(label))
    return texts, labels


class RssMonitor(threading.Thread):
    """Samples the RSS of Spark's Python worker processes (pyspark.daemon / worker) twice a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_each = self.peak_total = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout
            rss = [int(line.split(None, 1)[0]) for line in out.splitlines()[1:]
                   if "pyspark.daemon" in line or "pyspark.worker" in line]
            if rss:
                self.peak_each = max(self.peak_each, max(rss))
                self.peak_total = max(self.peak_total, sum(rss))
            time.sleep(0.5)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def build_model(spark, workdir: Path, *, wide: bool) -> Path:
    texts, labels = make_texts(4000, seed=1)
    raw = workdir / "train.parquet"
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(raw)
    prep(spark, input_path=str(raw), out=workdir / "prepped", config=PrepConfig(max_len=256))
    train(prepped=workdir / "prepped", out=workdir / "model", progress=False, log=lambda m: None,
          train_config=TrainConfig(epochs=1), model_config=ModelConfig(wide=wide))
    return workdir / "model"


def padded_forward(p: Predictor, ids: list, *, batch_size: int | None = None) -> np.ndarray:
    """P(last class) of encoded texts, every batch padded to max_len, on ``p.device`` and in
    ``p.model``'s dtype, no autocast (every caller here passes an fp32 predictor): what users
    write today. One forward pass unless ``batch_size`` is given."""
    import torch

    out = np.empty(len(ids))
    step = batch_size or max(1, len(ids))
    with torch.inference_mode():
        for s in range(0, len(ids), step):
            chunk = ids[s : s + step]
            x = np.zeros((len(chunk), p.max_len), dtype=np.int64)  # (b, max_len) whatever the lengths
            for i, e in enumerate(chunk):
                x[i, : len(e)] = e
            lengths = torch.from_numpy(np.array([max(len(e), 1) for e in chunk]))
            probs = p.model.probabilities(p.model(torch.from_numpy(x).to(p.device),
                                                  lengths.to(p.device)))
            out[s : s + len(chunk)] = probs[:, -1].double().cpu().numpy()
    return out


def forward_padded(p: Predictor, texts) -> np.ndarray:
    """``padded_forward`` of raw texts (the predict function of (c) and (d))."""
    return padded_forward(p, [p.vocab.encode(t, max_len=p.max_len) for t in texts])


def naive_udf(model_dir: str):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def naive(texts: pd.Series) -> pd.Series:
        p = Predictor.from_dir(model_dir, precision="fp32")  # loaded for every Arrow batch
        return pd.Series(forward_padded(p, texts))

    return naive


def predict_batch(model_dir: str, batch_size: int):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType

    def make_predict_fn():
        # Once per Python worker (predict_batch_udf caches); fp32, what a user writes today.
        p = Predictor.from_dir(model_dir, precision="fp32")

        def predict(texts: np.ndarray) -> np.ndarray:
            return forward_padded(p, texts)

        return predict

    return predict_batch_udf(make_predict_fn, return_type=DoubleType(), batch_size=batch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--mean-tokens", type=float, default=160,
                    help="mean words per scored text before the max_len cut (160 gives ~146 tokens)")
    ap.add_argument("--large", type=int, default=0, help="also score this many rows made in Spark")
    ap.add_argument("--no-wide", dest="wide", action="store_false",
                    help="a model without the wide TF-IDF path (the default model before it)")
    ap.add_argument("--busy-neighbour", action="store_true",
                    help="time (a) and (b) again beside one busy process (a loop holding a core)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sparklstm-bench-"))
    spark = get_spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    model_dir = str(build_model(spark, workdir, wide=a.wide))

    texts, _ = make_texts(a.rows, seed=2, mean_tokens=a.mean_tokens)
    predictor = Predictor.from_dir(model_dir, batch_size=a.batch_size, precision="fp32")
    tokens = sum(len(e) for e in predictor.encode(texts))
    predictor.predict(texts[:512])  # warm-up
    results = {}
    ref = {}
    for precision in a.precisions.split(","):
        p = Predictor.from_dir(model_dir, batch_size=a.batch_size, precision=precision)
        p.predict(texts[:256])
        holder = {}
        secs = timed(lambda: holder.update(out=p.predict_arrays(texts)))
        results[f"a_{precision}"] = secs
        ref[precision] = holder["out"]

    df = spark.createDataFrame(pd.DataFrame({"text": texts})).repartition(8).cache()
    df.count()

    def run(column):
        df.withColumn("p", column).write.format("noop").mode("overwrite").save()

    monitor = RssMonitor()
    monitor.start()
    for precision in a.precisions.split(","):
        classify = classify_udf(spark, model_dir, batch_size=a.batch_size, precision=precision)
        run(classify("text"))  # warm-up: workers start, model loads once per worker
        results[f"b_{precision}"] = timed(lambda: run(classify("text")))
    monitor.stop.set()
    pbu = predict_batch(model_dir, a.batch_size)
    run(pbu("text"))
    results["c"] = timed(lambda: run(pbu("text")))
    if not a.skip_naive:
        results["d"] = timed(lambda: run(naive_udf(model_dir)("text")))

    n = len(texts)
    print(f"\nrows {n}, real tokens {tokens} (mean {tokens / n:.0f}), batch {a.batch_size}, "
          f"Spark local[2]; (a) uses torch's {__import__('torch').get_num_threads()} threads")
    print(f"{'pipeline':44s} {'docs/s':>9s} {'tokens/s':>10s}")
    names = {"c": "(c) predict_batch_udf, pad to max_len, fp32", "d": "(d) naive pandas UDF, load per batch"}
    for key, secs in results.items():
        name = names.get(key) or (f"(a) in-process Predictor {key[2:]}" if key[0] == "a"
                                  else f"(b) sparklstm classify_udf {key[2:]}")
        print(f"{name:44s} {n / secs:9.1f} {tokens / secs:10.0f}")
    b, c, a_ = results["b_fp32"], results["c"], results["a_fp32"]
    best = min(v for k, v in results.items() if k.startswith("b_"))
    # (c) runs the same network over n * max_len steps where (b) runs over the real tokens only:
    # at the same precision that ratio bounds what removing padding can gain over (c).
    bound = n * predictor.max_len / tokens
    print(f"\nb/c (fp32)        {c / b:5.2f}   b/c (best precision) {c / best:5.2f}   "
          f"(padded/real steps of this corpus: {bound:.2f})")
    # (b)'s real tokens/s over (c)'s padded steps/s: 1.0 would mean (b) computes each step as
    # fast as (c) does, with nothing lost to sorting, re-batching, Spark or Arrow.
    print(f"b/c / bound (fp32) {c / b / bound:5.2f}")
    print(f"b/a (fp32)        {a_ / b:5.2f}")
    # sparklstm's defaults (precision="auto") against what a user writes today, on its own line.
    default = auto_precision("auto", "cpu")
    if f"b_{default}" in results:
        print(f"b/c (default settings) {c / results[f'b_{default}']:.2f}   (precision auto = {default})")
    else:
        print(f"b/c (default settings) not measured: add {default} to --precisions")
    if not a.skip_naive:
        print(f"b/d (fp32)        {results['d'] / b:5.2f}")
    # The useful FLOP rate: real tokens x the LSTM matmul FLOP per token (bench/roofline.py), per
    # Spark task thread (local[2]: two), against a GEMM of the model's shape in the same run.
    flops = forward_flops_per_token(ModelConfig())
    for precision in a.precisions.split(","):
        if precision in ("fp32", "bf16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            peak = gemm_peak(dtype)
            torch.set_num_threads(threads)
            rate = tokens / results[f"b_{precision}"] * flops / 2 / 1e9
            print(f"(b) {precision}: {n / results[f'b_{precision}']:.1f} docs/s, useful {rate:.1f} "
                  f"GFLOP/s per task thread = {rate / peak:.2f} of the GEMM peak ({peak:.1f})")
    # Where (b)'s time goes, in thread-seconds (two single-thread tasks): tokenizing + encoding and
    # the forward pass (Predictor, one thread, the same length-sorted batches), the rest being
    # Arrow, Spark and the UDF's glue.
    if f"b_{default}" in results:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        p1 = Predictor.from_dir(model_dir, batch_size=a.batch_size, precision=default)
        held = {}
        encode = timed(lambda: held.update(ids=[i for i in p1.encode(texts) if i is not None]))
        forward = timed(lambda: p1.predict_ids(held["ids"]))
        torch.set_num_threads(threads)
        spent = 2 * results[f"b_{default}"]
        print(f"(b) {default} thread-seconds {spent:.2f}: tokenize + encode {encode:.2f} "
              f"({encode / spent:.0%}), forward {forward:.2f} ({forward / spent:.0%}), Arrow, Spark "
              f"and glue {spent - encode - forward:.2f} ({(spent - encode - forward) / spent:.0%})")
    base_labels, base_probs = ref["fp32"][1], ref["fp32"][2]
    for precision in ref:
        if precision != "fp32":
            _, labels, probs = ref[precision]
            print(f"{precision} vs fp32: identical labels {np.mean(labels == base_labels):.4f}, "
                  f"max |prob diff| {np.nanmax(np.abs(probs - base_probs)):.4f}")
    print(f"peak Python worker RSS: {monitor.peak_each / 1024:.0f} MiB per worker, "
          f"{monitor.peak_total / 1024:.0f} MiB all workers")

    if a.busy_neighbour:
        # What a shared machine does to the defaults: (a) as `sparklstm predict` runs it (torch's
        # threads, then one), (b) with its default precision (Spark tasks use one thread each).
        import sys

        threads = torch.get_num_threads()
        p = Predictor.from_dir(model_dir, batch_size=a.batch_size)
        classify = classify_udf(spark, model_dir, batch_size=a.batch_size)
        cases = {f"(a) Predictor, {threads} threads": lambda: p.predict_arrays(texts),
                 "(a) Predictor, 1 thread": lambda: p.predict_arrays(texts),
                 "(b) classify_udf, default settings": lambda: run(classify("text"))}
        print("\nbeside one busy process:")
        for name, fn in cases.items():
            torch.set_num_threads(1 if "1 thread" in name else threads)
            idle = timed(fn)
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                busy = timed(fn)
            finally:
                neighbour.kill()
                neighbour.wait()
            print(f"{name:44s} idle {n / idle:8.1f} docs/s, busy {n / busy:8.1f} docs/s, "
                  f"kept {idle / busy:.2f}")
        torch.set_num_threads(threads)

    if a.large:
        from pyspark.sql import functions as F

        words = F.array(*[F.lit(w) for w in WORDS[:2000]])
        big = spark.range(a.large, numPartitions=16).select(
            F.concat_ws(" ", F.transform(F.sequence(F.lit(1), (F.rand(7) * 40 + 5).cast("int")),
                                         lambda i: F.element_at(words, (F.rand() * 2000 + 1).cast("int")))
                        ).alias("text"))
        monitor = RssMonitor()
        monitor.start()
        classify = classify_udf(spark, model_dir, batch_size=a.batch_size)
        secs = timed(lambda: big.withColumn("p", classify("text")).write.format("noop").mode("overwrite").save())
        monitor.stop.set()
        print(f"large: {a.large} rows (mean ~25 tokens) in {secs:.0f} s = {a.large / secs:.0f} docs/s; "
              f"peak Python worker RSS {monitor.peak_each / 1024:.0f} MiB per worker, "
              f"{monitor.peak_total / 1024:.0f} MiB all workers")
    if a.json:
        Path(a.json).write_text(json.dumps({k: n / v for k, v in results.items()}, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
