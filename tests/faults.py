"""Fault injection for crash-ordering tests: code that a child Python process runs first,
so that it dies (os._exit: no cleanup, no `finally`) just before its k-th filesystem change
once armed, the way a SIGKILL would leave the disk."""

from __future__ import annotations

KILLED = 86

# Imported by the child before anything else. It counts the calls that change the file
# system (create a file, rename, unlink, make or remove a folder) once armed, and exits
# on the spot at the k-th, the way a SIGKILL would leave the disk.
INJECTOR = f"""
import os, shutil, sys  # shutil first: it chooses its rmtree strategy at import

_at, _seen, _armed = int(sys.argv[1]), 0, False

def _counted(real, creates=False):
    def op(*args, **kwargs):
        global _seen
        flags = kwargs["flags"] if "flags" in kwargs else args[1] if creates else 0
        if _armed and (not creates or flags & os.O_CREAT):
            _seen += 1
            if _seen == _at:
                os._exit({KILLED})
        return real(*args, **kwargs)
    return op

for _name in ("replace", "rename", "unlink", "remove", "rmdir", "mkdir"):
    setattr(os, _name, _counted(getattr(os, _name)))
os.open = _counted(os.open, creates=True)

def arm():
    global _armed
    _armed = True
"""
