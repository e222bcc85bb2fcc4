"""What a training rank needs to know about the others: its place, and the few collectives the
loop uses (gathering validation logits, agreeing on a step count, one object from rank 0).

A single process is ``Ranks()`` (rank 0 of 1): every method is then a plain local operation and
``torch.distributed`` is never touched, so the loop has one code path for both.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 logs, checkpoints and writes the model directory."""
        return self.rank == 0

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch: every world-th row from ``rank``. The batch is
        sorted by length, so the shares have about the same lengths and the ranks finish their
        steps together."""
        return rows if self.world == 1 else rows[self.rank :: self.world]

    def mine(self, index: int) -> bool:
        """Whether this rank evaluates batch ``index`` (evaluation batches go round robin)."""
        return index % self.world == self.rank

    def gather(self, items: list) -> list:
        """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, items)
        return [item for part in out for item in part]

    def from_main(self, obj):
        """Rank 0's ``obj`` (picklable), on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def torch_seed(self, seed: int, epoch: int) -> int:
        """The dropout seed of one rank and epoch. Ranks need different dropout masks, and a
        seed per epoch lets ``--resume`` restore every rank without saving each one's RNG."""
        return int(np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)[0])


SINGLE = Ranks()


def data_parallel(model, *, device: str):
    """``model.deep_logits`` wrapped in DistributedDataParallel: what a rank calls in its training
    steps. DDP hooks ``forward`` only, hence the small module around the method. The frozen wide
    path has no gradients and is left out of the all-reduce; buffers are not re-sent every step
    (the model has no running statistics)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class DeepPath(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, lengths):  # (B, T), (B,) -> (B, out)
            return self.model.deep_logits(ids, lengths)

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    # torch 2.13 renamed the switch (older torch only knows broadcast_buffers).
    name = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
    return DistributedDataParallel(DeepPath(model), device_ids=ids, gradient_as_bucket_view=True,
                                   **{name: False})
