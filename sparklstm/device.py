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
