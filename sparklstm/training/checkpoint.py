"""Resumable training: the training loop's whole state after each epoch, atomic and pickle-free.

One file, ``<model dir>/checkpoint/checkpoint.safetensors``:

* tensors: ``model.<name>`` (the weights after the epoch), ``best.<name>`` (the best epoch's
  weights so far), ``optim.<i>.<key>`` (Adam's per-parameter state: ``exp_avg``, ``exp_avg_sq``,
  ``step``), ``rng.torch`` and ``rng.cuda`` (torch generator states, uint8);
* the safetensors metadata ``{"sparklstm": <json>}``: the epoch, whether training is over, the
  settings the run was started with (compared on resume), the loop's counters and history, the
  optimizer's param groups, and the Python, numpy and batch-order RNG states.

Being one file, one ``os.replace`` publishes it: it is written to a temporary file in the same
directory, fsynced, renamed over the previous checkpoint and the directory fsynced, so a SIGKILL
at any moment leaves either the previous complete checkpoint or the new one, never a torn file.
Loading parses safetensors and JSON only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SparklstmError

FORMAT, FORMAT_VERSION = "sparklstm-checkpoint", 1
CHECKPOINT_DIR, CHECKPOINT_FILE = "checkpoint", "checkpoint.safetensors"
PREPPED_FILES = ("prep.json", "vocab.json", "labels.json")  # what identifies the training data


@dataclass
class LoopState:
    """Everything the training loop carries from one epoch to the next (besides the model,
    optimizer and RNGs). ``epoch`` is the last completed epoch; ``done`` is set when the loop
    ended (last epoch or early stop), so a resume of a finished loop only writes the model."""

    epoch: int = 0
    done: bool = False
    history: list = field(default_factory=list)
    best_f1: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None  # name -> tensor, on the training device
    wide_fit: dict | None = None  # the wide path's fit (C, validation macro-F1, seconds)
    stale: int = 0  # epochs since the best one (early stopping)
    real_tokens: int = 0
    train_seconds: float = 0.0


def checkpoint_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def run_settings(*, model_config: dict, train_config: dict, device: str, precision: str,
                 prepped: str | Path) -> dict:
    """What must be equal for a resumed run to continue the interrupted one: the model and
    training configs, the resolved device type and precision, and a hash of the prepped data's
    description (settings and counts, vocabulary, labels)."""
    digest = hashlib.sha256()
    for name in PREPPED_FILES:
        digest.update((Path(prepped) / name).read_bytes())
    return {"model": model_config, "train": train_config, "device": device.split(":")[0],
            "precision": precision, "prepped_sha256": digest.hexdigest()}


def save_checkpoint(model_dir: str | Path, *, state: LoopState, settings: dict, model, optimizer,
                    batch_rng: np.random.Generator, device: str) -> Path:
    """Write the checkpoint of the epoch just completed, atomically; returns its path."""
    import torch
    from safetensors.torch import save

    def cpu(t):  # a private CPU copy: safetensors refuses tensors that share storage
        return t.detach().to("cpu", copy=True).contiguous()

    tensors = {f"model.{k}": cpu(v) for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": cpu(v) for k, v in (state.best_state or {}).items()}
    optim = optimizer.state_dict()
    optim_scalars = {}
    for index, per_param in optim["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = cpu(value)
            else:
                optim_scalars.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if device.startswith("cuda"):
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings,
        "loop": {"epoch": state.epoch, "done": state.done, "history": state.history,
                 "best_f1": state.best_f1, "best_epoch": state.best_epoch, "stale": state.stale,
                 "real_tokens": state.real_tokens, "train_seconds": state.train_seconds,
                 "wide_fit": state.wide_fit},
        "optimizer": {"param_groups": optim["param_groups"], "scalars": optim_scalars},
        "rng": {"python": [py_version, list(py_state), py_gauss],
                "numpy": [np_name, np_keys.tolist(), np_pos, np_has_gauss, np_gauss],
                "batch_order": batch_rng.bit_generator.state},
    }
    data = save(tensors, metadata={"sparklstm": json.dumps(meta)})
    path = checkpoint_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, data)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # a leftover from a killed write is overwritten
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # ... and the rename itself survives a crash
    finally:
        os.close(dir_fd)


@dataclass
class Checkpoint:
    """A decoded checkpoint: its JSON metadata and its tensors (CPU)."""

    meta: dict
    tensors: dict

    @property
    def epoch(self) -> int:
        return self.meta["loop"]["epoch"]

    def prefixed(self, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def read_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Decode ``<model_dir>/checkpoint/checkpoint.safetensors`` (safetensors + JSON, no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = checkpoint_path(model_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SparklstmError(f"no checkpoint to resume in {path.parent} (a run that finished "
                             "removes it)") from None
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["sparklstm"])
    except (SafetensorError, ValueError, KeyError, TypeError) as e:
        raise SparklstmError(f"{path} is not a readable checkpoint: {e}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise SparklstmError(f"{path} is not a sparklstm checkpoint of version {FORMAT_VERSION}")
    return Checkpoint(meta=meta, tensors=tensors)


def resume(model_dir: str | Path, *, settings: dict, model, optimizer,
           batch_rng: np.random.Generator, device: str) -> LoopState:
    """Restore the model, optimizer and every RNG from the checkpoint; returns the loop state.

    Raises ``SparklstmError`` when there is no checkpoint or it was made with other settings.
    """
    import torch

    ckpt = read_checkpoint(model_dir)
    differences = _differences(ckpt.meta["settings"], settings)
    if differences:
        raise SparklstmError(
            f"the checkpoint in {checkpoint_path(model_dir).parent} was made with different "
            f"settings ({'; '.join(differences)}); resume with the same settings or start over "
            "(--overwrite)")
    model.load_state_dict(ckpt.prefixed("model."), strict=True)
    _load_optimizer(optimizer, ckpt)
    rng = ckpt.meta["rng"]
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    batch_rng.bit_generator.state = rng["batch_order"]
    torch.set_rng_state(ckpt.tensors["rng.torch"])
    if device.startswith("cuda"):
        torch.cuda.set_rng_state(ckpt.tensors["rng.cuda"], device)
    loop = ckpt.meta["loop"]
    best = ckpt.prefixed("best.")
    return LoopState(**loop, best_state={k: v.to(device) for k, v in best.items()} or None)


def _load_optimizer(optimizer, ckpt: Checkpoint) -> None:
    meta = ckpt.meta["optimizer"]
    state: dict[int, dict] = {}
    for name, tensor in ckpt.prefixed("optim.").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, scalars in meta["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    # JSON turned tuples (Adam's betas) into lists; give them back their type.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``key checkpoint-value != now-value`` for each setting that differs, dotted keys."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append("the prepped data changed" if key == "prepped_sha256"
                       else f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def remove_checkpoint(model_dir: str | Path) -> None:
    """Delete the checkpoint directory (after the model directory is complete)."""
    shutil.rmtree(Path(model_dir) / CHECKPOINT_DIR, ignore_errors=True)
