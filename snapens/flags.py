"""Command-line flags generated from a pydantic model: one flag per field, so that each
setting is defined once (its type, default and description on the field) and --help
cannot drift from it.

A field `max_batch_size: int = Field(64, description="rows per batch")` becomes
`--max-batch-size INT` with the help "rows per batch (default: 64)"; an Enum or Literal
field lists its values; a bool field becomes the pair --x/--no-x. A flag not given is left
out of the namespace (argparse.SUPPRESS), so that whatever sits underneath (a config file,
the environment) still applies. Values stay the strings typed, for the model to validate:
a bad one is then reported as the model reports any other (one line naming the field).

A field may name its --help group with `json_schema_extra={"group": "data"}`
(add_grouped_flags)."""

from __future__ import annotations

import argparse
import textwrap
import types
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

GROUP_KEY = "group"


def flag(name: str) -> str:
    """The flag of a field: max_batch_size -> --max-batch-size."""
    return "--" + name.replace("_", "-")


def value_type(info: FieldInfo) -> Any:
    """The field's type without `| None`."""
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def choices(info: FieldInfo) -> list[str] | None:
    """The values an Enum or Literal field takes, as typed on the command line."""
    kind = value_type(info)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return [str(member.value) for member in kind]
    if get_origin(kind) is Literal:
        return [str(v) for v in get_args(kind)]
    return None


def shown_default(info: FieldInfo) -> str:
    """A field's default as --help shows it."""
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def flag_help(info: FieldInfo, extra: str | None = None) -> str:
    """The --help text of a field: description[; extra] (default: ...), %-escaped."""
    text = "; ".join(part for part in (info.description, extra) if part)
    return f"{text} (default: {shown_default(info)})".replace("%", "%%")


def group(title: str) -> dict[str, Any]:
    """A field's --help group: Field(..., json_schema_extra=group("data"))."""
    return {GROUP_KEY: title}


def group_of(info: FieldInfo) -> str | None:
    """The --help group a field names in json_schema_extra, if any."""
    extra = info.json_schema_extra
    group = extra.get(GROUP_KEY) if isinstance(extra, dict) else None
    return group if isinstance(group, str) else None


_METAVARS: dict[Any, str] = {int: "INT", float: "FLOAT", Path: "PATH", str: "TEXT"}


def add_flag(
    group: argparse._ActionsContainer, name: str, info: FieldInfo, extra: str | None = None
) -> None:
    """The flag of one field on a parser or argument group."""
    kwargs: dict[str, Any] = {
        "dest": name,
        "default": argparse.SUPPRESS,
        "help": flag_help(info, extra),
    }
    if value_type(info) is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        options = choices(info)
        kwargs["metavar"] = (
            "{" + ",".join(options) + "}"
            if options
            else _METAVARS.get(value_type(info), name.upper())
        )
    group.add_argument(flag(name), **kwargs)


def add_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    title: str,
    names: Iterable[str] | None = None,
    description: str | None = None,
    help_extra: Mapping[str, str] | None = None,
) -> None:
    """A group of flags on parser for the fields `names` of model (default: all), each
    with its description (then help_extra[name], where given) and default as help."""
    group = parser.add_argument_group(title, description)
    fields = model.model_fields
    for name in names if names is not None else fields:
        add_flag(group, name, fields[name], (help_extra or {}).get(name))


def add_grouped_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    exclude: Iterable[str] = (),
    other: str = "other settings",
    help_extra: Mapping[str, str] | None = None,
) -> None:
    """Flags for every field of model but `exclude`, in groups titled by the fields'
    json_schema_extra group (in order of first appearance), those without one under `other`."""
    left_out = set(exclude)
    groups: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        if name not in left_out:
            groups.setdefault(group_of(info) or other, []).append(name)
    for title, names in groups.items():
        add_flags(parser, model, title, names, help_extra=help_extra)


def given(model: type[BaseModel], namespace: argparse.Namespace) -> dict[str, Any]:
    """The fields of model whose flags were given, with their values as typed."""
    return {name: getattr(namespace, name) for name in model.model_fields if name in namespace}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, but lines not broken at hyphens (per-member, --max-image-pixels) and each
    line of a description or epilog wrapped as a paragraph of its own."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            textwrap.fill(
                " ".join(line.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            for line in text.splitlines()
        )
