"""A BackupStore's Ready condition from what the operator found, as table cases."""

from __future__ import annotations

import datetime

import pytest

from modelguard.api import backupstore, v1alpha1
from modelguard.reconcile import conditions, storeready

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def _store(**s3: object) -> backupstore.BackupStore:
    return backupstore.parse(
        {
            "metadata": {"name": "vault", "generation": 3},
            "spec": {"s3": {"bucket": "backups", "credentialsSecret": "writer", **s3}},
        }
    )


VOLUME = backupstore.parse(
    {
        "metadata": {"name": "vault", "generation": 1},
        "spec": {"volume": {"claimName": "backups", "acceptMutable": True}},
    }
)


@pytest.mark.parametrize(
    ("store", "found", "refusal", "expected"),
    [
        (_store(), storeready.Found("Enabled", "Enabled"), None, ("True", "StoreReady")),
        (_store(), storeready.Found("Disabled", "Enabled"), None, ("False", "ObjectLockDisabled")),
        (_store(), storeready.Found("Disabled", "Disabled"), None, ("False", "ObjectLockDisabled")),
        (_store(), storeready.Found("Enabled", "Suspended"), None, ("False", "VersioningDisabled")),
        (
            _store(acceptMutableBucket=True),
            storeready.Found("Disabled", "Disabled"),
            None,
            ("True", "DowngradeAccepted"),
        ),
        (
            _store(acceptMutableBucket=True),
            storeready.Found("Enabled", "Enabled"),
            None,
            ("True", "StoreReady"),
        ),
        (VOLUME, storeready.Found("Unsupported", "Unsupported"), None, ("True", "MutableVolume")),
        (
            _store(),
            None,
            conditions.Decision("False", "StoreCredentialsForbidden", "not listed"),
            ("False", "StoreCredentialsForbidden"),
        ),
    ],
    ids=[
        "object lock and versioning",
        "no object lock",
        "neither",
        "versioning suspended",
        "the downgrade accepted",
        "accepting is no downgrade when locked",
        "a volume, accepted as mutable",
        "a refusal is the reason",
    ],
)
def test_ready(
    store: backupstore.BackupStore,
    found: storeready.Found | None,
    refusal: conditions.Decision | None,
    expected: tuple[str, str],
) -> None:
    status = storeready.decide(store, found=found, refusal=refusal, key=None, now=NOW)
    ready = conditions.find(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status.value, ready.reason) == expected
    assert status.observed_generation == store.metadata["generation"]


def test_a_refused_bucket_says_how_to_make_one_or_accept_the_downgrade() -> None:
    status = storeready.decide(
        _store(), found=storeready.Found("Disabled", "Disabled"), refusal=None, key=None, now=NOW
    )
    (ready,) = status.conditions
    assert "--with-lock" in ready.message
    assert "spec.s3.acceptMutableBucket" in ready.message
    assert "object lock and versioning" in ready.message


def test_the_signing_key_is_published() -> None:
    key = storeready.SigningKey(key_id="ab" * 32, public_key="-----BEGIN PUBLIC KEY-----")
    status = storeready.decide(
        _store(), found=storeready.Found("Enabled", "Enabled"), refusal=None, key=key, now=NOW
    )
    assert status.signing_key is not None
    assert status.signing_key.key_id == key.key_id


# --- AuditCheckpoints: whether a store that asks for the audit checkpoints keeps them ----------

READY = conditions.Decision("True", "StoreReady", "bucket backups has object lock and versioning")
STORED = storeready.CheckpointOutcome(storeready.CheckpointResult.STORED, "")
DENIED = storeready.CheckpointOutcome(
    storeready.CheckpointResult.FAILED,
    "SourceDenied: put audit-checkpoints/x/1.checkpoint: HTTP 403, AccessDenied",
)
UNUSABLE = storeready.CheckpointOutcome(
    storeready.CheckpointResult.UNUSABLE, "not Ready (not checked yet)"
)


def _asking(**s3: object) -> backupstore.BackupStore:
    return backupstore.parse(
        {
            "metadata": {"name": "vault", "generation": 3},
            "spec": {
                "s3": {"bucket": "backups", "credentialsSecret": "writer", **s3},
                "auditCheckpoints": True,
            },
        }
    )


