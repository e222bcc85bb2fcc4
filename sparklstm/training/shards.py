"""A prepped split streamed from its Parquet shards, for corpora larger than memory.

A shard is one Parquet row group (Spark writes each task's rows as one file of one or more row
groups). Each epoch visits the shards in a new random order and fills a shuffle buffer of
``buffer_rows`` rows; the buffer is shuffled, cut into length-bucketed batches like an in-memory
split (``data.batch_indices``), trained on, and refilled. Memory stays at about one buffer plus
the shard being read ahead, whatever the size of the corpus. A background thread reads the next
shard while the model trains (pyarrow decodes without holding the GIL), so the model does not
wait for the disk.

Shuffling is by block: rows of one shard meet in the same buffer. With ``buffer_rows`` many
times a shard's size this is close to a full shuffle; splits that fit in ``buffer_rows`` are not
streamed at all (see ``train.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from .data import Split, batch_indices, read_split, split_from_table
from ..errors import SparklstmError


def _parquet_files(path: Path) -> list[Path]:
    # Spark's output: part-*.parquet beside _SUCCESS and .crc files.
    if not path.is_dir():
        raise SparklstmError(f"prepped split {path} is not a directory")
    return sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))


def _concat(parts: list[Split]) -> Split:
    return Split(ids=[a for p in parts for a in p.ids],
                 lengths=np.concatenate([p.lengths for p in parts]),
                 labels=np.concatenate([p.labels for p in parts]))


class ShardedSplit:
    """A prepped split read one shard (Parquet row group) at a time.

    Example
    -------
    >>> split = ShardedSplit("prepped/train", buffer_rows=100_000)          # doctest: +SKIP
    >>> for part, rows in split.batches(batch_size=64, rng=np.random.default_rng(0)):
    ...     x, lengths, y = pad_batch(part, rows)                            # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, buffer_rows: int):
        import pyarrow.parquet as pq

        if buffer_rows < 1:
            raise SparklstmError("shuffle_buffer_rows must be >= 1")
        self.path = Path(path)
        self.buffer_rows = buffer_rows
        self.shards: list[tuple[Path, int, int]] = []  # (file, row group, rows)
        try:
            for f in _parquet_files(self.path):
                meta = pq.ParquetFile(f).metadata
                self.shards += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        except (OSError, ValueError) as e:
            raise SparklstmError(f"cannot read prepped split {self.path}: {e}") from None
        self.rows = sum(n for _, _, n in self.shards)

    def __len__(self) -> int:
        return self.rows

    def _read(self, shard: tuple[Path, int, int]) -> Split:
        import pyarrow.parquet as pq

        file, group, _ = shard
        try:
            return split_from_table(pq.ParquetFile(file).read_row_group(group, columns=["ids", "label_id"]))
        except (OSError, ValueError) as e:
            raise SparklstmError(f"cannot read {file} (row group {group}): {e}") from None

    def _blocks(self, order: list[int]) -> Iterator[Split]:
        """Buffers of >= buffer_rows rows (the last may be smaller), the next shard read ahead."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._read, self.shards[order[0]]) if order else None
            parts, held = [], 0
            for k in range(len(order)):
                part = pending.result()
                pending = pool.submit(self._read, self.shards[order[k + 1]]) if k + 1 < len(order) else None
                parts.append(part)
                held += len(part)
                if held >= self.buffer_rows:
                    yield _concat(parts)
                    parts, held = [], 0
            if parts:
                yield _concat(parts)

    def batches(self, *, batch_size: int, rng: np.random.Generator | None, rank: int = 0,
                world: int = 1) -> Iterator[tuple[Split, np.ndarray]]:
        """(buffer, row indices) per batch: shuffled with ``rng``, in file order without.

        With ``world`` ranks, every rank draws the same shard order from ``rng`` and reads every
        world-th shard from ``rank``, and all stop after the number of batches the rank with
        the fewest yields (each knows every shard's size), so their steps pair up one to one.
        The rows left over vary with the epoch's order. Batches inside a rank's buffer are cut
        with a generator of its own, so ``rng`` stays in step across the ranks."""
        order = list(rng.permutation(len(self.shards))) if rng is not None else list(range(len(self.shards)))
        if world == 1:
            for block in self._blocks(order):
                for rows in batch_indices(block.lengths, batch_size=batch_size, rng=rng):
                    yield block, rows
            return
        local = None if rng is None else np.random.default_rng([int(rng.integers(2**63)), rank])
        steps = min(self._count_batches(order[r::world], batch_size) for r in range(world))
        done = 0
        for block in self._blocks(order[rank::world]):
            for rows in batch_indices(block.lengths, batch_size=batch_size, rng=local):
                if done == steps:
                    return
                done += 1
                yield block, rows

    def _count_batches(self, order: list[int], batch_size: int) -> int:
        """How many batches ``_blocks(order)`` cut into ``batch_size`` rows, from the metadata."""
        count, held = 0, 0
        for k in order:
            held += self.shards[k][2]
            if held >= self.buffer_rows:
                count, held = count + -(-held // batch_size), 0
        return count + -(-held // batch_size)

    def tokens(self) -> int:
        """Real (unpadded) tokens in the split, read shard by shard from the ids column."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        total = 0
        for file, group, _ in self.shards:
            ids = pq.ParquetFile(file).read_row_group(group, columns=["ids"]).column("ids")
            total += pc.sum(pc.list_value_length(ids)).as_py() or 0
        return int(total)

    def label_counts(self, num_classes: int) -> np.ndarray:
        """(C,) rows per label id, read shard by shard from the label column only."""
        import pyarrow.parquet as pq

        counts = np.zeros(num_classes, dtype=np.int64)
        for file, group, _ in self.shards:
            col = pq.ParquetFile(file).read_row_group(group, columns=["label_id"]).column("label_id")
            counts += np.bincount(col.to_numpy(), minlength=num_classes)
        return counts


def open_split(path: str | Path, *, buffer_rows: int) -> Split | ShardedSplit:
    """The split in memory if it has at most ``buffer_rows`` rows, else streamed by shard."""
    sharded = ShardedSplit(path, buffer_rows=buffer_rows)
    return read_split(path) if len(sharded) <= buffer_rows else sharded
