"""Spark prep on small generated corpora: schema, counts, split rule, vocabulary, formats, errors.

Inputs are written with pyarrow/pandas (no Spark job needed to make them); prep itself runs on the
session's real local[2] Spark. Prepped splits are read back with pyarrow and with Spark.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import KEYWORDS, make_corpus
from sparklstm.config import PrepConfig
from sparklstm.errors import SparklstmError
from sparklstm.spark.prep import ARROW_MAX_BYTES, CACHE_COMPRESSED, SPLITS, prep
from sparklstm.spark.session import session_conf
from sparklstm.text import Vocab, tokenize

CLASSES = ("sports", "tech", "food")
# Letters-only words: every one of them lands in the train vocabulary of the word corpora below,
# so a prepped row decodes back to its text's tokens without <unk>.
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
TEXT_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string())])


# --------------------------------------------------------------------------------------------
# helpers


def write_parquet(rows: list[dict], path: Path, schema: pa.Schema = TEXT_SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return path


def word_text(i: int, label: str) -> str:
    """A unique text per i < 1000, made of words that are all frequent in the corpus."""
    return f"{KEYWORDS[label][i % 6]} {WORDS[i // 100 % 10]} {WORDS[i // 10 % 10]} {WORDS[i % 10]}"


def split_rows(prepped: Path, name: str) -> list[tuple[tuple[int, ...], int, str]]:
    """(ids, label_id, label) of every row of one split, read with pyarrow."""
    table = pq.read_table(str(prepped / name))
    return [(tuple(r["ids"]), r["label_id"], r["label"]) for r in table.to_pylist()]


def vocab_tokens(prepped: Path) -> list[str]:
    return json.loads((prepped / "vocab.json").read_text())["tokens"]


def decoded(prepped: Path) -> dict[str, Counter]:
    """Per split, a multiset of (token tuple, label): the rows decoded through vocab.json."""
    tokens = vocab_tokens(prepped)
    return {
        s: Counter((tuple(tokens[i] for i in ids), label) for ids, _, label in split_rows(prepped, s))
        for s in SPLITS
    }


def summary_of(prepped: Path) -> dict:
    return json.loads((prepped / "prep.json").read_text())


def run_prep(spark, src, out, **settings):
    return prep(spark, input_path=str(src), out=out, config=PrepConfig(**settings))


# --------------------------------------------------------------------------------------------
# the conftest corpus (1200 rows, 3 classes)


def test_split_schema_read_with_spark_and_pyarrow(spark, prepped_dir):
    from pyspark.sql.types import ArrayType, IntegerType, StringType, StructField, StructType

    expected = StructType([
        StructField("ids", ArrayType(IntegerType(), True), True),
        StructField("label_id", IntegerType(), True),
        StructField("label", StringType(), True),
    ])
    for name in SPLITS:
        df = spark.read.parquet(str(prepped_dir / name))
        assert df.schema.simpleString() == expected.simpleString(), name
        assert df.columns == ["ids", "label_id", "label"]
        schema = pq.read_schema(next((prepped_dir / name).glob("part-*.parquet")))
        assert schema.field("ids").type == pa.list_(pa.int32())
        assert schema.field("label_id").type == pa.int32()
        assert schema.field("label").type == pa.string()


def test_labels_json_and_label_ids(prepped_dir):
    labels = json.loads((prepped_dir / "labels.json").read_text())
    assert labels == sorted(CLASSES) == ["food", "sports", "tech"]
    seen = set()
    for name in SPLITS:
        for _, label_id, label in split_rows(prepped_dir, name):
            assert labels[label_id] == label
            seen.add(label)
    assert seen == set(labels)


def test_vocab_starts_with_reserved_and_ids_in_range(prepped_dir):
    tokens = vocab_tokens(prepped_dir)
    assert tokens[:2] == ["<pad>", "<unk>"]
    assert len(set(tokens)) == len(tokens)
    summary = summary_of(prepped_dir)
    assert summary["vocab_size"] == len(tokens)
    max_len = summary["settings"]["max_len"]
    assert max_len == 64
    lengths = []
    for name in SPLITS:
        for ids, _, _ in split_rows(prepped_dir, name):
            assert 1 <= len(ids) <= max_len
            assert all(1 <= i < len(tokens) for i in ids), "ids must be unk or a vocabulary id, never pad"
            lengths.append(len(ids))
    # every text of make_corpus has 5-40 filler words, 2-4 keywords and "# <n>"
    assert min(lengths) >= 9 and max(lengths) <= 46


def test_prep_json_counts_equal_rows(spark, prepped_dir):
    summary = summary_of(prepped_dir)
    assert summary["rows_in"] == summary["rows_kept"] == 1200
    assert summary["rows_dropped"] == 0
    assert summary["labels"] == ["food", "sports", "tech"]
    total = 0
    for name in SPLITS:
        rows = split_rows(prepped_dir, name)
        per_label = Counter(label for _, _, label in rows)
        assert summary["counts"][name] == {lab: per_label.get(lab, 0) for lab in summary["labels"]}
        assert spark.read.parquet(str(prepped_dir / name)).count() == len(rows)
        total += len(rows)
    assert total == 1200
    # 10 % / 10 % in expectation; 1200 texts hashed, so each held-out split is 60..180 rows
    for name in ("val", "test"):
        assert 60 <= sum(summary["counts"][name].values()) <= 180
    n_tokens = sum(len(ids) for s in SPLITS for ids, _, _ in split_rows(prepped_dir, s))
    assert summary["mean_tokens"] == pytest.approx(n_tokens / 1200)
    assert summary["truncated_fraction"] == 0.0


@pytest.fixture(scope="module")
def with_dropped(spark, tmp_path_factory):
    """30 good rows plus 10 that prep must drop (null text or label, or a text with no tokens);
    the label 'ghost' occurs only on dropped rows."""
    good = make_corpus(30, seed=3)
    bad = [
        {"text": None, "label": "tech"},
        {"text": None, "label": "food"},
        {"text": "goal match with no label", "label": None},
        {"text": None, "label": None},
        {"text": "   ", "label": "sports"},
        {"text": "", "label": "tech"},
        {"text": "\t\n", "label": "food"},
        {"text": "___", "label": "food"},  # underscores are neither words nor symbols: no tokens
        {"text": "   ", "label": "ghost"},
        {"text": None, "label": "ghost"},
    ]
    rows = good + bad
    random.Random(1).shuffle(rows)
    base = tmp_path_factory.mktemp("dropped")
    src = write_parquet(rows, base / "in.parquet")
    summary = run_prep(spark, src, base / "prepped", min_freq=1)
    return good, base / "prepped", summary


def test_dropped_rows_are_counted(with_dropped):
    good, out, summary = with_dropped
    assert (summary["rows_in"], summary["rows_kept"], summary["rows_dropped"]) == (40, 30, 10)
    assert summary_of(out)["rows_dropped"] == 10
    rows_out = [r for s in SPLITS for r in split_rows(out, s)]
    assert len(rows_out) == sum(sum(c.values()) for c in summary["counts"].values()) == 30
    assert all(len(ids) > 0 for ids, _, _ in rows_out)
    assert Counter(label for _, _, label in rows_out) == Counter(r["label"] for r in good)


def test_label_seen_only_on_dropped_rows_is_not_a_class(with_dropped):
    """BUG (prep.py): the label set is collected from every row with a label, before rows with a
    null or token-less text are dropped. A label carried only by dropped rows becomes a class with
    no examples (and a one-class corpus slips past the 'need at least 2' check).
    Fix: collect ``labels`` from the kept rows (the persisted ``tokens`` frame), see the report."""
    _, out, summary = with_dropped
    assert "ghost" not in summary["labels"], (
        "labels.json lists 'ghost', which only occurs on rows prep dropped (empty/null text)"
    )
    assert json.loads((out / "labels.json").read_text()) == ["food", "sports", "tech"]


# --------------------------------------------------------------------------------------------
# the split rule: a seeded hash of the text


@pytest.fixture(scope="module")
def dup_corpus(tmp_path_factory):
    """60 distinct texts, each 4 times, shuffled: 240 rows."""
    distinct = [{"text": word_text(i, CLASSES[i % 3]), "label": CLASSES[i % 3]} for i in range(60)]
    rows = [dict(r) for r in distinct for _ in range(4)]
    random.Random(7).shuffle(rows)
    return write_parquet(rows, tmp_path_factory.mktemp("dup") / "dup.parquet"), distinct


@pytest.fixture(scope="module")
def dup_prepped(spark, dup_corpus, tmp_path_factory):
    src, _ = dup_corpus
    out = tmp_path_factory.mktemp("dup_prepped") / "a"
    run_prep(spark, src, out, min_freq=1)
    return out


def test_split_is_deterministic(spark, dup_corpus, dup_prepped, tmp_path):
    src, _ = dup_corpus
    run_prep(spark, src, tmp_path / "b", min_freq=1)
    for name in SPLITS:
        a = Counter((ids, label) for ids, _, label in split_rows(dup_prepped, name))
        b = Counter((ids, label) for ids, _, label in split_rows(tmp_path / "b", name))
        assert a == b, name
    assert vocab_tokens(dup_prepped) == vocab_tokens(tmp_path / "b")
    assert summary_of(dup_prepped)["counts"] == summary_of(tmp_path / "b")["counts"]


def test_split_seed_changes_the_assignment(spark, dup_corpus, dup_prepped, tmp_path):
    src, _ = dup_corpus
    run_prep(spark, src, tmp_path / "c", min_freq=1, split_seed=7)
    a, c = decoded(dup_prepped), decoded(tmp_path / "c")
    # No <unk> anywhere: every word is frequent, so decoding identifies the text.
    assert all("<unk>" not in toks for d in (a, c) for s in SPLITS for toks, _ in d[s])
    assert sum(a.values(), Counter()) == sum(c.values(), Counter())  # same rows overall
    assert any(a[s] != c[s] for s in SPLITS), "split_seed=7 assigned every text as seed 42 did"


def test_duplicated_texts_land_in_exactly_one_split(dup_corpus, dup_prepped):
    _, distinct = dup_corpus
    per_split = decoded(dup_prepped)
    for name in SPLITS:
        assert per_split[name], f"{name} is empty; the test needs every split populated"
        # all 4 copies of a text are in the split that holds it
        assert set(per_split[name].values()) == {4}, name
    texts = [set(t for t, _ in per_split[s]) for s in SPLITS]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert set().union(*texts) == {tuple(tokenize(r["text"])) for r in distinct}
    # the same through the raw ids: no id sequence appears in two splits
    ids = [set(i for i, _, _ in split_rows(dup_prepped, s)) for s in SPLITS]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


# --------------------------------------------------------------------------------------------
# the vocabulary


def marker(i: int) -> str:
    return "mk" + chr(97 + i // 26) + chr(97 + i % 26)


@pytest.fixture(scope="module")
def marked(spark, tmp_path_factory):
    """150 texts, each with a unique marker word first, then common words and a tricky tail
    (case, NFKC ligature, apostrophe, symbols, digits): 14 tokens each, prepped with max_len 10."""
    texts = {}
    rows = []
    for i in range(150):
        label = CLASSES[i % 3]
        text = f"{marker(i).upper()} {word_text(i, label)} Café ﬁne, DON'T pay $100!!"
        texts[marker(i)] = text
        rows.append({"text": text, "label": label})
    base = tmp_path_factory.mktemp("marked")
    src = write_parquet(rows, base / "in.parquet")
    out = base / "m1"
    summary = run_prep(spark, src, out, min_freq=1, max_len=10)
    return src, out, texts, summary


def test_vocab_comes_from_train_split_only(marked):
    _, out, texts, summary = marked
    vocab = vocab_tokens(out)
    tokens = split_rows(out, "train")
    train_markers = {vocab[ids[0]] for ids, _, _ in tokens}
    assert all(m.startswith("mk") for m in train_markers)
    vocab_markers = {t for t in vocab if t.startswith("mk")}
    assert vocab_markers == train_markers
    held_out = len(texts) - len(train_markers)
    assert held_out == sum(sum(summary["counts"][s].values()) for s in ("val", "test")) > 0
    for name in ("val", "test"):
        for ids, _, _ in split_rows(out, name):
            # the marker (only in this text, not in train) is the one unknown token
            assert ids[0] == 1 and 1 not in ids[1:]


def test_ids_equal_tokenize_plus_vocab_encode(marked):
    _, out, texts, summary = marked
    vocab = Vocab.load(out / "vocab.json")
    tokens = vocab.tokens
    assert tokenize("MKAA Café ﬁne, DON'T pay $100!!") == \
        ["mkaa", "café", "fine", ",", "don't", "pay", "$", "100", "!", "!"]
    # 14 tokens per text, max_len 10: the head's tokens are in the vocabulary; "$", "100", "!"
    # (positions 11-14) are never seen by the model, so they get no vocabulary slot.
    for t in ("café", "fine", "don't", ","):
        assert t in vocab.index
    for t in ("$", "100", "!"):
        assert t not in vocab.index
    # train rows: find the text by its marker and encode it locally
    for ids, _, _ in split_rows(out, "train"):
        text = texts[tokens[ids[0]]]
        assert list(ids) == vocab.encode(text, max_len=10).tolist()
    # every row of every split: the multiset of ids equals the local encoding of all texts
    local = Counter(tuple(vocab.encode(t, max_len=10).tolist()) for t in texts.values())
    prepped = Counter(ids for s in SPLITS for ids, _, _ in split_rows(out, s))
    assert local == prepped
    # 14 tokens per text, cut to the first 10
    assert all(len(ids) == 10 for ids in prepped)
    assert summary["truncated_fraction"] == 1.0


def _train_token_counts(marked) -> Counter:
    _, out, texts, _ = marked
    vocab = vocab_tokens(out)
    train_texts = [texts[vocab[ids[0]]] for ids, _, _ in split_rows(out, "train")]
    return Counter(t for text in train_texts for t in tokenize(text))


def test_vocab_min_freq(spark, marked, tmp_path):
    src = marked[0]
    counts = _train_token_counts(marked)
    run_prep(spark, src, tmp_path / "mf", min_freq=3, max_len=64)
    expected = sorted((t for t, n in counts.items() if n >= 3), key=lambda t: (-counts[t], t))
    assert any(n < 3 for n in counts.values()) and expected
    assert vocab_tokens(tmp_path / "mf") == ["<pad>", "<unk>", *expected]


def test_vocab_max_vocab(spark, marked, tmp_path):
    src = marked[0]
    counts = _train_token_counts(marked)
    run_prep(spark, src, tmp_path / "mv", min_freq=1, max_len=64, max_vocab=12)
    expected = sorted(counts, key=lambda t: (-counts[t], t))[:10]
    tokens = vocab_tokens(tmp_path / "mv")
    assert tokens == ["<pad>", "<unk>", *expected]
    assert summary_of(tmp_path / "mv")["vocab_size"] == 12
    for name in SPLITS:
        assert all(max(ids) < 12 for ids, _, _ in split_rows(tmp_path / "mv", name))


# --------------------------------------------------------------------------------------------
# input formats


def tricky_corpus(n: int = 60) -> list[dict]:
    rows = make_corpus(n, seed=9)
    extras = ['He said "goal, goal!" twice', "line one\nline two, with a comma", '"quoted" start',
              "tabs\tand, commas", 'a "" pair', "naïve café, ﬁne"]
    for i, row in enumerate(rows):
        row["text"] = f"{extras[i % len(extras)]} {row['text']}"
    return rows


@pytest.fixture(scope="module")
def parquet_reference(spark, tmp_path_factory):
    """The tricky corpus as a directory of two Parquet files (so also a directory input)."""
    rows = tricky_corpus()
    base = tmp_path_factory.mktemp("formats")
    write_parquet(rows[:25], base / "pq" / "part-0.parquet")
    write_parquet(rows[25:], base / "pq" / "part-1.parquet")
    summary = run_prep(spark, base / "pq", base / "pq_prepped", min_freq=1)
    return base, rows, summary


@pytest.mark.parametrize("kind", ["csv", "jsonl", "jsonl.gz", "jsonl-dir"])
def test_input_formats_give_the_same_prep(spark, parquet_reference, kind):
    base, rows, reference = parquet_reference
    pdf = pd.DataFrame(rows)
    if kind == "csv":
        src = base / "in.csv"
        pdf.to_csv(src, index=False)
        assert '""goal, goal!""' in src.read_text() and "line one\nline two" in src.read_text()
    elif kind == "jsonl":
        src = base / "in.jsonl"
        pdf.to_json(src, orient="records", lines=True, force_ascii=False)
    elif kind == "jsonl.gz":
        src = base / "in.jsonl.gz"
        with gzip.open(src, "wt", encoding="utf-8") as f:
            f.write(pdf.to_json(orient="records", lines=True, force_ascii=False))
    else:
        src = base / "jsondir"
        src.mkdir()
        pdf.iloc[:30].to_json(src / "a.jsonl", orient="records", lines=True, force_ascii=False)
        pdf.iloc[30:].to_json(src / "b.jsonl", orient="records", lines=True, force_ascii=False)
    out = base / f"prepped_{kind}"
    summary = run_prep(spark, src, out, min_freq=1)
    for key in ("rows_in", "rows_kept", "rows_dropped", "counts", "labels", "vocab_size", "mean_tokens"):
        assert summary[key] == reference[key], key
    assert summary["rows_kept"] == 60
    assert vocab_tokens(out) == vocab_tokens(base / "pq_prepped")
    for name in SPLITS:
        assert Counter(split_rows(out, name)) == Counter(split_rows(base / "pq_prepped", name)), name


def test_integer_label_column(spark, tmp_path):
    rows = [{"text": r["text"], "label": i % 2} for i, r in enumerate(make_corpus(40, seed=5))]
    src = write_parquet(rows, tmp_path / "in.parquet",
                        pa.schema([("text", pa.string()), ("label", pa.int64())]))
    summary = run_prep(spark, src, tmp_path / "prepped", min_freq=1)
    assert summary["labels"] == ["0", "1"]
    assert json.loads((tmp_path / "prepped" / "labels.json").read_text()) == ["0", "1"]
    out_rows = [r for s in SPLITS for r in split_rows(tmp_path / "prepped", s)]
    assert len(out_rows) == 40
    assert all(label == str(label_id) for _, label_id, label in out_rows)
    assert Counter(label for _, _, label in out_rows) == {"0": 20, "1": 20}


# --------------------------------------------------------------------------------------------
# bad input: one clear SparklstmError


def prep_error(spark, src, out, **settings) -> str:
    with pytest.raises(Exception) as info:
        run_prep(spark, src, out, **settings)
    assert isinstance(info.value, SparklstmError), (
        f"expected SparklstmError, got {type(info.value).__name__}: {str(info.value)[:300]}"
    )
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.fixture(scope="module")
def small_src(tmp_path_factory):
    return write_parquet(make_corpus(30, seed=6), tmp_path_factory.mktemp("small") / "in.parquet")


def test_prep_leaves_the_session_confs_as_they_were(spark, small_src, tmp_path):
    """prep sets two runtime confs for its own queries only: afterwards each is unset again, or
    back at the user's value, also when the block inside fails."""
    keys = (ARROW_MAX_BYTES, CACHE_COMPRESSED)
    assert [spark.conf.get(k, None) for k in keys] == [None, None]
    prep(spark, input_path=str(small_src), out=tmp_path / "a")
    assert [spark.conf.get(k, None) for k in keys] == [None, None]
    spark.conf.set(ARROW_MAX_BYTES, "32m")
    spark.conf.set(CACHE_COMPRESSED, "true")
    try:
        prep(spark, input_path=str(small_src), out=tmp_path / "b")
        assert [spark.conf.get(k) for k in keys] == ["32m", "true"]
        with pytest.raises(ZeroDivisionError):
            with session_conf(spark, {ARROW_MAX_BYTES: "1m", CACHE_COMPRESSED: "false"}):
                assert [spark.conf.get(k) for k in keys] == ["1m", "false"]
                1 / 0
        assert [spark.conf.get(k) for k in keys] == ["32m", "true"]
    finally:
        for k in keys:
            spark.conf.unset(k)


