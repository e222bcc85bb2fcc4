"""Data-parallel training: N DistributedDataParallel ranks, started on this machine or by Spark.

Both launchers start the same rank program (``run_rank``) under torchrun's contract: ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment, and the job
as a JSON spec (paths and config dicts, nothing pickled):

* ``launch_local``: N processes of this machine (``python -m sparklstm.training.distributed
  SPEC``), each with its own torch threads: ``sparklstm train --processes N``.
* ``launch_cluster``: Spark's ``TorchDistributor`` (torchrun in a barrier stage, one rank per
  task): ``sparklstm train --cluster`` and ``spark-submit jobs/train.py``.

Every rank runs the training loop (loop.py) with its ``Ranks``; gradients are averaged by DDP
(gloo on CPU, NCCL on GPU), and rank 0 logs, checkpoints and writes the model directory. A rank
that fails on the user's input (an unreadable prepped/, say) writes its one-line error to
``error-rank<r>.txt`` beside the spec and exits 2; the launcher stops the other ranks and raises it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import SparklstmError
from .ranks import Ranks

RESULT_FILE = "result.json"  # rank 0's metrics, beside the spec


@dataclass
class Job:
    """One training run, as every rank reads it."""

    prepped: str
    out: str
    model_config: dict
    train_config: dict
    resume: bool = False
    progress: bool = False


# Below this many real tokens over all epochs (about 25 s of training on two cores) one process
# trains: starting ranks costs ~6 s (imports, the process group, the wide path sent to each rank).
MIN_PARALLEL_TOKENS = 1_000_000


def default_processes(*, device: str, batch_size: int, planned_tokens: int,
                      cores: int | None = None) -> int:
    """``processes = 0`` (auto): one single-thread rank per available core, at most one per 32
    rows of the global batch (smaller shares run matmuls too small to pay for the all-reduce);
    one process on a GPU (one device) and for short runs (``MIN_PARALLEL_TOKENS``).

    Measured on 2 cores (bench/train_parallel.py, docs/benchmarks.md): one process with two
    threads kept 0.26-0.37 of its speed beside one busy process, as OpenMP's threads wait on each
    other whenever the neighbour holds a core; two single-thread ranks kept 0.72-0.84 of theirs,
    and ran 0.84-1.08x as fast as the one process when the machine was idle."""
    if device.startswith("cuda") or planned_tokens < MIN_PARALLEL_TOKENS:
        return 1
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, min(cores, batch_size // 32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(job: Job, *, processes: int, threads: int) -> dict:
    """Run ``processes`` ranks of ``threads`` torch threads each on this machine; returns rank 0's
    metrics. Rank 0's log lines and progress bar go to this process's stderr."""
    with tempfile.TemporaryDirectory(prefix="sparklstm-ranks-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps(asdict(job)))
        port = free_port()
        procs, logs = [], []
        for rank in range(processes):
            env = os.environ | {
                "RANK": str(rank), "WORLD_SIZE": str(processes), "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": str(threads), "SPARKLSTM_THREADS": str(threads)}
            # Rank 0 shows its log lines and progress bar here; the others write to files.
            quiet = None if rank == 0 else open(Path(tmp) / f"rank{rank}.log", "wb")
            logs.append(quiet)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "sparklstm.training.distributed", str(spec)],
                env=env, stdin=subprocess.DEVNULL, stdout=quiet, stderr=quiet))
        failed = _wait(procs)
        for f in logs:
            if f is not None:
                f.close()
        if failed is None:
            return json.loads((Path(tmp) / RESULT_FILE).read_text())
        raise SparklstmError(_failure(failed, procs, Path(tmp), job))


def _wait(procs: list[subprocess.Popen]) -> int | None:
    """Wait for every rank; at the first failure stop the others. Returns the failed rank (the
    one that caused it: an error file's writer or a killed rank before a collateral one)."""
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c == 0 for c in codes):
                return None
            bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                time.sleep(0.5)  # let a rank whose peer died write its own error first
                _stop(procs)
                return min(bad, key=lambda r: (procs[r].returncode != 2, procs[r].returncode >= 0, r))
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs)
        raise


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _failure(rank: int, procs: list[subprocess.Popen], tmp: Path, job: Job) -> str:
    """The one-line message for a failed local run."""
    error = tmp / f"error-rank{rank}.txt"
    if error.exists():
        return error.read_text().strip()
    code = procs[rank].returncode
    from .checkpoint import checkpoint_path, read_checkpoint

    where = " and no checkpoint was written yet"
    if checkpoint_path(job.out).exists():
        where = (f"; `sparklstm train ... --resume` continues from its checkpoint "
                 f"(epoch {read_checkpoint(job.out).epoch})")
    if code < 0:
        return f"training rank {rank} was killed by {signal.Signals(-code).name}{where}"
    log = tmp / f"rank{rank}.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    return f"training rank {rank} exited with status {code}{where}" + (f": {tail[0]}" if tail else "")


