"""Errors caused by what the user asked for.

The CLI prints them as one line naming what to fix and exits with status 2,
never with a traceback.
"""


class UserError(Exception):
    """Bad input: a flag, a config value, a dataset or an existing repository folder."""
