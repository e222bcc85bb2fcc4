"""Which torch device to run on: from the user's choice, or from the Spark task's GPU."""

from __future__ import annotations

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


def resolve_precision(requested: str, device: str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; other values unchanged.

    Example
    -------
    >>> resolve_precision("fp32", "cpu")
    'fp32'
    """
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "fp32"


def has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later): oneDNN's fast bf16."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def scoring_precision(requested: str, device: str) -> str:
    """``auto`` for scoring -> ``bf16`` where it scores faster than fp32, else ``fp32``.

    That is a GPU with bf16, or a CPU with AMX. Native bf16 alone is not enough: on a CPU with
    AVX-512 BF16 but no AMX (the bench machine), oneDNN's bf16 LSTM forward ran 1.48x slower than
    its fp32 one for the default model (docs/benchmarks.md, "Scoring precision"), though bf16
    training there is faster (its batches are larger and the backward pass dominates).

    Example
    -------
    >>> scoring_precision("int8", "cpu")
    'int8'
    """
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if native_bf16(device) else "fp32"
    return "bf16" if has_amx() else "fp32"
