"""The ``sparklstm`` CLI through typer's CliRunner, on the session's real local[2] Spark.

The commands call ``get_spark``, which returns the active session: every test that reaches Spark
requests the ``spark`` fixture. Bad input must end with exit code 2 (a ``SparklstmError``), exactly
one ``error: ...`` line on stderr and no traceback anywhere; the last test holds a spark-submit
job (jobs/score.py) to the same contract.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cluster import ENV, score_submit
from conftest import make_corpus
from sparklstm.cli import app
from sparklstm.config import TrainConfig
from sparklstm.predictor import Predictor

COMMANDS = {"prep", "train", "score", "evaluate", "predict", "demo", "explain", "info", "log-model"}
TINY = ["--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1", "--epochs", "2",
        "--batch-size", "16", "--lr", "0.01"]

runner = CliRunner()


def invoke(args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def ok(result):
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def clean_error(result, *, contains: str = "") -> str:
    """Exit 2, one stderr line 'error: ...', no traceback; returns that line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (
        f"want exit code 2 (a SparklstmError), got {result.exit_code}; stderr: {result.stderr!r}"
    )
    assert len(lines) == 1, f"want one line on stderr, got {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    assert "unexpected" not in lines[0], lines[0]
    assert contains in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# help


def test_every_command_is_known_and_has_help():
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert names == COMMANDS
    top = ok(invoke(["--help"]))
    for name in COMMANDS:
        assert name in top.stdout
    for name in sorted(COMMANDS):
        result = ok(invoke([name, "--help"]))
        assert result.stdout.lstrip().startswith("Usage:") and f" {name} " in result.stdout
        assert "--help" in result.stdout


def test_no_arguments_shows_help():
    result = invoke([])
    assert result.exit_code in (0, 2)
    assert "Usage:" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# prep -> train -> score -> evaluate -> predict


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    rows = make_corpus(240, seed=41, max_len=20)
    corpus = base / "corpus.jsonl"
    pd.DataFrame(rows).to_json(corpus, orient="records", lines=True)
    return {"base": base, "corpus": corpus, "rows": rows}


@pytest.fixture(scope="module")
def chain(spark, work):
    base, corpus = work["base"], work["corpus"]
    steps = {}
    steps["prep"] = ok(invoke(["prep", corpus, "--out", base / "prepped", "--min-freq", "1",
                               "--max-len", "32"]))
    steps["train"] = ok(invoke(["train", base / "prepped", "--out", base / "model", *TINY]))
    steps["score"] = ok(invoke(["score", corpus, "--model", base / "model", "--out", base / "scored"]))
    steps["evaluate"] = ok(invoke(["evaluate", base / "scored"]))
    return steps


def test_cli_prep(chain, work):
    base = work["base"]
    summary = json.loads((base / "prepped" / "prep.json").read_text())
    assert summary["rows_in"] == summary["rows_kept"] == 240
    assert summary["settings"]["max_len"] == 32 and summary["settings"]["min_freq"] == 1
    assert summary["labels"] == ["food", "sports", "tech"]
    out = " ".join(chain["prep"].stdout.split())
    assert f"prepped 240 of 240 rows -> {base / 'prepped'}" in out
    assert f"vocabulary {summary['vocab_size']}" in out


def test_cli_train(chain, work):
    model = work["base"] / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["model"]["embed_dim"] == 16 and config["model"]["hidden_size"] == 16
    assert config["model"]["cell"] == "lstm" and config["model"]["num_layers"] == 1
    assert config["train"]["epochs"] == 2
    metrics = json.loads((model / "metrics.json").read_text())
    assert 1 <= len(metrics["history"]) <= 2
    # Not a terminal (a log, a scheduler): one line per epoch on stderr, none on stdout; result
    # lines whole, however long the path (rich wrapped them at 80 columns).
    result = chain["train"]
    assert re.search(r"^epoch 1/2: train loss \d+\.\d{4}, val macro-F1 ", result.stderr, re.M)
    assert "epoch 1/2" not in result.stdout
    assert re.search(r"^val: accuracy \d\.\d{4}, macro-F1 \d\.\d{4}, n \d+$", result.stdout, re.M)
    assert re.search(r"^model written to %s \(best epoch \d, \d+ tokens/s on \w+\)$" % re.escape(str(model)),
                     result.stdout, re.M), result.stdout