def test_pass_two_keeps_the_byte_cap_when_rows_are_not_capped(spark, small_src, tmp_path,
                                                             monkeypatch):
    """Pass 2 drops the Arrow byte cap only while maxRecordsPerBatch bounds its batches."""
    import sparklstm.spark.prep as prep_module

    asked = []
    real = prep_module.session_conf
    monkeypatch.setattr(prep_module, "session_conf",
                        lambda spark, settings: asked.append(dict(settings)) or real(spark, settings))
    prep(spark, input_path=str(small_src), out=tmp_path / "a")
    assert {ARROW_MAX_BYTES: str(2**31 - 1)} in asked
    asked.clear()
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": "0"}):
        prep(spark, input_path=str(small_src), out=tmp_path / "b")
    assert not any(ARROW_MAX_BYTES in s for s in asked) and asked


def test_missing_text_column(spark, small_src, tmp_path):
    msg = prep_error(spark, small_src, tmp_path / "o", text_col="body")
    assert msg == f"text column 'body' not found in {small_src} (columns: text, label)"
    assert not (tmp_path / "o").exists()


def test_missing_label_column(spark, small_src, tmp_path):
    msg = prep_error(spark, small_src, tmp_path / "o", label_col="category")
    assert msg == f"label column 'category' not found in {small_src} (columns: text, label)"
    assert not (tmp_path / "o").exists()


