"""Publishes the audit log's signed checkpoints where the log's writer cannot rewrite them.

The sink makes a checkpoint when one is due (every N records or T seconds, at the start and at the
stop); the publisher asks it once a second and hands each to every destination, retrying with
backoff, oldest first, at most `MAX_PENDING` waiting per destination (the newest checkpoint covers
every older one, so an older one is what gets dropped, with an error in the log).

Destinations:
- the Kubernetes API (`KubernetesDestination`): one immutable ConfigMap per checkpoint in the
  operator's namespace. The operator may create ConfigMaps there but not update or delete them
  (the chart's Role), and an immutable ConfigMap cannot be changed by anyone, only deleted: so the
  operator, and whoever holds its token, cannot rewrite a checkpoint once written. Whoever may
  delete ConfigMaps in that namespace can remove them; that is the limit of this destination.
- an object-locked store (`StoreDestination`), which nobody can delete from before the retention
  ends: what the BackupStore offers (`ImmutableStore`).

`Head` is the one mutable object: the newest checkpoint, read at the next start so that the new
segment's first record names it (`previous`), and a cut of the old segment or a rollback of its
checkpoints then shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import typing

from modelguard import kube
from modelguard.audit import checkpoints, keys, notes, sink
from modelguard.builders import labels

logger = logging.getLogger(__name__)

LOG_LABEL: typing.Final = "audit.modelguard.dev/log"
"""Names the log (by the objects' name prefix): `kubectl get configmaps -l` selects its
checkpoints with it."""
SEGMENT_LABEL: typing.Final = "audit.modelguard.dev/segment"
SIZE_LABEL: typing.Final = "audit.modelguard.dev/size"
NOTE_KEY: typing.Final = "checkpoint"
"""The ConfigMap data key that holds the signed note."""
KEY_KEY: typing.Final = "publicKey"
MAX_PENDING: typing.Final = 256
TICK_SECONDS: typing.Final = 1.0
MAX_BACKOFF_SECONDS: typing.Final = 60.0


class Destination(typing.Protocol):
    """Somewhere a checkpoint is stored for good; `publish` raises when it was not."""

    description: str

    async def publish(self, signed: checkpoints.Signed) -> None: ...


class ImmutableStore(typing.Protocol):
    """An object store that keeps what is put in it under a retention lock (S3 Object Lock in
    compliance mode): nobody, its owner included, can overwrite or delete it before then. The
    BackupStore's `put_immutable` (the same bytes put again return the object already there;
    other bytes under a taken key raise)."""

    async def put_immutable(
        self, key: str, data: bytes, *, retain_until: datetime.datetime
    ) -> object: ...


def _segment(signed: checkpoints.Signed) -> str:
    return signed.checkpoint.origin.rsplit("/", 1)[-1]


class KubernetesDestination:
    """One immutable ConfigMap per checkpoint, `<prefix>-<segment>-<size>-<hash>`: the name
    carries a hash of the note, so nobody can take it before the operator writes it, and a 409
    can only be the operator's own earlier write of the very same note."""

    def __init__(self, client: kube.Kube, *, namespace: str, prefix: str, verifier_key: str):
        self._kube = client
        self._namespace = namespace
        self._prefix = prefix
        self._verifier_key = verifier_key
        self.description = f"ConfigMaps {namespace}/{prefix}-*"

    def manifest(self, signed: checkpoints.Signed) -> kube.Manifest:
        segment = _segment(signed)
        digest = hashlib.sha256(signed.note.encode()).hexdigest()[:8]
        size = signed.checkpoint.size
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{self._prefix}-{segment}-{size}-{digest}",
                "namespace": self._namespace,
                "labels": {
                    labels.MANAGED_BY: labels.MANAGER,
                    LOG_LABEL: self._prefix,
                    SEGMENT_LABEL: segment,
                    SIZE_LABEL: str(size),
                },
            },
            "immutable": True,
            "data": {NOTE_KEY: signed.note, KEY_KEY: self._verifier_key},
        }

    async def publish(self, signed: checkpoints.Signed) -> None:
        try:
            await self._kube.create(self.manifest(signed))
        except kube.ApiError as error:
            if error.status != 409:
                raise


