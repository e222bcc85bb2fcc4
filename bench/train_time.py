"""Training time at 50,000 documents: sparklstm's default `train` against the 15-minute bound.

    python bench/train_time.py [--docs 50000] [--words 160] [--workdir DIR]

The corpus is made from the sotu corpus (bench/corpora.py): document i joins three State of the
Union chunks (from chunk 7919 i on, cyclically, with a larger stride each time the documents
outnumber the chunks, so every text is unique), cut to ``--words`` words and labelled by the era
of the first chunk. At 160 words (~190 tokens) the train split holds just under half the default
token budget (train.token_budget, 16M), so two whole epochs run: the most tokens the budget lets
a corpus of this size read, and the slowest case, since the wide fit grows with rows and tokens.
The documents share chunks across splits, so the test figure printed says nothing about accuracy
(bench/accuracy.py does); only the time counts here.

Runs the real `sparklstm prep` and `sparklstm train` (defaults, `--no-progress`) as a user would,
times `train` end to end (the wide fit, every epoch, the validation passes, writing the model),
and prints it against the bound as a ratio, with the run's own figures (epochs, tokens/s) from
metrics.json. The load average is printed: the bound is for an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import corpora

BOUND_S = 15 * 60


def make_corpus(*, docs: int, words: int, paragraphs: int = 3) -> pd.DataFrame:
    chunks = corpora.sotu()
    n = len(chunks)
    texts, labels = [], []
    for i in range(docs):
        start = (i * 7919) % n  # a prime step: any number of documents spans every era
        stride = 1 + i // n  # a new stride on every wrap: no text repeats
        picks = [(start + k * stride) % n for k in range(paragraphs)]
        text = " ".join(chunks["text"].iloc[j] for j in picks)
        texts.append(" ".join(text.split()[:words]))
        labels.append(chunks["label"].iloc[picks[0]])
    return pd.DataFrame({"text": texts, "label": labels})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--words", type=int, default=160, help="words per document")
    ap.add_argument("--workdir", type=Path, help="keep the corpus, prepped/ and model/ here")
    a = ap.parse_args(argv)
    cli = Path(sys.executable).with_name("sparklstm")
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.parquet"
        make_corpus(docs=a.docs, words=a.words).to_parquet(corpus, index=False,
                                                                     row_group_size=2000)
        subprocess.run([cli, "prep", corpus, "--out", work / "prepped", "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
        load_before = os.getloadavg()
        started = time.perf_counter()
        subprocess.run([cli, "train", work / "prepped", "--out", work / "model", "--overwrite",
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        metrics = json.loads((work / "model" / "metrics.json").read_text())
        prepped = json.loads((work / "prepped" / "prep.json").read_text())
    rows = prepped["counts"]["train"]
    print(f"corpus: {a.docs:,} documents ({sum(rows.values()):,} in train), "
          f"{prepped['mean_tokens']:.0f} tokens on average, "
          f"{prepped['truncated_fraction']:.0%} cut to max_len")
    print(f"sparklstm train (defaults): {seconds:.0f} s wall, {metrics['epochs_planned']} epoch(s) "
          f"planned, {len(metrics['history'])} run, {metrics['train_tokens_per_s']:,.0f} tokens/s "
          f"in the loop, wide fit {metrics.get('wide', {}).get('fit_seconds', 0):.0f} s, "
          f"test macro-F1 {metrics['test']['macro_f1']:.4f}")
    print(f"train wall / 15-minute bound: {seconds / BOUND_S:.2f}")
    print(f"load average before/after: {[round(x, 2) for x in load_before]} / "
          f"{[round(x, 2) for x in os.getloadavg()]} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
