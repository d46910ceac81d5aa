"""The rich Console the command-line tools print through (trainer, batch scorer)."""

from __future__ import annotations

from rich.console import Console


def console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A Console that wraps lines only on a terminal. Into a pipe or a log file rich would
    otherwise wrap every line at 80 columns; there a long line stays one line."""
    out = Console(stderr=stderr, quiet=quiet)
    out.soft_wrap = not out.is_terminal
    return out
