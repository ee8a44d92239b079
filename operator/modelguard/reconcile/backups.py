"""The backup decision of a pass (pure): the BackedUp condition, status.lastBackup and
status.lastDrill from how this operator's jobs ended, and whether to start a backup or a drill.

A backup is taken of what serves, once it is the spec's version, verified and approved (Ready):
at once when that version has no backup yet (a rollout), then on spec.backup.schedule. A failed
one says why (BackedUp=False with the reason) and is retried with backoff, from 30 s doubling to
30 min. A drill restores the latest backup on its BackupStore's drill schedule; a failed drill is
BackedUp=False (DrillFailed), a Warning Event and an audit record, every time.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

from modelguard.api import cron, times, v1alpha1
from modelguard.backup import layout
from modelguard.reconcile import backupviews, conditions, observations, reports

RETRY_FIRST: typing.Final = datetime.timedelta(seconds=30)
RETRY_LAST: typing.Final = datetime.timedelta(minutes=30)
# Without a retention of its own (a volume store, no spec.backup.retain), a backup's context
# still says until when it is meant to be kept.
DEFAULT_RETAIN_DAYS: typing.Final = 30


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the pass sets about backups."""

    condition: conditions.Decision | None
    """BackedUp as decided now; None: leave it as it is (a job is running)."""
    remove: bool = False
    """spec.backup is gone: BackedUp is dropped (status.lastBackup stays, as history)."""
    last_backup: v1alpha1.BackupStatus | None = None
    last_drill: v1alpha1.DrillStatus | None = None
    notes: tuple[reports.Note, ...] = ()
    start: backupviews.Start | None = None
    recheck_at: datetime.datetime | None = None


def retry_after(failures: int) -> datetime.timedelta:
    """The wait before the next attempt after `failures` failures in a row."""
    factor = 1 << min(max(0, failures - 1), 16)
    return min(RETRY_FIRST * factor, RETRY_LAST)


def decide(seen: observations.Observed, *, status: v1alpha1.ModelDeploymentStatus) -> Decision:
    """The backup decision for `seen` whose status (after this pass's other decisions) is
    `status`."""
    model = seen.model
    if model is None or model.spec.backup is None:
        return Decision(condition=None, remove=True)
    spec = model.spec.backup
    view = seen.backup
    if view is None:
        # Not observed (no backup runtime in this process): nothing is decided anew.
        return Decision(
            condition=None, last_backup=status.last_backup, last_drill=status.last_drill
        )
    last, last_drill, notes, condition = _fold_jobs(status, view.jobs, store=spec.store)
    blocked = _blocked(model, view)
    if blocked is not None:
        return Decision(
            condition=blocked, last_backup=last, last_drill=last_drill, notes=tuple(notes)
        )
    if view.jobs.running is not None:
        return Decision(
            condition=condition, last_backup=last, last_drill=last_drill, notes=tuple(notes)
        )
    serving = _serving(seen, status=status)
    if serving is None:
        if last is None and condition is None:
            condition = conditions.Decision(
                "False",
                v1alpha1.REASON_NOTHING_TO_BACK_UP,
                "no verified and approved version serves yet; the first backup follows its rollout",
            )
        return Decision(
            condition=condition, last_backup=last, last_drill=last_drill, notes=tuple(notes)
        )
    assert view.store is not None
    start, recheck_at = _next(
        seen,
        serving=serving,
        status=status,
        last=last,
        last_drill=last_drill,
        store=view.store,
        jobs=view.jobs,
    )
    return Decision(
        condition=condition,
        last_backup=last,
        last_drill=last_drill,
        notes=tuple(notes),
        start=start,
        recheck_at=recheck_at,
    )


def _fold_jobs(
    status: v1alpha1.ModelDeploymentStatus,
    jobs: backupviews.Jobs,
    *,
    store: str,
) -> tuple[
    v1alpha1.BackupStatus | None,
    v1alpha1.DrillStatus | None,
    list[reports.Note],
    conditions.Decision | None,
]:
    """status.lastBackup and status.lastDrill with what the jobs found since, their notes, and
    BackedUp as the latest of them says (None: no job ended in this process)."""
    last = status.last_backup
    last_drill = status.last_drill
    notes: list[reports.Note] = []
    condition: conditions.Decision | None = None
    for finished in sorted(
        (job for job in (jobs.backup, jobs.drill) if job is not None), key=lambda job: job.at
    ):
        if finished.kind == "backup":
            done = finished.backup
            if finished.ok and done is not None:
                if last is None or last.id != done.backup:
                    last = _backup_status(done, at=finished.at)
                    notes.append(_backed_up(done))
                condition = _verified_condition(last, last_drill)
            else:
                retry = finished.at + retry_after(finished.failures)
                condition = conditions.Decision(
                    "False",
                    finished.reason,
                    f"backup to BackupStore {store} failed (attempt {finished.failures}): "
                    f"{finished.message}; retried after {times.rfc3339(retry)}",
                )
            continue
        completed = times.rfc3339(finished.at)
        if last_drill is None or last_drill.completed_at != completed:
            last_drill = v1alpha1.DrillStatus(
                backup_id=finished.drilled,
                completed_at=completed,
                result="Passed" if finished.ok else "Failed",
                message=finished.message
                if finished.ok
                else f"{finished.reason}: {finished.message}",
            )
            notes.append(_drilled(finished, store=store))
        if finished.ok:
            condition = _verified_condition(last, last_drill) if last is not None else None
        else:
            condition = conditions.Decision(
                "False",
                v1alpha1.REASON_DRILL_FAILED,
                f"the restore drill of backup {finished.drilled} failed: {finished.reason}: "
                f"{finished.message}",
            )
    return last, last_drill, notes, condition