def test_cli_train_config_file_sits_between_the_defaults_and_the_flags(chain, work, tmp_path):
    """Built-in defaults < --config file < flags; an option left out does not undo the file, and
    one typed with the built-in value does."""
    toml = tmp_path / "settings.toml"
    toml.write_text("[train]\nepochs = 1\nbatch_size = 8\nlr = 0.02\n[model]\nembed_dim = 8\n")
    out = tmp_path / "m"
    ok(invoke(["train", work["base"] / "prepped", "--out", out, "--config", toml, "--batch-size", "32",
               "--lr", str(TrainConfig().lr), "--hidden-size", "8", "--num-layers", "1"]))
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["model"]["embed_dim"] == 8  # the file
    assert config["train"]["batch_size"] == 32 and config["train"]["lr"] == TrainConfig().lr  # flags
    assert config["train"]["patience"] == TrainConfig().patience  # neither: the built-in default


def test_cli_score(spark, chain, work):
    base = work["base"]
    assert " ".join(chain["score"].stdout.split()) == f"scored 240 rows -> {base / 'scored'}"
    df = spark.read.parquet(str(base / "scored"))
    assert sorted(df.columns) == ["label", "prediction", "text"]
    assert df.count() == 240
    assert df.where("prediction IS NULL").count() == 0
    from sparklstm.device import auto_precision  # the default, auto: what this CPU runs natively

    assert {r[0] for r in df.select("prediction.precision").distinct().collect()} == \
        {auto_precision("auto", "cpu")}


def test_cli_evaluate(spark, chain, work):
    from sparklstm.spark.evaluate import evaluate_scored

    base = work["base"]
    report = json.loads((base / "scored.evaluation.json").read_text())
    assert report["n"] == 240 and report["unscored"] == 0
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 240
    direct = evaluate_scored(spark, scored=str(base / "scored"))
    assert report["accuracy"] == direct["accuracy"] and report["confusion_matrix"] == direct["confusion_matrix"]
    out = chain["evaluate"].stdout
    assert f"accuracy {report['accuracy']:.4f}" in out
    assert "confusion matrix" in out and "report written to" in out


def test_cli_evaluate_out_option(spark, chain, work, tmp_path):
    ok(invoke(["evaluate", work["base"] / "scored", "--out", tmp_path / "r.json"]))
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 240


def test_cli_predict_args_json(chain, work):
    model = work["base"] / "model"
    texts = ["goal match team league coach", "recipe oven dinner bake", "   "]
    # --device cpu: compared to 1e-9 with the library's Predictor, which runs on the CPU
    result = ok(invoke(["predict", "--model", model, "--device", "cpu", "--precision", "fp32",
                        "--json", *texts]))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    expected = Predictor.from_dir(model, precision="fp32").predict(texts)
    assert [p["text"] for p in parsed] == texts
    for p, e in zip(parsed, expected):
        if e is None:
            assert p["prediction"] is None
        else:
            assert p["prediction"]["label"] == e["label"]
            assert p["prediction"]["probability"] == pytest.approx(e["probability"], abs=1e-9)
            assert len(p["prediction"]["probabilities"]) == 3
            assert p["prediction"]["precision"] == "fp32"


def test_cli_predict_stdin(chain, work):
    model = work["base"] / "model"
    stdin = "goal match team league\n\nsoftware chip server code\n"
    result = ok(invoke(["predict", "--model", model, "--json"], input=stdin))
    parsed = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [p["text"] for p in parsed] == ["goal match team league", "", "software chip server code"]
    assert parsed[1]["prediction"] is None
    # The default, precision auto: the same Predictor on the same texts gives the same batches.
    local = Predictor.from_dir(model)
    expected = local.predict([p["text"] for p in parsed])
    assert [p["prediction"] and p["prediction"]["label"] for p in parsed] == \
        [e and e["label"] for e in expected]
    assert {p["prediction"]["precision"] for p in parsed if p["prediction"]} == {local.precision}
    # "-" also reads stdin; the table output names the labels
    table = ok(invoke(["predict", "--model", model, "-"], input=stdin))
    assert "goal match team league" in table.stdout
    assert expected[0]["label"] in table.stdout and expected[2]["label"] in table.stdout


@pytest.mark.parametrize("cell", ["peephole", "gru"])
def test_cli_train_other_cells(chain, work, tmp_path, cell):
    out = tmp_path / f"model_{cell}"
    ok(invoke(["train", work["base"] / "prepped", "--out", out, "--cell", cell, *TINY]))
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["cell"] == cell
    result = ok(invoke(["predict", "--model", out, "--json", "goal team"]))
    assert json.loads(result.stdout)["prediction"]["label"] in ("food", "sports", "tech")


# --------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no traceback


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    rows = make_corpus(20, seed=43)
    pq.write_table(pa.table({"text": list(range(20)), "label": [r["label"] for r in rows]}),
                   str(base / "int_text.parquet"))
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": ["tech"] * 20}),
                   str(base / "one_class.parquet"))
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("text", pa.string()), ("label", pa.string())])),
                   str(base / "zero_rows.parquet"))
    (base / "garbage.parquet").write_bytes(bytes(range(256)) * 4)
    (base / "empty_dir").mkdir()
    (base / "not_a_model").mkdir()
    (base / "not_a_model" / "readme.txt").write_text("hello")
    return base


