"""Spark prep: raw labelled text -> prepped/ (token-id Parquet splits, vocabulary, labels).

Steps, all distributed (the driver only ever collects the vocabulary, the label set and counts):

1. read Parquet/CSV/JSON; keep rows with a text and a label
2. split by a seeded hash of the text: identical texts always land in the same split, a text's
   split never changes when the corpus grows, and each label is split in the same proportions
   in expectation
3. pass 1 (``mapInArrow``, ``local_ids.py``): tokenize each text once with
   ``text.tokenize`` (the same function training and scoring use) into partition-local token ids,
   and count, per partition, the tokens of the *train* split (so val/test never leak into the
   vocabulary) and the rows and tokens per (split, label); the output is persisted. Spark sums
   the partial counts and keeps tokens with count >= min_freq, the most frequent max_vocab - 2
4. pass 2 (``mapInArrow`` over the persisted pass 1): local ids -> vocabulary ids with a numpy
   take (truncated to max_len in pass 1); one partitioned write gives ``train/``, ``val/``,
   ``test/`` Parquet with ``ids: array<int>, label_id: int, label: string``, plus vocab.json,
   labels.json, prep.json.

Each text is tokenized once. Shipping every token *string* Python -> JVM -> Python was 2.5x
slower end to end; tokenizing twice (pass 2 re-reading the input) was 0.79x of a single-process
loop; local ids move one int per token and one string per distinct token per partition
(bench/prep.py, README).
"""


import json
import shutil
import time
from pathlib import Path

from ..config import PrepConfig, as_dict
from ..errors import SparklstmError
from .tables import first_line, is_empty, read_table, require_columns, spark_errors
from .local_ids import (KIND_COUNT, KIND_DICT, KIND_ROW, KIND_STATS, PASS1_SCHEMA, PASS2_SCHEMA,
                        remap_partition, tokenize_partition)
from .session import session_conf
from .shipping import ship_value
from ..text import Vocab

# Runtime SQL confs prep sets for its own queries only (restored after each; see prep()).
ARROW_MAX_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"
CACHE_COMPRESSED = "spark.sql.inMemoryColumnarStorage.compressed"
ARROW_MAX_RECORDS = "spark.sql.execution.arrow.maxRecordsPerBatch"  # read, never set

SPLITS = ("train", "val", "test")
MAX_CLASSES = 10_000  # more distinct labels than this is almost surely the wrong column
_BUCKETS = 1_000_000


def _write_splits(encoded, out: Path) -> None:
    """One partitioned write, then ``split=train`` -> ``train`` (a split with no rows still gets a
    directory with an empty Parquet file, as readers expect)."""
    staging = out / "_splits"
    encoded.write.partitionBy("split").parquet(str(staging))
    for name in SPLITS:
        part = staging / f"split={name}"
        if part.exists():
            part.rename(out / name)
        else:
            encoded.where("false").drop("split").write.parquet(str(out / name))
    shutil.rmtree(staging)


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise SparklstmError(f"output {out} exists and is not empty (pass --overwrite to replace it)")
        if not (out / "prep.json").exists():
            # Refuse to wipe a directory that isn't ours, even with --overwrite.
            raise SparklstmError(f"refusing to overwrite {out}: it is not a prepped/ directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def prep(spark, *, input_path: str, out: str | Path, config: PrepConfig | None = None,
         fmt: str | None = None, overwrite: bool = False) -> dict:
    """Run prep on a table (Parquet, CSV, JSON, ...); returns the summary also written to
    ``out/prep.json``.

    Example
    -------
    >>> summary = prep(spark, input_path="emails.parquet", out="prepped/")   # doctest: +SKIP
    >>> summary["counts"]["train"]                                           # doctest: +SKIP
    {'ham': 960, 'spam': 640}
    """
    cfg = config or PrepConfig()
    _check_config(cfg)
    df = read_table(spark, input_path, fmt=fmt)
    return prep_dataframe(df, out=out, config=cfg, overwrite=overwrite, source=str(input_path))


def _check_config(cfg: PrepConfig) -> None:
    if not 0 <= cfg.val_fraction < 1 or not 0 <= cfg.test_fraction < 1 \
            or cfg.val_fraction + cfg.test_fraction >= 1:
        raise SparklstmError("val_fraction and test_fraction must be >= 0 and leave room for train")
    if cfg.max_len < 1 or cfg.max_vocab < 3 or cfg.min_freq < 1:
        raise SparklstmError("max_len >= 1, max_vocab >= 3 and min_freq >= 1 are required")


