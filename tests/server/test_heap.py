"""What lives when the repository's first load is done is frozen out of the garbage
collector's full passes (server.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

from tests.server.conftest import LiveServer


class _Cycle:
    def __init__(self) -> None:
        self.itself = self


def test_the_heap_alive_after_the_first_load_is_frozen(
    serve: Callable[..., LiveServer],
) -> None:
    gc.unfreeze()
    kept = _Cycle()
    ref = weakref.ref(kept)
    serve()  # ready: its repository has started
    assert gc.get_freeze_count() > 0
    del kept  # garbage now, but alive when the server froze the heap
    gc.collect()
    assert ref() is not None, "a full collection reached an object alive at the freeze"
    gc.unfreeze()
    gc.collect()
    assert ref() is None