def launch_cluster(job: Job, *, processes: int, use_gpu: bool, log: Callable[[str], None]) -> dict:
    """Run ``processes`` ranks as Spark tasks through ``TorchDistributor`` (the active Spark
    session's cluster, one task slot per rank); returns rank 0's metrics. prepped/ and the model
    directory must be on storage every executor reads and writes (a shared or mounted path)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    log(f"training with {processes} ranks on the Spark cluster (TorchDistributor"
        f"{', a GPU per rank' if use_gpu else ''})")
    distributor = TorchDistributor(num_processes=processes, local_mode=False, use_gpu=use_gpu)
    # The ranks' output reaches the driver through TorchDistributor's log stream, written to
    # sys.stderr here; Spark's exception only says "view stdout logs". A rank's error line is
    # taken from the stream, and what follows it (torchrun's report of the failure) is dropped.
    stream = _RankErrors(sys.stderr)
    sys.stderr = stream
    try:
        return distributor.run(cluster_rank, json.dumps(asdict(job)))
    except Exception:
        if stream.errors:
            raise SparklstmError(stream.errors[0]) from None
        raise
    finally:
        sys.stderr = stream.target


class _RankErrors:
    """A stderr that passes lines on until a rank reports ``sparklstm-error: ...``, and keeps those."""

    def __init__(self, target):
        self.target, self.errors = target, []

    def write(self, text: str) -> int:
        for line in text.splitlines(keepends=True):
            if MARKER in line:
                self.errors.append(line.split(MARKER, 1)[1].strip())
            elif not self.errors:
                self.target.write(line)
        return len(text)

    def __getattr__(self, name):  # flush, fileno, isatty, ... of the real stderr
        return getattr(self.target, name)


MARKER = "sparklstm-error:"


def cluster_rank(spec: str) -> dict | None:
    """TorchDistributor's entry point in each task (torchrun set the rank's environment)."""
    import socket as _socket

    try:
        return run_rank(Job(**json.loads(spec)))
    except SparklstmError as e:
        # One line for the driver (see launch_cluster), then exit without a traceback.
        print(f"{MARKER} rank {os.environ.get('RANK')} on {_socket.gethostname()}: {e} (prepped/ "
              "and the model directory must be on storage every executor reaches)",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)


def run_rank(job: Job) -> dict | None:
    """One rank: join the process group, train, leave. Returns the metrics on rank 0."""
    import datetime

    import torch
    import torch.distributed as dist

    from ..config import ModelConfig, TrainConfig
    from ..device import resolve_device
    from .loop import run_loop

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    tcfg = TrainConfig(**job.train_config)
    device = resolve_device(tcfg.device)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local if local < torch.cuda.device_count() else 0)
        device = f"cuda:{torch.cuda.current_device()}"
    threads = int(os.environ.get("SPARKLSTM_THREADS", tcfg.num_threads or 1))
    torch.set_num_threads(threads)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank,
                            world_size=world, timeout=datetime.timedelta(minutes=30))
    try:
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if rank == 0 else (lambda m: None)
        return run_loop(prepped=job.prepped, out=job.out, model_config=ModelConfig(**job.model_config),
                        train_config=tcfg, progress=job.progress and rank == 0, log=log,
                        resume=job.resume, tracker=None, ranks=Ranks(rank, world), device=device)
    finally:
        dist.destroy_process_group()


def main(spec: str) -> int:
    """``python -m sparklstm.training.distributed SPEC``: one rank of ``launch_local``."""
    path = Path(spec)
    rank = os.environ.get("RANK", "0")
    try:
        metrics = run_rank(Job(**json.loads(path.read_text())))
    except SparklstmError as e:
        (path.parent / f"error-rank{rank}.txt").write_text(f"training rank {rank}: {e}")
        return 2
    except Exception:  # a peer rank died (its launcher reports why), or a bug: kept for the report
        if os.environ.get("SPARKLSTM_DEBUG"):
            raise
        (path.parent / f"rank{rank}.log").write_text(traceback.format_exc())
        return 1
    if metrics is not None:
        (path.parent / RESULT_FILE).write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
