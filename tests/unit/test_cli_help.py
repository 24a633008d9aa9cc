"""`--help` explains every argument an operator types, and names only real commands."""

import pytest

from app.cli import build_parser


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return capsys.readouterr().out


def test_top_level_help_names_the_real_commands_only(capsys):
    text = _help(capsys=capsys)
    assert "{ingest,search,serve,eval,generations,sources}" in text and "inspect" not in text


@pytest.mark.parametrize("command", ["ingest", "search", "eval", "generations", "sources"])
def test_every_argument_of_every_command_has_a_help_text(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.dest} has no help text"


def test_search_help_explains_query_k_and_json(capsys):
    text = _help("search", capsys=capsys)
    assert "the text to search for" in text
    assert "how many hits" in text
    assert "JSON list" in text
