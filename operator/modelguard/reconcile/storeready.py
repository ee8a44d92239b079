"""Whether a BackupStore can take backups, and how immutable they are there (pure).

A bucket with object lock and versioning is Ready (StoreReady). One without either is refused
(ObjectLockDisabled, VersioningDisabled) unless spec.s3.acceptMutableBucket accepts the
downgrade (DowngradeAccepted, told as a Warning); a volume is Ready only as what it is
(MutableVolume, a Warning too). Anything that kept the operator from checking the store is its
reason, naming the field to fix.

A store asked to keep the audit log's checkpoints (spec.auditCheckpoints) also has the
AuditCheckpoints condition: whether the last checkpoint due was written there, from what the
checkpoint publisher last saw (`CheckpointOutcome`) and what this check found. A store that
cannot keep them (not Ready, no object lock, a refused write) says so there, and the condition
clears when a checkpoint is written again.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum

from modelguard.api import backupstore, v1alpha1
from modelguard.reconcile import conditions


@dataclasses.dataclass(frozen=True)
class Found:
    """What the operator found at the store: the bucket's object lock and versioning."""

    object_lock: str
    versioning: str


class CheckpointResult(enum.StrEnum):
    """What became of the last checkpoint due at a store that asks for them."""

    STORED = "Stored"
    """Written under object lock and read back (or already there)."""
    UNUSABLE = "Unusable"
    """Not written: the store was not Ready, had no object lock, or could not be opened."""
    FAILED = "Failed"
    """The store refused the write, or writing or reading it back failed."""


@dataclasses.dataclass(frozen=True)
class CheckpointOutcome:
    """The checkpoint publisher's last attempt at one store."""

    result: CheckpointResult
    message: str
    """Why not, when not stored."""


@dataclasses.dataclass(frozen=True)
class SigningKey:
    key_id: str
    public_key: str


def decide(
    store: backupstore.BackupStore,
    *,
    found: Found | None,
    refusal: conditions.Decision | None,
    key: SigningKey | None,
    now: datetime.datetime,
    checkpoints: CheckpointOutcome | None = None,
) -> backupstore.BackupStoreStatus:
    """The store's status: Ready, whether it keeps the audit checkpoints it asks for, what its
    bucket has, and the key that signs its backups."""
    previous = store.status or backupstore.BackupStoreStatus()
    generation = int(store.metadata.get("generation", 0))
    ready = refusal if refusal is not None else _ready(store, found)
    object_lock = found.object_lock if found is not None else previous.object_lock
    decided = conditions.set_condition(
        previous.conditions,
        type=backupstore.CONDITION_READY,
        decision=ready,
        observed_generation=generation,
        now=now,
    )
    kept = checkpoints_decision(
        store,
        ready=ready,
        object_lock=object_lock,
        outcome=checkpoints,
        previous=conditions.find(previous.conditions, backupstore.CONDITION_AUDIT_CHECKPOINTS),
    )
    if kept is None:
        decided = [c for c in decided if c.type != backupstore.CONDITION_AUDIT_CHECKPOINTS]
    else:
        decided = conditions.set_condition(
            decided,
            type=backupstore.CONDITION_AUDIT_CHECKPOINTS,
            decision=kept,
            observed_generation=generation,
            now=now,
        )
    return backupstore.BackupStoreStatus(
        observed_generation=generation,
        conditions=decided,
        object_lock=object_lock,
        versioning=found.versioning if found is not None else previous.versioning,
        signing_key=backupstore.SigningKeyStatus(key_id=key.key_id, public_key=key.public_key)
        if key is not None
        else None,
    )


