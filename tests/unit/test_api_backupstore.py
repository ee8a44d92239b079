"""The BackupStore API and spec.backup: what the schema and validators refuse, naming the field."""

from __future__ import annotations

import pytest

from modelguard.api import backupstore, errors, v1alpha1


def _store(spec: dict[str, object]) -> backupstore.BackupStore:
    return backupstore.parse({"metadata": {"name": "vault"}, "spec": spec})


S3 = {"bucket": "backups", "credentialsSecret": "writer"}


def test_secure_defaults() -> None:
    store = _store({"s3": S3})
    assert store.spec.s3 is not None
    assert store.spec.s3.object_lock.mode is backupstore.LockMode.COMPLIANCE
    assert store.spec.s3.object_lock.retention_days == 30
    assert store.spec.s3.accept_mutable_bucket is False
    assert store.spec.s3.allow_private_addresses is False
    assert store.spec.drill.schedule == "@weekly"
    assert store.spec.audit_checkpoints is False


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({}, "exactly one of s3 and volume"),
        ({"s3": S3, "volume": {"claimName": "v", "acceptMutable": True}}, "exactly one"),
        ({"volume": {"claimName": "v", "acceptMutable": False}}, "acceptMutable"),
        ({"volume": {"claimName": "v"}}, "acceptMutable"),
        ({"s3": {**S3, "bucket": "Bad_Bucket"}}, "spec.s3.bucket"),
        ({"s3": {**S3, "endpoint": "ftp://x"}}, "spec.s3.endpoint"),
        ({"s3": {**S3, "endpoint": "https://user:pw@minio:9000"}}, "spec.s3.endpoint"),
        ({"s3": {**S3, "prefix": "../x/"}}, "spec.s3.prefix"),
        ({"s3": {**S3, "objectLock": {"retentionDays": 0}}}, "retentionDays"),
        ({"s3": {**S3, "objectLock": {"mode": "Legal"}}}, "mode"),
        ({"s3": S3, "drill": {"schedule": "61 * * * *"}}, "spec.drill.schedule"),
        ({"s3": {**S3, "credentialsSecrets": "typo"}}, "credentialsSecrets"),
        (
            {"volume": {"claimName": "v", "acceptMutable": True}, "auditCheckpoints": True},
            "auditCheckpoints",
        ),
        ({"s3": {**S3, "acceptMutableBucket": True}, "auditCheckpoints": True}, "auditCheckpoints"),
    ],
    ids=[
        "neither",
        "both",
        "a volume not accepted as mutable",
        "a volume without the choice",
        "a bucket name",
        "an endpoint scheme",
        "credentials in the endpoint",
        "a prefix climbing",
        "no retention",
        "an unknown mode",
        "a drill schedule",
        "an unknown field",
        "audit checkpoints in a volume",
        "audit checkpoints in a bucket without object lock",
    ],
)
def test_refusals_name_the_field(spec: dict[str, object], named: str) -> None:
    with pytest.raises(errors.InvalidObjectError, match=named):
        _store(spec)


def _md(backup: dict[str, object]) -> v1alpha1.ModelDeployment:
    return v1alpha1.parse(
        {
            "metadata": {"name": "m", "namespace": "n"},
            "spec": {
                "model": {"name": "m", "version": "1", "source": {"uri": "s3://models/m/"}},
                "serving": {"image": "r/s@sha256:" + "a" * 64},
                "backup": backup,
            },
        }
    )


def test_spec_backup_defaults_and_retain() -> None:
    backup = _md({"store": "vault"}).spec.backup
    assert backup is not None
    assert backup.schedule == "@daily"
    assert backup.retain_days() is None
    retained = _md({"store": "vault", "retain": "90d"}).spec.backup
    assert retained is not None
    assert retained.retain_days() == 90


@pytest.mark.parametrize(
    ("backup", "named"),
    [
        ({"store": "vault", "schedule": "every day"}, "spec.backup.schedule"),
        ({"store": "vault", "retain": "3w"}, "spec.backup.retain"),
        ({"store": "vault", "retain": "0d"}, "spec.backup.retain"),
        ({"schedule": "@daily"}, "spec.backup.store"),
    ],
    ids=["a schedule", "weeks", "zero days", "no store"],
)
def test_spec_backup_refusals(backup: dict[str, object], named: str) -> None:
    with pytest.raises(errors.InvalidObjectError, match=named):
        _md(backup)