def _condition(status: str, reason: str) -> v1alpha1.Condition:
    return v1alpha1.Condition(
        type="AuditCheckpoints",
        status=v1alpha1.ConditionStatus(status),
        reason=reason,
        message=f"as decided before ({reason})",
        last_transition_time="2026-05-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("store", "ready", "lock", "outcome", "previous", "expected"),
    [
        pytest.param(_store(), READY, "Enabled", STORED, None, None, id="not asked: no condition"),
        pytest.param(
            _asking(), READY, "Enabled", None, None, ("Unknown", "NoCheckpointYet"), id="none yet"
        ),
        pytest.param(
            _asking(), READY, "Enabled", STORED, None, ("True", "CheckpointsStored"), id="stored"
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            DENIED,
            _condition("True", "CheckpointsStored"),
            ("False", "CheckpointWriteFailed"),
            id="a refused write",
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            STORED,
            _condition("False", "CheckpointWriteFailed"),
            ("True", "CheckpointsStored"),
            id="cleared when a write works again",
        ),
        pytest.param(
            _asking(),
            conditions.Decision("False", "ObjectLockDisabled", "bucket backups has no object lock"),
            "Disabled",
            None,
            None,
            ("False", "CheckpointStoreNotReady"),
            id="no object lock: the store is not ready",
        ),
        pytest.param(
            _asking(),
            conditions.Decision("False", "StoreDenied", "the store refused the credentials"),
            "Enabled",
            STORED,
            _condition("True", "CheckpointsStored"),
            ("False", "CheckpointStoreNotReady"),
            id="what the store is now comes before the last write",
        ),
        pytest.param(
            _asking(),
            READY,
            "Disabled",
            STORED,
            None,
            ("False", "CheckpointStoreNotReady"),
            id="ready without object lock is still no place for them",
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            None,
            _condition("False", "CheckpointWriteFailed"),
            ("False", "CheckpointWriteFailed"),
            id="a restart keeps a failure until a write tells otherwise",
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            None,
            _condition("True", "CheckpointsStored"),
            ("True", "CheckpointsStored"),
            id="a restart keeps a success",
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            None,
            _condition("False", "CheckpointStoreNotReady"),
            ("Unknown", "NoCheckpointYet"),
            id="ready again, nothing written since",
        ),
        pytest.param(
            _asking(),
            READY,
            "Enabled",
            UNUSABLE,
            _condition("True", "CheckpointsStored"),
            ("True", "CheckpointsStored"),
            id="an attempt that read an older status than this check",
        ),
    ],
)
def test_audit_checkpoints(
    store: backupstore.BackupStore,
    ready: conditions.Decision,
    lock: str,
    outcome: storeready.CheckpointOutcome | None,
    previous: v1alpha1.Condition | None,
    expected: tuple[str, str] | None,
) -> None:
    decided = storeready.checkpoints_decision(
        store, ready=ready, object_lock=lock, outcome=outcome, previous=previous
    )
    got = (decided.status, decided.reason) if decided is not None else None
    assert got == expected


def test_a_refused_write_says_what_the_store_answered() -> None:
    decided = storeready.checkpoints_decision(
        _asking(), ready=READY, object_lock="Enabled", outcome=DENIED, previous=None
    )
    assert decided is not None
    assert "SourceDenied" in decided.message
    assert "AccessDenied" in decided.message
    assert "retries" in decided.message
    not_ready = storeready.checkpoints_decision(
        _asking(),
        ready=conditions.Decision("False", "ObjectLockDisabled", "no lock"),
        object_lock="Disabled",
        outcome=None,
        previous=None,
    )
    assert not_ready is not None
    assert "ObjectLockDisabled" in not_ready.message


def test_the_condition_is_set_beside_ready_and_removed_when_the_store_stops_asking() -> None:
    status = storeready.decide(
        _asking(),
        found=storeready.Found("Enabled", "Enabled"),
        refusal=None,
        key=None,
        now=NOW,
        checkpoints=DENIED,
    )
    assert [(c.type, c.status.value, c.reason) for c in status.conditions] == [
        ("Ready", "True", "StoreReady"),
        ("AuditCheckpoints", "False", "CheckpointWriteFailed"),
    ]
    # The same failure again: nothing changes, not even the transition time.
    later = NOW + datetime.timedelta(minutes=5)
    asked = _asking().model_copy(update={"status": status})
    again = storeready.decide(
        asked,
        found=storeready.Found("Enabled", "Enabled"),
        refusal=None,
        key=None,
        now=later,
        checkpoints=DENIED,
    )
    assert again == status
    # Stored the next time: the same words for every checkpoint, so no write per checkpoint.
    stored = storeready.decide(
        asked,
        found=storeready.Found("Enabled", "Enabled"),
        refusal=None,
        key=None,
        now=later,
        checkpoints=STORED,
    )
    kept = conditions.find(stored.conditions, "AuditCheckpoints")
    assert kept is not None
    assert (kept.status.value, kept.reason) == ("True", "CheckpointsStored")
    assert "Compliance object lock for 30 days" in kept.message
    # A store that no longer asks loses the condition.
    plain = _store().model_copy(update={"status": stored})
    dropped = storeready.decide(
        plain,
        found=storeready.Found("Enabled", "Enabled"),
        refusal=None,
        key=None,
        now=later,
        checkpoints=STORED,
    )
    assert [c.type for c in dropped.conditions] == ["Ready"]
