"""The README's examples are true: every command it shows runs, and what it says they print is
what they print.

* Every ``sparklstm ...`` line in a shell block of README.md is parsed by the CLI's own parser
  (the command exists, every option exists and takes the value shown); the lines in docs/*.md,
  which may mark optional parts with brackets, must name existing commands and options.
* README's ``sparklstm`` lines then run, in order, in a scratch directory holding a small
  labelled ``emails.parquet``, in process on the session's Spark: prep, train, score, evaluate,
  info, predict (arguments, stdin, ``$(cat file)``), explain, and the streaming line on its own
  input directory. Only the ``--resume`` line is parsed and not run (it needs a killed run;
  tests/test_resume.py covers it). The train line runs with a tiny model appended
  (``TINY_TRAIN``): the README trains with the defaults, which take minutes.
* What the README says about their output is checked on it: the files each command writes,
  ``predict --json``'s fields, the UDF's struct type, the SQL query in the notebook block (which
  runs as written), the model directory's files.
* ``spark-submit jobs/...`` lines: the job exists and takes every option shown; README's batch
  jobs run in process. ``./run`` and ``bench/`` commands name existing targets and options.
* Links in README.md, docs/ and bench/NOTES.md stay inside the repository and resolve (anchors
  included); settings named as ``section.key`` exist, with the defaults quoted; the README's
  layout and docs/architecture.md's module map name files that exist; the at-a-glance figures
  appear in docs/benchmarks.md; the README stays under 250 lines.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import runpy
import shlex
import shutil
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from conftest import make_corpus
from sparklstm.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS, ROOT / "bench" / "NOTES.md"]
CLI = get_command(app)
runner = CliRunner()

# Appended to README's `sparklstm train` line when it runs here (the last value of an option wins).
TINY_TRAIN = ["--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1", "--epochs", "1",
              "--no-bidirectional", "--no-wide", "--batch-size", "32"]


# --------------------------------------------------------------------------------------------
# reading the markdown


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, indented ones (inside list items) included."""
    blocks, lang, indent, buf = [], None, 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            if lang is None:
                lang, indent, buf = stripped[3:].strip() or "text", len(line) - len(stripped), []
            else:
                blocks.append((lang, "\n".join(buf)))
                lang = None
            continue
        if lang is not None:
            buf.append(line[indent:])
    assert lang is None, f"{path.name}: unclosed code block"
    return blocks