def test_non_string_text_column(spark, tmp_path):
    src = write_parquet([{"text": i, "label": CLASSES[i % 3]} for i in range(10)], tmp_path / "in.parquet",
                        pa.schema([("text", pa.int64()), ("label", pa.string())]))
    msg = prep_error(spark, src, tmp_path / "o")
    assert "text column 'text'" in msg and "must be a string, not bigint" in msg


def test_single_class_label_column(spark, tmp_path):
    rows = [{"text": r["text"], "label": "tech"} for r in make_corpus(20)] + [{"text": "x y", "label": None}]
    src = write_parquet(rows, tmp_path / "in.parquet")
    msg = prep_error(spark, src, tmp_path / "o")
    assert "label column 'label' has 1 class ('tech'); need at least 2" == msg
    assert not (tmp_path / "o").exists()


def test_empty_parquet(spark, tmp_path):
    src = write_parquet([], tmp_path / "empty.parquet")
    assert pq.read_table(str(src)).num_rows == 0
    msg = prep_error(spark, src, tmp_path / "o")
    assert msg == f"input {src} has no rows"


def test_empty_directory(spark, tmp_path):
    (tmp_path / "nothing").mkdir()
    msg = prep_error(spark, tmp_path / "nothing", tmp_path / "o")
    assert msg == f"input directory is empty: {tmp_path / 'nothing'}"


