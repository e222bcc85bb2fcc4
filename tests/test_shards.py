"""Training from Parquet shards: every row once per epoch, bounded buffers, and a corpus whose
in-memory split does not fit a memory limit still trains when streamed."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparklstm.training.data import Split, read_split
from sparklstm.errors import SparklstmError
from sparklstm.training.shards import ShardedSplit, open_split
from sparklstm.text import Vocab


def write_prepped(out: Path, *, rows: int, length: int, files: int = 8, row_group: int = 100_000,
                  vocab: int = 50) -> Path:
    """A prepped/ directory written with pyarrow: the first token says the class, the rest is noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", rows), ("val", 2000), ("test", 2000)):
        (out / split).mkdir(parents=True)
        for f, chunk in enumerate(np.array_split(np.arange(n), files)):
            labels = rng.integers(0, 2, len(chunk)).astype(np.int32)
            ids = rng.integers(2, vocab, (len(chunk), length)).astype(np.int32)  # (n, length)
            ids[:, 0] = 2 + labels
            offsets = pa.array(np.arange(0, ids.size + 1, length, dtype=np.int32))
            table = pa.table({"ids": pa.ListArray.from_arrays(offsets, pa.array(ids.ravel())),
                              "label_id": labels, "label": labels.astype(str)})
            pq.write_table(table, out / split / f"part-{f:05d}.parquet", row_group_size=row_group)
    Vocab([f"w{i}" for i in range(vocab - 2)]).save(out / "vocab.json")
    (out / "labels.json").write_text(json.dumps(["0", "1"]))
    (out / "prep.json").write_text(json.dumps({"settings": {"max_len": length}}))
    return out


def rows_of(part: Split, rows: np.ndarray) -> list[tuple]:
    return [tuple(part.ids[r].tolist()) + (int(part.labels[r]),) for r in rows]


@pytest.fixture(scope="module")
def small_prepped(tmp_path_factory):
    # Distinct rows (unique 6-token ids), 4 files of 3 row groups: 12 shards of ~83 rows.
    out = tmp_path_factory.mktemp("shards") / "prepped"
    return write_prepped(out, rows=1000, length=6, files=4, row_group=84, vocab=10_000)


def test_every_row_exactly_once_per_epoch_in_a_new_order(small_prepped):
    split = ShardedSplit(small_prepped / "train", buffer_rows=200)
    assert len(split.shards) == 12 and len(split) == 1000
    everything = sorted(rows_of(s := read_split(small_prepped / "train"), np.arange(len(s))))
    rng = np.random.default_rng(0)
    epochs = []
    for _ in range(2):
        seen = []
        for part, rows in split.batches(batch_size=32, rng=rng):
            assert len(rows) <= 32
            assert len(part) < 200 + 84  # one buffer: at most buffer_rows plus one shard
            seen += rows_of(part, rows)
        assert sorted(seen) == everything  # nothing lost, nothing twice
        epochs.append(seen)
    assert epochs[0] != epochs[1]


def test_same_seed_same_order_and_evaluation_order_is_file_order(small_prepped):
    split = ShardedSplit(small_prepped / "train", buffer_rows=300)
    a = [rows_of(p, r) for p, r in split.batches(batch_size=50, rng=np.random.default_rng(7))]
    b = [rows_of(p, r) for p, r in split.batches(batch_size=50, rng=np.random.default_rng(7))]
    assert a == b
    unshuffled = [x for p, r in split.batches(batch_size=50, rng=None) for x in rows_of(p, r)]
    assert sorted(unshuffled) == sorted(x for batch in a for x in batch)


def test_open_split_streams_only_when_larger_than_the_buffer(small_prepped):
    assert isinstance(open_split(small_prepped / "train", buffer_rows=1000), Split)
    streamed = open_split(small_prepped / "train", buffer_rows=999)
    assert isinstance(streamed, ShardedSplit)
    in_memory = read_split(small_prepped / "train")
    assert streamed.label_counts(3).tolist() == in_memory.label_counts(3).tolist()
    assert in_memory.label_counts(3)[2] == 0 and in_memory.label_counts(3).sum() == 1000


def test_a_missing_or_broken_split_is_a_clear_error(tmp_path, small_prepped):
    with pytest.raises(SparklstmError, match="not a directory"):
        ShardedSplit(tmp_path / "nope", buffer_rows=10)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "part-0.parquet").write_bytes(b"not parquet")
    with pytest.raises(SparklstmError, match="cannot read prepped split"):
        ShardedSplit(broken, buffer_rows=10)


TRAIN_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from sparklstm.config import ModelConfig, TrainConfig
    from sparklstm import train
    prepped, out, buffer_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    m = train(prepped=prepped, out=out, progress=False, log=lambda m: None,
              model_config=ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, dropout=0.0),
              train_config=TrainConfig(epochs=1, batch_size=4096, lr=0.05, num_threads=1,
                                       shuffle_buffer_rows=buffer_rows))
    print(json.dumps({"accuracy": m["test"]["accuracy"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")
LIMIT_MIB = 800  # RLIMIT_DATA; training a small corpus in memory peaks at about 450 MiB RSS here


def train_limited(prepped: Path, out: Path, buffer_rows: int) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (LIMIT_MIB << 20, LIMIT_MIB << 20))

    # One OpenBLAS thread: numpy's OpenBLAS reserves buffers per thread at its first call, and in a
    # fresh clone that reservation failed under the limit ("OpenBLAS error: Memory allocation still
    # failed") with two threads, every time, while the same code passed in another checkout. The
    # test is about the split's memory, not OpenBLAS's, so that noise is taken out.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(prepped), str(out), str(buffer_rows)],
                          preexec_fn=limit, capture_output=True, text=True, timeout=600, env=env)


def test_a_split_too_big_for_the_memory_limit_trains_when_streamed(tmp_path):
    # 1.5M two-token rows: ~12 MB of ids, but ~300 MiB as in-memory arrays, more than the limit
    # leaves after torch. In memory the read fails; streamed through a 20,000-row buffer it trains.
    prepped = write_prepped(tmp_path / "big", rows=1_500_000, length=2)
    in_memory = train_limited(prepped, tmp_path / "m1", buffer_rows=10_000_000)
    # Out of memory shows as a MemoryError or, when the allocation that fails is in native code,
    # as death by a signal (arrow, torch), torch's allocator error, or oneDNN's "could not create a
    # primitive" (the read fitted just under the limit and the first forward pass did not): each
    # seen in a clean-clone run. Any other failure (an import error, a bug) fails this test.
    assert in_memory.returncode != 0
    out_of_memory = ("MemoryError", "bad_alloc", "Cannot allocate memory", "can't allocate memory",
                     "could not create a primitive")
    assert (any(marker in in_memory.stderr for marker in out_of_memory)
            or in_memory.returncode in (-signal.SIGSEGV, -signal.SIGABRT)), in_memory.stderr[-2000:]
    streamed = train_limited(prepped, tmp_path / "m2", buffer_rows=20_000)
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    result = json.loads(streamed.stdout.strip().splitlines()[-1])
    print(f"streamed under RLIMIT_DATA {LIMIT_MIB} MiB: {result}")
    assert result["accuracy"] > 0.99  # the first token gives the class away
    # Not asserted: peak RSS below the limit. RLIMIT_DATA bounds the process's data (the run above
    # would have failed past it); RSS also counts file-backed pages (torch's and arrow's code),
    # and it peaked at 551 MiB on an idle machine but 1,003 and 1,026 MiB in clean-clone runs
    # with other work running, while the run still fitted under the limit.
