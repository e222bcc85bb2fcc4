"""Prep throughput: Spark prep on local[2] against a single-process pandas loop.

    python bench/prep.py [--rows 1000000] [--files 8] [--repeats 3]

One generated corpus of short documents (log-normal lengths, mean ~20 tokens, Zipf word
frequencies over 50,000 words, 20 labels), written as Parquet. Measured in one run:

  (a) a single-process loop: pandas/pyarrow read, the same ``tokenize``, the same split (Spark's
      ``xxhash64`` reproduced with the ``xxhash`` package), a Counter for the vocabulary, encode,
      pyarrow writes: what one would write without Spark
  (b) ``sparklstm.spark.prep`` through Spark local[2] (session started and warmed up first: in a data
      workflow the session already exists)

The two run alternately ``--repeats`` times: this 2-core VM's speed drifts by +-15% between
runs, and Spark's first large run also pays for JIT compilation. The table shows each one's best
time; b/a is best against best, printed with the ratio of the medians.

Both must produce the same vocabulary and the same per-split, per-label counts; the script checks
that before it prints docs/s and the ratio b/a.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparklstm.config import PrepConfig
from sparklstm import prep
from sparklstm.spark.session import get_spark
from sparklstm.text import Vocab, tokenize

N_WORDS = 50_000
N_LABELS = 20


def make_corpus(path: Path, n: int, files: int, seed: int = 0) -> int:
    """Write ``n`` short labelled documents as ``files`` Parquet files; returns the token count."""
    rng = np.random.default_rng(seed)
    # Letter-only words: one token each. Zipf-like frequencies so min_freq/max_vocab matter.
    words = np.array(["".join(chr(97 + (i // 26**k) % 26) for k in range(4)) for i in range(N_WORDS)])
    probs = 1.0 / np.arange(1, N_WORDS + 1) ** 1.05
    probs /= probs.sum()
    path.mkdir(parents=True)
    total = 0
    for f, rows in enumerate(np.array_split(np.arange(n), files)):
        lengths = np.clip(rng.lognormal(np.log(20) - 0.18, 0.6, len(rows)), 1, 200).astype(int)
        flat = words[rng.choice(N_WORDS, size=lengths.sum(), p=probs)]
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(ws) for ws in np.split(flat, cuts)]
        labels = [f"topic{k:02d}" for k in rng.integers(0, N_LABELS, len(rows))]
        pq.write_table(pa.table({"text": texts, "label": labels}), path / f"part-{f:03d}.parquet")
        total += int(lengths.sum())
    return total


def spark_split(texts: list[str], cfg: PrepConfig) -> list[str]:
    """The split prep assigns: pmod(xxhash64(seed, text), 1e6) / 1e6, as Spark computes it."""
    import xxhash

    # Spark hashes the seed literal (an int, 4 bytes little-endian) first, then the text's UTF-8
    # bytes with that hash as the seed.
    seed = xxhash.xxh64_intdigest(cfg.split_seed.to_bytes(4, "little"), seed=42)
    out = []
    for t in texts:
        h = xxhash.xxh64_intdigest(t.encode("utf-8"), seed=seed)
        h = h - (1 << 64) if h >= (1 << 63) else h  # Spark's long is signed; pmod is non-negative
        u = (h % 1_000_000) / 1_000_000
        out.append("test" if u < cfg.test_fraction
                   else "val" if u < cfg.test_fraction + cfg.val_fraction else "train")
    return out


def pandas_prep(input_dir: Path, out: Path, cfg: PrepConfig) -> dict:
    """Single-process prep with the same semantics as sparklstm.spark.prep (no Spark)."""
    df = pq.read_table(input_dir).to_pandas()
    df = df[df["text"].notna() & df["label"].notna()]
    texts = df["text"].tolist()
    labels_col = df["label"].astype(str).tolist()
    tokens = [tokenize(t, lowercase=cfg.lowercase) for t in texts]
    splits = spark_split(texts, cfg)
    keep = [i for i, ts in enumerate(tokens) if ts]
    counter: Counter = Counter()
    for i in keep:
        if splits[i] == "train":
            counter.update(tokens[i][: cfg.max_len])
    top = sorted(((c, t) for t, c in counter.items() if c >= cfg.min_freq), key=lambda x: (-x[0], x[1]))
    vocab = Vocab([t for _, t in top[: cfg.max_vocab - 2]], lowercase=cfg.lowercase)
    labels = sorted({labels_col[i] for i in keep})
    label_id = {lab: i for i, lab in enumerate(labels)}
    counts = {s: Counter() for s in ("train", "val", "test")}
    rows = {s: ([], [], []) for s in counts}
    for i in keep:
        ids, lids, labs = rows[splits[i]]
        ids.append(vocab.encode_tokens(tokens[i], max_len=cfg.max_len))
        lids.append(label_id[labels_col[i]])
        labs.append(labels_col[i])
        counts[splits[i]][labels_col[i]] += 1
    out.mkdir(parents=True)
    for s, (ids, lids, labs) in rows.items():
        table = pa.table({"ids": pa.array(ids, type=pa.list_(pa.int32())),
                          "label_id": pa.array(lids, type=pa.int32()), "label": labs})
        (out / s).mkdir()
        pq.write_table(table, out / s / "part-0.parquet")
    vocab.save(out / "vocab.json")
    (out / "labels.json").write_text(json.dumps(labels))
    return {"vocab": vocab.tokens, "labels": labels,
            "counts": {s: dict(c) for s, c in counts.items()}}


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each pipeline")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparklstm-bench-prep-"))
    cfg = PrepConfig()
    print(f"generating {a.rows:,} documents ...", flush=True)
    n_tokens = make_corpus(work / "input", a.rows, a.files)

    spark = get_spark(master="local[2]")
    make_corpus(work / "warm", 20_000, 2, seed=1)
    prep(spark, input_path=str(work / "warm"), out=work / "warm-out", config=cfg)  # JVM + workers warm

    runs_a, runs_b = [], []
    for _ in range(a.repeats):
        for out in ("pandas-out", "spark-out"):
            shutil.rmtree(work / out, ignore_errors=True)
        secs, ref = timed(lambda: pandas_prep(work / "input", work / "pandas-out", cfg))
        runs_a.append(secs)
        secs, summary = timed(lambda: prep(spark, input_path=str(work / "input"),
                                           out=work / "spark-out", config=cfg))
        runs_b.append(secs)
        print(f"  run {len(runs_a)}: (a) {runs_a[-1]:.1f} s, (b) {runs_b[-1]:.1f} s", flush=True)
    secs_a, secs_b = min(runs_a), min(runs_b)
    spark_vocab = Vocab.load(work / "spark-out" / "vocab.json").tokens
    spark_counts = {s: {k: v for k, v in c.items() if v} for s, c in summary["counts"].items()}
    same = (spark_vocab == ref["vocab"] and summary["labels"] == ref["labels"]
            and spark_counts == ref["counts"])

    n = a.rows
    print(f"\n{n:,} documents, {n_tokens:,} tokens (mean {n_tokens / n:.1f}), {a.files} Parquet files, "
          f"vocabulary {len(spark_vocab):,}")
    print(f"{'pipeline':40s} {'seconds':>8s} {'docs/s':>9s}")
    print(f"{'(a) single-process pandas loop':40s} {secs_a:8.1f} {n / secs_a:9.0f}")
    print(f"{'(b) sparklstm prep, Spark local[2]':40s} {secs_b:8.1f} {n / secs_b:9.0f}")
    median = statistics.median(runs_a) / statistics.median(runs_b)
    print(f"\nb/a {secs_a / secs_b:.2f} (best of {a.repeats}; medians: {median:.2f})   "
          f"identical vocabulary and split counts: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": n, "pandas_s": runs_a, "spark_s": runs_b,
                                            "ratio": secs_a / secs_b, "median_ratio": median,
                                            "identical": same}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    if not same:
        raise SystemExit("outputs differ: the comparison is not like for like")


if __name__ == "__main__":
    main()
