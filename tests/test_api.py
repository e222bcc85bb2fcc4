"""The public API: what ``from sparklstm import ...`` gives, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_are_the_functions_and_the_import_stays_light():
    # Run twice in one process: a submodule named like a function (sparklstm/train.py before the
    # stage layout) replaced the function with the module once anything had imported it.
    code = """
import sys
import sparklstm
assert "torch" not in sys.modules and "pyspark" not in sys.modules, "import sparklstm is heavy"
for _ in range(2):
    from sparklstm import classify_udf, evaluate_scored, prep, score, train, Predictor
    for f in (classify_udf, evaluate_scored, prep, score, train):
        assert callable(f) and type(f).__name__ == "function", f
    assert isinstance(Predictor, type)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
