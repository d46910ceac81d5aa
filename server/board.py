"""What the server's processes (`--workers`) know of each other, in shared memory: for
each process, when its last batch ended (infinity while one runs) and whether it takes
connections before its first load is done, each written only by that process's event
loop (and set by the supervisor when it starts the process).

With several processes, each one's sessions use its share of the cores, so that under
load the processes' batches run side by side without their threads competing. A batch
that would run alone on the machine (no batch of another process running or ended within
the last RECENT_S, that is, no other process serving clients now) runs instead on
sessions that use every core: at concurrency 1, or where the connections all went to one
process, the server is as fast as one process. The times are read without a lock: a
stale read costs at most one batch on the other set of sessions, never a wrong answer.

The server is ready when no process that takes connections is still loading: a process
started while no other takes connections answers while it loads (liveness), so until it
is done a client could reach it and get 503; the others take connections only once
loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import MutableSequence

# A process whose last batch ended this recently is between two batches of its clients.
RECENT_S = 0.05
# A process's first load: done; under way while it takes connections (one started while
# no other took any: it answers liveness); under way while it takes none yet.
LOADED, LOADING_SEEN, LOADING_UNSEEN = 0, 1, -1


class ProcessBoard:
    def __init__(
        self, ended: MutableSequence[float], loading: MutableSequence[int], index: int
    ) -> None:
        self._ended = ended  # per process: when its last batch ended; inf while one runs
        self._loading = loading  # per process: LOADED, LOADING_SEEN or LOADING_UNSEEN
        self._index = index
        self._running = 0  # batches of this process running now (any model)

    @classmethod
    def single(cls) -> ProcessBoard:
        """The board of a server of one process."""
        return cls([-math.inf], [LOADING_SEEN], 0)

    def idle(self) -> bool:
        """No batch runs in this process, and no other process is serving clients now."""
        if self._running:
            return False
        since = time.monotonic() - RECENT_S
        return all(ended < since for i, ended in enumerate(self._ended) if i != self._index)

    def enter(self) -> None:
        self._running += 1
        self._ended[self._index] = math.inf

    def leave(self) -> None:
        self._running -= 1
        if not self._running:
            self._ended[self._index] = time.monotonic()

    def loaded(self) -> None:
        """This process's first load is done."""
        self._loading[self._index] = LOADED

    def none_loading(self) -> bool:
        """No process takes connections before its first load is done."""
        return LOADING_SEEN not in self._loading
