"""One-line errors for every entry point (DESIGN §4.2: bad input is one clear line and a non-zero status).

* :class:`OneLineParser` — argparse whose errors are one line, ``<prog>: error: <message>``, status 2.
* :func:`first_line` — an exception as the first line of its message (what a command prints after ``error:``).
* :func:`one_line` — an exception's whole message squeezed into one short line (error rows of the tokenization job:
  decord/ffmpeg messages span several lines).

It lives in ``tokenize_jobs`` so that the tokenization jobs and ``workflows`` share it (layers point one way:
workflows → tokenize_jobs → lumos).
"""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (``<prog>: error: ...``, status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty); ``with_type`` prefixes the
    type name: ``"OSError: no such file"``."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc``'s whole message on one line (runs of whitespace and line breaks become one space), at most ``limit``
    characters; its type name when the message is empty."""
    text = " ".join(str(exc).split())
    return text[:limit] if text else type(exc).__name__