def shell_commands(text: str) -> list[tuple[str, list[str]]]:
    """(line, words) per command of a shell block: continuations joined, comments and leading
    VAR=value assignments dropped, the part after a pipe kept (``cat f | cmd`` reads f)."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
            words = words[1:]
        if "|" in words:
            cut = words.index("|")
            feed, words = words[:cut], words[cut + 1:]
            if feed[:1] == ["cat"]:
                words += ["<", feed[1]]
        if "&&" in words:
            words = words[words.index("&&") + 1:]
        if words:
            commands.append((line, words))
    return commands


def commands_in(path: Path) -> list[tuple[str, list[str]]]:
    return [c for lang, text in fenced_blocks(path) if lang in ("sh", "bash", "console")
            for c in shell_commands(text)]


def section(path: Path, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    text = path.read_text(encoding="utf-8")
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    end = re.compile(r"^#{1,%d} " % level, re.M).search(text, start + len(heading) + 1)
    return text[start:end.start() if end else len(text)]


def readme_cli_lines() -> list[tuple[str, list[str]]]:
    return [(line, words) for line, words in commands_in(README) if words[0] == "sparklstm"]


# --------------------------------------------------------------------------------------------
# checking commands against the CLI, the jobs and the scripts


def options_of(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def split_redirect(args: list[str]) -> tuple[list[str], str | None]:
    if "<" in args:
        i = args.index("<")
        return args[:i] + args[i + 2:], args[i + 1]
    return args, None


def check_cli(line: str, words: list[str], *, strict: bool) -> None:
    name = words[1]
    command = CLI.commands.get(name)
    assert command is not None, f"{line!r}: sparklstm has no command {name!r}"
    args, _ = split_redirect(words[2:])
    if strict:
        try:
            command.make_context(name, list(args))
        except Exception as e:  # the CLI parser's UsageError / BadParameter
            pytest.fail(f"{line!r} does not parse: {e}")
        return
    known = options_of(command)
    for word in args:
        for part in word.strip("[]").split("|"):
            if part.startswith("--"):
                assert part in known, f"{line!r}: `sparklstm {name}` has no option {part}"


_job_help: dict[Path, str] = {}


def job_help(script: Path) -> str:
    if script not in _job_help:
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit):
            runpy.run_path(str(script), run_name="readme_check")["main"](["--help"])
        _job_help[script] = out.getvalue()
    return _job_help[script]


def job_of(words: list[str]) -> tuple[Path, list[str]]:
    i = next(i for i, w in enumerate(words) if w.endswith(".py"))
    return ROOT / words[i], words[i + 1:]


def check_options_in(text: str, options, what: str) -> None:
    for option in options:
        assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(option), text), f"{what} has no option {option}"


def check_command(path: Path, line: str, words: list[str]) -> None:
    """Any command a markdown file shows: sparklstm, spark-submit, ./run, python bench/..."""
    strict = path == README
    if words[0] == "sparklstm":
        check_cli(line, words, strict=strict)
    elif words[0] == "spark-submit":
        script, args = job_of(words)
        assert script.is_file(), f"{line!r}: no {script.relative_to(ROOT)}"
        check_options_in(job_help(script), [w for w in args if w.startswith("--")], str(script.name))
    elif words[0] == "./run":
        assert re.search(r"^\s*%s\)" % re.escape(words[1]), (ROOT / "run").read_text(), re.M), line
    elif words[0] in ("python", "python3") and words[1].startswith("bench/") or words[0].startswith("bench/"):
        script = ROOT / (words[1] if words[0].startswith("python") else words[0])
        assert script.is_file(), f"{line!r}: no {script}"
        check_options_in(script.read_text(), [w.strip("[]").split("=")[0] for w in words
                                              if w.strip("[]").startswith("--")],
                         script.name)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shown_command_exists_with_its_options(path):
    for line, words in commands_in(path):
        check_command(path, line, words)
    if path == README:  # the at-a-glance table's commands, in backticks
        table = section(README, "## Benchmarks at a glance")
        for cell in re.findall(r"^\| [^|]+\| `([^`]+)`", table, re.M):
            check_command(path, cell, shlex.split(cell))


def test_readme_shows_the_two_commands_and_stays_short():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    setup = section(README, "## Set up and run (two commands)")
    assert [w for _, w in commands_in_text(setup)] == [["./run", "demo"], ["./run", "test"]]
    assert "./run test" in (ROOT / ".ci" / "run").read_text()


def commands_in_text(text: str):
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [c for block in blocks for c in shell_commands(block)]


def test_the_demo_corpus_is_as_described():
    with gzip.open(ROOT / "sparklstm" / "data" / "spam_demo.jsonl.gz", "rt", encoding="utf-8") as f:
        labels = Counter(json.loads(line)["label"] for line in f)
    assert labels == {"spam": 800, "ham": 1200}
    assert "2,000 e-mails (800 spam, 1,200 ham)" in README.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# links, settings, layout, figures


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository_and_resolve(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    assert not re.search(r"https?://|\]\(/|\.\./shared", text), f"{path.name}: a link leaves the repository"
    for link in links:
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.is_relative_to(ROOT), f"{path.name}: {link} leaves the repository"
        assert file.exists(), f"{path.name}: {link} does not resolve"
        if anchor:
            assert anchor in anchors(file), f"{path.name}: {link}: no heading #{anchor} in {file.name}"


def test_settings_named_in_the_docs_exist_with_their_defaults(tmp_path):
    from sparklstm.config import Config, load_config

    defaults = Config()
    for path in [README, *DOCS]:
        text = path.read_text(encoding="utf-8")
        for sec, key in re.findall(r"`(prep|model|train|score)\.(\w+)`", text):
            if key in ("safetensors", "json", "py", "png", "pt", "bin"):  # a file (model.pt), not a setting
                continue
            assert hasattr(getattr(defaults, sec), key), f"{path.name}: no setting {sec}.{key}"
        for sec, key, value in re.findall(r"`(prep|model|train|score)\.(\w+)`[\s(,]+default ([\d,]+)", text):
            assert getattr(getattr(defaults, sec), key) == int(value.replace(",", "")), (
                f"{path.name}: {sec}.{key}'s default is {getattr(getattr(defaults, sec), key)}, not {value}")
        for i, (lang, block) in enumerate(b for b in fenced_blocks(path) if b[0] == "toml"):
            toml = tmp_path / f"{path.stem}-{i}.toml"
            toml.write_text(block)
            load_config(path=toml)  # unknown keys are errors


def test_layout_and_module_map_name_existing_files():
    layout = section(README, "## Layout")
    for name in re.findall(r"`([\w./-]+)`", layout):
        assert (ROOT / "sparklstm" / name).exists() or (ROOT / name).exists(), f"README layout: no {name}"
    arch = section(ROOT / "docs" / "architecture.md", "## Module map")
    (lang, block), = [b for b in fenced_blocks_of(arch)]
    for line in block.splitlines():
        first = line.split()[0].rstrip(",")
        assert (ROOT / first).exists(), f"module map: no {first}"
        base = ROOT / (first if first.endswith("/") else os.path.dirname(first))
        for name in re.findall(r"[\w/]+\.(?:py|c|md|properties|toml)\b", line):
            assert (base / name).exists() or (ROOT / name).exists(), f"module map: no {name} in {base}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_source_paths_exist(path):
    text = path.read_text(encoding="utf-8")
    for name in re.findall(r"`((?:sparklstm|jobs|scripts|bench|conf|tests)/[\w/.-]*)`", text):
        assert (ROOT / name).exists(), f"{path.name}: no {name}"


def fenced_blocks_of(text: str):
    return re.findall(r"```(\w*)\n(.*?)```", text, re.S)


def test_glance_figures_come_from_the_benchmarks_page():
    figures = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    table = section(README, "## Benchmarks at a glance")
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows
    for row in rows:
        latest = row.split("|")[3]
        for number in re.findall(r"\d[\d,]*(?:\.\d+)?", latest):
            assert number in figures, f"at a glance: {number} ({row.split('|')[1].strip()}) is not in docs/benchmarks.md"


# --------------------------------------------------------------------------------------------
# running README's commands


def absolute(args: list[str], cwd: Path) -> list[str]:
    """Path arguments made absolute: Spark resolves a relative path against its JVM's working
    directory, fixed when the session started, not against the scratch directory."""
    def is_path(word):
        return (not word.startswith("-") and (word.endswith("/") or (cwd / word).exists()
                or re.fullmatch(r"[\w.-]+\.(?:json|html|parquet|txt)", word)))
    return [str(cwd / a) if is_path(a) else a for a in args]


def invoke(words: list[str], *, cwd: Path, extra=()):
    args, stdin_file = split_redirect(words[1:])
    args = [re.sub(r"\$\(cat ([^)]+)\)", lambda m: (cwd / m.group(1)).read_text(encoding="utf-8"), a)
            for a in absolute(args, cwd)]
    stdin = (cwd / stdin_file).read_text(encoding="utf-8") if stdin_file else None
    result = runner.invoke(app, [*args, *extra], input=stdin)
    assert result.exit_code == 0 and "Traceback" not in result.stdout + result.stderr, (
        f"{' '.join(words)}: exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
        f"{result.exception!r}")
    return result


@pytest.fixture(scope="module")
def walkthrough(spark, tmp_path_factory):
    """README's sparklstm lines, run in order in a scratch directory; returns (dir, results)."""
    work = tmp_path_factory.mktemp("readme") / "work"
    work.mkdir()
    rows = make_corpus(300, seed=7)
    spark.createDataFrame(rows).write.parquet(str(work / "emails.parquet"))
    (work / "texts.txt").write_text(f"{rows[0]['text']}\n{rows[1]['text']}\n", encoding="utf-8")
    (work / "message.txt").write_text(rows[2]["text"], encoding="utf-8")
    (work / "sparklstm-demo").mkdir()
    os.symlink("../model", work / "sparklstm-demo" / "model")  # stands in for the demo's model
    results = {}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for line, words in readme_cli_lines():
            check_cli(line, words, strict=True)
            if "--resume" in words or "--stream" in words:
                continue  # resume: tests/test_resume.py; stream: test_readme_streaming_line
            extra = TINY_TRAIN if words[1] == "train" else ()
            results[line] = invoke(words, cwd=work, extra=extra)
    finally:
        os.chdir(cwd)
    return work, results, rows