def _verified_condition(
    last: v1alpha1.BackupStatus | None, last_drill: v1alpha1.DrillStatus | None
) -> conditions.Decision:
    assert last is not None
    message = (
        f"backup {last.id} of version {last.version} (root {last.root_digest}) is in BackupStore "
        f"{last.store}, read back and verified: {last.files} files, {last.bytes} bytes "
        f"({last.written_bytes} written, the rest stored already), locked until "
        f"{last.retain_until}"
    )
    if last_drill is not None and last_drill.result == "Passed":
        message += f"; restore drill of {last_drill.backup_id} passed at {last_drill.completed_at}"
    return conditions.Decision("True", v1alpha1.REASON_BACKUP_VERIFIED, message)


def _backup_status(done: backupviews.BackupDone, *, at: datetime.datetime) -> v1alpha1.BackupStatus:
    return v1alpha1.BackupStatus(
        id=done.backup,
        store=done.store,
        location=done.location,
        version=done.version,
        root_digest=done.root_digest,
        completed_at=times.rfc3339(at),
        retain_until=times.rfc3339(done.retain_until),
        files=done.files,
        bytes=done.bytes,
        written_bytes=done.written_bytes,
    )


def _backed_up(done: backupviews.BackupDone) -> reports.Note:
    return reports.Note(
        reports.Happening.BACKED_UP,
        reason=v1alpha1.REASON_BACKED_UP,
        message=f"backup {done.backup} of version {done.version} (root {done.root_digest}) "
        f"written to BackupStore {done.store}, read back and verified: {done.files} files, "
        f"{done.bytes} bytes ({done.written_bytes} written)",
        details={
            "backupId": done.backup,
            "store": done.store,
            "location": done.location,
            "version": done.version,
            "rootDigest": done.root_digest,
            "files": done.files,
            "bytes": done.bytes,
            "writtenBytes": done.written_bytes,
            "retainUntil": times.rfc3339(done.retain_until),
        },
    )


def _drilled(finished: backupviews.Finished, *, store: str) -> reports.Note:
    if finished.ok:
        return reports.Note(
            reports.Happening.RESTORE_DRILL_PASSED,
            reason=v1alpha1.REASON_RESTORE_DRILL_PASSED,
            message=finished.message,
            details={"backupId": finished.drilled, "store": store},
        )
    return reports.Note(
        reports.Happening.RESTORE_DRILL_FAILED,
        reason=finished.reason,
        message=f"the restore drill of backup {finished.drilled} from BackupStore {store} "
        f"failed: {finished.reason}: {finished.message}",
        details={"backupId": finished.drilled, "store": store},
    )


def _blocked(
    model: v1alpha1.ModelDeployment, view: backupviews.Observed
) -> conditions.Decision | None:
    """Why no backup can be taken at all, whatever serves."""
    assert model.spec.backup is not None
    name = model.spec.backup.store
    if view.store is None:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_STORE_NOT_FOUND,
            f'spec.backup.store: BackupStore "{name}" does not exist; a platform owner creates it '
            "(kubectl explain backupstore.spec)",
        )
    ready = view.store.ready
    if ready is None or ready.status != "True":
        why = f"{ready.reason}: {ready.message}" if ready is not None else "not checked yet"
        return conditions.Decision(
            "False", v1alpha1.REASON_STORE_NOT_READY, f'BackupStore "{name}" is not Ready: {why}'
        )
    if view.jobs.key_id is None:
        return conditions.Decision(
            "False",
            v1alpha1.REASON_BACKUP_KEY_MISSING,
            "the operator has no backup key (--backup-key-file; the chart's Secret "
            "<release>-backup-key) to sign backup manifests with",
        )
    if model.spec.model.source.uri.startswith("pvc://"):
        return conditions.Decision(
            "False",
            v1alpha1.REASON_BACKUP_UNSUPPORTED,
            f"spec.model.source {model.spec.model.source.uri}: a claim in the model's namespace "
            "is not mounted into the operator, which takes the backups; serve the model from S3 "
            "to back it up",
        )
    return None


