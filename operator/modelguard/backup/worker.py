"""Where backups and drills run in the operator: a thread of their own with its own event loop.

The operator's event loop answers admission requests that the API server waits on (fail closed);
a backup streams gigabytes. So a backup never runs on that loop: the reconcile hands a coroutine
to `Worker.submit`, which runs it on the worker's loop, at most `concurrency` at once (the rest
wait their turn), and returns a future the reconcile's loop can await or forget. Memory stays
bounded by `concurrency` times what one backup holds (its files in flight, a few MiB each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import typing
from collections.abc import Callable, Coroutine

_T = typing.TypeVar("_T")

DEFAULT_CONCURRENCY: typing.Final = 1


class Worker:
    """One thread, one event loop, a bounded number of jobs at a time."""

    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY, name: str = "backup") -> None:
        if concurrency < 1:
            raise ValueError(f"backup concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    self._slots = asyncio.Semaphore(self.concurrency)
                    ready.set()
                    loop.run_forever()

                # A daemon: a job in flight must not keep a stopping operator alive.
                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(
        self, make: Callable[[], Coroutine[typing.Any, typing.Any, _T]]
    ) -> asyncio.Future[_T]:
        """Runs `make()` on the worker's loop when a slot is free; the future belongs to the
        calling loop."""
        loop = self._started()

        async def guarded() -> _T:
            assert self._slots is not None
            async with self._slots:
                return await make()

        running: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(guarded(), loop)
        return asyncio.wrap_future(running)

    def close(self) -> None:
        """Stops the loop; jobs in flight are abandoned (nothing they wrote is incomplete in a
        store: an unfinished upload stores nothing)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
