"""Audit checkpoints kept in the BackupStores that ask for them (spec.auditCheckpoints).

One destination of the checkpoint publisher (reconcile/checkpoints.py): each checkpoint is put,
once and under the store's object lock, into every BackupStore whose spec says
`auditCheckpoints: true`, as `audit-checkpoints/<log>/<segment>/<size>.checkpoint`. The set of
stores is read again for every checkpoint, so a store that asks later gets the checkpoints from
then on. A store that asks but cannot take them (not Ready, no object lock, refused) fails the
publication, which the publisher logs and retries with backoff: a copy that was asked for is never
silently missing. Putting the same checkpoint again is harmless (`put_immutable` returns the object
already there), so a retry after a partial success writes nothing twice.

What became of the last attempt at each store is kept (`outcome`) for the store's own check,
which makes it the store's AuditCheckpoints condition and Events (storeready.py); when it changes
between stored and not, `changed` asks for that check at once.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import typing

from modelguard import kube
from modelguard.api import backupstore, errors
from modelguard.audit import checkpoints
from modelguard.reconcile import backupjobs, conditions, storeready
from modelguard.reconcile import checkpoints as publishing
from modelguard.sources import errors as source_errors

logger = logging.getLogger(__name__)

FOLDER: typing.Final = "audit-checkpoints"
"""Below the store's own prefix."""


class NotStored(Exception):
    """The checkpoint is not in every store that asks for it; the message says which and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unusable(NotStored):
    """Nothing was written: the store is not Ready, has no object lock, or cannot be opened."""


class BackupStores:
    """The BackupStores with spec.auditCheckpoints, as one checkpoint destination."""

    description = "BackupStores with spec.auditCheckpoints"

    def __init__(
        self,
        client: kube.Kube,
        *,
        log_prefix: str,
        operator_namespace: str | None,
        volume_root: pathlib.Path = backupjobs.DEFAULT_VOLUME_ROOT,
    ) -> None:
        self._kube = client
        self._folder = f"{FOLDER}/{log_prefix}"
        self._operator_namespace = operator_namespace
        self._volume_root = volume_root
        self._outcomes: dict[str, storeready.CheckpointOutcome] = {}
        self.changed: typing.Callable[[str], None] = lambda _: None
        """Called with a store's name when its last attempt turns from stored to not, or back
        (the operator checks that store again)."""

    def outcome(self, name: str) -> storeready.CheckpointOutcome | None:
        """The last attempt at the store `name` by this process; None: none yet."""
        return self._outcomes.get(name)

    async def publish(self, signed: checkpoints.Signed) -> None:
        failures: list[str] = []
        asking: set[str] = set()
        for body in await self._kube.list_backup_stores():
            name = str((body.get("metadata") or {}).get("name"))
            if not (body.get("spec") or {}).get("auditCheckpoints"):
                continue
            asking.add(name)
            result, why = storeready.CheckpointResult.STORED, ""
            try:
                await self._publish(backupstore.parse(body), signed)
            except errors.InvalidObjectError as error:
                result, why = storeready.CheckpointResult.UNUSABLE, str(error)
            except Unusable as error:
                result, why = storeready.CheckpointResult.UNUSABLE, error.message
            except source_errors.SourceError as error:
                # With its reason: SourceDenied (the identity may not put), SourceUnreachable.
                result, why = storeready.CheckpointResult.FAILED, str(error)
            except (NotStored, kube.ApiError) as error:
                result, why = storeready.CheckpointResult.FAILED, error.message
            if why:
                failures.append(f"BackupStore {name}: {why}")
            self._tell(name, storeready.CheckpointOutcome(result=result, message=why))
        # Bounded by the stores that ask: one that no longer does (or is gone) is forgotten.
        for name in set(self._outcomes) - asking:
            del self._outcomes[name]
        if failures:
            raise NotStored("; ".join(failures))

    def _tell(self, name: str, outcome: storeready.CheckpointOutcome) -> None:
        before = self._outcomes.get(name)
        self._outcomes[name] = outcome
        if before is None or before.result is not outcome.result:
            self.changed(name)

    async def _publish(self, store: backupstore.BackupStore, signed: checkpoints.Signed) -> None:
        status = store.status
        ready = None
        if status is not None and status.observed_generation == store.metadata.get("generation"):
            ready = conditions.find(status.conditions, backupstore.CONDITION_READY)
        if ready is None or ready.status.value != "True":
            why = f"{ready.reason}: {ready.message}" if ready is not None else "not checked yet"
            raise Unusable(f"not Ready ({why})")
        if status is None or status.object_lock != "Enabled" or store.spec.s3 is None:
            # A downgraded bucket would let the writer replace what is meant to outlive it.
            raise Unusable(
                "spec.auditCheckpoints needs a bucket with object lock; this one has "
                f"{status.object_lock if status is not None else 'none'}"
            )
        opening = await backupjobs.resolve_store(
            self._kube,
            store,
            operator_namespace=self._operator_namespace,
            volume_root=self._volume_root,
        )
        if isinstance(opening, conditions.Decision):
            raise Unusable(f"{opening.reason}: {opening.message}")
        opened = opening.open()
        try:
            await publishing.StoreDestination(
                opened,
                prefix=self._folder,
                retain=datetime.timedelta(days=store.spec.s3.object_lock.retention_days),
                description=opened.description,
            ).publish(signed)
        finally:
            await opened.aclose()
