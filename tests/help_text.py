"""Reading a command's --help text in tests."""

from __future__ import annotations

import re


def help_entries(text: str) -> dict[str, str]:
    """Each option's entry of a --help text, its wrapped lines joined: flag -> text."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"  (--[a-z0-9-]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line.strip()
        elif current is not None and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries
