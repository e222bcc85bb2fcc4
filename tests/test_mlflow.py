"""MLflow: ``train(..., mlflow=True)`` / ``sparklstm train --mlflow``, ``sparklstm.mlflow.log_model``
and ``sparklstm log-model``, against real MLflow stores and a real ``mlflow server``.

Local runs go to a SQLite store in tmp_path: MLflow 3's own default is ``sqlite:///mlflow.db``
and it refuses a file store (``./mlruns``) unless MLFLOW_ALLOW_FILE_STORE is set. The tracking
URI is set only through the environment with monkeypatch, never ``mlflow.set_tracking_uri``
(which would outlive the test). The server is started when the module starts and waited for by
the tests at the end, so its ~10 s start overlaps the training above.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from sparklstm import train
from sparklstm.cli import app
from sparklstm.config import ModelConfig, TrainConfig
from sparklstm.errors import SparklstmError
from sparklstm.mlflow import RESULT_TYPE, log_model
from sparklstm.predictor import Predictor

TINY_MODEL = ModelConfig(embed_dim=16, hidden_size=16, num_layers=1, wide=False)
TINY_TRAIN = TrainConfig(epochs=2, batch_size=32, lr=5e-3, patience=2, num_threads=1)
TINY_CLI = ["--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1", "--no-wide",
            "--epochs", "2", "--batch-size", "32", "--threads", "1"]
TEXTS = ["the team scored a goal in the match", "bake the spice in the oven for dinner",
         "the kernel runs on the server chip", "", None, "   "]
NEEDS_MLFLOW = "--mlflow needs MLflow: pip install 'sparklstm[mlflow]'"

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here (this machine has two cores, shared with the server and Spark)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    # A SQLite store keeps artifacts under ./mlruns of the directory it was created in.
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def quiet(message: str) -> None:
    pass


def only_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    return run


# --------------------------------------------------------------------------------------------
# training runs


def test_train_logs_settings_epochs_results_curves_and_model(prepped_dir, tmp_path, local_store):
    out = tmp_path / "model"
    wide_model = ModelConfig(embed_dim=16, hidden_size=16, num_layers=1)  # the wide path: mix metrics
    metrics = train(prepped=prepped_dir, out=out, model_config=wide_model, train_config=TINY_TRAIN,
                    progress=False, log=quiet, mlflow=True, mlflow_experiment="tests")
    assert mlflow.active_run() is None  # the run started here ended here
    client = local_store
    run = only_run(client, "tests")
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model.cell"] == "lstm" and params["model.hidden_size"] == "16"
    assert params["model.wide"] == "True" and params["train.epochs"] == "2"
    assert params["train.batch_size"] == "32" and params["train.lr"] == "0.005"
    assert params["device"] == "cpu" and params["precision"] in ("fp32", "bf16")
    assert params["prepped"] == str(prepped_dir) and len(params["prepped_sha256"]) == 64

    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for key in ("train_loss", "val_accuracy", "val_macro_f1", "mix", "val_macro_f1_deep"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r[key])) for r in history], key

    final = run.data.metrics
    for split in ("val", "test"):
        assert final[f"final_{split}_accuracy"] == pytest.approx(metrics[split]["accuracy"])
        assert final[f"final_{split}_macro_f1"] == pytest.approx(metrics[split]["macro_f1"])
        for label, scores in metrics[split]["per_class"].items():
            assert final[f"final_{split}_f1_{label}"] == pytest.approx(scores["f1"])
    assert final["best_epoch"] == metrics["best_epoch"]
    assert final["wide_mix"] == pytest.approx(metrics["wide"]["mix"])

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {"training_curves.png", "model_dir"}
    logged_dir = {a.path for a in client.list_artifacts(run.info.run_id, "model_dir")}
    assert {f"model_dir/{f}" for f in os.listdir(out)} == logged_dir
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "down")))
    assert (local / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("model.safetensors", "config.json", "vocab.json", "metrics.json"):
        assert (local / "model_dir" / name).read_bytes() == (out / name).read_bytes(), name

    # ... and the pyfunc model, linked to the run, which scores as the model directory does
    (output,) = run.outputs.model_outputs
    loaded = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    expected = Predictor.from_dir(out).predict(TEXTS[:3])
    assert loaded.predict(pd.DataFrame({"text": TEXTS[:3]}))["label"].tolist() == [e["label"] for e in expected]


def test_train_logs_into_the_callers_run_and_leaves_it_open(prepped_dir, tmp_path, local_store):
    with mlflow.start_run() as run:
        train(prepped=prepped_dir, out=tmp_path / "model", model_config=TINY_MODEL,
              train_config=TINY_TRAIN, progress=False, log=quiet, mlflow=True)
        assert mlflow.active_run().info.run_id == run.info.run_id
        mlflow.log_param("mine", "kept")
    logged = local_store.get_run(run.info.run_id)
    assert logged.data.params["mine"] == "kept" and logged.data.params["model.embed_dim"] == "16"
    assert local_store.get_metric_history(run.info.run_id, "val_macro_f1")[-1].step == 2
    with mlflow.start_run(), pytest.raises(SparklstmError, match="active in experiment 'Default'"):
        train(prepped=prepped_dir, out=tmp_path / "other", mlflow=True, mlflow_experiment="another")


def test_a_run_that_fails_is_marked_failed(tmp_path, local_store):
    with pytest.raises(SparklstmError, match="is not a prepped/ directory"):
        train(prepped=tmp_path / "missing", out=tmp_path / "model", mlflow=True,
              mlflow_experiment="failing", log=quiet)
    assert only_run(local_store, "failing").info.status == "FAILED"
    assert mlflow.active_run() is None


def test_a_resumed_runs_earlier_epochs_are_logged_when_it_finishes(model_dir, local_store):
    from sparklstm.tracking import training_run

    metrics = json.loads((model_dir / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) >= 2
    with training_run(experiment="resumed", log=quiet) as run:
        run.epoch(history[-1])  # the only epoch trained after --resume
        run.finished(out=model_dir, metrics=metrics, curves="training_curves.png")
    logged = local_store.get_metric_history(run.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in logged) == [
        (r["epoch"], pytest.approx(r["train_loss"])) for r in history]


def test_cli_train_mlflow_with_no_tracking_uri_uses_mlflows_local_default(prepped_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(prepped_dir), "--out", "model", *TINY_CLI, "--mlflow"])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    # MLflow 3's default: runs in ./mlflow.db, artifacts under ./mlruns; nothing to start first
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()
    assert f"at sqlite:///{tmp_path}/mlflow.db" in result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = only_run(client, "Default")
    assert run.info.status == "FINISHED" and run.data.params["train.num_threads"] == "1"
    assert f"run {run.info.run_id}" in result.stderr
    assert len(list((tmp_path / "mlruns").rglob("training_curves.png"))) == 2  # the run's, model_dir's
    assert "model written to model" in result.stdout


def test_cli_mlflow_experiment_needs_mlflow(prepped_dir, tmp_path):
    result = runner.invoke(app, ["train", str(prepped_dir), "--out", str(tmp_path / "m"),
                                 "--mlflow-experiment", "x"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: --mlflow-experiment applies only with --mlflow"), result.stderr
    assert not (tmp_path / "m").exists()
    with pytest.raises(SparklstmError, match="only with mlflow=True"):
        train(prepped=prepped_dir, out=tmp_path / "m", mlflow_experiment="x")


def test_without_mlflow_training_works_and_mlflow_fails_at_once(prepped_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails, as if not installed
    with pytest.raises(SparklstmError) as error:
        train(prepped=prepped_dir, out=tmp_path / "tracked", mlflow=True)
    assert str(error.value) == NEEDS_MLFLOW
    assert not (tmp_path / "tracked").exists()  # before any training
    result = runner.invoke(app, ["train", str(prepped_dir), "--out", str(tmp_path / "cli"), "--mlflow"])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {NEEDS_MLFLOW}", result.stderr
    with pytest.raises(SparklstmError, match=r"^sparklstm.mlflow.log_model needs MLflow: pip install"):
        log_model(tmp_path)
    result = runner.invoke(app, ["log-model", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "log-model needs MLflow" in result.stderr
    # training without --mlflow never imports it
    train(prepped=prepped_dir, out=tmp_path / "plain", model_config=TINY_MODEL,
          train_config=TrainConfig(epochs=1, batch_size=32, num_threads=1), progress=False, log=quiet)
    assert (tmp_path / "plain" / "model.safetensors").is_file()


def test_importing_sparklstm_does_not_import_mlflow():
    code = ("import sys, sparklstm, sparklstm.cli, sparklstm.mlflow, sparklstm.tracking, "
            "sparklstm.training.loop; print('mlflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# the pyfunc model


def test_log_model_loads_and_scores_as_the_predictor(model_dir, tmp_path, local_store, spark):
    info = log_model(model_dir, name="classifier")
    expected = Predictor.from_dir(model_dir).predict(TEXTS)
    loaded = mlflow.pyfunc.load_model(info.model_uri)

    frame = loaded.predict(pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}))  # id: ignored
    assert list(frame.columns) == ["label", "probability", "probabilities"]
    for row, want in zip(frame.itertuples(), expected):
        if want is None:  # null, empty, whitespace-only: nulls, as in the UDF's struct
            assert row.label is None and np.isnan(row.probability) and row.probabilities is None
        else:
            assert row.label == want["label"]
            assert row.probability == pytest.approx(want["probability"], abs=1e-12)
            assert row.probabilities == pytest.approx(want["probabilities"], abs=1e-12)
    # a Series named text passes the signature too; the unwrapped model takes a plain list
    assert loaded.predict(pd.Series(TEXTS[:2], name="text"))["label"].tolist() == [e["label"] for e in expected[:2]]
    bare = loaded.unwrap_python_model().predict(None, TEXTS[:3])
    assert bare["label"].tolist() == [e["label"] for e in expected[:3]]

    sig = loaded.metadata.signature
    assert sig.inputs.input_names() == ["text"] and sig.inputs.input_types()[0].name == "string"
    assert sig.outputs.input_names() == ["label", "probability", "probabilities"]

    # the logged model: safetensors and JSON, the pyfunc's source, no pickle anywhere
    files = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    names = {p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file()}
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))], names
    assert "mlflow_pyfunc.py" in names and "artifacts/model/model.safetensors" in names
    assert (files / "artifacts/model/model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (files / "MLmodel").read_text()
    requirements = (files / "requirements.txt").read_text().split()
    assert "sparklstm==0.1.0" in requirements and any(r.startswith("torch==") for r in requirements)

    # in Spark: the whole struct (as RESULT_TYPE, or inferred from the signature), or the label
    # alone as "string", where MLflow turns every value into str: a null label is "None"
    df = spark.createDataFrame(pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}))
    struct = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type=RESULT_TYPE, env_manager="local")
    inferred = mlflow.pyfunc.spark_udf(spark, info.model_uri, env_manager="local")
    label = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type="string", env_manager="local")
    scored = df.select("id", struct("text").alias("p"), label("text").alias("label"))
    assert df.select(inferred("text").alias("q")).schema["q"].dataType == scored.schema["p"].dataType
    for row, want in zip(scored.orderBy("id").collect(), expected):
        assert row.p.label == (want["label"] if want else None)
        assert row.label == (want["label"] if want else "None")
        if want:
            assert row.p.probability == pytest.approx(want["probability"], abs=1e-12)
            assert row.p.probabilities == pytest.approx(want["probabilities"], abs=1e-12)
        else:
            assert row.p.probability is None and row.p.probabilities is None


def test_log_model_bad_input_is_one_line(tmp_path, local_store, model_dir):
    with pytest.raises(SparklstmError, match=r"^model directory not found: .*nowhere$"):
        log_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SparklstmError, match="is not a sparklstm model directory"):
        log_model(tmp_path / "empty")
    with pytest.raises(SparklstmError, match="model_config takes device, batch_size and precision, not gpu"):
        log_model(model_dir, model_config={"gpu": True})
    with pytest.raises(SparklstmError, match="precision must be one of"):
        log_model(model_dir, model_config={"precision": "fp8"})
    result = runner.invoke(app, ["log-model", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: model directory not found")
    assert not local_store.search_registered_models()


def test_log_model_config_sets_the_scoring_defaults(model_dir, local_store):
    info = log_model(model_dir, model_config={"precision": "bf16", "batch_size": 8})
    predictor = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model().predictor
    assert (predictor.precision, predictor.batch_size) == ("bf16", 8)
    override = mlflow.pyfunc.load_model(info.model_uri, model_config={"precision": "fp32"})
    assert override.unwrap_python_model().predictor.precision == "fp32"


def test_cli_log_model_registers(model_dir, tmp_path, local_store):
    result = runner.invoke(app, ["log-model", "--model", str(model_dir), "--register", "topics"])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    assert "registered as topics version 1" in " ".join(result.stdout.split())
    (version,) = local_store.search_model_versions("name='topics'")
    assert int(version.version) == 1 and (tmp_path / "mlruns").is_dir()
    loaded = mlflow.pyfunc.load_model("models:/topics/1")
    model_id = json.loads((model_dir / "config.json").read_text())["sha256"]["model.safetensors"]
    assert loaded.metadata.metadata["sparklstm_model_id"] == model_id


# --------------------------------------------------------------------------------------------
# a real tracking server (last: it starts with the module and has had time to come up)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def server_process(tmp_path_factory):
    """``mlflow server`` on SQLite with proxied artifacts (clients upload over HTTP, as to a
    remote server), started with the module and killed with its process group at the end."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(base / "server.log", "w")
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: starts 2x faster
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{base}/mlflow.db",
         "--artifacts-destination", str(base / "artifacts")],
        cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield {"process": process, "url": f"http://127.0.0.1:{port}", "log": base / "server.log",
           "artifacts": base / "artifacts"}
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()


