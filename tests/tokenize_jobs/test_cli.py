"""tokenize_jobs.cli: the one-line error helpers every entry point uses."""

from __future__ import annotations

import pytest

from tokenize_jobs.cli import OneLineParser, first_line, one_line


def test_parser_errors_are_one_line_with_status_2(capsys):
    p = OneLineParser(prog="python -m x")
    p.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "two"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "python -m x: error: argument --n: invalid int value: 'two'\n"


def test_first_line_and_one_line():
    e = OSError("no such file\n  details")
    assert first_line(e) == "no such file" and first_line(e, with_type=True) == "OSError: no such file"
    assert first_line(ValueError()) == "ValueError" and first_line(ValueError(), with_type=True) == "ValueError"
    assert one_line(RuntimeError("moov atom\n   not found ")) == "moov atom not found"
    assert one_line(RuntimeError("x" * 500), limit=10) == "x" * 10 and one_line(KeyError()) == "KeyError"