def result_of(results: dict, *fragments: str):
    matches = [r for line, r in results.items() if all(f in line for f in fragments)]
    assert len(matches) == 1, f"want one README line with {fragments}, got {len(matches)}"
    return matches[0]


def test_readme_cli_lines_run_and_write_what_the_readme_says(walkthrough, spark):
    work, results, rows = walkthrough
    commands = {line.split()[1] for line in results}
    assert commands >= {"prep", "train", "score", "evaluate", "info", "predict", "explain"}

    # score keeps every input column and adds `prediction`
    scored = spark.read.parquet(str(work / "scored"))
    assert set(scored.columns) == {"text", "label", "prediction"}
    assert scored.count() == len(rows)
    # evaluate: the JSON report with two PNGs beside it
    assert json.loads((work / "report.json").read_text())["accuracy"] >= 0
    assert (work / "report.confusion.png").is_file() and (work / "report.f1.png").is_file()
    # the model directory holds the artifact table's files, and the training curves
    contract = section(README, "## The artifact contract")
    files = re.findall(r"^\| `([\w.]+)` \|", contract, re.M)
    assert files == ["model.safetensors", "config.json", "vocab.json", "metrics.json"]
    for name in [*files, "training_curves.png"]:
        assert (work / "model" / name).is_file(), name
    vocab = json.loads((work / "model" / "vocab.json").read_text())
    assert set(vocab) == {"lowercase", "tokens"} and vocab["tokens"][:2] == ["<pad>", "<unk>"]
    labels = json.loads((work / "model" / "config.json").read_text())["labels"]
    assert labels == sorted({r["label"] for r in rows})

    # predict --json: the fields the README shows, one object per stdin line
    shown = section(README, "### Local inference, without Spark")
    shape = re.search(r"`(\{\"text\".*?\})`", shown, re.S).group(1)
    lines = result_of(results, "predict", "--json").stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        obj = json.loads(line)
        assert set(obj) | set(obj["prediction"]) == set(re.findall(r'"(\w+)":', shape))
        assert obj["prediction"]["label"] in labels
        assert len(obj["prediction"]["probabilities"]) == len(labels)
    # the table: label, probability, the text
    table = result_of(results, "predict", "first text to classify").stdout
    for word in ("label", "probability", "text", "first text to classify", "second text"):
        assert word in table
    assert result_of(results, "predict", "sparklstm-demo/model").stdout.count("\n") > 0
    assert (work / "explain.html").is_file()
    assert "<script" not in (work / "explain.html").read_text()


