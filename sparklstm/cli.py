"""The ``sparklstm`` command: thin typer commands that validate input and call the library.

Every command turns a user mistake (``SparklstmError``) into one ``error: ...`` line on stderr and
exit code 2; an unexpected failure is one line and exit code 1 (``SPARKLSTM_DEBUG=1`` re-raises
it with its traceback). Results go to stdout, progress and warnings to stderr.

Settings come from the built-in defaults (sparklstm/config.py), then a ``--config`` TOML file,
then the flags typed on the command line: an option's default is the built-in one, and only an
option the user typed overrides the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from .config import ModelConfig, PrepConfig, ScoreConfig, TrainConfig
from .errors import SparklstmError

PREP, MODEL, TRAIN, SCORE = PrepConfig(), ModelConfig(), TrainConfig(), ScoreConfig()
DEMO_CORPUS = Path(__file__).parent / "data" / "spam_demo.jsonl.gz"


class _FlagHelp:
    """``--help`` shows no ``<bool>`` type (typer's newer releases print one after every flag)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(_FlagHelp, TyperCommand):
    """A command whose help reads like typer's classic one: no ``<bool>`` after a flag, and the
    usage line names arguments ``INPUT`` / ``[TEXTS]...`` rather than ``{input}``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument" or getattr(param, "hidden", False):
                continue
            name = (param.metavar or param.name).upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class Group(_FlagHelp, TyperGroup):
    pass


app = typer.Typer(
    help="LSTM text classification for Spark: prep (Spark) -> train (PyTorch) -> score (Spark UDF).",
    cls=Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show(*objects) -> None:
    """Print results on stdout: fitted to a terminal; in a log or a pipe one unwrapped line each,
    so a line such as 'model written to ...' is whole for grep."""
    console = Console()
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=10_000)
    console.print(*objects)


def _bar_fits() -> bool:
    """A live progress bar (drawn on stderr) only when a person watches it; one line per epoch on
    stderr when stderr goes to a file or a pipe."""
    return sys.stderr.isatty()


def _log(message: str) -> None:
    """Progress and warnings go to stderr: stdout holds only the results."""
    typer.echo(message, err=True)


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


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name``; an option left at its default must not override
    the --config file."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _flags(ctx: typer.Context, section) -> dict:
    """The fields of the config dataclass ``section`` that were given as options."""
    fields = {f.name for f in dataclasses.fields(section)}
    return {name: value for name, value in ctx.params.items() if name in fields and _typed(ctx, name)}


def _spark(master: str | None):
    from .spark.session import get_spark

    return get_spark(master=master)


def _show_metrics(title: str, metrics: dict) -> None:
    # The summary is a line of its own: as the table's title it wrapped to the table's width.
    _show(f"{title}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"n {metrics['n']}")
    table = Table()
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, s in metrics["per_class"].items():
        table.add_row(label, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["support"]))
    _show(table)


Input = Annotated[str, typer.Argument(help="Parquet, CSV or JSON-lines file or directory.")]
Format = Annotated[Optional[str], typer.Option(
    help="parquet | csv | json.", show_default="from the file extension")]
Master = Annotated[Optional[str], typer.Option(
    help="Spark master URL.", envvar="SPARKLSTM_MASTER", show_default="local[*]")]
ConfigPath = Annotated[Optional[Path], typer.Option(
    "--config", help="TOML settings between the built-in defaults and these options "
                     "(layout: conf/default.toml).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
ModelDir = Annotated[Path, typer.Option("--model", help="Model directory.")]
Device = Annotated[str, typer.Option(help="auto (CUDA if torch sees a GPU, else CPU) | cpu | cuda.")]


@app.command(cls=Command)
def prep(
    ctx: typer.Context,
    input: Input,
    out: Annotated[Path, typer.Option(help="Output prepped/ directory.")] = Path("prepped"),
    text_col: Annotated[str, typer.Option(help="Text column.")] = PREP.text_col,
    label_col: Annotated[str, typer.Option(help="Label column.")] = PREP.label_col,
    format: Format = None,
    max_len: Annotated[int, typer.Option(help="Tokens kept per text (its head).")] = PREP.max_len,
    min_freq: Annotated[int, typer.Option(
        help="A token enters the vocabulary if the train split has it this often.")] = PREP.min_freq,
    max_vocab: Annotated[int, typer.Option(
        help="Vocabulary size cap, <pad> and <unk> included.")] = PREP.max_vocab,
    val_fraction: Annotated[float, typer.Option(help="Share of texts in val/.")] = PREP.val_fraction,
    test_fraction: Annotated[float, typer.Option(help="Share of texts in test/.")] = PREP.test_fraction,
    split_seed: Annotated[int, typer.Option(help="Seed of the text hash that assigns splits.")] = PREP.split_seed,
    lowercase: Annotated[bool, typer.Option(
        "--lowercase/--no-lowercase", help="Lowercase texts before tokenizing.")] = PREP.lowercase,
    config: ConfigPath = None,
    master: Master = None,
    overwrite: Overwrite = False,
):
    """Tokenize, build the vocabulary, split and encode a labelled corpus with Spark."""
    from .config import load_config
    from .spark.prep import prep as run_prep

    with guarded():
        cfg = load_config(path=config, overrides={"prep": _flags(ctx, PrepConfig)}).prep
        summary = run_prep(_spark(master), input_path=input, out=out, config=cfg, fmt=format,
                           overwrite=overwrite)
        counts = ", ".join(f"{s} {sum(c.values())}" for s, c in summary["counts"].items())
        _show(f"prepped {summary['rows_kept']} of {summary['rows_in']} rows -> {out} "
              f"({counts}); vocabulary {summary['vocab_size']}, labels {summary['labels']}")


@app.command(cls=Command)
def train(
    ctx: typer.Context,
    prepped: Annotated[Path, typer.Argument(help="A prepped/ directory (output of `sparklstm prep`).")],
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = Path("model"),
    cell: Annotated[str, typer.Option(help="lstm | peephole | gru.")] = MODEL.cell,
    epochs: Annotated[int, typer.Option(
        help="Most epochs (early stopping and --token-budget may end sooner).")] = TRAIN.epochs,
    token_budget: Annotated[int, typer.Option(
        help="Real tokens read over all epochs; a larger train split runs fewer epochs (>= 1). "
             "0: none.")] = TRAIN.token_budget,
    batch_size: Annotated[int, typer.Option(help="Texts per optimizer step.")] = TRAIN.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = TRAIN.lr,
    lr_schedule: Annotated[str, typer.Option(
        help="constant | cosine (to 0 over all epochs).")] = TRAIN.lr_schedule,
    class_weights: Annotated[str, typer.Option(
        help="none | balanced (rare classes weigh more).")] = TRAIN.class_weights,
    patience: Annotated[int, typer.Option(
        help="Epochs without a better val macro-F1 before stopping.")] = TRAIN.patience,
    seed: Annotated[int, typer.Option(help="Seed of the weights, dropout and batch order.")] = TRAIN.seed,
    device: Device = TRAIN.device,
    embed_dim: Annotated[int, typer.Option(help="Token embedding size.")] = MODEL.embed_dim,
    hidden_size: Annotated[int, typer.Option(help="Recurrent state size.")] = MODEL.hidden_size,
    num_layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = MODEL.num_layers,
    dropout: Annotated[float, typer.Option(
        help="Dropout on the embeddings, between layers and before the dense layer.")] = MODEL.dropout,
    pooling: Annotated[str, typer.Option(
        help="last | max | mean | concat: what the dense layer reads of the LSTM states.")] = MODEL.pooling,
    bidirectional: Annotated[bool, typer.Option(
        "--bidirectional/--no-bidirectional",
        help="Add a second stack that reads each text backwards (padding stays unread).")] = MODEL.bidirectional,
    bag_of_embeddings: Annotated[bool, typer.Option(
        "--bag-of-embeddings/--no-bag-of-embeddings",
        help="Feed the mean of the token embeddings to the dense layer too.")] = MODEL.bag_of_embeddings,
    wide: Annotated[bool, typer.Option(
        "--wide/--no-wide",
        help="Mix in a linear path over TF-IDF word unigrams + bigrams (fitted first).")] = MODEL.wide,
    num_threads: Annotated[int, typer.Option(
        "--threads", help="torch CPU threads per process (0: torch's default in one process, 1 "
                          "per rank with several).")] = TRAIN.num_threads,
    processes: Annotated[int, typer.Option(
        help="Data-parallel ranks (DDP). 0: auto, one per core up to batch-size/32, 1 on a GPU. "
             "With --cluster: Spark tasks, one slot each.")] = TRAIN.processes,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Run the ranks as tasks of the Spark cluster (--master) through "
                          "TorchDistributor; PREPPED and OUT must be on storage every executor "
                          "reaches.")] = False,
    use_gpu: Annotated[bool, typer.Option(
        "--use-gpu", help="With --cluster: a GPU per rank, from the task's resources.")] = False,
    master: Master = None,
    flush_denormal: Annotated[bool, typer.Option(
        "--flush-denormal/--no-flush-denormal",
        help="Flush denormal floats to zero on the CPU (much faster under load).")] = TRAIN.flush_denormal,
    precision: Annotated[str, typer.Option(
        help="auto (bf16 autocast where it measures faster than fp32) | fp32 | bf16 (autocast).")] = TRAIN.precision,
    config: ConfigPath = None,
    progress: Annotated[Optional[bool], typer.Option(
        "--progress/--no-progress", help="A live progress bar, or one line per epoch on stderr.",
        show_default="bar on a terminal, else lines")] = None,
    overwrite: Overwrite = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from OUT/checkpoint/ (same settings).")] = False,
    mlflow: Annotated[bool, typer.Option(
        "--mlflow", help="Log the run to MLflow (MLFLOW_TRACKING_URI, else ./mlflow.db): settings, "
                         "metrics per epoch, curves, the model directory and a pyfunc model.")] = False,
    mlflow_experiment: Annotated[Optional[str], typer.Option(
        help="MLflow experiment of the run (with --mlflow).",
        show_default="MLFLOW_EXPERIMENT_NAME, else MLflow's default")] = None,
):
    """Train the LSTM classifier on prepped/ (PyTorch, one node, CPU or CUDA).

    Every epoch is checkpointed in OUT/checkpoint/ (removed when training finishes);
    --resume continues an interrupted run to the same result."""
    from .training.checkpoint import checkpoint_path
    from .config import load_config
    from .training.loop import train as run_train

    with guarded():
        cfg = load_config(path=config, overrides={"model": _flags(ctx, ModelConfig),
                                                  "train": _flags(ctx, TrainConfig)})
        if (out / "config.json").exists() and not (overwrite or resume):
            raise SparklstmError(f"{out} already holds a model (pass --overwrite to replace it)")
        if checkpoint_path(out).exists() and not (overwrite or resume):
            raise SparklstmError(f"{out} holds an interrupted run's checkpoint (pass --resume to "
                                 "continue it or --overwrite to start over)")
        if mlflow_experiment is not None and not mlflow:
            raise SparklstmError("--mlflow-experiment applies only with --mlflow")
        if master is not None and not cluster:
            raise SparklstmError("--master applies only with --cluster")
        if cluster:
            _spark(master)  # TorchDistributor runs on the active session
        metrics = run_train(prepped=prepped, out=out, model_config=cfg.model, train_config=cfg.train,
                            progress=_bar_fits() if progress is None else progress, log=_log,
                            resume=resume, mlflow=mlflow, mlflow_experiment=mlflow_experiment,
                            cluster=cluster, use_gpu=use_gpu)
        for name in ("val", "test"):
            if metrics[name]:
                _show_metrics(name, metrics[name])
        _show(f"model written to {out} (best epoch {metrics['best_epoch']}, "
              f"{metrics['train_tokens_per_s']:.0f} tokens/s on {metrics['device']})")


@app.command(cls=Command)
def score(
    ctx: typer.Context,
    input: Input,
    model: ModelDir = Path("model"),
    out: Annotated[str, typer.Option(help="Output Parquet directory.")] = "scored",
    text_col: Annotated[str, typer.Option(help="Text column.")] = SCORE.text_col,
    pred_col: Annotated[str, typer.Option(help="Prediction column to add.")] = SCORE.pred_col,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = SCORE.batch_size,
    device: Annotated[str, typer.Option(
        help="auto (the task's GPU if Spark gave it one, else CPU) | cpu | cuda.")] = SCORE.device,
    precision: Annotated[str, typer.Option(
        help="auto (bf16 where it measures faster than fp32, else fp32) | fp32 | bf16 (autocast) "
             "| int8 (dynamic quantization, CPU).")] = SCORE.precision,
    format: Format = None,
    config: ConfigPath = None,
    master: Master = None,
    overwrite: Overwrite = False,
    stream: Annotated[bool, typer.Option("--stream", help="INPUT is a directory to watch: score each new Parquet file as it arrives (Structured Streaming), exactly once.")] = False,
    checkpoint: Annotated[Optional[str], typer.Option(help="Streaming: the query's checkpoint directory (required with --stream).")] = None,
    trigger: Annotated[str, typer.Option(help="Streaming: processing-time (until Ctrl-C) | available-now (what is there, then stop).")] = "processing-time",
    interval: Annotated[str, typer.Option(help="Streaming: processing-time interval.")] = "10 seconds",
    max_files_per_trigger: Annotated[Optional[int], typer.Option(help="Streaming: at most this many new files per micro-batch.", show_default="no limit")] = None,
    schema: Annotated[Optional[str], typer.Option(help="Streaming: input schema as DDL, e.g. 'id BIGINT, text STRING'.", show_default="from the files present")] = None,
    allow_model_change: Annotated[bool, typer.Option("--allow-model-change", help="Streaming: resume a checkpoint that another model started (rows keep each model's id).")] = False,
):
    """Add a prediction column to every row of a table with the Spark UDF; write Parquet.

    With --stream, keep scoring new files of INPUT into OUT (plus a model_id column) until
    Ctrl-C, or until the files present are done with --trigger available-now."""
    from .config import load_config
    from .spark.scoring import score as run_score

    with guarded():
        cfg = load_config(path=config, overrides={"score": _flags(ctx, ScoreConfig)}).score
        streaming = ("checkpoint", "trigger", "interval", "max_files_per_trigger", "schema",
                     "allow_model_change")
        given = [name for name in streaming if _typed(ctx, name)]
        if not stream and given:
            raise SparklstmError(f"--{given[0].replace('_', '-')} applies only with --stream")
        if stream:
            _check_stream_args(checkpoint=checkpoint, overwrite=overwrite, format=format)
        if not model.is_dir():  # before starting Spark: a typo should fail in a second
            raise SparklstmError(f"model directory not found: {model}")
        if stream:
            _score_stream(_spark(master), input=input, model=model, out=out, cfg=cfg,
                          **{name: ctx.params[name] for name in streaming})
            return
        n = run_score(_spark(master), input_path=input, model_dir=model, out=out,
                      text_col=cfg.text_col, pred_col=cfg.pred_col, batch_size=cfg.batch_size,
                      device=cfg.device, precision=cfg.precision, fmt=format, overwrite=overwrite)
        _show(f"scored {n} rows -> {out}")


def _check_stream_args(*, checkpoint, overwrite: bool, format) -> None:
    if checkpoint is None:
        raise SparklstmError("--stream needs --checkpoint DIR (where the query keeps its progress)")
    if overwrite:
        raise SparklstmError("--overwrite does not apply to --stream (it resumes OUT from its checkpoint)")
    if format not in (None, "parquet"):
        raise SparklstmError("--stream reads Parquet files only")


def _score_stream(spark, *, input: str, model: Path, out: str, cfg, **options):
    from .spark.streaming import score_stream

    summary = score_stream(spark, input_dir=input, model_dir=model, out=out,
                           text_col=cfg.text_col, pred_col=cfg.pred_col,
                           batch_size=cfg.batch_size, device=cfg.device, precision=cfg.precision,
                           log=_log, **options)
    how = "stopped" if summary.stopped else "done"
    _show(f"{how}: scored {summary.rows} rows in {summary.batches} batches -> {out} "
          f"(model {summary.model_id[:12]})")


@app.command(cls=Command)
def evaluate(
    scored: Annotated[str, typer.Argument(help="Scored Parquet (output of `sparklstm score`).")],
    label_col: Annotated[str, typer.Option(help="True label column.")] = PREP.label_col,
    pred_col: Annotated[str, typer.Option(help="Prediction column.")] = SCORE.pred_col,
    out: Annotated[Optional[Path], typer.Option(
        help="JSON report path; the PNGs go beside it.", show_default="SCORED.evaluation.json")] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="The model that scored it: its labels are the classes, and a true label it does not "
             "know is an error.", show_default="none: the labels present are the classes")] = None,
    master: Master = None,
):
    """Accuracy, macro-F1, per-class scores and confusion matrix of a scored table (Spark).

    Writes a JSON report, and PNGs of the confusion matrix and the per-class F1 beside it."""
    from .spark.evaluate import evaluate_scored

    with guarded():
        out = out or Path(str(scored).rstrip("/") + ".evaluation.json")
        result = evaluate_scored(_spark(master), scored=scored, label_col=label_col,
                                 pred_col=pred_col, out=out, model_dir=model)
        _show_metrics("evaluation", result)
        cm = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for label in result["labels"]:
            cm.add_column(label, justify="right")
        for label, row in zip(result["labels"], result["confusion_matrix"]):
            cm.add_row(label, *map(str, row))
        _show(cm)
        if result["unscored"]:
            _show(f"{result['unscored']} rows had no prediction (null or empty text)")
        _show(f"report written to {out}")
        for path in result.get("plots", {}).values():
            _show(f"plot written to {path}")


@app.command(cls=Command)
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts; none (or -) reads lines from stdin.")] = None,
    model: ModelDir = Path("model"),
    device: Device = "auto",
    precision: Annotated[str, typer.Option(
        help="auto (bf16 where it measures faster than fp32, else fp32) | fp32 | bf16 | int8.")
    ] = SCORE.precision,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    threads: Annotated[int, typer.Option(
        help="torch CPU threads (0: torch's default, one per core). On a machine another job keeps "
             "busy, 1 is faster (docs/benchmarks.md).")] = 0,
):
    """Classify texts locally, without Spark."""
    from .device import resolve_device
    from .predictor import Predictor

    with guarded():
        if threads < 0:
            raise SparklstmError(f"--threads must be >= 0, got {threads}")
        if threads:
            import torch

            torch.set_num_threads(threads)
        if not texts or texts == ["-"]:
            texts = [line.rstrip("\n") for line in sys.stdin]
        predictor = Predictor.from_dir(model, device=resolve_device(device), precision=precision)
        results = predictor.predict(texts)
        if as_json:  # the precision that scored, as in the Spark UDF's struct
            for text, r in zip(texts, results):
                r = r and {**r, "precision": predictor.precision}
                typer.echo(json.dumps({"text": text, "prediction": r}, ensure_ascii=False))
            return
        table = Table("label", "probability", "text", title=f"scored in {predictor.precision}")
        for text, r in zip(texts, results):
            short = text if len(text) <= 80 else text[:77] + "..."
            table.add_row(r["label"] if r else "-", f"{r['probability']:.4f}" if r else "-", short)
        _show(table)


@app.command(cls=Command)
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes prepped/, model/, scored/.")] = Path("sparklstm-demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs (early stopping may end sooner).")] = TRAIN.epochs,
    cell: Annotated[str, typer.Option(help="lstm | peephole | gru.")] = MODEL.cell,
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
        _show(f"[bold]1/4 prep[/] {DEMO_CORPUS.name} (Spark {spark.sparkContext.master})")
        summary = run_prep(spark, input_path=str(DEMO_CORPUS), out=workdir / "prepped", config=cfg.prep)
        _show(f"    {summary['rows_kept']} emails, vocabulary {summary['vocab_size']}, "
              f"splits { {s: sum(c.values()) for s, c in summary['counts'].items()} }")
        _show(f"[bold]2/4 train[/] {cell}, up to {epochs} epochs")
        metrics = run_train(prepped=workdir / "prepped", out=workdir / "model", model_config=cfg.model,
                            train_config=cfg.train, progress=_bar_fits(), log=lambda m: _show("    " + m))
        _show("[bold]3/4 score[/] the whole corpus with the Spark UDF")
        n = run_score(spark, input_path=str(DEMO_CORPUS), model_dir=workdir / "model",
                      out=str(workdir / "scored"))
        _show(f"    scored {n} rows -> {workdir / 'scored'}")
        _show("[bold]4/4 evaluate[/] with Spark aggregations")
        whole = evaluate_scored(spark, scored=str(workdir / "scored"), out=workdir / "evaluation.json")
        _show(f"    whole corpus (includes training rows): accuracy {whole['accuracy']:.4f}, "
              f"macro-F1 {whole['macro_f1']:.4f}")
        _show_metrics("held-out test split", metrics["test"])
        _show(f"training: {metrics['train_seconds']:.0f} s, {metrics['train_tokens_per_s']:.0f} "
              f"tokens/s; try a whole e-mail (the model learned from whole ones): "
              f"sparklstm predict --model {workdir / 'model'} \"$(cat message.txt)\"")


@app.command(cls=Command)
def explain(
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    model: ModelDir = Path("model"),
    method: Annotated[str, typer.Option(help="ig (integrated gradients) | occlusion.")] = "ig",
    steps: Annotated[int, typer.Option(help="Integration steps (Gauss-Legendre nodes) for ig.")] = 50,
    top: Annotated[int, typer.Option(help="How many top tokens to list.")] = 10,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write a standalone HTML page here.")] = None,
    device: Device = "auto",
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
        _show(summary(expl))
        _show(to_rich(expl))
        if expl.truncated:
            _show(f"[dim]only the first {len(expl.tokens)} tokens reach the model; "
                  f"{expl.truncated} more (dim) have no attribution[/]")
        table = Table("token", "attribution", title=f"top {top} toward {expl.label!r}")
        for token, value in expl.top(top):
            table.add_row(token, f"{value:+.4f}")
        _show(table)
        if html is not None:
            html.write_text(to_html(expl, top=top), encoding="utf-8")
            _show(f"HTML written to {html}")


@app.command("log-model", cls=Command)
def log_model(
    model: ModelDir = Path("model"),
    name: Annotated[str, typer.Option(help="The logged model's name.")] = "model",
    register: Annotated[Optional[str], typer.Option(
        help="Also register it under this name in the model registry.",
        show_default="not registered")] = None,
):
    """Log a model directory to MLflow as a pyfunc model (safetensors weights, no pickle).

    It goes to MLFLOW_TRACKING_URI (else ./mlflow.db with artifacts in ./mlruns), into the
    experiment MLFLOW_EXPERIMENT_NAME names (else MLflow's default)."""
    from .mlflow import log_model as run_log_model, require_mlflow

    with guarded():
        mlflow = require_mlflow("log-model")
        info = run_log_model(model, name=name, registered_model_name=register)
        version = f", registered as {register} version {info.registered_model_version}" if register else ""
        _show(f"logged {model} as {info.model_uri}{version} at {mlflow.get_tracking_uri()}")


@app.command(cls=Command)
def info(
    ctx: typer.Context,
    model: ModelDir = Path("model"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    model_dir: Annotated[Optional[Path], typer.Argument(
        hidden=True, help="The former spelling `sparklstm info DIR`, still accepted.")] = None,
):
    """A model's config, labels, vocabulary size, parameter count, metrics and file integrity."""
    from .info import model_info, problems, to_rich

    with guarded():
        if model_dir is not None and _typed(ctx, "model"):
            raise SparklstmError("give the model directory once, with --model")
        details = model_info(model_dir or model)
        if as_json:
            typer.echo(json.dumps(details, indent=2, ensure_ascii=False))
        else:
            _show(to_rich(details))
        problem = problems(details)
        if problem:
            raise SparklstmError(problem)


if __name__ == "__main__":
    app()
