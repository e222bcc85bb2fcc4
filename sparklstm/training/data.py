"""prepped/ Parquet -> length-bucketed, padded training batches.

Batches are built from rows of similar length (sort inside a shuffled window of many batches),
so padding stays small while batch order stays random from epoch to epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SparklstmError


@dataclass
class Split:
    """One split in memory: token-id arrays, their lengths and label ids."""

    ids: list[np.ndarray]
    lengths: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, *, batch_size: int, rng: np.random.Generator | None):
        """(self, row indices) per batch: the interface of ``shards.ShardedSplit`` too."""
        for rows in batch_indices(self.lengths, batch_size=batch_size, rng=rng):
            yield self, rows

    def tokens(self) -> int:
        """Real (unpadded) tokens in the split: what one epoch reads."""
        return int(self.lengths.sum())

    def label_counts(self, num_classes: int) -> np.ndarray:
        """(C,) rows per label id."""
        return np.bincount(self.labels, minlength=num_classes)


def read_split(path: str | Path) -> Split:
    """Read a prepped split (a directory of Parquet files) with pyarrow, no Spark needed."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path), columns=["ids", "label_id"])
    except (OSError, ValueError) as e:
        raise SparklstmError(f"cannot read prepped split {path}: {e}") from None
    return split_from_table(table)


def split_from_table(table) -> Split:
    """A pyarrow table with ``ids`` and ``label_id`` as a Split (ids are views into one array)."""
    lists = table.column("ids").combine_chunks()
    offsets = lists.offsets.to_numpy()
    flat = lists.values.to_numpy(zero_copy_only=False)
    ids = np.split(flat, offsets[1:-1]) if len(offsets) > 1 else []
    labels = table.column("label_id").to_numpy().astype(np.int64)
    return Split(ids=ids, lengths=np.diff(offsets).astype(np.int64), labels=labels)


def batch_indices(lengths: np.ndarray, *, batch_size: int, rng: np.random.Generator | None,
                  window: int = 50) -> list[np.ndarray]:
    """Row indices per batch. With ``rng``: shuffled, then sorted by length within windows of
    ``window`` batches, and the batches shuffled; without: sorted by length (evaluation)."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    span = batch_size * window
    batches = []
    for start in range(0, n, span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def pad_ids(ids: list[np.ndarray], lengths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(B, T) int64 ids of ``rows``, right-padded with 0 to the longest of them (never longer)."""
    batch = np.zeros((len(rows), int(lengths[rows].max())), dtype=np.int64)
    for j, r in enumerate(rows):
        batch[j, : lengths[r]] = ids[r]
    return batch


def pad_batch(split: Split, rows: np.ndarray):
    """(ids (B, T), lengths (B,), labels (B,)) torch tensors for a training batch."""
    import torch

    return (torch.from_numpy(pad_ids(split.ids, split.lengths, rows)),
            torch.from_numpy(split.lengths[rows]), torch.from_numpy(split.labels[rows]))
