"""Shared fixtures: one real local[2] SparkSession, a generated corpus, a prepped dir, a model.

Everything is made by the tests; nothing is mocked. Session-scoped fixtures keep the suite fast:
Spark starts once, the small model trains once.
"""

from __future__ import annotations

import os
import random

import pytest

from sparklstm.config import ModelConfig, PrepConfig, TrainConfig

# tests/connect/ runs in a process of its own, started by tests/test_connect.py (a Connect client
# cannot share a process with the classic session of the other tests).
collect_ignore = [] if os.environ.get("SPARKLSTM_CONNECT_URL") else ["connect"]

KEYWORDS = {
    "sports": ["goal", "match", "team", "score", "league", "coach"],
    "tech": ["software", "chip", "server", "code", "cloud", "kernel"],
    "food": ["recipe", "oven", "flavor", "dinner", "spice", "bake"],
}
FILLER = "the a of and to in is it that on for with as was at by this from or be are".split()


def make_corpus(n: int, *, classes=("sports", "tech", "food"), seed: int = 0,
                min_len: int = 5, max_len: int = 40) -> list[dict]:
    """Separable texts: each carries 2-4 keywords of its class among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(min_len, max_len))]
        for _ in range(rng.randint(2, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        rows.append({"text": " ".join(words) + f" #{i}", "label": label})
    return rows


@pytest.fixture(scope="session")
def spark():
    from sparklstm.spark.session import get_spark

    session = get_spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def corpus_path(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    spark.createDataFrame(make_corpus(1200)).write.parquet(str(path))
    return path


@pytest.fixture(scope="session")
def prepped_dir(spark, corpus_path, tmp_path_factory):
    from sparklstm import prep

    out = tmp_path_factory.mktemp("prep") / "prepped"
    prep(spark, input_path=str(corpus_path), out=out, config=PrepConfig(min_freq=1, max_len=64))
    return out


SMALL_MODEL = ModelConfig(embed_dim=32, hidden_size=32, dropout=0.1)
FAST_TRAIN = TrainConfig(epochs=4, batch_size=32, lr=5e-3, patience=2)


@pytest.fixture(scope="session")
def model_dir(prepped_dir, tmp_path_factory):
    from sparklstm import train

    out = tmp_path_factory.mktemp("model") / "model"
    train(prepped=prepped_dir, out=out, model_config=SMALL_MODEL, train_config=FAST_TRAIN,
          progress=False, log=lambda m: None)
    return out
