"""Just enough of the Dockerfile and .dockerignore formats to test what the images would run
without a Docker engine: stages, their instructions, inherited ENV, exec-form commands, and
Docker's context-exclusion rules."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name!r} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    """Instructions with their backslash continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(path: Path) -> dict[str, Stage]:
    """The stages by name, in order; the last one is the default build target."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, words[0])
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


def env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """A stage's ENV, the ENV of the stages it is built FROM included."""
    stage = stages[name]
    values = env(stages, stage.base) if stage.base in stages else {}
    for args in stage.all("ENV"):
        words = shlex.split(args)
        if "=" not in words[0]:  # the legacy `ENV KEY value` form
            values[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            values[key] = value
    return values


def exec_form(args: str) -> list[str]:
    """A CMD, ENTRYPOINT or HEALTHCHECK CMD in exec form (a JSON array of strings)."""
    command = json.loads(args)
    assert isinstance(command, list) and all(isinstance(word, str) for word in command), (
        f"not in exec form: {args}"
    )
    return command


def healthcheck(args: str) -> tuple[dict[str, str], list[str]]:
    """(options, command) of `HEALTHCHECK --opt=value ... CMD [...]`."""
    options_part, separator, command = args.partition("CMD ")
    assert separator, f"HEALTHCHECK without CMD: {args}"
    options = dict(option.removeprefix("--").split("=", 1) for option in options_part.split())
    return options, exec_form(command)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        parts.append(
            {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        )
    return re.compile("".join(parts))


def ignored(dockerignore: Path, path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last pattern that
    matches the path or one of its parent folders decides; `!` patterns take back in."""
    rules = [
        line.strip()
        for line in dockerignore.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for rule in rules:
        negated = rule.startswith("!")
        regex = _pattern_regex(rule.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result