@pytest.fixture
def server(server_process, monkeypatch):
    url, deadline = server_process["url"], time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server_process["process"].poll() is not None or time.monotonic() > deadline:
            log = server_process["log"].read_text()[-4000:]
            pytest.fail(f"mlflow server at {url} did not answer /health (exit code "
                        f"{server_process['process'].poll()}); its log:\n{log}")
        time.sleep(0.25)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    return server_process


def test_server_train_log_register_and_load(prepped_dir, tmp_path, server):
    out = tmp_path / "model"
    train(prepped=prepped_dir, out=out, model_config=TINY_MODEL, train_config=TINY_TRAIN,
          progress=False, log=quiet, mlflow=True, mlflow_experiment="remote")
    client = MlflowClient()
    run = only_run(client, "remote")
    assert run.info.status == "FINISHED" and run.data.params["model.hidden_size"] == "16"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    # the artifacts went over HTTP into the server's destination
    assert list(server["artifacts"].rglob("training_curves.png"))
    assert list(server["artifacts"].rglob("model_dir/model.safetensors"))

    info = log_model(out, registered_model_name="remote-topics")
    assert int(info.registered_model_version) == 1
    loaded = mlflow.pyfunc.load_model("models:/remote-topics/1")
    expected = [e["label"] for e in Predictor.from_dir(out).predict(TEXTS[:3])]
    assert loaded.predict(pd.DataFrame({"text": TEXTS[:3]}))["label"].tolist() == expected
