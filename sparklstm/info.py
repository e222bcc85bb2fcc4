"""What a model directory holds, and whether its files are intact (``sparklstm info``).

The integrity check compares the sha256 of each file config.json pins (the weights and the
vocabulary) with the recorded value; the other files (metrics.json, the training-curves PNG) are
listed with their sizes but carry no recorded hash.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifact import CONFIG, FORMAT, METRICS, REQUIRED, load_artifact, read_config, sha256
from .errors import SparklstmError


def model_info(model_dir: str | Path) -> dict:
    """Config, labels, vocabulary size, parameter count, metrics summary and file checks.

    ``files`` has one entry per file: ``status`` is ``OK`` or ``MISMATCH`` (sha256 differs from
    config.json), ``MISSING``, ``reference`` (config.json itself) or ``unhashed`` (a file
    config.json does not pin). ``ok`` is
    False if any pinned or required file is missing or altered; ``parameters`` is then None
    (the weights are not loaded).

    Example
    -------
    >>> info = model_info("model/")                          # doctest: +SKIP
    >>> info["ok"], info["parameters"], info["labels"]       # doctest: +SKIP
    (True, 1923201, ['ham', 'spam'])
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise SparklstmError(f"model directory not found: {path}")
    config = read_config(path)

    pinned = config.get("sha256", {})
    files = []
    for name in sorted({*REQUIRED, *pinned, *(f.name for f in path.iterdir() if f.is_file())}):
        f = path / name
        entry = {"name": name, "bytes": f.stat().st_size if f.is_file() else None,
                 "expected_sha256": pinned.get(name), "sha256": None}
        if not f.is_file():
            entry["status"] = "MISSING"
        else:
            if name in pinned:
                entry["sha256"] = sha256(f.read_bytes())
            entry["status"] = ("reference" if name == CONFIG else "unhashed" if name not in pinned
                               else "OK" if entry["sha256"] == pinned[name] else "MISMATCH")
        files.append(entry)
    ok = all(e["status"] in ("OK", "reference", "unhashed") for e in files)

    parameters, error = None, None
    if ok:
        try:
            model = load_artifact(path).build_model()  # rebuilt from config.json, weights loaded
            parameters = sum(p.numel() for p in model.parameters())
        except SparklstmError as e:  # e.g. weights intact but config.json edited
            ok, error = False, str(e)
    metrics = _read_metrics(path / METRICS)
    return {
        "path": str(path),
        "format_version": config.get("format_version"),
        "package_version": config.get("package_version"),
        "model": config.get("model", {}),
        "labels": config.get("labels", []),
        "tokenizer": config.get("tokenizer", {}),
        "train": config.get("train", {}),
        "vocab_size": config.get("model", {}).get("vocab_size"),
        "parameters": parameters,
        "metrics": metrics,
        "files": files,
        "ok": ok,
        "error": error,
    }


def _read_metrics(path: Path) -> dict | None:
    """Accuracy and macro-F1 of the val and test splits, and training facts; None if absent."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    summary = {split: {k: m[split][k] for k in ("accuracy", "macro_f1", "n")}
               for split in ("val", "test") if isinstance(m.get(split), dict)}
    for key in ("best_epoch", "train_seconds", "train_tokens_per_s", "device", "precision", "wide"):
        if key in m:
            summary[key] = m[key]
    summary["epochs"] = len(m.get("history", []))
    return summary


def problems(info: dict) -> str | None:
    """One line naming the missing or altered files, or None when the directory is intact."""
    what = {"MISSING": "is missing", "MISMATCH": "does not match its sha256 in config.json"}
    bad = [f"{e['name']} {what[e['status']]}" for e in info["files"] if e["status"] in what]
    if bad:
        return f"{info['path']}: " + "; ".join(bad)
    return info.get("error")


def to_rich(info: dict):
    """Rich renderables for the terminal: settings, metrics and a table of files."""
    from rich.console import Group
    from rich.table import Table

    about = Table.grid(padding=(0, 2))
    about.add_column(style="bold")
    about.add_column()
    m = info["model"]
    about.add_row("model", f"{m.get('cell')} · embed {m.get('embed_dim')} · hidden {m.get('hidden_size')} "
                           f"× {m.get('num_layers')} layers · dropout {m.get('dropout')}"
                           + (" · both directions" if m.get("bidirectional") else "")
                           + (f" · wide path ({m.get('wide_buckets'):,} bigram buckets)"
                              if m.get("wide") else ""))
    about.add_row("labels", f"{len(info['labels'])}: " + ", ".join(map(str, info["labels"][:20]))
                  + (" ..." if len(info["labels"]) > 20 else ""))
    lowercase = info["tokenizer"].get("lowercase")
    about.add_row("vocabulary", f"{info['vocab_size']} tokens (lowercase {lowercase})")
    about.add_row("max_len", str(info["tokenizer"].get("max_len")))
    about.add_row("parameters", f"{info['parameters']:,}" if info["parameters"] is not None
                  else "not counted (files failed the check)")
    about.add_row("format", f"{FORMAT} v{info['format_version']}, "
                            f"written by sparklstm {info['package_version']}")
    if info["train"]:
        t = info["train"]
        about.add_row("training", ", ".join(f"{k} {t[k]}" for k in ("epochs", "batch_size", "lr", "seed",
                                                                    "precision") if k in t))
    parts = [about]
    met = info["metrics"]
    if met:
        table = Table(title="metrics (metrics.json)")
        for col in ("split", "accuracy", "macro-F1", "n"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split in ("val", "test"):
            if split in met:
                s = met[split]
                table.add_row(split, f"{s['accuracy']:.4f}", f"{s['macro_f1']:.4f}", str(s["n"]))
        parts.append(table)
        about.add_row("trained", f"best epoch {met.get('best_epoch')} of {met.get('epochs')}, "
                                 f"{met.get('train_tokens_per_s', 0):.0f} tokens/s on {met.get('device')}")
        if isinstance(met.get("wide"), dict):
            w = met["wide"]
            about.add_row("wide path", (f"C {w['C']:g}, " if "C" in w else "")
                          + f"mix {w['mix']:.2f} (its share of the logits)")
    files = Table(title="files")
    for col in ("file", "bytes", "sha256", "check"):
        files.add_column(col, justify="right" if col == "bytes" else "left")
    colour = {"OK": "green", "MISMATCH": "bold red", "MISSING": "bold red", "unhashed": "dim",
              "reference": "dim"}
    for e in info["files"]:
        digest = (e["sha256"] or e["expected_sha256"] or "")[:16]
        files.add_row(e["name"], "-" if e["bytes"] is None else f"{e['bytes']:,}", digest,
                      f"[{colour[e['status']]}]{e['status']}[/]")
    parts.append(files)
    return Group(*parts)