def test_prep_missing_column(spark, work, tmp_path):
    line = clean_error(invoke(["prep", work["corpus"], "--out", tmp_path / "o", "--text-col", "body"]))
    assert line == f"error: text column 'body' not found in {work['corpus']} (columns: label, text)"


def test_prep_unreadable_input(spark, bad_inputs, tmp_path):
    """Fails until tables.read_table turns py4j's Py4JJavaError into a SparklstmError (report)."""
    clean_error(invoke(["prep", bad_inputs / "garbage.parquet", "--out", tmp_path / "o"]),
                contains="cannot read")


@pytest.mark.parametrize("name,message", [("empty_dir", "input directory is empty"),
                                          ("zero_rows.parquet", "has no rows"),
                                          ("missing.jsonl", "input not found")])
def test_prep_empty_or_missing_input(spark, bad_inputs, tmp_path, name, message):
    clean_error(invoke(["prep", bad_inputs / name, "--out", tmp_path / "o"]), contains=message)
    assert not (tmp_path / "o").exists()


def test_prep_non_string_text(spark, bad_inputs, tmp_path):
    clean_error(invoke(["prep", bad_inputs / "int_text.parquet", "--out", tmp_path / "o"]),
                contains="must be a string, not bigint")


def test_prep_single_class(spark, bad_inputs, tmp_path):
    clean_error(invoke(["prep", bad_inputs / "one_class.parquet", "--out", tmp_path / "o"]),
                contains="has 1 class ('tech'); need at least 2")


def test_prep_output_exists(spark, chain, work):
    before = (work["base"] / "prepped" / "prep.json").read_text()
    clean_error(invoke(["prep", work["corpus"], "--out", work["base"] / "prepped"]),
                contains="exists and is not empty (pass --overwrite")
    assert (work["base"] / "prepped" / "prep.json").read_text() == before


def test_config_with_unknown_key(spark, work, tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("[prep]\nmax_len = 16\nmin_frequency = 2\n")
    for command in (["prep", work["corpus"], "--out", tmp_path / "o"], ["train", tmp_path / "nope"]):
        clean_error(invoke([*command, "--config", toml]),
                    contains="config [prep]: unknown key 'min_frequency'")
    assert not (tmp_path / "o").exists()


def test_train_nonexistent_prepped(tmp_path):
    line = clean_error(invoke(["train", tmp_path / "nope", "--out", tmp_path / "m", *TINY]))
    assert line.startswith(f"error: {tmp_path / 'nope'} is not a prepped/ directory (missing ")
    assert not (tmp_path / "m").exists()


def test_train_bad_cell(chain, work, tmp_path):
    clean_error(invoke(["train", work["base"] / "prepped", "--out", tmp_path / "m", "--cell", "transformer"]),
                contains="config [model] cell: 'transformer' is not one of ('lstm', 'peephole', 'gru')")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flag, value, key", [("--pooling", "attention", "[model] pooling"),
                                              ("--lr-schedule", "linear", "[train] lr_schedule"),
                                              ("--class-weights", "inverse", "[train] class_weights")])
def test_train_bad_tuning_choice(chain, work, tmp_path, flag, value, key):
    clean_error(invoke(["train", work["base"] / "prepped", "--out", tmp_path / "m", flag, value]),
                contains=f"config {key}: {value!r} is not one of")
    assert not (tmp_path / "m").exists()


def test_cli_train_tuning_options_reach_the_model(chain, work, tmp_path):
    out = tmp_path / "m"
    ok(invoke(["train", work["base"] / "prepped", "--out", out, "--pooling", "max",
               "--lr-schedule", "cosine", "--class-weights", "balanced", "--bidirectional",
               "--bag-of-embeddings", *TINY]))
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["pooling"], model["bidirectional"], model["bag_of_embeddings"]) == ("max", True, True)
    from sparklstm.predictor import Predictor

    loaded = Predictor.from_dir(out, precision="fp32")  # the saved weights include the reverse stack's
    assert loaded.model.rnn_reverse is not None and loaded.model.bag_of_embeddings
    assert len(loaded.predict(["free money now", "meeting at noon"])) == 2


def test_train_output_exists(chain, work):
    model = work["base"] / "model"
    before = (model / "model.safetensors").read_bytes()
    clean_error(invoke(["train", work["base"] / "prepped", "--out", model, *TINY]),
                contains="already holds a model (pass --overwrite")
    assert (model / "model.safetensors").read_bytes() == before


