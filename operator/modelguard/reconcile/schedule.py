"""When models are reconciled besides their own events: again at a set time (an approval expires,
a refused bundle is looked at again), and all at once when something many answer to changes (a
TrustPolicy, a namespace's labels).

A fan-out runs every model's reconcile concurrently and does not wait for them: one tenant whose
bundle endpoint answers slowly (each fetch has its own deadline) must not delay the
re-verification of every model after it, nor the next change of the same policy.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import typing

logger = logging.getLogger(__name__)

Run = typing.Callable[[str, str], typing.Awaitable[None]]


class Scheduler:
    """Timers and background reconciles of one operator process; `run` reconciles one model and
    reports its own failures (the next event converges)."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def recheck(self, namespace: str, name: str, when: datetime.datetime) -> None:
        """Reconciles the model again at `when`, unless one is already due sooner: the earliest
        pending recheck stands (an approval expiring in a minute is not pushed out by a bundle to
        read again in five), and the reconcile it runs asks again for whatever is due later."""
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds()) + 1
        previous = self._timers.get((namespace, name))
        if previous is not None and previous.when() <= loop.time() + delay:
            return
        if (previous := self._timers.pop((namespace, name), None)) is not None:
            previous.cancel()

        def fire() -> None:
            self._timers.pop((namespace, name), None)
            self._start(namespace, name)

        self._timers[namespace, name] = loop.call_later(delay, fire)

    def due(self, namespace: str, name: str) -> float | None:
        """The event-loop time of the model's pending recheck, None when there is none."""
        timer = self._timers.get((namespace, name))
        return timer.when() if timer is not None else None

    @property
    def scheduled(self) -> int:
        """Models waiting for a timer to reconcile them again."""
        return len(self._timers)

    @property
    def running(self) -> int:
        """Background reconciles (fan-outs and timers) started and not finished."""
        return len(self._tasks)

    def fan_out(self, models: typing.Iterable[tuple[str, str]]) -> int:
        """Starts the reconcile of every (namespace, name) now, concurrently; returns how many."""
        started = 0
        for namespace, name in dict.fromkeys(models):
            self._start(namespace, name)
            started += 1
        return started

    def spawn(self, work: typing.Coroutine[typing.Any, typing.Any, None]) -> None:
        """Runs `work` in the background, counted and cancelled at close as reconciles are."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self, namespace: str, name: str) -> None:
        self.spawn(self._guarded(namespace, name))

    def clear(self) -> None:
        """Drops every pending recheck (this process stopped leading: whoever leads next
        reconciles every model, and asks for its own)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def _guarded(self, namespace: str, name: str) -> None:
        try:
            await self._run(namespace, name)
        except Exception:
            # A background reconcile has nobody to report to but the log; the next event retries.
            logger.exception("%s/%s: reconcile failed", namespace, name)

    def close(self) -> None:
        self.clear()
        for task in self._tasks:
            task.cancel()
