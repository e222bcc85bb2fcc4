"""Which torch device to run on: from the user's choice, or from the Spark task's GPU."""

from __future__ import annotations

import functools
import os

from .errors import SparklstmError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda if available else cpu; ``cuda`` fails clearly when there is none.

    Example
    -------
    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise SparklstmError(f"device must be one of {DEVICES} (or cuda:N), got {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SparklstmError(f"device {requested!r} requested but torch sees no CUDA device")
    return requested


def task_gpu_device(addresses: list[str], *, visible: str | None = None) -> str:
    """The torch device for a Spark task's GPU addresses.

    Spark reports the physical GPU addresses it gave the task (from the discovery script). If the
    executor was started with ``CUDA_VISIBLE_DEVICES``, torch numbers only the visible GPUs, so
    physical address ``a`` is torch device ``visible.index(a)``.

    Example
    -------
    >>> task_gpu_device(["3"], visible="2,3")
    'cuda:1'
    >>> task_gpu_device(["1"])
    'cuda:1'
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    address = addresses[0].strip()
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if address in ids:
            return f"cuda:{ids.index(address)}"
    return f"cuda:{int(address)}"


def native_bf16(device: str) -> bool:
    """Whether ``device`` runs bf16 natively: a GPU with bf16, or a CPU with AVX-512 BF16 or AMX
    (oneDNN's own check); elsewhere bf16 is emulated and slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=None)
def cpu_bf16_faster(margin: float = 1.2) -> bool:
    """Whether bf16 matmuls run at least ``margin`` times faster than fp32 on this CPU, with the
    threads torch has now: measured once per process (about 0.1 s), cached.

    Native bf16 says nothing about speed. Measured one thread each, GEMMs of the LSTM's shapes:
    an AMD EPYC with AVX-512 BF16 ran bf16 2.3x faster than fp32 (185 against 79 GFLOP/s); an
    Intel Xeon with AVX-512 BF16 but no AMX ran it 0.55x as fast (74 against 130), and its bf16
    LSTM scored 1.4x slower (docs/benchmarks.md, "Scoring precision"). The gap either way is far
    beyond timing noise, so the choice is stable on a given machine.
    """
    import time

    import torch

    if not native_bf16("cpu"):
        return False
    # (256 rows, 256 inputs) @ (256, 512): a batch through the second layer's gate projection.
    a, b = torch.randn(256, 256), torch.randn(256, 512)

    def best(x, y) -> float:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(10):
                x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        fp32 = best(a, b)
        bf16 = best(a.bfloat16(), b.bfloat16())
    return fp32 / bf16 >= margin


def auto_precision(requested: str, device: str) -> str:
    """``auto`` -> ``bf16`` where it is faster than fp32, else ``fp32``: a GPU with bf16, or a CPU
    where :func:`cpu_bf16_faster` measured it so; other values unchanged. Training (bf16 autocast)
    and scoring both follow it.

    Example
    -------
    >>> auto_precision("int8", "cpu")
    'int8'
    """
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if cpu_bf16_faster() else "fp32"
