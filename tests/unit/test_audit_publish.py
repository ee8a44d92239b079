"""Publishing the audit log's checkpoints: the first at once, then on the cadence, to every
destination with retries that never block the others, bounded, the head moved on only once every
destination holds a checkpoint, and the last at the stop. The API server is a stand-in here (the
integration tests use the real one); what is tested is the publisher's own logic."""

from __future__ import annotations

import asyncio
import datetime
import io
import typing

import pytest

from modelguard import kube
from modelguard.audit import checkpoints, keys, records, sink
from modelguard.reconcile import checkpoints as publishing

LOG = "modelguard-system/modelguard"
SIGNER = keys.generate(LOG)


class Collecting:
    """A destination that keeps what it is given, failing while `failing` is set."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.published: list[checkpoints.Signed] = []
        self.failing = False
        self.attempts = 0

    async def publish(self, signed: checkpoints.Signed) -> None:
        self.attempts += 1
        if self.failing:
            raise kube.ApiError(status=503, reason="ServiceUnavailable", message="etcd is away")
        self.published.append(signed)


class StandInKube:
    """The three calls the head makes, over a dict of ConfigMaps."""

    def __init__(self) -> None:
        self.objects: dict[str, kube.Manifest] = {}
        self.writes = 0

    async def get(
        self, *, api_version: str, kind: str, namespace: str, name: str
    ) -> kube.Manifest | None:
        return self.objects.get(name)

    async def create(self, manifest: kube.Manifest) -> kube.Manifest:
        name = manifest["metadata"]["name"]
        if name in self.objects:
            raise kube.ApiError(status=409, reason="AlreadyExists", message=name)
        self.writes += 1
        self.objects[name] = {
            **manifest,
            "metadata": {**manifest["metadata"], "resourceVersion": "1"},
        }
        return self.objects[name]

    async def replace(self, manifest: kube.Manifest, *, dry_run: bool = False) -> kube.Manifest:
        self.writes += 1
        self.objects[manifest["metadata"]["name"]] = manifest
        return manifest


def _audit(*, records_every: int = 1000) -> sink.Sink:
    return sink.start(
        io.StringIO(),
        instance="modelguard-0",
        signer=SIGNER,
        cadence=sink.Cadence(records=records_every, seconds=3600),
    )


def _head(client: StandInKube) -> publishing.Head:
    return publishing.Head(
        typing.cast(kube.Kube, client),
        namespace="modelguard-system",
        prefix="modelguard-audit",
        verifier_key=SIGNER.verifier.vkey,
    )


async def _settle(publisher: publishing.Publisher) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    del publisher


async def test_checkpoints_reach_every_destination_and_then_the_head() -> None:
    audit = _audit(records_every=2)
    store, api = Collecting("store"), Collecting("api")
    client = StandInKube()
    publisher = publishing.Publisher(audit, [store, api], head=_head(client), tick=0.01)
    publisher.start()
    await _settle(publisher)
    assert [c.checkpoint.size for c in store.published] == [1]
    for _ in range(2):
        audit.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
    await _settle(publisher)
    assert [c.checkpoint.size for c in api.published] == [1, 3]
    head = await _head(client).latest(keys.Keyring.of([SIGNER.verifier]))
    assert head == api.published[-1].checkpoint
    await publisher.stop()
    assert [c.checkpoint.size for c in store.published] == [1, 3, 4]
    assert await _head(client).latest(keys.Keyring.of([SIGNER.verifier])) == (
        store.published[-1].checkpoint
    )


async def test_a_failing_destination_is_retried_without_holding_back_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = _audit(records_every=1)
    good, bad = Collecting("good"), Collecting("bad")
    bad.failing = True
    client = StandInKube()
    publisher = publishing.Publisher(audit, [good, bad], head=_head(client), tick=0.01)
    publisher.start()
    await _settle(publisher)
    audit.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
    await _settle(publisher)
    assert [c.checkpoint.size for c in good.published] == [1, 2]
    assert bad.published == []
    # Backoff: one attempt, then a wait of a second before the next.
    assert bad.attempts == 1
    assert "not published to bad yet (etcd is away); retrying in 1 s" in caplog.text
    # The head waits for every destination: a verifier of either finds what it names.
    assert client.writes == 0
    bad.failing = False
    await publisher.stop()
    assert [c.checkpoint.size for c in bad.published] == [1, 2, 3]
    assert client.writes == 1


async def test_a_stop_that_cannot_publish_says_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = _audit()
    down = Collecting("ConfigMaps modelguard-system/modelguard-audit-*")
    down.failing = True
    publisher = publishing.Publisher(audit, [down], tick=0.01)
    publisher.start()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await publisher.stop()
    publisher.log_unpublished()
    assert (
        f"audit checkpoint {audit.origin} at 2 records not published to ConfigMaps "
        "modelguard-system/modelguard-audit-* before the stop"
    ) in caplog.text


async def test_waiting_checkpoints_are_bounded_and_the_oldest_is_dropped(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publishing, "MAX_PENDING", 3)
    audit = _audit(records_every=1)
    down = Collecting("down")
    down.failing = True
    publisher = publishing.Publisher(audit, [down], tick=3600)
    for _ in range(5):
        audit.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
        publisher._collect()
    # Sizes 2 to 6 were made; the newest three wait, each covering every record before it.
    assert publisher.pending == 3
    assert [c.checkpoint.size for c in publisher._queues[0].pending] == [4, 5, 6]
    for dropped in (2, 3):
        assert (
            f"audit checkpoint {audit.origin} at {dropped} records not published to down: "
            "3 newer ones wait"
        ) in caplog.text


async def test_the_kubernetes_destination_writes_each_checkpoint_once_immutably() -> None:
    client = StandInKube()
    destination = publishing.KubernetesDestination(
        typing.cast(kube.Kube, client),
        namespace="modelguard-system",
        prefix="modelguard-audit",
        verifier_key=SIGNER.verifier.vkey,
    )
    audit = _audit()
    signed = audit.checkpoint(force=True)
    assert signed is not None
    await destination.publish(signed)
    await destination.publish(signed)  # a retry after a lost answer: the same object, 409
    (stored,) = client.objects.values()
    segment = audit.origin.rsplit("/", 1)[1]
    assert stored["metadata"]["name"].startswith(f"modelguard-audit-{segment}-1-")
    assert stored["immutable"] is True
    assert stored["data"] == {"checkpoint": signed.note, "publicKey": SIGNER.verifier.vkey}
    assert stored["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "modelguard",
        "audit.modelguard.dev/log": "modelguard-audit",
        "audit.modelguard.dev/segment": segment,
        "audit.modelguard.dev/size": "1",
    }


async def test_the_store_destination_puts_one_locked_object_per_checkpoint() -> None:
    put: list[tuple[str, bytes, datetime.datetime]] = []

    class Store:
        async def put_immutable(
            self, key: str, data: bytes, *, retain_until: datetime.datetime
        ) -> object:
            put.append((key, data, retain_until))
            return None

    now = datetime.datetime(2030, 1, 2, tzinfo=datetime.UTC)
    destination = publishing.StoreDestination(
        Store(),
        prefix="audit/checkpoints/",
        retain=datetime.timedelta(days=400),
        description="BackupStore offsite",
        clock=lambda: now,
    )
    signed = _audit().checkpoint(force=True)
    assert signed is not None
    await destination.publish(signed)
    segment = signed.checkpoint.origin.rsplit("/", 1)[1]
    assert put == [
        (
            f"audit/checkpoints/{segment}/{1:020d}.checkpoint",
            signed.note.encode(),
            now + datetime.timedelta(days=400),
        )
    ]


async def test_the_head_names_a_checkpoint_of_this_log_only() -> None:
    keyring = keys.Keyring.of([SIGNER.verifier])
    client = StandInKube()
    assert await _head(client).latest(keyring) is None  # none yet
    # Signed by this log's key before a rotation: named (the verifier, given both keys,
    # checks it).
    rotated = keys.generate(LOG)
    before = sink.start(io.StringIO(), instance="m", signer=rotated).checkpoint(force=True)
    assert before is not None
    await _head(client).update(before)
    assert await _head(client).latest(keyring) == before.checkpoint
    # Another log's, or altered: not named.
    other = sink.start(io.StringIO(), instance="m", signer=keys.generate("team-b/mg"))
    signed = other.checkpoint(force=True)
    assert signed is not None
    await _head(client).update(signed)
    assert await _head(client).latest(keyring) is None
    mine = _audit().checkpoint(force=True)
    assert mine is not None
    altered = checkpoints.Signed(
        checkpoint=mine.checkpoint, note=mine.note.replace("\n1\n", "\n2\n")
    )
    await _head(client).update(altered)
    assert await _head(client).latest(keyring) is None


async def test_an_unchanged_head_is_not_written_again() -> None:
    client = StandInKube()
    signed = _audit().checkpoint(force=True)
    assert signed is not None
    await _head(client).update(signed)
    await _head(client).update(signed)
    assert client.writes == 1


def test_the_segment_started_now() -> None:
    audit = _audit()
    segment = audit.origin.rsplit("/", 1)[1]
    started = checkpoints.segment_start(segment)
    assert started is not None
    assert abs(started - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)