@dataclasses.dataclass(frozen=True)
class _Serving:
    serving: observations.Serving
    verified: observations.Verified


def _serving(
    seen: observations.Observed, *, status: v1alpha1.ModelDeploymentStatus
) -> _Serving | None:
    """What serves, when it is the spec's version, verified and approved and Ready: only that is
    backed up."""
    model = seen.model
    assert model is not None
    if model.spec.quarantine or status.quarantine is not None:
        return None
    verdict = seen.verification
    verified = verdict.verified if verdict is not None else None
    serving = observations.Serving.of(seen.deployment())
    ready = conditions.find(seen.status.conditions, v1alpha1.CONDITION_READY)
    checked = conditions.find(status.conditions, v1alpha1.CONDITION_VERIFIED)
    if (
        verified is None
        or serving is None
        or ready is None
        or ready.status != "True"
        or checked is None
        or checked.status != "True"
        or seen.status.active_version != model.spec.model.version
        or serving.root_digest != verified.root_digest
        or serving.signature_digest != verified.signature_digest
    ):
        return None
    return _Serving(serving=serving, verified=verified)


def _next(
    seen: observations.Observed,
    *,
    serving: _Serving,
    status: v1alpha1.ModelDeploymentStatus,
    last: v1alpha1.BackupStatus | None,
    last_drill: v1alpha1.DrillStatus | None,
    store: backupviews.StoreView,
    jobs: backupviews.Jobs,
) -> tuple[backupviews.Start | None, datetime.datetime | None]:
    """A backup or drill to start now, and when to look again."""
    model = seen.model
    assert model is not None
    assert model.spec.backup is not None
    now = seen.now
    schedule = cron.parse(model.spec.backup.schedule)
    last_at = _parsed(last.completed_at) if last is not None else None
    wanted = (
        last is None
        or last_at is None
        or last.root_digest != serving.serving.root_digest
        # Another store now: it holds no backup of this model yet.
        or last.store != store.name
        or schedule.due(last=last_at, now=now)
    )
    recheck: datetime.datetime | None = schedule.next_after(last_at) if last_at else None
    failed = jobs.backup if jobs.backup is not None and not jobs.backup.ok else None
    if wanted and failed is not None:
        retry = failed.at + retry_after(failed.failures)
        if now < retry:
            return None, retry
    if wanted:
        return _backup_start(seen, serving=serving, status=status, store=store), None
    if store.drill_schedule is None or last is None or last_at is None:
        return None, recheck
    drills = cron.parse(store.drill_schedule)
    drilled_at = _parsed(last_drill.completed_at) if last_drill is not None else None
    # Counted from the last drill, failed or not: a failed drill is tried again at the next drill
    # time, not sooner (it said why, and a new backup resets nothing it found).
    since = drilled_at or last_at
    if drills.due(last=since, now=now):
        return (
            backupviews.Start(
                kind="drill", store=store.name, backup=str(last.id), retain_until=now, model=model
            ),
            None,
        )
    return None, _earliest(recheck, drills.next_after(since))


def _backup_start(
    seen: observations.Observed,
    *,
    serving: _Serving,
    status: v1alpha1.ModelDeploymentStatus,
    store: backupviews.StoreView,
) -> backupviews.Start:
    model = seen.model
    assert model is not None
    assert model.spec.backup is not None
    days = max(model.spec.backup.retain_days() or 0, store.retention_days) or DEFAULT_RETAIN_DAYS
    root = serving.serving.root_digest
    approvers = set((status.approval.approvers or []) if status.approval else [])
    approvals = tuple(
        found
        for found in seen.approvals
        if found.spec.model == model.spec.model.name
        and found.spec.version == model.spec.model.version
        and found.spec.root_digest == root
        and found.spec.approver in approvers
    )
    policy = seen.verification.policy if seen.verification is not None else None
    metadata = policy.metadata if policy is not None else {}
    return backupviews.Start(
        kind="backup",
        store=store.name,
        backup=layout.backup_id(at=seen.now, root_digest=root),
        retain_until=seen.now + datetime.timedelta(days=days),
        model=model,
        serving=serving.serving,
        verified=serving.verified,
        approvals=approvals,
        policy={
            "name": model.spec.trust_policy,
            "uid": metadata.get("uid"),
            "generation": metadata.get("generation"),
        },
    )


def _parsed(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return times.parse(text)
    except ValueError:
        return None


def _earliest(
    first: datetime.datetime | None, second: datetime.datetime | None
) -> datetime.datetime | None:
    found = [moment for moment in (first, second) if moment is not None]
    return min(found, default=None)
