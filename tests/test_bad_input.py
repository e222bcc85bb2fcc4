"""The bad-input matrix for scoring (issue 5.6), on real local[2] Spark and the conftest model.

Rows that are not ordinary text must neither crash a job nor be dropped: the output has every
input id once, null/empty/whitespace texts get a null prediction (DESIGN.md), everything else
gets the prediction the local Predictor gives. Column and model mistakes are one clear error
before any Spark job runs. Cases tested elsewhere are not repeated here:

=============================================  ==================================================
null / empty / whitespace via classify_udf      test_scoring.py::test_udf_equals_local_predictor
... and via score()                             test_scoring.py::test_score_writes_all_columns_...
missing / non-string column via score()         test_scoring.py::test_score_bad_text_column_...
... via the CLI (exit 2, one line)              test_cli.py::test_score_missing_and_non_string_...
altered / truncated weights, altered vocab      test_artifact.py, test_scoring.py::test_classify_
                                                udf_refuses_a_tampered_model, test_cli.py::test_
                                                score_and_predict_with_altered_weights
tokenizer stops at max_len on a 1 MB text       test_text.py::test_limit_stops_early_on_a_huge_...
=============================================  ==================================================
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import KEYWORDS, make_corpus
from sparklstm.artifact import CONFIG, VOCAB, WEIGHTS, load_artifact, sha256
from sparklstm.errors import SparklstmError
from sparklstm.predictor import Predictor
from sparklstm import classify_udf
from test_cli import clean_error, invoke, ok

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


def one_mb(head: str, filler: str) -> bytes:
    """``head`` then ``filler`` repeated to 1 MB of UTF-8: only the head fits in max_len (64)."""
    data = (head + " " + filler * (MB // len(filler.encode()) + 1)).encode()[:MB]
    return data.decode(errors="ignore").encode()  # don't cut a character in two


SPORTS_HEAD = " ".join(KEYWORDS["sports"] * 11)  # 66 tokens, all sports: more than max_len
# Each case: the raw UTF-8 bytes written to Parquet (None = null), and whether it gets a prediction.
CASES = {
    "null": (None, False),
    "empty": (b"", False),
    "spaces": (b"    ", False),
    "whitespace": ("\t\n\r \u00a0\u3000\u2003".encode(), False),  # NBSP, ideographic, em space
    "replacement": ("goal \ufffd\ufffd match \ufffdteam".encode(), True),
    "only_replacement": ("\ufffd\ufffd\ufffd".encode(), True),  # unknown tokens, still a text
    "emoji": ("league 😀🎉 goal 👍🏽 👨\u200d👩\u200d👧 🇫🇷 coach".encode(), True),
    "only_emoji": ("🔥🔥🙂".encode(), True),
    # Bytes that are not UTF-8 in a string column (a decoder run with errors=replace makes U+FFFD)
    "invalid_utf8": (b"recipe \xff oven \xc3\x28 bake \xe2\x82 spice", True),
    "1mb_ascii": (one_mb(SPORTS_HEAD, "oven recipe bake dinner spice flavor "), True),
    "1mb_unicode": (one_mb(SPORTS_HEAD, "recette 😀 oven \ufffd bake épice "), True),
}
NULL_RUN = 12  # consecutive nulls: with 5-row Arrow batches, some batches hold only nulls


def input_rows() -> list[tuple[str, bytes | None]]:
    """(case, raw bytes) per id: corpus texts with the special cases and a run of nulls among them."""
    rows = [("corpus", r["text"].encode()) for r in make_corpus(30, seed=51)]
    for k, (case, (raw, _)) in enumerate(CASES.items()):
        rows.insert(2 * k + 1, (case, raw))
    return rows[:10] + [("null", None)] * NULL_RUN + rows[10:]


def text_of(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory):
    """The matrix as three Parquet files (several tasks); the text column holds the raw bytes."""
    src = tmp_path_factory.mktemp("bad_input") / "texts"
    src.mkdir()
    rows = input_rows()
    for part in range(3):
        ids = list(range(part, len(rows), 3))
        raw = pa.array([rows[i][1] for i in ids], pa.binary())
        # view, not cast: a cast would validate UTF-8 and refuse the invalid bytes
        pq.write_table(pa.table({"id": ids, "text": raw.view(pa.string())}), str(src / f"part{part}.parquet"))
    return src, rows


@pytest.fixture
def small_arrow_batches(spark):
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "5")
    yield
    spark.conf.set(key, before)


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.from_dir(model_dir, precision="fp32")


def check_matrix(got: dict, rows, predictor) -> None:
    """``got``: id -> (text, prediction dict or None) from Spark; every input row is there once,
    keeps its text, and has the local Predictor's prediction (None for texts without tokens)."""
    assert sorted(got) == list(range(len(rows)))
    texts = [text_of(raw) for _, raw in rows]
    local = predictor.predict(texts)
    for i, ((case, raw), expected) in enumerate(zip(rows, local)):
        text, pred = got[i]
        assert text == texts[i], case
        assert (pred is None) == (expected is None) == (case != "corpus" and not CASES[case][1]), case
        if expected is not None:
            assert pred["label"] == expected["label"], case
            np.testing.assert_allclose(pred["probabilities"], expected["probabilities"], atol=1e-6, rtol=0)
    for case in ("1mb_ascii", "1mb_unicode"):
        # truncated to max_len tokens: the sports words decide, 1 MB of food words after them do not
        i = next(i for i, (c, _) in enumerate(rows) if c == case)
        assert len(texts[i].encode()) > MB - 4
        assert got[i][1]["label"] == "sports"
        head = predictor.predict([texts[i][:2000]])[0]
        np.testing.assert_allclose(got[i][1]["probabilities"], head["probabilities"], atol=1e-6, rtol=0)
    print(f"\nrows in {len(rows)}, rows out {len(got)}, null predictions "
          f"{sum(p is None for _, p in got.values())}")


