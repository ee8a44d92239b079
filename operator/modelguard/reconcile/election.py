"""Takes part in the election of the replica that reconciles: reads and writes the Lease on the
schedule `leadership.Elector` gives, and tells the process when it starts and stops leading.

Without a Lease configured (one process run by hand, a test's), the process always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import typing

from modelguard import kube
from modelguard.reconcile import leadership

logger = logging.getLogger(__name__)

Callback = typing.Callable[[], None]


class Leadership(typing.Protocol):
    """What the rest of the process asks: may it write now (`leading`), and should it reconcile
    (`elected`)?"""

    @property
    def leading(self) -> bool: ...

    @property
    def elected(self) -> bool: ...


class Always:
    """The only replica: it always leads."""

    leading: typing.Final = True
    elected: typing.Final = True


class Election:
    """One replica's part in the election of the Lease `namespace/name`."""

    def __init__(
        self,
        client: kube.Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: leadership.Timing = leadership.DEFAULT_TIMING,
        on_started: Callback = lambda: None,
        on_stopped: Callback = lambda: None,
        clock: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = client
        self.namespace = namespace
        self.name = name
        self._elector = leadership.Elector(identity, timing)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._clock = clock
        self._was_leading = False
        self._task: asyncio.Task[None] | None = None
        self.transitions = 0
        """How many times this replica started leading."""

    @property
    def identity(self) -> str:
        return self._elector.identity

    @property
    def leading(self) -> bool:
        """From the clock alone: false from the moment a renewal is overdue, whatever the loop is
        doing, so that no write is made past it."""
        return self._elector.leading(self._clock())

    @property
    def elected(self) -> bool:
        """Leading as the election last saw it: whether to reconcile. Unlike `leading`, a renewal
        overdue for a moment (an event loop too busy to renew on time) does not turn it off
        until the election looks again and finds the Lease lost: work that arrives meanwhile is
        attempted, its writes refused by `leading` and retried, rather than skipped and lost (a
        lapse that ends in a renewal starts no new term, so nothing would reconcile it again)."""
        return self._was_leading

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lease election")

    async def stop(self) -> None:
        """Stops taking part, and hands the Lease back when holding it (stopping leading first),
        so that another replica takes over at once rather than after the Lease expires."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        release = self._elector.release(wall=datetime.datetime.now(datetime.UTC))
        self._notice()
        if release is None:
            return
        try:
            await self._kube.replace(self._manifest(release.record))
        except kube.ApiError as error:
            logger.warning("could not release the Lease %s: %s", self._where, error.message)
        else:
            logger.info("released the Lease %s", self._where)

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _manifest(self, record: leadership.Record) -> kube.Manifest:
        return leadership.manifest_of(record, namespace=self.namespace, name=self.name)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:
                # Never let the loop die: a replica that stops electing would stop leading by
                # the clock anyway, and never lead again.
                logger.exception("Lease %s: election step failed", self._where)
                self._elector.failed()
            self._notice()
            await asyncio.sleep(self._elector.wait(self._clock()))

    async def _step(self) -> None:
        try:
            found = await self._kube.get(
                api_version=leadership.API_VERSION,
                kind=leadership.KIND,
                namespace=self.namespace,
                name=self.name,
            )
        except kube.ApiError as error:
            logger.warning("cannot read the Lease %s: %s", self._where, error.message)
            self._elector.failed()
            return
        write = self._elector.next(
            None if found is None else leadership.record_of(found),
            now=self._clock(),
            wall=datetime.datetime.now(datetime.UTC),
        )
        if write is None:
            return
        sent_at = self._clock()
        manifest = self._manifest(write.record)
        try:
            answer = (
                await self._kube.create(manifest)
                if write.create
                else await self._kube.replace(manifest)
            )
        except kube.ApiError as error:
            # 409: another replica wrote first; it is read again at the next step.
            level = logging.DEBUG if error.status == 409 else logging.WARNING
            logger.log(level, "Lease %s not written: %s", self._where, error.message)
            self._elector.failed()
            return
        self._elector.written(leadership.record_of(answer), sent_at=sent_at)

    def _notice(self) -> None:
        """Tells the process when leading started or stopped since last noticed."""
        leading = self.leading
        if leading == self._was_leading:
            return
        self._was_leading = leading
        if leading:
            self.transitions += 1
            logger.info("leading: this replica (%s) holds the Lease %s", self.identity, self._where)
            self._on_started()
        else:
            logger.warning(
                "not leading: this replica (%s) no longer holds the Lease %s; it stopped writing",
                self.identity,
                self._where,
            )
            self._on_stopped()
