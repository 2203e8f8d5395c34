"""Every option of every ``bayespk`` subcommand has help text that says its default."""

import argparse

import pytest

from bayespk.cli import _parser


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("bayespk",)):
    """(command path, parser) for the parser and every subparser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def options(parser: argparse.ArgumentParser):
    """The arguments a user types (positionals and options), without -h/--help and the subcommand choice."""
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


PARSERS = dict(walk(_parser()))


def test_the_walk_reaches_every_subcommand():
    names = {" ".join(path[1:]) for path in PARSERS}
    assert {"fit", "data", "summary", "vpc", "report", "compare", "prior", "prior map", "prior robustify",
            "prior show", "nca", "simulate", "export", "design boundaries", "design next",
            "design simulate"} <= names


@pytest.mark.parametrize("path", [" ".join(p) for p in PARSERS])
def test_every_option_has_help_with_its_default(path):
    parser = PARSERS[tuple(path.split())]
    formatter = parser._get_formatter()
    problems = []
    for action in options(parser):
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help is argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        text = formatter._expand_help(action)  # %(default)s filled in
        default = action.default
        if default is None or default is argparse.SUPPRESS or (default is False and action.nargs == 0):
            continue  # no default, or a flag that is off unless given
        if "default" not in text:
            problems.append(f"{name}: default {default!r} not mentioned in {text!r}")
        elif isinstance(default, (str, int, float)) and not isinstance(default, bool) and str(default) not in text:
            problems.append(f"{name}: default {default!r} not in {text!r}")
    assert not problems, f"{path}: " + "; ".join(problems)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["vpc", "--help"])
    out = capsys.readouterr().out
    assert "replicates of the study (default 200)" in " ".join(out.split())
