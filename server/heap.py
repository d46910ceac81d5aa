"""Keeps the garbage collector's full passes off the event loop's hot path.

Under load the event loop allocates enough for CPython to run a full collection every few
seconds, and a full collection walks every object in the process: the libraries, the app
and the loaded models, about 85,000 objects, a pause of about 26 ms on the loop at
concurrency 32 (in a round of batching, half a batch). Nearly all of them live as long as
the process, so once the repository's first load is done they are collected once and
moved out of the collector's sight (`gc.freeze`); full passes then walk only what came
after. What a reload later replaces was frozen only if it was loaded before: at most the
first snapshot set's reference cycles stay in memory after it is replaced.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect everything, then freeze what survives."""
    gc.collect()
    gc.freeze()