# --------------------------------------------------------------------------------------------
# rows: nothing crashes, nothing is dropped


def test_classify_udf_scores_every_bad_row(spark, model_dir, bad_rows, predictor, small_arrow_batches):
    src, rows = bad_rows
    df = spark.read.parquet(str(src))
    assert df.rdd.getNumPartitions() >= 2
    scored = df.withColumn("pred", classify_udf(spark, model_dir, batch_size=4, buffer_rows=8, precision="fp32")("text"))
    got = {r["id"]: (r["text"], r["pred"] and r["pred"].asDict()) for r in scored.collect()}
    check_matrix(got, rows, predictor)


def test_cli_score_scores_every_bad_row(spark, model_dir, bad_rows, predictor, small_arrow_batches,
                                        tmp_path):
    src, rows = bad_rows
    out = tmp_path / "scored"
    result = ok(invoke(["score", src, "--model", model_dir, "--out", out, "--batch-size", "4",
                        "--precision", "fp32"]))
    assert " ".join(result.stdout.split()) == f"scored {len(rows)} rows -> {out}"
    scored = spark.read.parquet(str(out))
    assert scored.columns == ["id", "text", "prediction"]
    got = {r["id"]: (r["text"], r["prediction"] and r["prediction"].asDict()) for r in scored.collect()}
    check_matrix(got, rows, predictor)


# --------------------------------------------------------------------------------------------
# columns: a clear error before any job


def test_classify_udf_on_a_non_string_or_missing_column_fails_before_any_job(spark, model_dir):
    """In a notebook, a number or binary column is refused when the plan is built (not scored as
    digits or as nulls), like a missing column; no Spark job starts."""
    from pyspark.errors import AnalysisException

    classify = classify_udf(spark, model_dir, precision="fp32")
    df = spark.createDataFrame([(1, 7, b"goal", ["goal"])], "id int, n int, b binary, arr array<string>")
    tracker = spark.sparkContext.statusTracker()
    jobs_before = len(tracker.getJobIdsForGroup(None))
    for column, message in (("n", '"INT"'), ("b", '"BINARY"'), ("arr", '"ARRAY<STRING>"'),
                            ("text", "UNRESOLVED_COLUMN")):
        with pytest.raises(AnalysisException) as info:
            df.withColumn("pred", classify(column))
        assert message in str(info.value).splitlines()[0]
    assert len(tracker.getJobIdsForGroup(None)) == jobs_before