def checkpoints_decision(
    store: backupstore.BackupStore,
    *,
    ready: conditions.Decision,
    object_lock: str | None,
    outcome: CheckpointOutcome | None,
    previous: v1alpha1.Condition | None,
) -> conditions.Decision | None:
    """The AuditCheckpoints condition of a store (None: it does not ask for checkpoints).

    What the store is now (this check) comes first: the publisher writes nothing to a store that
    is not Ready or has no object lock. Then the publisher's last write. With none since this
    process started, the previous condition stands (no flapping across a restart: the first
    checkpoint of a segment is made at the start and decides it within seconds), unless it
    blamed the store, which this check found Ready again. A last attempt that found the store
    unusable while this check finds it Ready read a status older than this check (a spec just
    changed); its retry, within a minute, tells what a write does."""
    if not store.spec.audit_checkpoints:
        return None
    retried = "the operator retries with backoff; its ConfigMaps hold the checkpoints meanwhile"
    if ready.status != "True":
        return conditions.Decision(
            "False",
            backupstore.REASON_CHECKPOINT_STORE_NOT_READY,
            f"audit checkpoints are not written to a store that is not Ready ({ready.reason}); "
            + retried,
        )
    if object_lock != "Enabled":
        return conditions.Decision(
            "False",
            backupstore.REASON_CHECKPOINT_STORE_NOT_READY,
            "spec.auditCheckpoints needs a bucket with object lock; this one has "
            f"{object_lock or 'none'}; " + retried,
        )
    if outcome is None or outcome.result is CheckpointResult.UNUSABLE:
        if previous is not None and previous.reason != (
            backupstore.REASON_CHECKPOINT_STORE_NOT_READY
        ):
            return conditions.Decision(previous.status.value, previous.reason, previous.message)
        return conditions.Decision(
            "Unknown",
            backupstore.REASON_NO_CHECKPOINT_YET,
            "no audit checkpoint written here yet by this operator (none was due since it "
            "started, the store asked for them or became Ready); the next one is written here",
        )
    if outcome.result is CheckpointResult.STORED:
        lock = store.spec.s3.object_lock if store.spec.s3 is not None else None
        locked = f" under {lock.mode} object lock for {lock.retention_days} days" if lock else ""
        # The same words every time: a status written, and told, per checkpoint would be noise.
        return conditions.Decision(
            "True",
            backupstore.REASON_CHECKPOINTS_STORED,
            f"each checkpoint of the operator's audit log is written here once{locked} and "
            "read back",
        )
    return conditions.Decision(
        "False",
        backupstore.REASON_CHECKPOINT_WRITE_FAILED,
        f"the last audit checkpoint was not stored: {outcome.message}; " + retried,
    )


def _ready(store: backupstore.BackupStore, found: Found | None) -> conditions.Decision:
    assert found is not None, "a store either was checked or refused"
    volume = store.spec.volume
    if volume is not None:
        return conditions.Decision(
            "True",
            backupstore.REASON_MUTABLE_VOLUME,
            f"volume claim {volume.claim_name}: backups are written once and read-only, but "
            "they are not immutable: whoever can write to the volume can change or delete them "
            "(accepted by spec.volume.acceptMutable); a restore refuses a changed file",
        )
    s3 = store.spec.s3
    assert s3 is not None
    locked = found.object_lock == "Enabled"
    versioned = found.versioning == "Enabled"
    lock = s3.object_lock
    if locked and versioned:
        return conditions.Decision(
            "True",
            backupstore.REASON_STORE_READY,
            f"bucket {s3.bucket} has object lock and versioning; every backup object is written "
            f"once with {lock.mode} retention of at least {lock.retention_days} days",
        )
    missing = [
        what
        for what, present in (("object lock", locked), ("versioning", versioned))
        if not present
    ]
    lacking = " and ".join(missing)
    if s3.accept_mutable_bucket:
        return conditions.Decision(
            "True",
            backupstore.REASON_DOWNGRADE_ACCEPTED,
            f"bucket {s3.bucket} has no {lacking}: whoever may write to it can overwrite or "
            "delete backups (accepted by spec.s3.acceptMutableBucket); a restore refuses a "
            "changed file",
        )
    return conditions.Decision(
        "False",
        backupstore.REASON_OBJECT_LOCK_DISABLED
        if not locked
        else backupstore.REASON_VERSIONING_DISABLED,
        f"bucket {s3.bucket} has no {lacking}: backups there could be overwritten or deleted. "
        "Make the bucket with object lock (e.g. `mc mb --with-lock`, or `aws s3api "
        "create-bucket --object-lock-enabled-for-bucket`), or accept the downgrade with "
        "spec.s3.acceptMutableBucket: true",
    )
