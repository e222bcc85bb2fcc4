"""The ``sparklstm`` command: thin typer commands that validate input and call the library.

Every command turns a user mistake (``SparklstmError``) into one ``error: ...`` line on stderr and
exit code 2; an unexpected failure is one line and exit code 1 (``SPARKLSTM_DEBUG=1`` re-raises
it with its traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import SparklstmError

app = typer.Typer(
    help="LSTM text classification for Spark: prep (Spark) -> train (PyTorch) -> score (Spark UDF).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out_console = Console()
DEMO_CORPUS = Path(__file__).parent / "data" / "spam_demo.jsonl.gz"


@contextlib.contextmanager
def guarded():
    """One clear line and a non-zero exit for any failure; never a traceback (unless debugging)."""
    try:
        yield
    except SparklstmError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as e:  # a bug, or an environment problem we did not foresee
        if os.environ.get("SPARKLSTM_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"error: unexpected {type(e).__name__}: {message} "
                   "(set SPARKLSTM_DEBUG=1 for the traceback)", err=True)
        raise typer.Exit(1) from None


def _spark(master: str | None):
    from .spark.session import get_spark

    return get_spark(master=master)


def _metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=f"{title}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
                        f"n {metrics['n']}")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, s in metrics["per_class"].items():
        table.add_row(label, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["support"]))
    return table


Master = Annotated[Optional[str], typer.Option(help="Spark master URL (default local[*]).")]
ConfigPath = Annotated[Optional[Path], typer.Option("--config", help="TOML settings (see conf/default.toml).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]


@app.command()
def prep(
    input: Annotated[str, typer.Argument(help="Parquet, CSV or JSON-lines file or directory.")],
    out: Annotated[Path, typer.Option(help="Output prepped/ directory.")] = Path("prepped"),
    text_col: Annotated[Optional[str], typer.Option(help="Text column.")] = None,
    label_col: Annotated[Optional[str], typer.Option(help="Label column.")] = None,
    format: Annotated[Optional[str], typer.Option(help="parquet|csv|json (default: from the extension).")] = None,
    max_len: Annotated[Optional[int], typer.Option(help="Tokens kept per text.")] = None,
    min_freq: Annotated[Optional[int], typer.Option(help="Minimum token count for the vocabulary.")] = None,
    max_vocab: Annotated[Optional[int], typer.Option(help="Vocabulary size cap (incl. pad, unk).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Share of texts in val/.")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(help="Share of texts in test/.")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="Seed of the text-hash split.")] = None,
    lowercase: Annotated[Optional[bool], typer.Option("--lowercase/--no-lowercase")] = None,
    config: ConfigPath = None,
    master: Master = None,
    overwrite: Overwrite = False,
):
    """Tokenize, build the vocabulary, split and encode a labelled corpus with Spark."""
    from .config import load_config
    from .spark.prep import prep as run_prep

    with guarded():
        cfg = load_config(path=config, overrides={"prep": dict(
            text_col=text_col, label_col=label_col, max_len=max_len, min_freq=min_freq,
            max_vocab=max_vocab, val_fraction=val_fraction, test_fraction=test_fraction,
            split_seed=split_seed, lowercase=lowercase)}).prep
        summary = run_prep(_spark(master), input_path=input, out=out, config=cfg, fmt=format,
                           overwrite=overwrite)
        counts = ", ".join(f"{s} {sum(c.values())}" for s, c in summary["counts"].items())
        out_console.print(f"prepped {summary['rows_kept']} of {summary['rows_in']} rows -> {out} "
                          f"({counts}); vocabulary {summary['vocab_size']}, labels {summary['labels']}")


@app.command()
def train(
    prepped: Annotated[Path, typer.Argument(help="A prepped/ directory.")],
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = Path("model"),
    cell: Annotated[Optional[str], typer.Option(help="lstm | peephole | gru.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    token_budget: Annotated[Optional[int], typer.Option(
        help="Real tokens read over all epochs; a larger train split runs fewer epochs (>= 1). 0: none.")] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="constant | cosine (to 0 over all epochs).")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="none | balanced (rare classes weigh more).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    embed_dim: Annotated[Optional[int], typer.Option()] = None,
    hidden_size: Annotated[Optional[int], typer.Option()] = None,
    num_layers: Annotated[Optional[int], typer.Option()] = None,
    dropout: Annotated[Optional[float], typer.Option()] = None,
    pooling: Annotated[Optional[str], typer.Option(
        help="last | max | mean | concat: what the dense layer reads of the LSTM states.")] = None,
    bidirectional: Annotated[Optional[bool], typer.Option(
        "--bidirectional/--no-bidirectional",
        help="Add a second stack that reads each text backwards (padding stays unread).")] = None,
    bag_of_embeddings: Annotated[Optional[bool], typer.Option(
        "--bag-of-embeddings/--no-bag-of-embeddings",
        help="Feed the mean of the token embeddings to the dense layer too.")] = None,
    wide: Annotated[Optional[bool], typer.Option(
        "--wide/--no-wide",
        help="Mix in a linear path over TF-IDF word unigrams + bigrams (fitted first).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (0 = default).")] = None,
    flush_denormal: Annotated[Optional[bool], typer.Option("--flush-denormal/--no-flush-denormal")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | fp32 | bf16 (autocast).")] = None,
    config: ConfigPath = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    overwrite: Overwrite = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from OUT/checkpoint/ (same settings).")] = False,
):
    """Train the LSTM classifier on prepped/ (PyTorch, one node, CPU or CUDA).

    Every epoch is checkpointed in OUT/checkpoint/ (removed when training finishes);
    --resume continues an interrupted run to the same result."""
    from .training.checkpoint import checkpoint_path
    from .config import load_config
    from .training.loop import train as run_train

    with guarded():
        cfg = load_config(path=config, overrides={
            "model": dict(cell=cell, embed_dim=embed_dim, hidden_size=hidden_size,
                          num_layers=num_layers, dropout=dropout, pooling=pooling,
                          bidirectional=bidirectional, bag_of_embeddings=bag_of_embeddings,
                          wide=wide),
            "train": dict(epochs=epochs, token_budget=token_budget, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                          class_weights=class_weights, patience=patience, seed=seed,
                          device=device, num_threads=threads, flush_denormal=flush_denormal,
                          precision=precision),
        })
        if (out / "config.json").exists() and not (overwrite or resume):
            raise SparklstmError(f"{out} already holds a model (pass --overwrite to replace it)")
        if checkpoint_path(out).exists() and not (overwrite or resume):
            raise SparklstmError(f"{out} holds an interrupted run's checkpoint (pass --resume to "
                                 "continue it or --overwrite to start over)")
        metrics = run_train(prepped=prepped, out=out, model_config=cfg.model, train_config=cfg.train,
                            progress=progress, log=lambda m: typer.echo(m, err=True), resume=resume)
        for name in ("val", "test"):
            if metrics[name]:
                out_console.print(_metrics_table(name, metrics[name]))
        out_console.print(f"model written to {out} (best epoch {metrics['best_epoch']}, "
                          f"{metrics['train_tokens_per_s']:.0f} tokens/s on {metrics['device']})")


@app.command()
def score(
    input: Annotated[str, typer.Argument(help="Parquet, CSV or JSON-lines file or directory.")],
    model: Annotated[Path, typer.Option(help="Model directory.")] = Path("model"),
    out: Annotated[str, typer.Option(help="Output Parquet directory.")] = "scored",
    text_col: Annotated[Optional[str], typer.Option(help="Text column.")] = None,
    pred_col: Annotated[Optional[str], typer.Option(help="Prediction column to add.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Rows per forward pass.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (task GPU, else CPU) | cpu | cuda.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | int8.")] = None,
    format: Annotated[Optional[str], typer.Option(help="parquet|csv|json (default: from the extension).")] = None,
    config: ConfigPath = None,
    master: Master = None,
    overwrite: Overwrite = False,
    stream: Annotated[bool, typer.Option("--stream", help="INPUT is a directory to watch: score each new Parquet file as it arrives (Structured Streaming), exactly once.")] = False,
    checkpoint: Annotated[Optional[str], typer.Option(help="Streaming: the query's checkpoint directory (required with --stream).")] = None,
    trigger: Annotated[Optional[str], typer.Option(help="Streaming: processing-time (until Ctrl-C) | available-now (what is there, then stop).")] = None,
    interval: Annotated[Optional[str], typer.Option(help="Streaming: processing-time interval (default: 10 seconds).")] = None,
    max_files_per_trigger: Annotated[Optional[int], typer.Option(help="Streaming: at most this many new files per micro-batch.")] = None,
    schema: Annotated[Optional[str], typer.Option(help="Streaming: input schema as DDL, e.g. 'id BIGINT, text STRING' (default: from the files present).")] = None,
    allow_model_change: Annotated[bool, typer.Option("--allow-model-change", help="Streaming: resume a checkpoint that another model started (rows keep each model's id).")] = False,
):
    """Add a prediction column to every row of a table with the Spark UDF; write Parquet.

    With --stream, keep scoring new files of INPUT into OUT (plus a model_id column) until
    Ctrl-C, or until the files present are done with --trigger available-now."""
    from .config import load_config
    from .spark.scoring import score as run_score

    with guarded():
        cfg = load_config(path=config, overrides={"score": dict(
            text_col=text_col, pred_col=pred_col, batch_size=batch_size, device=device,
            precision=precision)}).score
        streaming = dict(checkpoint=checkpoint, trigger=trigger, interval=interval,
                         max_files_per_trigger=max_files_per_trigger, schema=schema,
                         allow_model_change=allow_model_change or None)
        if not stream and any(v is not None for v in streaming.values()):
            given = [k for k, v in streaming.items() if v is not None]
            raise SparklstmError(f"--{given[0].replace('_', '-')} applies only with --stream")
        if stream:
            _check_stream_args(checkpoint=checkpoint, overwrite=overwrite, format=format)
        if not model.is_dir():  # before starting Spark: a typo should fail in a second
            raise SparklstmError(f"model directory not found: {model}")
        if stream:
            _score_stream(_spark(master), input=input, model=model, out=out, cfg=cfg,
                          **{**streaming, "allow_model_change": allow_model_change})
            return
        n = run_score(_spark(master), input_path=input, model_dir=model, out=out,
                      text_col=cfg.text_col, pred_col=cfg.pred_col, batch_size=cfg.batch_size,
                      device=cfg.device, precision=cfg.precision, fmt=format, overwrite=overwrite)
        out_console.print(f"scored {n} rows -> {out}")


def _check_stream_args(*, checkpoint, overwrite: bool, format) -> None:
    if checkpoint is None:
        raise SparklstmError("--stream needs --checkpoint DIR (where the query keeps its progress)")
    if overwrite:
        raise SparklstmError("--overwrite does not apply to --stream (it resumes OUT from its checkpoint)")
    if format not in (None, "parquet"):
        raise SparklstmError("--stream reads Parquet files only")


def _score_stream(spark, *, input: str, model: Path, out: str, cfg, trigger, interval, **options):
    from .spark.streaming import score_stream

    summary = score_stream(spark, input_dir=input, model_dir=model, out=out,
                           text_col=cfg.text_col, pred_col=cfg.pred_col,
                           batch_size=cfg.batch_size, device=cfg.device, precision=cfg.precision,
                           trigger=trigger or "processing-time", interval=interval or "10 seconds",
                           log=lambda m: typer.echo(m, err=True), **options)
    how = "stopped" if summary.stopped else "done"
    out_console.print(f"{how}: scored {summary.rows} rows in {summary.batches} batches -> {out} "
                      f"(model {summary.model_id[:12]})")


@app.command()
def evaluate(
    scored: Annotated[str, typer.Argument(help="Scored Parquet (output of `sparklstm score`).")],
    label_col: Annotated[str, typer.Option(help="True label column.")] = "label",
    pred_col: Annotated[str, typer.Option(help="Prediction column.")] = "prediction",
    out: Annotated[Optional[Path], typer.Option(help="JSON report path (default SCORED.evaluation.json).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="The model that scored it: its labels are the classes, and a true label it does not know is an error.")] = None,
    master: Master = None,
):
    """Accuracy, macro-F1, per-class scores and confusion matrix, computed by Spark; JSON report
    and PNGs (confusion matrix, per-class F1) beside it."""
    from .spark.evaluate import evaluate_scored

    with guarded():
        out = out or Path(str(scored).rstrip("/") + ".evaluation.json")
        result = evaluate_scored(_spark(master), scored=scored, label_col=label_col,
                                 pred_col=pred_col, out=out, model_dir=model)
        out_console.print(_metrics_table("evaluation", result))
        cm = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for label in result["labels"]:
            cm.add_column(label, justify="right")
        for label, row in zip(result["labels"], result["confusion_matrix"]):
            cm.add_row(label, *map(str, row))
        out_console.print(cm)
        if result["unscored"]:
            out_console.print(f"{result['unscored']} rows had no prediction (null or empty text)")
        out_console.print(f"report written to {out}")
        for path in result.get("plots", {}).values():
            out_console.print(f"plot written to {path}")


@app.command()
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts; none (or -) reads lines from stdin.")] = None,
    model: Annotated[Path, typer.Option(help="Model directory.")] = Path("model"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
):
    """Classify texts locally, without Spark."""
    from .device import resolve_device
    from .predictor import Predictor

    with guarded():
        if not texts or texts == ["-"]:
            texts = [line.rstrip("\n") for line in sys.stdin]
        predictor = Predictor.from_dir(model, device=resolve_device(device))
        results = predictor.predict(texts)
        if as_json:
            for text, r in zip(texts, results):
                typer.echo(json.dumps({"text": text, "prediction": r}, ensure_ascii=False))
            return
        table = Table("label", "probability", "text")
        for text, r in zip(texts, results):
            short = text if len(text) <= 80 else text[:77] + "..."
            table.add_row(r["label"] if r else "-", f"{r['probability']:.4f}" if r else "-", short)
        out_console.print(table)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes prepped/, model/, scored/.")] = Path("sparklstm-demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs (early stopping may end sooner).")] = 10,
    cell: Annotated[str, typer.Option(help="lstm | peephole | gru.")] = "lstm",
    master: Master = None,
):
    """Run the whole pipeline on the embedded SpamAssassin subset and print the test metrics."""
    from .config import load_config
    from .spark.evaluate import evaluate_scored
    from .spark.prep import prep as run_prep
    from .spark.scoring import score as run_score
    from .training.loop import train as run_train

    with guarded():
        if workdir.exists() and any(workdir.iterdir()) and not (workdir / ".sparklstm-demo").exists():
            raise SparklstmError(f"{workdir} exists and is not a demo directory; pass another --workdir")
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        (workdir / ".sparklstm-demo").touch()
        cfg = load_config(overrides={"model": {"cell": cell}, "train": {"epochs": epochs}})
        spark = _spark(master)
        out_console.print(f"[bold]1/4 prep[/] {DEMO_CORPUS.name} (Spark {spark.sparkContext.master})")
        summary = run_prep(spark, input_path=str(DEMO_CORPUS), out=workdir / "prepped", config=cfg.prep)
        out_console.print(f"    {summary['rows_kept']} emails, vocabulary {summary['vocab_size']}, "
                          f"splits { {s: sum(c.values()) for s, c in summary['counts'].items()} }")
        out_console.print(f"[bold]2/4 train[/] {cell}, up to {epochs} epochs")
        metrics = run_train(prepped=workdir / "prepped", out=workdir / "model", model_config=cfg.model,
                            train_config=cfg.train, progress=sys.stderr.isatty(),
                            log=lambda m: out_console.print("    " + m))
        out_console.print("[bold]3/4 score[/] the whole corpus with the Spark UDF")
        n = run_score(spark, input_path=str(DEMO_CORPUS), model_dir=workdir / "model",
                      out=str(workdir / "scored"))
        out_console.print(f"    scored {n} rows -> {workdir / 'scored'}")
        out_console.print("[bold]4/4 evaluate[/] with Spark aggregations")
        whole = evaluate_scored(spark, scored=str(workdir / "scored"), out=workdir / "evaluation.json")
        out_console.print(f"    whole corpus (includes training rows): accuracy {whole['accuracy']:.4f}, "
                          f"macro-F1 {whole['macro_f1']:.4f}")
        out_console.print(_metrics_table("held-out test split", metrics["test"]))
        out_console.print(f"training: {metrics['train_seconds']:.0f} s, {metrics['train_tokens_per_s']:.0f} "
                          f"tokens/s; try: sparklstm predict --model {workdir / 'model'} \"win a free prize\"")


@app.command()
def explain(
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    model: Annotated[Path, typer.Option(help="Model directory.")] = Path("model"),
    method: Annotated[str, typer.Option(help="ig (integrated gradients) | occlusion.")] = "ig",
    steps: Annotated[int, typer.Option(help="Integration steps (Gauss-Legendre nodes) for ig.")] = 50,
    top: Annotated[int, typer.Option(help="How many top tokens to list.")] = 10,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write a standalone HTML page here.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "cpu",
):
    """Per-token attributions for the predicted class, as coloured text (green: toward it)."""
    from .device import resolve_device
    from .explain.attribution import METHODS, explain as run_explain
    from .explain.view import summary, to_html, to_rich
    from .predictor import Predictor

    with guarded():
        if method not in METHODS:
            raise SparklstmError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
        if steps < 1 or top < 1:
            raise SparklstmError("--steps and --top must be >= 1")
        predictor = Predictor.from_dir(model, device=resolve_device(device))
        expl = run_explain(predictor, text, method=method, steps=steps)
        if expl is None:
            raise SparklstmError("the text has no tokens to explain")
        out_console.print(summary(expl))
        out_console.print(to_rich(expl))
        if expl.truncated:
            out_console.print(f"[dim]only the first {len(expl.tokens)} tokens reach the model; "
                              f"{expl.truncated} more (dim) have no attribution[/]")
        table = Table("token", "attribution", title=f"top {top} toward {expl.label!r}")
        for token, value in expl.top(top):
            table.add_row(token, f"{value:+.4f}")
        out_console.print(table)
        if html is not None:
            html.write_text(to_html(expl, top=top), encoding="utf-8")
            out_console.print(f"HTML written to {html}")


@app.command()
def info(
    model_dir: Annotated[Path, typer.Argument(help="Model directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
):
    """A model's config, labels, vocabulary size, parameter count, metrics and file integrity."""
    from .info import model_info, problems, to_rich

    with guarded():
        details = model_info(model_dir)
        if as_json:
            typer.echo(json.dumps(details, indent=2, ensure_ascii=False))
        else:
            out_console.print(to_rich(details))
        problem = problems(details)
        if problem:
            raise SparklstmError(problem)


if __name__ == "__main__":
    app()