def prep_dataframe(df, *, out: str | Path, config: PrepConfig | None = None,
                   overwrite: bool = False, source: str = "the DataFrame") -> dict:
    """Run prep on a DataFrame with the config's text and label columns (what :func:`prep` and
    the Spark ML estimator call); ``source`` names it in errors and in prep.json."""
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from .workers import check_workers

    cfg = config or PrepConfig()
    _check_config(cfg)
    spark = df.sparkSession
    out = Path(out)
    started = time.time()
    require_columns(df, {cfg.text_col: "text", cfg.label_col: "label"}, source=source)
    if is_empty(df):
        raise SparklstmError(f"input {source} has no rows")
    check_workers(spark)  # one line if the Python workers cannot import sparklstm

    try:
        u = F.pmod(F.xxhash64(F.lit(cfg.split_seed), F.col("text")), F.lit(_BUCKETS)) / _BUCKETS
        split = (F.when(u < cfg.test_fraction, "test")
                 .when(u < cfg.test_fraction + cfg.val_fraction, "val").otherwise("train"))
        rows = df.select(
            F.col(cfg.text_col).alias("text"),
            F.col(cfg.label_col).cast("string").alias("label"),
        ).withColumn("split", split)
        # Pass 1: tokenized once, into partition-local ids (local_ids.py), persisted
        # for pass 2. Spilled to disk when it does not fit in memory.
        partial = (rows.mapInArrow(tokenize_partition(cfg.lowercase, cfg.max_len), PASS1_SCHEMA)
                   .persist(StorageLevel.MEMORY_AND_DISK))
        # This first action builds the cache. Uncompressed: the cache lives only until prep
        # returns, and compressing it took ~5% of the JVM's CPU (JFR); measured 6% faster at 1M rows.
        with session_conf(spark, {CACHE_COMPRESSED: "false"}):
            stats = (partial.where(F.col("kind") == KIND_STATS)
                     .groupBy("split", "label")
                     .agg(F.sum("n").alias("n"), F.sum("tokens").alias("tokens"),
                          F.sum("truncated").alias("truncated"))
                     .collect())
        # The classes are the labels of the rows kept: a label seen only on dropped rows (null or
        # token-less text) would be a class without a single example.
        labels = sorted({r["label"] for r in stats if r["label"] is not None})
        if len(labels) > MAX_CLASSES:
            partial.unpersist()
            raise SparklstmError(f"label column {cfg.label_col!r} has over {MAX_CLASSES} distinct values")
        if len(labels) < 2:
            partial.unpersist()
            only = f" ({labels[0]!r})" if labels else ""
            raise SparklstmError(
                f"label column {cfg.label_col!r} has {len(labels)} class{only}; need at least 2"
            )
        _prepare_output(out, overwrite)

        # Distributed sums of the partial counts; only the kept vocabulary reaches the driver.
        top = (
            partial.where(F.col("kind") == KIND_COUNT)
            .groupBy("token").agg(F.sum("n").alias("count"))
            .where(F.col("count") >= cfg.min_freq)
            .orderBy(F.desc("count"), F.asc("token"))
            .limit(cfg.max_vocab - 2)
            .collect()
        )
        vocab = Vocab([r["token"] for r in top], lowercase=cfg.lowercase)

        # Pass 2: local ids -> vocabulary ids, over the same persisted partitions, in order.
        label_ids = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(i))])
        encoded = (partial.where(F.col("kind").isin(KIND_DICT, KIND_ROW))
                   .select("kind", "token", "local_id", "local_ids", "label", "split")
                   .mapInArrow(remap_partition(ship_value(spark, vocab)), PASS2_SCHEMA)
                   .select("ids", label_ids[F.col("label")].cast("int").alias("label_id"),
                           "label", "split"))
        try:
            # Spark measures the Arrow batch it feeds Python after every row, to honour the 64 MB
            # byte cap; that check took ~18% of the JVM's CPU in prep (JFR). Pass 2's rows are at
            # most max_len ids (or one token), so its batches are bounded by the row cap alone
            # (10,000 rows by default: <= 10 MB at max_len 256). Pass 1's texts keep the byte cap.
            # Only while a row cap is set (<= 0 means unlimited, and then the byte cap stays).
            rows_capped = int(spark.conf.get(ARROW_MAX_RECORDS, "10000")) > 0
            no_check = {ARROW_MAX_BYTES: str(2**31 - 1)} if rows_capped else {}  # Int.MaxValue
            with session_conf(spark, no_check):
                _write_splits(encoded, out)
        finally:
            partial.unpersist()
    except spark_errors() as e:
        raise SparklstmError(f"prep failed: {first_line(e)}") from None

    counts = {s: {lab: 0 for lab in labels} for s in SPLITS}
    n_tokens = truncated = total_in = 0
    for r in stats:
        total_in += r["n"]
        if r["label"] is None:
            continue
        counts[r["split"]][r["label"]] = r["n"]
        n_tokens += r["tokens"]
        truncated += r["truncated"]
    kept = sum(sum(c.values()) for c in counts.values())
    summary = {
        "input": source,
        "settings": as_dict(cfg),
        "labels": labels,
        "vocab_size": len(vocab),
        "rows_in": total_in,
        "rows_kept": kept,
        "rows_dropped": total_in - kept,  # null text or label, or no tokens
        "counts": counts,
        "mean_tokens": n_tokens / max(kept, 1),
        "truncated_fraction": truncated / max(kept, 1),
        "seconds": round(time.time() - started, 2),
    }
    vocab.save(out / "vocab.json")
    (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))
    (out / "prep.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def load_prepped(path) -> tuple:
    """vocab, labels and prep.json of a prepped/ directory, with a clear error if it is not one."""
    path = Path(path)
    need = ["vocab.json", "labels.json", "prep.json", *SPLITS]
    missing = [n for n in need if not (path / n).exists()]
    if missing:
        raise SparklstmError(f"{path} is not a prepped/ directory (missing {', '.join(missing)})")
    labels = json.loads((path / "labels.json").read_text())
    return Vocab.load(path / "vocab.json"), labels, json.loads((path / "prep.json").read_text())
