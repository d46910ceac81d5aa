"""A pydantic validation error as the one line a user reads: where, then what."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError, flag: bool = False) -> tuple[str, str]:
    """(where, what) of the first error. `where` is the dotted location ("" at the top),
    or with flag=True the command-line flag of its first part ("--max-batch-size")."""
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    what = str(first["msg"]).removeprefix("Value error, ")
    if flag and loc:
        return "--" + loc[0].replace("_", "-"), what
    return ".".join(loc), what


def one_line(exc: ValidationError, default_where: str = "", flag: bool = False) -> str:
    """`where: what` of the first error (`what` alone where there is no location)."""
    where, what = first_error(exc, flag)
    where = where or default_where
    return f"{where}: {what}" if where else what
