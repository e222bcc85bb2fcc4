"""One style for every command's ``--help``: what a user reads before running anything.

Each option has help text and shows its default (an option whose default comes from the config
shows the config's built-in value), flags carry no ``<bool>`` type, usage lines name arguments
without braces, the model is always ``--model``, every ``--device`` defaults to ``auto``, and each
command's summary in the command list is one whole sentence. The help is read at 400 columns, so
a row of the options table is one line.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from sparklstm.cli import app
from sparklstm.config import ModelConfig, PrepConfig, ScoreConfig, TrainConfig

CLI = typer.main.get_command(app)
COMMANDS = sorted(CLI.commands)
# The config sections a command's options come from (precedence: these < --config < the flags).
SECTIONS = {"prep": (PrepConfig(),), "train": (ModelConfig(), TrainConfig()), "score": (ScoreConfig(),)}
# Options that name a file read or written only when given: there is nothing to default to.
NO_DEFAULT = {"--config", "--html", "--checkpoint"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes, when the CI forces a terminal

runner = CliRunner()


def help_text(*words: str) -> str:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "400"}, prog_name="sparklstm")
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.stdout)


def options(name: str) -> list:
    return [p for p in CLI.commands[name].params if p.param_type_name == "option" and not p.hidden]


def row(text: str, option) -> str:
    """The options-table line of ``option`` (it starts with the option's first name)."""
    found = re.search(r"^│ %s(?![\w-]).*$" % re.escape(option.opts[0]), text, re.M)
    assert found, f"{option.opts[0]} is missing from the help"
    return found.group(0)


def is_switch(option) -> bool:
    """A flag that is off unless given (``--overwrite``): it has no default worth showing."""
    return option.is_flag and not option.secondary_opts


def shown_default(value, option) -> str:
    if isinstance(value, bool):
        return (option.opts if value else option.secondary_opts)[0].lstrip("-")
    return str(value)


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_no_bool_type_after_a_flag(name):
    text = help_text(*([name] if name else []))
    assert "<bool>" not in text
    assert re.search(r"--help\s+Show this message", text)


@pytest.mark.parametrize("name", COMMANDS)
def test_usage_line_names_arguments_without_braces(name):
    usage = next(line for line in help_text(name).splitlines() if "Usage:" in line).strip()
    assert usage.startswith(f"Usage: sparklstm {name} [OPTIONS]")
    assert "{" not in usage and "}" not in usage, usage
    for param in CLI.commands[name].params:
        if param.param_type_name == "argument" and not param.hidden:
            assert re.search(r"\[?%s\]?(\.\.\.)?" % param.name.upper(), usage), usage


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text_and_shows_its_default(name):
    text = help_text(name)
    for option in options(name):
        line = row(text, option)
        assert (option.help or "").strip(), f"{name} {option.opts[0]} has no help text"
        assert option.help.split()[0] in line, line
        if not (is_switch(option) or option.opts[0] in NO_DEFAULT):
            assert "[default: " in line, f"{name} {option.opts[0]} shows no default: {line}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_options_from_the_config_show_its_built_in_value(name):
    text = help_text(name)
    fields = {key: value for section in SECTIONS[name] for key, value in vars(section).items()}
    checked = 0
    for option in options(name):
        if option.name in fields:
            expected = f"[default: {shown_default(fields[option.name], option)}]"
            assert expected in row(text, option), (name, option.opts[0], expected)
            checked += 1
    assert checked >= {"prep": 9, "train": 20, "score": 5}[name]


def test_the_model_is_an_option_in_every_command_that_reads_one():
    for name in ("score", "evaluate", "predict", "explain", "info"):
        params = CLI.commands[name].params
        assert "--model" in [o for p in params for o in p.opts], name
        assert not [p for p in params if p.param_type_name == "argument" and "model" in p.name
                    and not p.hidden], name


def test_every_device_option_defaults_to_auto():
    with_device = [name for name in COMMANDS if any(o.name == "device" for o in options(name))]
    assert set(with_device) >= {"train", "score", "predict", "explain"}
    for name in with_device:
        device = next(o for o in options(name) if o.name == "device")
        assert "[default: auto]" in row(help_text(name), device), name


def test_progress_default_says_when_the_bar_shows():
    progress = next(o for o in options("train") if o.name == "progress")
    line = row(help_text("train"), progress)
    assert "[default: progress]" not in line and "terminal" in line, line


@pytest.mark.parametrize("name", COMMANDS)
def test_command_summary_is_one_whole_sentence(name):
    summary = CLI.commands[name].help.strip().split("\n\n")[0]
    assert "\n" not in summary and summary.endswith(".") and len(summary) <= 90, summary
    lines = help_text().splitlines()
    i = next(i for i, line in enumerate(lines) if re.match(r"^\W*%s\s" % name, line))
    assert summary in lines[i]
    assert not re.match(r"^│\s{3,}\S", lines[i + 1]), f"the summary wraps: {lines[i + 1]}"
