"""Telling a user what is wrong in one line: a pydantic validation error (where, then
what), and the settings a resumed run would change."""

from __future__ import annotations

from typing import Any

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


def changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys whose values differ between a run's saved settings and a resumption's
    (a key present on one side only counts), sorted; empty when it may resume."""
    return [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]


def check_class_names(classes: list[str]) -> list[str]:
    """Class names are distinct and not blank; ValueError otherwise."""
    if any(not c.strip() for c in classes) or len(set(classes)) < len(classes):
        raise ValueError("class names must be distinct and not empty")
    return classes


def check_plain_name(name: str) -> str:
    """A model name is a plain folder name: not empty, not hidden, no path separators or
    NUL, at most 100 characters; ValueError otherwise."""
    if not name or name.startswith(".") or any(c in name for c in "/\\:\0") or len(name) > 100:
        raise ValueError(f"a model name is a plain folder name (no '/', not hidden), got {name!r}")
    return name
