"""snapens.flags on a small model: a flag per field, named after it, its help the field's
description and default, choices listed, bools as --x/--no-x, groups, and a flag not given
left out of the namespace."""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from snapens.flags import (
    HelpFormatter,
    add_flags,
    add_grouped_flags,
    flag,
    given,
    group,
    shown_default,
)


class Color(StrEnum):
    RED = "red"
    DARK_BLUE = "dark-blue"


class Small(BaseModel):
    max_batch_size: int = Field(
        64, ge=1, description="rows per batch", json_schema_extra=group("a")
    )
    color: Color = Field(Color.RED, description="the color", json_schema_extra=group("b"))
    mode: Literal["fast", "slow"] = Field("fast", description="how", json_schema_extra=group("a"))
    fused: bool = Field(True, description="one graph")
    verbose: bool = Field(False, description="say more")
    rate: float = Field(1e-4, description="a 50% share")
    out: Path | None = Field(None, description="where it goes")


def parser_of(**kwargs: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="small", formatter_class=HelpFormatter)
    add_grouped_flags(parser, Small, **kwargs)  # type: ignore[arg-type]
    return parser


def options(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {a.dest: list(a.option_strings) for a in parser._actions if a.dest != "help"}


def help_of(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_a_flag_per_field_named_after_it() -> None:
    assert flag("max_batch_size") == "--max-batch-size"
    assert options(parser_of()) == {
        "max_batch_size": ["--max-batch-size"],
        "color": ["--color"],
        "mode": ["--mode"],
        "fused": ["--fused", "--no-fused"],
        "verbose": ["--verbose", "--no-verbose"],
        "rate": ["--rate"],
        "out": ["--out"],
    }


def test_exclude_leaves_fields_without_a_flag() -> None:
    assert set(options(parser_of(exclude={"out", "verbose"}))) == set(Small.model_fields) - {
        "out",
        "verbose",
    }


def test_help_shows_description_choices_and_the_default_from_the_field() -> None:
    text = help_of(parser_of(help_extra={"mode": "extra words"}))
    assert "--max-batch-size INT rows per batch (default: 64)" in text
    assert "--color {red,dark-blue} the color (default: red)" in text
    assert "--mode {fast,slow} how; extra words (default: fast)" in text
    assert "--fused, --no-fused one graph (default: true)" in text
    assert "--verbose, --no-verbose say more (default: false)" in text
    assert "--rate FLOAT a 50% share (default: 0.0001)" in text  # % escaped for argparse
    assert "--out PATH where it goes (default: unset)" in text
    fields = Small.model_fields
    assert [shown_default(fields[n]) for n in ("max_batch_size", "fused", "out", "rate")] == [
        "64",
        "true",
        "unset",
        "0.0001",
    ]


def test_fields_are_grouped_by_their_group_and_the_rest_under_other() -> None:
    parser = parser_of(other="the rest")
    groups = {
        g.title: [a.dest for a in g._group_actions]
        for g in parser._action_groups
        if g.title in ("a", "b", "the rest")
    }
    assert groups == {
        "a": ["max_batch_size", "mode"],
        "b": ["color"],
        "the rest": ["fused", "verbose", "rate", "out"],
    }
    titles = [g.title for g in parser._action_groups]
    assert titles.index("a") < titles.index("b") < titles.index("the rest")


def test_add_flags_makes_one_titled_group_of_the_fields_named() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, Small, "some", ["rate", "fused"], "what they are")
    (some,) = (g for g in parser._action_groups if g.title == "some")
    assert some.description == "what they are"
    assert [a.dest for a in some._group_actions] == ["rate", "fused"]


def test_flags_not_given_are_left_out_and_values_stay_strings() -> None:
    parser = parser_of()
    assert vars(parser.parse_args([])) == {}
    namespace = parser.parse_args(["--max-batch-size", "8", "--no-fused", "--color", "dark-blue"])
    assert vars(namespace) == {"max_batch_size": "8", "fused": False, "color": "dark-blue"}
    assert given(Small, namespace) == {"max_batch_size": "8", "fused": False, "color": "dark-blue"}
    # the model validates them; what was not given keeps the value underneath (here a default)
    small = Small(**{"rate": 0.5, **given(Small, namespace)})
    assert (small.max_batch_size, small.fused, small.color, small.rate) == (
        8,
        False,
        Color.DARK_BLUE,
        0.5,
    )
    assert parser.parse_args(["--verbose"]).verbose is True


def test_a_bad_value_is_left_to_the_model() -> None:
    parser = parser_of()
    namespace = parser.parse_args(["--max-batch-size", "many", "--mode", "medium"])
    with pytest.raises(ValidationError):
        Small(**given(Small, namespace))
