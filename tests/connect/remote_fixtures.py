"""Fixtures of the Spark Connect suite, which tests/test_connect.py runs in a process of its own
(not a conftest.py: that name would shadow tests/conftest.py, whose helpers the suite imports).

A Connect client cannot share a process with a classic session (PySpark refuses, and its column
functions pick one mode per process), so the parent test starts the Connect server, makes the
model and the classic prep output with the classic session, and hands them over in the
environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyspark.sql import SparkSession


def _env(name: str) -> str:
    if name not in os.environ:
        pytest.skip("tests/connect/ runs through tests/test_connect.py")
    return os.environ[name]


@pytest.fixture(scope="session")
def remote():
    session = SparkSession.builder.remote(_env("SPARKLSTM_CONNECT_URL")).getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def loads() -> Path:
    """The file the server's Python workers append one line to per model decode."""
    return Path(_env("SPARKLSTM_CONNECT_LOADS"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return Path(_env("SPARKLSTM_TEST_MODEL"))


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    return Path(_env("SPARKLSTM_TEST_CORPUS"))


@pytest.fixture(scope="session")
def classic_prepped() -> Path:
    """prep's output from the classic session, same corpus, PrepConfig(min_freq=1, max_len=64)."""
    return Path(_env("SPARKLSTM_TEST_PREPPED"))
