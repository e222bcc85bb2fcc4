"""Runs tests/connect/ (sparklstm under Spark Connect) against a real Connect server started here.

The suite runs in a process of its own: a Connect client cannot share a process with the classic
local[2] session the other tests use. This test makes what the suite compares against with the
classic session (the conftest model, the classic prep output) and passes it on.
"""

from __future__ import annotations

import subprocess
import sys

from cluster import ENV, REPO, connect_server  # noqa: F401  (module-scoped fixture)
from test_readme import README, fenced_blocks


def test_the_connect_suite_passes(connect_server, model_dir, corpus_path, prepped_dir):  # noqa: F811
    url, loads, _ = connect_server
    env = {**ENV, "SPARKLSTM_CONNECT_URL": url, "SPARKLSTM_CONNECT_LOADS": str(loads),
           "SPARKLSTM_TEST_MODEL": str(model_dir), "SPARKLSTM_TEST_CORPUS": str(corpus_path),
           "SPARKLSTM_TEST_PREPPED": str(prepped_dir)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                          str(REPO / "tests" / "connect")], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=1200)
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1]


def test_the_readme_connect_block_runs_as_written(connect_server, model_dir, corpus_path):  # noqa: F811
    url, _, work = connect_server
    (block,) = [text for lang, text in fenced_blocks(README) if lang == "python" and ".remote(" in text]
    (work / "model").symlink_to(model_dir)
    (work / "emails.parquet").symlink_to(corpus_path)
    code = block.replace('"sc://localhost:15002"', repr(url))
    run = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=work, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "|label|" in run.stdout.replace(" ", "") or "label" in run.stdout