def run_score_job(argv) -> int:
    """jobs/score.py's main() in this process (it uses the active session, as under spark-submit)."""
    spec = importlib.util.spec_from_file_location("jobs_score", REPO / "jobs" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


@pytest.mark.parametrize("column,message", [
    ("body", "error: text column 'body' not found in {src} (columns: id, n, text)"),
    ("n", "error: text column 'n' in {src} must be a string, not bigint"),
])
def test_spark_submit_job_refuses_a_bad_text_column(spark, model_dir, tmp_path, capsys, column, message):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "n": [3, 4], "text": ["goal", "oven"]}), str(src))
    code = run_score_job(["--input", src, "--model", model_dir, "--out", tmp_path / "o", "--text-col", column])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [message.format(src=src)]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# model files: no pickle is ever loaded


class Bomb:
    """Unpickling this creates ``path``: the evidence that something unpickled a model file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


PLANTED = ("model.pt", "pytorch_model.bin", "model.pkl", "weights.pth", "model.ckpt")


@contextlib.contextmanager
def audited(model_dir: Path):
    """Record the files opened under ``model_dir`` and every class an unpickler looks up."""
    record = {"opened": [], "unpickled": []}
    _AUDIT["record"], _AUDIT["dir"] = record, str(model_dir)
    try:
        yield record
    finally:
        _AUDIT["record"] = None


_AUDIT: dict = {"record": None, "dir": ""}


def _audit_hook(event, args):
    record = _AUDIT["record"]
    if record is None:
        return
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and str(args[0]).startswith(_AUDIT["dir"]):
        record["opened"].append(Path(args[0]).name)
    elif event == "pickle.find_class":
        record["unpickled"].append(f"{args[0]}.{args[1]}")


sys.addaudithook(_audit_hook)  # hooks can't be removed; this one is a no-op outside audited()


def test_loaders_read_only_json_and_safetensors_never_a_planted_pickle(spark, model_dir, tmp_path):
    model = shutil.copytree(model_dir, tmp_path / "model")
    marker = tmp_path / "UNPICKLED"
    for name in PLANTED:
        (model / name).write_bytes(pickle.dumps(Bomb(marker)))
    with audited(model) as record:
        load_artifact(model)
        Predictor.from_dir(model, precision="fp32").predict(["goal match"])
        classify = classify_udf(spark, model, precision="fp32")
    assert set(record["opened"]) == {CONFIG, WEIGHTS, VOCAB}
    assert record["unpickled"] == []
    # executors decode the broadcast files; the CLI reads the directory again
    rows = spark.createDataFrame([("goal team",), ("oven",)], "text string").select(classify("text").label).collect()
    assert [r[0] for r in rows] == ["sports", "food"]
    ok(invoke(["predict", "--model", model, "goal team"]))
    assert not marker.exists()
    # and the loading modules have no way to unpickle: no pickle, no torch.load
    for module in ("artifact.py", "predictor.py", "spark/scoring.py", "nn/model.py", "nn/wide.py"):
        source = (REPO / "sparklstm" / module).read_text()
        assert not re.search(r"\bimport pickle|torch\.load\b|\bpickle\.loads?\b", source), module


@pytest.mark.parametrize("damage", ["truncated", "pickle_with_matching_sha256"])
def test_cli_score_refuses_damaged_weights_before_reading_input(spark, model_dir, tmp_path, damage):
    """Truncated weights fail the sha256 check; a pickle in place of the weights, with config.json's
    sha256 updated to match, is refused by the safetensors parser and never unpickled."""
    model = shutil.copytree(model_dir, tmp_path / "model")
    marker = tmp_path / "UNPICKLED"
    if damage == "truncated":
        (model / WEIGHTS).write_bytes((model / WEIGHTS).read_bytes()[:1000])
        expected = f"error: {model}: {WEIGHTS} does not match the sha256 in config.json (altered or truncated)"
    else:
        payload = pickle.dumps(Bomb(marker))
        (model / WEIGHTS).write_bytes(payload)
        config = json.loads((model / CONFIG).read_text())
        config["sha256"][WEIGHTS] = sha256(payload)
        (model / CONFIG).write_text(json.dumps(config))
        expected = f"error: {model}: {WEIGHTS} is not readable: "
    with pytest.raises(SparklstmError):
        load_artifact(model)
    line = clean_error(invoke(["score", tmp_path / "no-input.parquet", "--model", model,
                               "--out", tmp_path / "o"]))
    assert line.startswith(expected)
    assert not (tmp_path / "o").exists()
    assert not marker.exists()