def test_score_output_exists(spark, chain, work):
    clean_error(invoke(["score", work["corpus"], "--model", work["base"] / "model",
                        "--out", work["base"] / "scored"]), contains="exists (pass --overwrite")


def test_score_and_predict_with_a_directory_that_is_not_a_model(spark, work, bad_inputs, tmp_path):
    not_model = bad_inputs / "not_a_model"
    clean_error(invoke(["score", work["corpus"], "--model", not_model, "--out", tmp_path / "o"]),
                contains="is not a sparklstm model directory")
    clean_error(invoke(["predict", "--model", not_model, "hello"]), contains="is not a sparklstm model directory")
    clean_error(invoke(["predict", "--model", tmp_path / "nope", "hello"]), contains="model directory not found")
    clean_error(invoke(["score", work["corpus"], "--model", tmp_path / "nope", "--out", tmp_path / "o"]),
                contains="model directory not found")
    assert not (tmp_path / "o").exists()


def test_score_and_predict_with_altered_weights(spark, chain, work, tmp_path):
    bad = tmp_path / "bad_model"
    shutil.copytree(work["base"] / "model", bad)
    weights = bytearray((bad / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(weights))
    message = "model.safetensors does not match the sha256 in config.json"
    clean_error(invoke(["predict", "--model", bad, "goal match"]), contains=message)
    clean_error(invoke(["score", work["corpus"], "--model", bad, "--out", tmp_path / "o"]), contains=message)
    assert not (tmp_path / "o").exists()


def test_score_missing_and_non_string_text_column(spark, chain, work, bad_inputs, tmp_path):
    model = work["base"] / "model"
    clean_error(invoke(["score", work["corpus"], "--model", model, "--out", tmp_path / "o",
                        "--text-col", "body"]), contains="text column 'body' not found")
    clean_error(invoke(["score", bad_inputs / "int_text.parquet", "--model", model, "--out", tmp_path / "o"]),
                contains="must be a string, not bigint")


def test_score_unreadable_input(spark, chain, work, bad_inputs, tmp_path):
    """Fails until tables.read_table turns py4j's Py4JJavaError into a SparklstmError (report)."""
    clean_error(invoke(["score", bad_inputs / "garbage.parquet", "--model", work["base"] / "model",
                        "--out", tmp_path / "o"]), contains="cannot read")


def test_evaluate_missing_label_column(spark, chain, work):
    clean_error(invoke(["evaluate", work["base"] / "scored", "--label-col", "category"]),
                contains="label column 'category' not found")


def test_predict_bad_device(chain, work):
    clean_error(invoke(["predict", "--model", work["base"] / "model", "--device", "tpu", "x"]),
                contains="device must be one of")


def test_demo_refuses_a_workdir_that_is_not_a_demo(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "thesis.tex").write_text("precious")
    clean_error(invoke(["demo", "--workdir", workdir]),
                contains=f"{workdir} exists and is not a demo directory")
    assert sorted(p.name for p in workdir.iterdir()) == ["thesis.tex"]
    assert (workdir / "thesis.tex").read_text() == "precious"


# --------------------------------------------------------------------------------------------
# spark-submit jobs: the same error contract, with Spark's own lines kept few


def test_spark_submit_job_error_is_the_last_line_on_stderr(chain, work, tmp_path):
    """Spark merges a Python driver's stderr into its stdout and logs about 240 INFO lines a
    job: the job's error must still be one line on stderr, after Spark's few, with exit code 2."""
    missing = tmp_path / "missing.parquet"
    cmd = score_submit("local[1]", corpus=missing, model_dir=work["base"] / "model",
                       out=tmp_path / "o", conf={})
    job = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    lines = job.stderr.splitlines()
    assert job.returncode == 2, job.stderr[-3000:]
    assert job.stdout == ""
    assert lines[-1] == f"error: input not found: {missing}"
    assert len(lines) < 30, job.stderr  # Spark logs at WARN: about 10 lines on a local run
    assert "Traceback" not in job.stderr


def test_predict_threads(chain, work):
    """--threads 1 (faster beside a busy process) gives the labels of torch's default threads."""
    import torch

    model, text = work["base"] / "model", "goal match team league"
    threads = torch.get_num_threads()
    try:
        one = json.loads(ok(invoke(["predict", "--model", model, "--json", "--threads", "1", text])).stdout)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    default = json.loads(ok(invoke(["predict", "--model", model, "--json", text])).stdout)
    assert one["prediction"]["label"] == default["prediction"]["label"]
    clean_error(invoke(["predict", "--model", model, "--threads", "-1", text]), contains="--threads")
