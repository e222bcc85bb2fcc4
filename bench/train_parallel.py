"""Data-parallel training on one machine: process x thread layouts, idle and beside a busy process.

    python bench/train_parallel.py --prepped sparklstm-demo/prepped [--epochs 2]

Each layout trains the default model (recurrent path only: ``--no-wide``, the wide fit is not a
training step) with ``sparklstm train --processes P --threads T`` in a fresh process, and reads the
training loop's real tokens/s from metrics.json. Every layout runs idle, then beside one busy
process (a Python loop that keeps one core busy, as another job on a shared machine would).

Then two ranks time an all-reduce of the model's gradients (what DDP sends each step), and the
step time and all-reduce figures give an estimate of scaling to 8 and 32 executors.

Prints a table and, on the last lines, ratios against today's default (1 process x torch's
threads) measured in the same run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_tokens_per_s(prepped: str, *, processes: int, threads: int, epochs: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "sparklstm.cli", "train", prepped, "--out", str(out), "--epochs",
           str(epochs), "--processes", str(processes), "--threads", str(threads), "--no-wide",
           "--no-progress", "--overwrite", "--patience", str(epochs)]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((out / "metrics.json").read_text())["train_tokens_per_s"]


def busy_neighbour() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def allreduce_rank(rank: int, world: int, port: int, numel: int, repeats: int, result) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    grads = torch.randn(numel)
    dist.all_reduce(grads)  # warm-up: connections
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(grads)
    seconds = (time.perf_counter() - start) / repeats
    if rank == 0:
        result.put(seconds)
    dist.destroy_process_group()


def allreduce_seconds(numel: int, *, world: int = 2, repeats: int = 20) -> float:
    import torch.multiprocessing as mp

    from sparklstm.training.distributed import free_port

    ctx = mp.get_context("spawn")
    result = ctx.SimpleQueue()
    mp.start_processes(allreduce_rank, args=(world, free_port(), numel, repeats, result),
                       nprocs=world, start_method="spawn")
    return result.get()


def trainable_parameters(prepped: str) -> tuple[int, int]:
    """(all trainable parameters, of which the embedding) of the default model on ``prepped``."""
    from sparklstm.config import ModelConfig, as_dict
    from sparklstm.nn.model import LSTMClassifier
    from sparklstm.spark.prep import load_prepped

    vocab, labels, _ = load_prepped(prepped)
    model = LSTMClassifier(vocab_size=len(vocab), num_classes=len(labels),
                           **(as_dict(ModelConfig()) | {"wide": False}))
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, model.embedding.weight.numel()


def mean_batch_tokens(prepped: str, batch_size: int = 64) -> float:
    from sparklstm.training.data import read_split

    split = read_split(f"{prepped}/train")
    return split.tokens() / max(1, -(-len(split) // batch_size))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepped", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--layouts", default="1x2,1x1,2x1", help="PROCESSESxTHREADS, comma-separated")
    p.add_argument("--bandwidth-gbs", type=float, default=1.25,
                   help="network bandwidth between executors for the estimate (GB/s; 10 GbE)")
    p.add_argument("--latency-us", type=float, default=100.0, help="per-message latency (us)")
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    layouts = [tuple(int(v) for v in s.split("x")) for s in a.layouts.split(",")]
    print(f"{cores} cores; {a.epochs} epochs of {a.prepped}, default model without the wide path")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for procs, threads in layouts:
            out = Path(tmp) / f"m{procs}x{threads}"
            idle = train_tokens_per_s(a.prepped, processes=procs, threads=threads, epochs=a.epochs, out=out)
            neighbour = busy_neighbour()
            try:
                busy = train_tokens_per_s(a.prepped, processes=procs, threads=threads,
                                          epochs=a.epochs, out=out)
            finally:
                neighbour.kill()
                neighbour.wait()
            rows[(procs, threads)] = (idle, busy)
    print(f"\n{'layout':>16} {'idle tok/s':>11} {'busy tok/s':>11} {'busy/idle':>10}")
    for (procs, threads), (idle, busy) in rows.items():
        print(f"{procs} proc x {threads} thr {idle:11.0f} {busy:11.0f} {busy / idle:10.2f}")

    total, embedding = trainable_parameters(a.prepped)
    grad_bytes = 4 * total
    ar = allreduce_seconds(total)
    batch_tokens = mean_batch_tokens(a.prepped)
    print(f"\nall-reduce per step: {grad_bytes / 1e6:.1f} MB of fp32 gradients ({total:,} parameters, "
          f"{embedding / total:.0%} of them the embedding), {ar * 1e3:.1f} ms between 2 ranks here")
    if (1, 1) in rows:
        # Estimate: every executor runs one single-thread rank on 32 rows (global batch 32 N),
        # compute time per step from the 1 x 1 layout, ring all-reduce over the network.
        step = 32 * batch_tokens / 64 / rows[(1, 1)][0]
        print(f"one rank's step on 32 rows: {step * 1e3:.0f} ms of compute (1 x 1 layout, "
              f"{batch_tokens / 2:.0f} tokens)")
        print(f"estimate, ring all-reduce at {a.bandwidth_gbs} GB/s and {a.latency_us:.0f} us per message:")
        for n in (1, 2, 8, 32):
            comm = 0.0 if n == 1 else (2 * (n - 1) / n * grad_bytes / (a.bandwidth_gbs * 1e9)
                                       + 2 * (n - 1) * a.latency_us * 1e-6)
            tps = n * 32 * batch_tokens / 64 / (step + comm)
            print(f"  {n:2d} executors: {tps:9.0f} tokens/s ({tps / rows[(1, 1)][0]:5.1f}x one rank), "
                  f"all-reduce {comm / (step + comm):.0%} of a step")
    base = rows.get((1, cores)) or rows.get(layouts[0])
    for key, (idle, busy) in rows.items():
        print(f"{key[0]}x{key[1]} / today's default (1x{cores}): idle {idle / base[0]:.2f}, "
              f"busy {busy / base[1]:.2f}; keeps {busy / idle:.2f} of its idle rate")


if __name__ == "__main__":
    main()
