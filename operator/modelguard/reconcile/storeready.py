"""Whether a BackupStore can take backups, and how immutable they are there (pure).

A bucket with object lock and versioning is Ready (StoreReady). One without either is refused
(ObjectLockDisabled, VersioningDisabled) unless spec.s3.acceptMutableBucket accepts the
downgrade (DowngradeAccepted, told as a Warning); a volume is Ready only as what it is
(MutableVolume, a Warning too). Anything that kept the operator from checking the store is its
reason, naming the field to fix.
"""

from __future__ import annotations

import dataclasses
import datetime

from modelguard.api import backupstore
from modelguard.reconcile import conditions


@dataclasses.dataclass(frozen=True)
class Found:
    """What the operator found at the store: the bucket's object lock and versioning."""

    object_lock: str
    versioning: str


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
) -> backupstore.BackupStoreStatus:
    """The store's status: Ready, what its bucket has, and the key that signs its backups."""
    previous = store.status or backupstore.BackupStoreStatus()
    generation = int(store.metadata.get("generation", 0))
    ready = refusal if refusal is not None else _ready(store, found)
    return backupstore.BackupStoreStatus(
        observed_generation=generation,
        conditions=conditions.set_condition(
            previous.conditions,
            type=backupstore.CONDITION_READY,
            decision=ready,
            observed_generation=generation,
            now=now,
        ),
        object_lock=found.object_lock if found is not None else previous.object_lock,
        versioning=found.versioning if found is not None else previous.versioning,
        signing_key=backupstore.SigningKeyStatus(key_id=key.key_id, public_key=key.public_key)
        if key is not None
        else None,
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
