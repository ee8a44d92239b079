"""One pass over a BackupStore: observe (its credentials, the bucket's object lock and
versioning, or the volume, and what became of the last audit checkpoint put there), decide
(storeready.py, pure), write (the status once if it changed, then audit records and Events).

Level-based like the ModelDeployment's: every trigger runs the same pass, and a store is checked
again every RECHECK, since a bucket's configuration or the credentials can change where no watch
sees it. Its Events go to the `default` namespace, where Kubernetes keeps the Events of every
cluster-scoped object (a Node's too): the API server refuses them anywhere else.
"""

from __future__ import annotations

import datetime
import logging
import typing

from modelguard import kube
from modelguard.api import backupstore, errors
from modelguard.audit import records
from modelguard.reconcile import backupjobs, conditions, reports, runtime, storeready
from modelguard.sources import errors as source_errors

logger = logging.getLogger(__name__)

RECHECK: typing.Final = datetime.timedelta(minutes=10)
# A store that cannot be checked now (unreachable) is looked at again sooner.
RECHECK_REFUSED: typing.Final = datetime.timedelta(minutes=1)
EVENT_NAMESPACE: typing.Final = "default"


async def reconcile(context: runtime.Context, *, name: str) -> datetime.datetime | None:
    """One pass; returns when to look again (None: the store is gone)."""
    jobs = context.backups
    body = await runtime.call(context.kube.get_backup_store(name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    now = datetime.datetime.now(datetime.UTC)
    try:
        store = backupstore.parse(body)
    except errors.InvalidObjectError as error:
        # The schema refuses most of this; a status can still say what it could not.
        logger.warning("BackupStore %s cannot be acted upon: %s", name, error)
        return None
    found: storeready.Found | None = None
    refusal: conditions.Decision | None = None
    if jobs is None:
        refusal = conditions.Decision(
            "False",
            backupstore.REASON_INVALID_STORE,
            "this operator runs without backups (no backup runtime)",
        )
    else:
        found, refusal = await _check(context, jobs, store)
    key = None
    if jobs is not None and jobs.key is not None:
        key = storeready.SigningKey(key_id=jobs.key.key_id, public_key=jobs.key.public_pem())
    status = storeready.decide(
        store,
        found=found,
        refusal=refusal,
        key=key,
        now=now,
        checkpoints=context.checkpoint_outcome(name),
    )
    before = (store.status or backupstore.BackupStoreStatus()).conditions
    previous = conditions.find(before, backupstore.CONDITION_READY)
    current = conditions.find(status.conditions, backupstore.CONDITION_READY)
    assert current is not None
    if status != store.status:
        await runtime.call(
            context.kube.apply_backup_store_status(
                name=name, status=status.model_dump(mode="json", exclude_none=True)
            )
        )
    subject = records.Subject.of(body)
    for record in reports.store_records(previous, current):
        context.audit.record(
            record.decision, reason=record.reason, message=record.message, subject=subject
        )
    told = reports.store_events(previous, current) + reports.checkpoint_events(
        conditions.find(before, backupstore.CONDITION_AUDIT_CHECKPOINTS),
        conditions.find(status.conditions, backupstore.CONDITION_AUDIT_CHECKPOINTS),
    )
    for event in told:
        try:
            await context.kube.post_event(
                regarding=body,
                type=event.type,
                reason=event.reason,
                action=event.action,
                note=event.note,
                reporting_instance=context.instance,
                namespace=EVENT_NAMESPACE,
            )
        except kube.ApiError as error:
            logger.warning("could not post event %s: %s", event.reason, error.message)
    return now + (RECHECK if current.status.value == "True" else RECHECK_REFUSED)


async def _check(
    context: runtime.Context, jobs: backupjobs.Jobs, store: backupstore.BackupStore
) -> tuple[storeready.Found | None, conditions.Decision | None]:
    opening = await backupjobs.resolve_store(
        context.kube,
        store,
        operator_namespace=jobs.operator_namespace,
        volume_root=jobs.volume_root,
    )
    if isinstance(opening, conditions.Decision):
        return None, opening
    opened = opening.open()
    try:
        condition = await opened.condition()
    except source_errors.SourceError as error:
        return None, backupjobs.store_refusal(error, volume=store.spec.volume is not None)
    finally:
        await opened.aclose()
    return storeready.Found(
        object_lock=condition.object_lock, versioning=condition.versioning
    ), None
