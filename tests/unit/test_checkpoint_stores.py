"""Audit checkpoints to the BackupStores that ask for them: which stores are written to, and that
a store which asks but cannot hold them fails the publication (retried, logged) instead of being
skipped. The API server is a stand-in here; the integration test writes to a real MinIO."""

from __future__ import annotations

import contextlib
import io
import typing

import pytest

from modelguard import kube
from modelguard.api import backupstore
from modelguard.audit import keys, sink
from modelguard.reconcile import checkpointstores, storeready
from modelguard.sources import errors as source_errors

SIGNER = keys.generate("modelguard-system/modelguard")


class StandInKube:
    def __init__(self, stores: list[kube.Manifest]) -> None:
        self.stores = stores
        self.secrets_read: list[str] = []

    async def list_backup_stores(self) -> list[kube.Manifest]:
        return self.stores

    async def get_secret_data(self, *, namespace: str, name: str) -> None:
        self.secrets_read.append(name)


def _store(
    name: str,
    *,
    asks: bool,
    ready: str = "True",
    reason: str = "StoreReady",
    object_lock: str = "Enabled",
) -> kube.Manifest:
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {
            "s3": {"bucket": "backups", "credentialsSecret": "writer"},
            "auditCheckpoints": asks,
        },
        "status": {
            "observedGeneration": 1,
            "objectLock": object_lock,
            "versioning": "Enabled",
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": "as found",
                    "lastTransitionTime": "2030-01-01T00:00:00Z",
                }
            ],
        },
    }


def _signed() -> typing.Any:
    signed = sink.start(io.StringIO(), instance="m", signer=SIGNER).checkpoint(force=True)
    assert signed is not None
    return signed


def _destination(client: StandInKube) -> checkpointstores.BackupStores:
    return checkpointstores.BackupStores(
        typing.cast(kube.Kube, client), log_prefix="modelguard-audit", operator_namespace="mg"
    )


async def test_stores_that_do_not_ask_are_left_alone() -> None:
    client = StandInKube([_store("models-only", asks=False)])
    await _destination(client).publish(_signed())
    assert client.secrets_read == []


@pytest.mark.parametrize(
    ("store", "named"),
    [
        (_store("vault", asks=True, ready="False", reason="StoreDenied"), "not Ready (StoreDenied"),
        (
            _store("vault", asks=True, reason="DowngradeAccepted", object_lock="Disabled"),
            "needs a bucket with object lock; this one has Disabled",
        ),
        # Ready, but its credentials are gone by now: refused with the store's own reason.
        (_store("vault", asks=True), "StoreCredentialsNotFound"),
    ],
    ids=["not ready", "a downgraded bucket", "credentials gone"],
)
async def test_a_store_that_asks_but_cannot_hold_them_fails_the_publication(
    store: kube.Manifest, named: str
) -> None:
    client = StandInKube([_store("models-only", asks=False), store])
    with pytest.raises(checkpointstores.NotStored, match="BackupStore vault: ") as raised:
        await _destination(client).publish(_signed())
    assert named in raised.value.message
    assert "models-only" not in raised.value.message


async def test_what_became_of_each_store_is_kept_for_its_check_and_told_when_it_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's own check reads the last attempt (its AuditCheckpoints condition) and is
    asked for at once when a store turns from storing to not or back, not at every checkpoint."""
    client = StandInKube([_store("vault", asks=True), _store("models-only", asks=False)])
    destination = _destination(client)
    changed: list[str] = []
    destination.changed = changed.append
    # The write itself, as the store answers it (the integration test has a real MinIO refuse it).
    answers: list[Exception | None] = [
        source_errors.SourceDenied("put audit-checkpoints/x.checkpoint: HTTP 403, AccessDenied"),
        source_errors.SourceDenied("put audit-checkpoints/x.checkpoint: HTTP 403, AccessDenied"),
        None,
        None,
    ]

    async def write(_: object, store: backupstore.BackupStore, signed: object) -> None:
        del store, signed
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    monkeypatch.setattr(checkpointstores.BackupStores, "_publish", write)
    signed = _signed()
    results = []
    for _ in range(4):
        with contextlib.suppress(checkpointstores.NotStored):
            await destination.publish(signed)
        outcome = destination.outcome("vault")
        assert outcome is not None
        results.append(outcome.result)
    failed, stored = storeready.CheckpointResult.FAILED, storeready.CheckpointResult.STORED
    assert results == [failed, failed, stored, stored]
    assert changed == ["vault", "vault"]
    assert destination.outcome("models-only") is None
    # A store no longer asking is forgotten.
    client.stores = [_store("vault", asks=False)]
    await destination.publish(signed)
    assert destination.outcome("vault") is None


async def test_a_store_not_ready_is_unusable_not_a_failed_write() -> None:
    client = StandInKube([_store("vault", asks=True, ready="False", reason="StoreDenied")])
    destination = _destination(client)
    with pytest.raises(checkpointstores.NotStored):
        await destination.publish(_signed())
    outcome = destination.outcome("vault")
    assert outcome is not None
    assert outcome.result is storeready.CheckpointResult.UNUSABLE
    assert "not Ready (StoreDenied" in outcome.message
