"""Spark prep: raw labelled text -> prepped/ (token-id Parquet splits, vocabulary, labels).

Steps, all distributed (the driver only ever collects the vocabulary, the label set and counts):

1. read Parquet/CSV/JSON; keep rows with a text and a label
2. tokenize with ``text.tokenize`` in a pandas UDF (the same function training and scoring use)
3. split by a seeded hash of the text: identical texts always land in the same split, a text's
   split never changes when the corpus grows, and each label is split in the same proportions
   in expectation
4. count tokens of the *train* split (so val/test never leak into the vocabulary), keep those
   with count >= min_freq, the most frequent max_vocab - 2
5. encode to ids (truncated to max_len) and write ``train/``, ``val/``, ``test/`` Parquet with
   ``ids: array<int>, label_id: int, label: string``, plus vocab.json, labels.json, prep.json.
"""


import json
import shutil
import time
from pathlib import Path

from .config import PrepConfig, as_dict
from .errors import SparklstmError
from .tables import first_line, is_empty, read_table, require_columns, spark_errors
from .text import Vocab, tokenize

SPLITS = ("train", "val", "test")
MAX_CLASSES = 10_000  # more distinct labels than this is almost surely the wrong column
_BUCKETS = 1_000_000


def _tokenize_udf(lowercase: bool):
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<string>")
    def tokens(texts: pd.Series) -> pd.Series:
        return texts.map(lambda t: tokenize(t, lowercase=lowercase))

    return tokens


def _encode_udf(vocab_bc, max_len: int):
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<int>")
    def encode(tokens: pd.Series) -> pd.Series:
        vocab = vocab_bc.value
        return tokens.map(lambda ts: vocab.encode_tokens(list(ts), max_len=max_len))

    return encode


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
    """Run prep; returns the summary also written to ``out/prep.json``.

    Example
    -------
    >>> summary = prep(spark, input_path="emails.parquet", out="prepped/")   # doctest: +SKIP
    >>> summary["counts"]["train"]                                           # doctest: +SKIP
    {'ham': 960, 'spam': 640}
    """
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    cfg = config or PrepConfig()
    if not 0 <= cfg.val_fraction < 1 or not 0 <= cfg.test_fraction < 1 \
            or cfg.val_fraction + cfg.test_fraction >= 1:
        raise SparklstmError("val_fraction and test_fraction must be >= 0 and leave room for train")
    if cfg.max_len < 1 or cfg.max_vocab < 3 or cfg.min_freq < 1:
        raise SparklstmError("max_len >= 1, max_vocab >= 3 and min_freq >= 1 are required")
    out = Path(out)
    started = time.time()
    df = read_table(spark, input_path, fmt=fmt)
    require_columns(df, {cfg.text_col: "text", cfg.label_col: "label"}, source=str(input_path))
    if is_empty(df):
        raise SparklstmError(f"input {input_path} has no rows")

    try:
        rows = df.select(
            F.col(cfg.text_col).alias("text"),
            F.col(cfg.label_col).cast("string").alias("label"),
        )
        u = F.pmod(F.xxhash64(F.lit(cfg.split_seed), F.col("text")), F.lit(_BUCKETS)) / _BUCKETS
        split = (F.when(u < cfg.test_fraction, "test")
                 .when(u < cfg.test_fraction + cfg.val_fraction, "val").otherwise("train"))
        tokens = (
            rows.where(F.col("text").isNotNull() & F.col("label").isNotNull())
            .withColumn("tokens", _tokenize_udf(cfg.lowercase)("text"))
            .where(F.size("tokens") > 0)
            .select("tokens", "label", split.alias("split"))
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        # The classes are the labels of the rows kept: a label seen only on dropped rows (null or
        # token-less text) would be a class without a single example.
        labels = sorted(
            r["label"] for r in tokens.select("label").distinct().limit(MAX_CLASSES + 1).collect()
        )
        if len(labels) > MAX_CLASSES:
            tokens.unpersist()
            raise SparklstmError(f"label column {cfg.label_col!r} has over {MAX_CLASSES} distinct values")
        if len(labels) < 2:
            tokens.unpersist()
            only = f" ({labels[0]!r})" if labels else ""
            raise SparklstmError(
                f"label column {cfg.label_col!r} has {len(labels)} class{only}; need at least 2"
            )
        _prepare_output(out, overwrite)

        # Distributed counts on the train split; only the kept vocabulary reaches the driver.
        top = (
            tokens.where(F.col("split") == "train")
            # Only tokens the model will see (the first max_len) compete for vocabulary slots.
            .select(F.explode(F.slice("tokens", 1, cfg.max_len)).alias("token"))
            .groupBy("token").count()
            .where(F.col("count") >= cfg.min_freq)
            .orderBy(F.desc("count"), F.asc("token"))
            .limit(cfg.max_vocab - 2)
            .collect()
        )
        vocab = Vocab([r["token"] for r in top], lowercase=cfg.lowercase)

        stats = tokens.groupBy("split", "label").agg(
            F.count("*").alias("n"),
            F.sum(F.size("tokens")).alias("tokens"),
            F.sum((F.size("tokens") > cfg.max_len).cast("long")).alias("truncated"),
        ).collect()
        total_in = df.count()

        label_ids = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(i))])
        encode = _encode_udf(spark.sparkContext.broadcast(vocab), cfg.max_len)
        for name in SPLITS:
            (tokens.where(F.col("split") == name)
             .select(encode("tokens").alias("ids"),
                     label_ids[F.col("label")].cast("int").alias("label_id"),
                     "label")
             .write.mode("errorifexists").parquet(str(out / name)))
        tokens.unpersist()
    except spark_errors() as e:
        raise SparklstmError(f"prep failed: {first_line(e)}") from None

    counts = {s: {lab: 0 for lab in labels} for s in SPLITS}
    n_tokens = truncated = 0
    for r in stats:
        counts[r["split"]][r["label"]] = r["n"]
        n_tokens += r["tokens"]
        truncated += r["truncated"]
    kept = sum(sum(c.values()) for c in counts.values())
    summary = {
        "input": str(input_path),
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