class StoreDestination:
    """Each checkpoint as its own object, `<prefix>/<segment>/<size, 20 digits>.checkpoint`, in
    an object-locked store, locked for `retain` (as long as the logs it proves are kept)."""

    def __init__(
        self,
        store: ImmutableStore,
        *,
        prefix: str,
        retain: datetime.timedelta,
        description: str,
        clock: typing.Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._store = store
        self._prefix = prefix.strip("/")
        self._retain = retain
        self._clock = clock
        self.description = description

    def key(self, signed: checkpoints.Signed) -> str:
        return f"{self._prefix}/{_segment(signed)}/{signed.checkpoint.size:020d}.checkpoint"

    async def publish(self, signed: checkpoints.Signed) -> None:
        await self._store.put_immutable(
            self.key(signed), signed.note.encode(), retain_until=self._clock() + self._retain
        )


class Head:
    """The newest checkpoint, in the one ConfigMap the operator may update (`<prefix>-head`)."""

    def __init__(self, client: kube.Kube, *, namespace: str, prefix: str, verifier_key: str):
        self._kube = client
        self._namespace = namespace
        self._name = f"{prefix}-head"
        self._prefix = prefix
        self._verifier_key = verifier_key

    async def latest(self, keyring: keys.Keyring) -> checkpoints.Checkpoint | None:
        """The checkpoint the head holds when it is this log's: signed by this key, or by
        another key under this log's name (the one before a rotation; the verifier, given both,
        checks it). None otherwise: none yet, unreadable, or not this log's; the new segment
        then names none."""
        try:
            found = await self._kube.get(
                api_version="v1", kind="ConfigMap", namespace=self._namespace, name=self._name
            )
        except kube.ApiError as error:
            logger.warning("audit checkpoints: cannot read %s: %s", self._name, error.message)
            return None
        note = ((found or {}).get("data") or {}).get(NOTE_KEY)
        if not isinstance(note, str):
            return None
        try:
            checkpoint = checkpoints.open_signed(note, keyring)
        except notes.Unverified as unverified:
            if not any(s.name == keyring.name for s in unverified.signatures):
                return None
            try:
                checkpoint = checkpoints.parse(unverified.text)
            except checkpoints.Malformed:
                return None
        except (notes.NoteError, checkpoints.Malformed) as error:
            logger.warning(
                "audit checkpoints: %s holds no checkpoint of this key: %s", self._name, error
            )
            return None
        if checkpoints.segment_of(checkpoint.origin, keyring.name) is None:
            return None
        return checkpoint

    async def update(self, signed: checkpoints.Signed) -> None:
        data = {NOTE_KEY: signed.note, KEY_KEY: self._verifier_key}
        found = await self._kube.get(
            api_version="v1", kind="ConfigMap", namespace=self._namespace, name=self._name
        )
        metadata: dict[str, typing.Any] = {
            "name": self._name,
            "namespace": self._namespace,
            "labels": {labels.MANAGED_BY: labels.MANAGER, LOG_LABEL: self._prefix},
        }
        if found is None:
            await self._kube.create(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
            )
            return
        if (found.get("data") or {}) == data:
            return
        metadata["resourceVersion"] = found["metadata"]["resourceVersion"]
        await self._kube.replace(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
        )


@dataclasses.dataclass
class _Queue:
    destination: Destination
    pending: collections.deque[checkpoints.Signed] = dataclasses.field(
        default_factory=collections.deque
    )
    retry_at: float = 0.0
    backoff: float = 0.0


class Publisher:
    """Takes the sink's checkpoints to every destination, then to the head."""

    def __init__(
        self,
        audit: sink.Sink,
        destinations: typing.Sequence[Destination],
        *,
        head: Head | None = None,
        tick: float = TICK_SECONDS,
    ) -> None:
        self.audit = audit
        self._queues = [_Queue(destination) for destination in destinations]
        self._head = head
        self._head_pending: checkpoints.Signed | None = None
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        """Checkpoints stored, over all destinations (the operator's metrics)."""
        self.failed = 0
        """Attempts to store one that failed (each is retried), and ones dropped unpublished."""

    def start(self) -> None:
        """The first checkpoint (the segment's start) at once, then the loop."""
        self._collect(force=True)
        self._task = asyncio.create_task(self._run(), name="audit checkpoints")

    async def _run(self) -> None:
        while True:
            try:
                self._collect()
                await self._flush()
            except Exception:
                # Nothing here is expected to raise; should it, checkpoints must go on.
                logger.exception("audit checkpoints: publishing failed; going on")
            await asyncio.sleep(self._tick)

    def _collect(self, *, force: bool = False) -> None:
        self._enqueue(self.audit.checkpoint(force=force))

    def _enqueue(self, signed: checkpoints.Signed | None) -> None:
        if signed is None:
            return
        for queue in self._queues:
            if len(queue.pending) >= MAX_PENDING:
                dropped = queue.pending.popleft()
                self.failed += 1
                logger.error(
                    "audit checkpoint %s at %d records not published to %s: %d newer ones wait",
                    dropped.checkpoint.origin,
                    dropped.checkpoint.size,
                    queue.destination.description,
                    # Those still waiting, and this one.
                    len(queue.pending) + 1,
                )
            queue.pending.append(signed)
        self._head_pending = signed

    async def _flush(self, *, retry_now: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for queue in self._queues:
            while queue.pending and (retry_now or loop.time() >= queue.retry_at):
                signed = queue.pending[0]
                try:
                    await queue.destination.publish(signed)
                except Exception as error:
                    self.failed += 1
                    queue.backoff = min(MAX_BACKOFF_SECONDS, max(1.0, queue.backoff * 2))
                    queue.retry_at = loop.time() + queue.backoff
                    logger.warning(
                        "audit checkpoint %s at %d records not published to %s yet (%s); "
                        "retrying in %.0f s",
                        signed.checkpoint.origin,
                        signed.checkpoint.size,
                        queue.destination.description,
                        getattr(error, "message", None) or error,
                        queue.backoff,
                    )
                    break
                queue.pending.popleft()
                queue.backoff = 0.0
                self.published += 1
        if self._head is not None and self._head_pending is not None and not self.pending:
            try:
                await self._head.update(self._head_pending)
            except Exception as error:
                logger.warning(
                    "audit checkpoint head not updated (%s)",
                    getattr(error, "message", None) or error,
                )
            else:
                self._head_pending = None

    @property
    def pending(self) -> int:
        """Checkpoints made but not yet published, over all destinations."""
        return sum(len(queue.pending) for queue in self._queues)

    async def stop(self) -> None:
        """Closes the segment (AuditChainClosed and its checkpoint) and publishes what waits;
        the caller bounds how long (`asyncio.timeout`), then logs what is `unpublished`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._enqueue(
            self.audit.close(
                reason="OperatorStopped", message="the operator stopped; this segment ends here"
            )
        )
        while True:
            await self._flush(retry_now=True)
            if not self.pending and self._head_pending is None:
                return
            await asyncio.sleep(min(self._tick, 0.5))

    def log_unpublished(self) -> None:
        for queue in self._queues:
            for signed in queue.pending:
                logger.error(
                    "audit checkpoint %s at %d records not published to %s before the stop",
                    signed.checkpoint.origin,
                    signed.checkpoint.size,
                    queue.destination.description,
                )


async def start(
    client: kube.Kube,
    *,
    audit_log: str,
    instance: str,
    signer: keys.Signer,
    cadence: sink.Cadence,
    namespace: str,
    prefix: str,
    also: typing.Sequence[Destination] = (),
) -> Publisher:
    """Opens the audit log's new segment, naming the newest checkpoint of the log found in the
    head, and starts publishing its checkpoints to immutable ConfigMaps in `namespace` and to
    `also`; OSError when the log cannot be opened."""
    vkey = signer.verifier.vkey
    head = Head(client, namespace=namespace, prefix=prefix, verifier_key=vkey)
    previous = await head.latest(keys.Keyring.of([signer.verifier]))
    audit = sink.open_log(
        audit_log, instance=instance, signer=signer, cadence=cadence, previous=previous
    )
    destination = KubernetesDestination(
        client, namespace=namespace, prefix=prefix, verifier_key=vkey
    )
    publisher = Publisher(audit, [destination, *also], head=head)
    publisher.start()
    return publisher
