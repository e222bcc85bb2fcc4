"""sparklstm under Spark Connect, run by tests/test_connect.py in a process of its own against a
real Connect server (its own JVM, local[2]); the fixtures are in remote_fixtures.py.

Results are compared with what the classic-session tests compare with: the local Predictor (the
code ``sparklstm predict`` runs) for scores, a recomputation for metrics, and the classic
session's own prep output.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
from pyspark.errors import AnalysisException

from conftest import make_corpus
from sparklstm import classify_udf, evaluate_scored, prep, score
from sparklstm.config import PrepConfig
from sparklstm.errors import SparklstmError
from sparklstm.metrics import report
from sparklstm.predictor import Predictor
from sparklstm.spark import shipping
from sparklstm.spark.streaming import score_stream
from test_scoring import EMPTYISH, assert_same, mixed_texts
from remote_fixtures import classic_prepped, corpus_path, loads, model_dir, remote  # noqa: F401
from test_streaming import Dropper, read_pin


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.from_dir(model_dir, precision="fp32")


def predictions(session, classify, texts) -> list:
    df = session.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string")
    rows = df.select("id", classify("text").alias("p")).collect()
    return [r["p"] for r in sorted(rows, key=lambda r: r["id"])]


def test_classify_udf_equals_the_local_predictor(remote, model_dir, predictor):
    texts = mixed_texts()
    classify = classify_udf(remote, model_dir, precision="fp32")
    got = predictions(remote, classify, texts)
    for g, local in zip(got, predictor.predict(texts)):
        assert_same(g, local)
    assert [g for g, t in zip(got, texts) if t in EMPTYISH] == [None] * len(EMPTYISH)

    remote.udf.register("classify", classify.udf)  # SQL, as in a notebook
    remote.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string") \
        .createOrReplaceTempView("docs")
    rows = remote.sql("SELECT id, classify(text).label AS l FROM docs").collect()
    # The raw UDF gives a struct of nulls, not a null struct, for token-less texts.
    assert {r["id"]: r["l"] for r in rows} == {i: g and g["label"] for i, g in enumerate(got)}


def test_model_uploads_once_per_session_and_decodes_once_per_worker(remote, model_dir, loads):
    classify = classify_udf(remote, model_dir, precision="fp32")
    again = classify_udf(remote, model_dir, precision="fp32")
    uploads = [name for sid, name in shipping._UPLOADED if sid == remote.session_id]
    assert len(uploads) == 1  # the same model is one artifact, sent once

    texts = [r["text"] for r in make_corpus(2000, seed=5)]
    df = remote.createDataFrame([(t,) for t in texts], "text string").repartition(8)
    for c in (classify, again, classify):  # three queries of 8 tasks each
        assert df.select(c("text")["label"].alias("l")).where("l IS NOT NULL").count() == len(texts)
    # Every decode of this server's workers so far, earlier tests' included: each Python worker
    # decoded the model once, never once per task (24 tasks here alone).
    per_worker = Counter(line.split()[0] for line in loads.read_text().splitlines())
    assert per_worker and set(per_worker.values()) == {1}, per_worker
    assert len(per_worker) < 24


def test_bad_text_columns_fail_as_on_a_classic_session(remote, model_dir, tmp_path):
    classify = classify_udf(remote, model_dir, precision="fp32")
    df = remote.createDataFrame([(1, b"x")], "n int, b binary")
    for column in ("n", "b"):
        with pytest.raises(AnalysisException):  # Connect analyses at the action, not at select()
            df.select(classify(column)).collect()
    df.write.parquet(str(tmp_path / "numbers"))
    with pytest.raises(SparklstmError, match="text column 'n' in .* must be a string, not int"):
        score(remote, input_path=str(tmp_path / "numbers"), model_dir=model_dir,
              out=str(tmp_path / "o"), text_col="n", precision="fp32")


def test_score_and_evaluate(remote, model_dir, corpus_path, predictor, tmp_path):
    n = score(remote, input_path=str(corpus_path), model_dir=model_dir, out=str(tmp_path / "s"), precision="fp32")
    rows = remote.read.parquet(str(tmp_path / "s")).collect()
    assert n == len(rows) == 1200
    for r, local in zip(rows, predictor.predict([r["text"] for r in rows])):
        assert_same(r["prediction"], local)

    got = evaluate_scored(remote, scored=str(tmp_path / "s"), plots=False)
    labels = got["labels"]
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in rows:
        cm[labels.index(r["label"]), labels.index(r["prediction"]["label"])] += 1
    assert got["macro_f1"] == pytest.approx(report(cm, labels)["macro_f1"])
    assert got["unscored"] == 0


def test_prep_equals_the_classic_sessions(remote, corpus_path, classic_prepped, tmp_path):
    summary = prep(remote, input_path=str(corpus_path), out=tmp_path / "p",
                   config=PrepConfig(min_freq=1, max_len=64))
    classic = json.loads((classic_prepped / "prep.json").read_text())
    drop = lambda s: {k: v for k, v in s.items() if k not in ("seconds", "input")}  # noqa: E731
    assert drop(summary) == drop(classic)
    for name in ("vocab.json", "labels.json"):
        assert (tmp_path / "p" / name).read_text() == (classic_prepped / name).read_text()
    for split in ("train", "val", "test"):
        rows = [sorted(map(str, remote.read.parquet(str(d / split)).collect()))
                for d in (tmp_path / "p", classic_prepped)]
        assert rows[0] == rows[1]


def test_streaming_scores_each_file_once_and_pins_the_model(remote, model_dir, tmp_path):
    files = Dropper(tmp_path / "in", tmp_path / "staging")
    files.drop(2)
    run = dict(input_dir=str(tmp_path / "in"), out=str(tmp_path / "out"),
               checkpoint=str(tmp_path / "ckpt"), trigger="available-now")
    first = score_stream(remote, model_dir=model_dir, **run)
    assert (first.rows, first.stopped) == (50, False)
    assert read_pin(tmp_path / "ckpt")["model_id"] == first.model_id
    files.drop(1)
    second = score_stream(remote, model_dir=model_dir, **run)  # the pin is read back through Connect
    assert second.rows == 25
    rows = remote.read.parquet(str(tmp_path / "out")).collect()
    assert sorted(r["id"] for r in rows) == list(range(75))
    assert {r["model_id"] for r in rows} == {first.model_id}


def test_a_legacy_pin_file_is_still_read(remote, model_dir, tmp_path):
    """Checkpoints started before the pin became a Spark-written directory hold a plain file."""
    Dropper(tmp_path / "in", tmp_path / "staging").drop(1)
    ckpt = tmp_path / "ckpt"
    run = dict(input_dir=str(tmp_path / "in"), out=str(tmp_path / "out"), checkpoint=str(ckpt),
               trigger="available-now")
    model_id = score_stream(remote, model_dir=model_dir, **run).model_id
    pin, pin_dir = read_pin(ckpt), ckpt / "sparklstm-model.json"
    for f in pin_dir.iterdir():
        f.unlink()
    pin_dir.rmdir()
    pin_dir.write_text(json.dumps({**pin, "model_id": "0" * 64}))
    with pytest.raises(SparklstmError, match=f"started with model 000000000000, not {model_id[:12]}"):
        score_stream(remote, model_dir=model_dir, **run)


def test_the_model_artifact_is_exactly_the_model_files(model_dir):
    from sparklstm.artifact import read_model_files

    files = read_model_files(model_dir)
    data = shipping._tar(files)
    assert data == shipping._tar(dict(reversed(list(files.items()))))  # deterministic bytes
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files