def test_readme_notebook_blocks_run(walkthrough, spark):
    """The notebook block and the Spark ML block, as written, in one namespace (a notebook's);
    the Spark Connect block runs in tests/test_connect.py, against a Connect server."""
    from pyspark.ml import PipelineModel

    work, _, rows = walkthrough
    blocks = [text for lang, text in fenced_blocks(README) if lang == "python"]
    notebook, pipeline = [b for b in blocks if ".remote(" not in b]
    # Spark resolves relative paths against its JVM's directory, which a notebook shares with
    # Python; this session's JVM started elsewhere, so the block's Spark paths are made absolute.
    for name in ("emails.parquet", "pipeline/"):
        pipeline = pipeline.replace(f'"{name}"', f'"{work / name}"')
    namespace = {}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        exec(compile(notebook, "README.md (notebook)", "exec"), namespace)
        exec(compile(pipeline, "README.md (Spark ML)", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["spark"] is spark  # getOrCreate() found the running session
    text = section(README, "## In a notebook")
    shown = re.search(r"`(struct<.*?>)`", text).group(1).replace(" ", "")
    assert namespace["scored"].schema["pred"].dataType.simpleString() == shown
    labels = namespace["classify"].labels
    query = re.search(r"SQL: (SELECT .*)$", notebook, re.M).group(1)
    namespace["df"].createOrReplaceTempView("t")
    got = [r[0] for r in spark.sql(query).collect()]
    assert len(got) == namespace["df"].count() and set(got) <= set(labels)

    stage = PipelineModel.load(str(work / "pipeline")).stages[0]
    assert Path(stage.getOrDefault("modelDir")).parent.parent.parent == work / "pipeline"
    assert (Path(stage.getOrDefault("modelDir")) / "model.safetensors").is_file()


def test_readme_streaming_line_runs(walkthrough, spark):
    import pandas as pd

    work, _, rows = walkthrough
    (line, words), = [(l, w) for l, w in readme_cli_lines() if "--stream" in w]
    stream = work.parent / "stream"
    (stream / "incoming").mkdir(parents=True)
    os.symlink(work / "model", stream / "model")
    for i in range(2):
        pd.DataFrame(rows[i * 10:(i + 1) * 10]).to_parquet(stream / "incoming" / f"part-{i}.parquet")
    cwd = os.getcwd()
    os.chdir(stream)
    try:
        invoke(words, cwd=stream)
    finally:
        os.chdir(cwd)
    out = spark.read.parquet(str(stream / "scored"))
    assert out.count() == 20 and {"prediction", "model_id"} <= set(out.columns)


def test_readme_spark_submit_lines_run(walkthrough, spark):
    work, _, rows = walkthrough
    submit = work.parent / "submit"
    submit.mkdir()
    shutil.copytree(work / "emails.parquet", submit / "raw")
    shutil.copytree(work / "emails.parquet", submit / "corpus")
    os.symlink(work / "model", submit / "model")
    lines = [(l, w) for l, w in commands_in(README) if w[0] == "spark-submit"]
    assert lines
    cwd = os.getcwd()
    os.chdir(submit)
    try:
        for line, words in lines:
            script, args = job_of(words)
            out = io.StringIO()
            with redirect_stdout(out):
                code = runpy.run_path(str(script), run_name="readme_check")["main"](absolute(args, submit))
            assert code == 0, f"{line}: exit {code}: {out.getvalue()}"
    finally:
        os.chdir(cwd)
    assert spark.read.parquet(str(submit / "scored")).count() == len(rows)
    assert (submit / "prepped" / "vocab.json").is_file()