def test_nonexistent_path(spark, tmp_path):
    msg = prep_error(spark, tmp_path / "nope.parquet", tmp_path / "o")
    assert msg == f"input not found: {tmp_path / 'nope.parquet'}"


def test_unreadable_file(spark, tmp_path):
    """BUG (tables.py): Spark raises a plain SparkException for an unreadable Parquet footer, which
    PySpark re-raises as py4j's Py4JJavaError (not a PySparkException), so read_table lets it
    through and the CLI reports 'unexpected Py4JJavaError'. Fix: see the report."""
    src = tmp_path / "x.parquet"
    src.write_bytes(bytes(range(256)) * 3)
    msg = prep_error(spark, src, tmp_path / "o")
    assert msg.startswith(f"cannot read {src} as parquet")
    assert not re.search(r"calling o\d+", msg), f"the message is py4j's, not Spark's: {msg}"


def test_file_that_is_not_json_lines(spark, tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text("this is not json\nneither is this\n")
    msg = prep_error(spark, src, tmp_path / "o")
    assert msg == f"cannot read {src} as JSON lines: no record parsed"


def test_output_exists_and_overwrite(spark, small_src, tmp_path):
    out = tmp_path / "prepped"
    first = run_prep(spark, small_src, out, min_freq=1, split_seed=1)
    (out / "stale.txt").write_text("left over")
    msg = prep_error(spark, small_src, out, min_freq=1)
    assert msg == f"output {out} exists and is not empty (pass --overwrite to replace it)"
    assert summary_of(out)["settings"]["split_seed"] == 1  # untouched

    second = prep(spark, input_path=str(small_src), out=out, overwrite=True,
                  config=PrepConfig(min_freq=1, split_seed=2))
    assert summary_of(out)["settings"]["split_seed"] == 2
    assert not (out / "stale.txt").exists()
    assert second["rows_kept"] == first["rows_kept"] == 30
    assert sum(len(split_rows(out, s)) for s in SPLITS) == 30


def test_overwrite_refuses_a_directory_that_is_not_prepped(spark, small_src, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SparklstmError, match="refusing to overwrite .* not a prepped/ directory"):
        prep(spark, input_path=str(small_src), out=out, overwrite=True, config=PrepConfig(min_freq=1))
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_output_path_is_an_existing_file(spark, small_src, tmp_path):
    """BUG (prep.py _prepare_output): ``out.iterdir()`` on a file raises NotADirectoryError."""
    out = tmp_path / "out.txt"
    out.write_text("a file")
    msg = prep_error(spark, small_src, out)
    assert str(out) in msg
    assert out.read_text() == "a file"


def test_an_empty_partition_counts_nothing_and_converts_to_the_schema(spark):
    """BUG (0eadbcf): an empty partition gave float64 columns, which Spark could not convert to
    the string schema ("Cannot convert ChunkedArray"). Pass 1 now builds typed Arrow batches."""
    import pyarrow as pa

    from sparklstm.spark.local_ids import KIND_COUNT, KIND_STATS, PASS1_SCHEMA, tokenize_partition

    rows = spark.createDataFrame([("a b a", "x", "train")], "text string, label string, split string")
    counted = rows.repartition(3).mapInArrow(tokenize_partition(True, 8), PASS1_SCHEMA).collect()
    assert sorted((r["token"], r["n"]) for r in counted if r["kind"] == KIND_COUNT) == [("a", 2), ("b", 1)]

    schema = pa.schema([("text", pa.string()), ("label", pa.string()), ("split", pa.string())])
    for batches in ([], [pa.RecordBatch.from_pylist([], schema=schema)]):
        assert list(tokenize_partition(True, 8)(iter(batches))) == []
    one = pa.RecordBatch.from_pylist([{"text": "a b a", "label": "x", "split": "train"},
                                      {"text": None, "label": "y", "split": "val"}], schema=schema)
    out = pa.Table.from_batches(list(tokenize_partition(True, 8)(iter([one])))).to_pylist()
    assert {(r["token"], r["n"]) for r in out if r["kind"] == KIND_COUNT} == {("a", 2), ("b", 1)}
    assert {(r["split"], r["label"], r["n"], r["tokens"]) for r in out if r["kind"] == KIND_STATS} == {
        ("train", "x", 1, 3), (None, None, 1, 0)}


def test_pass_two_remaps_local_ids_across_arrow_batches(spark):
    """Local ids from pass 1 become vocabulary ids in pass 2, also when a partition spans many
    Arrow batches, tokens first appear late, rows are truncated, and tokens miss the vocabulary."""
    import pyarrow as pa

    from sparklstm.spark.local_ids import KIND_DICT, KIND_ROW, remap_partition, tokenize_partition
    from sparklstm.text import Vocab, tokenize

    texts = [" ".join(f"w{(i * 7 + j) % 23}" for j in range(i % 13 + 1)) for i in range(200)]
    schema = pa.schema([("text", pa.string()), ("label", pa.string()), ("split", pa.string())])
    batches = [pa.RecordBatch.from_pylist([{"text": t, "label": "x", "split": "train"}
                                           for t in texts[k:k + 9]], schema=schema)
               for k in range(0, len(texts), 9)]  # 23 small batches: new tokens keep arriving
    pass1 = pa.Table.from_batches(list(tokenize_partition(True, 10)(iter(batches))))
    kept = pass1.filter(pa.compute.is_in(pass1["kind"], pa.array([KIND_DICT, KIND_ROW], pa.int8())))
    vocab = Vocab([f"w{k}" for k in range(0, 23, 2)])  # odd words are <unk>

    class Broadcast:  # what remap_partition reads of a Spark broadcast
        value = vocab

    # Re-batch pass 1's rows differently, as Spark's Arrow batching of the cached rows may.
    out = pa.Table.from_batches(list(remap_partition(Broadcast)(iter(kept.to_batches(max_chunksize=17)))))
    assert out["ids"].to_pylist() == [vocab.encode(t, max_len=10).tolist() for t in texts]
    assert len({len(tokenize(t)) > 10 for t in texts}) == 2  # some rows were truncated
