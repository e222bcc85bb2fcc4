"""``sparklstm info``: what a model directory holds, and its integrity check (CliRunner).

Tampering happens on tmp copies; the session's model directory is only read.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from sparklstm.artifact import CONFIG, VOCAB, WEIGHTS, load_artifact
from sparklstm.cli import app
from sparklstm.info import model_info
from sparklstm.training.loop import CURVES_PNG

runner = CliRunner()


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_info_shows_config_labels_vocab_parameters_metrics_and_files(model_dir):
    result = runner.invoke(app, ["info", "--model", str(model_dir)])
    assert result.exit_code == 0, result.stdout + result.stderr
    art = load_artifact(model_dir)
    params = sum(p.numel() for p in art.build_model().parameters())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    out = result.stdout
    for expected in ("food, sports, tech", f"{len(art.vocab)} tokens", f"{params:,}", "lstm",
                     f"{metrics['test']['macro_f1']:.4f}", f"{metrics['val']['accuracy']:.4f}",
                     WEIGHTS, VOCAB, CURVES_PNG):
        assert expected in out, expected
    assert out.count("OK") == 2  # the two files config.json pins: weights and vocabulary


def test_info_json(model_dir):
    result = runner.invoke(app, ["info", "--model", str(model_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    art = load_artifact(model_dir)
    assert info["labels"] == ["food", "sports", "tech"] and info["ok"] is True
    assert info["vocab_size"] == len(art.vocab) == art.config["model"]["vocab_size"]
    assert info["parameters"] == sum(p.numel() for p in art.build_model().parameters())
    assert info["model"]["cell"] == "lstm" and info["tokenizer"]["max_len"] == 64
    assert set(info["metrics"]) >= {"val", "test", "best_epoch", "epochs"}
    status = {f["name"]: f["status"] for f in info["files"]}
    assert status == {CONFIG: "reference", WEIGHTS: "OK", VOCAB: "OK", "metrics.json": "unhashed",
                      CURVES_PNG: "unhashed"}
    assert model_info(model_dir) == info


@pytest.mark.parametrize("name, how", [(WEIGHTS, "flip"), (VOCAB, "append"), (VOCAB, "delete")])
def test_info_reports_an_altered_or_missing_file(model_dir, tmp_path, name, how):
    bad = shutil.copytree(model_dir, tmp_path / "model")
    path = bad / name
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "append":
        path.write_bytes(path.read_bytes() + b" ")
    else:
        path.unlink()
    result = runner.invoke(app, ["info", "--model", str(bad)])
    line = one_error_line(result)
    assert name in line and ("is missing" if how == "delete" else "does not match its sha256") in line
    assert ("MISSING" if how == "delete" else "MISMATCH") in result.stdout  # the table still shows
    as_json = runner.invoke(app, ["info", "--model", str(bad), "--json"])
    one_error_line(as_json)
    info = json.loads(as_json.stdout)
    assert info["ok"] is False and info["parameters"] is None


def test_info_on_a_directory_that_is_not_a_model(tmp_path):
    def error_of(path):
        return one_error_line(runner.invoke(app, ["info", "--model", str(path)]))

    assert "model directory not found" in error_of(tmp_path / "x")
    assert "no config.json" in error_of(tmp_path)
    (tmp_path / CONFIG).write_text("{not json")
    assert "not valid JSON" in error_of(tmp_path)


def test_info_still_takes_the_model_as_an_argument(model_dir):
    """`sparklstm info DIR`, the spelling before --model, gives the same answer (not in --help)."""
    old = runner.invoke(app, ["info", str(model_dir), "--json"])
    assert old.exit_code == 0, old.stderr
    assert json.loads(old.stdout) == model_info(model_dir)
    both = runner.invoke(app, ["info", str(model_dir), "--model", str(model_dir)])
    assert "give the model directory once, with --model" in one_error_line(both)
