"""A BackupStore's Ready condition from what the operator found, as table cases."""

from __future__ import annotations

import datetime

import pytest

from modelguard.api import backupstore
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
