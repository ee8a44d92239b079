"""The operator's audit log: appends one signed record per line and flushes it, continuing the
chain and the segment's Merkle tree, and makes the signed checkpoints of that tree.

Recording never raises: a decision already taken is not undone, and the other records of the same
reconcile are not lost, because one record could not be made or written.

The state lives here, one per process: the next seq, the hash of the last record, and the tree's
frontier (O(log n) hashes, never the records). Each start of the operator opens a new segment
with an AuditChainStarted record naming its origin, so that restarts show in the log; a stop
closes it with AuditChainClosed and a last checkpoint. Writing is synchronous and short (one
line), under a lock: reconcile coroutines call it from the event loop, and kopf runs synchronous
handlers in threads. Where checkpoints go is not this module's business: `checkpoint()` hands
them to the caller, which publishes them.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import pathlib
import sys
import threading
import typing

from modelguard.audit import checkpoints, keys, merkle, records

logger = logging.getLogger(__name__)

STANDARD_OUTPUT: typing.Final = "-"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When a checkpoint is due: after this many records, or this many seconds after the last
    one once a record was added. A checkpoint is also made at the start and at the stop."""

    records: int = 1000
    seconds: int = 300

    def __post_init__(self) -> None:
        if self.records < 1 or self.seconds < 1:
            raise ValueError("checkpoints are due after 1 or more records and 1 or more seconds")


class Sink:
    """Writes records to `stream`, signed by `signer`, as the segment `origin`; the chain and the
    tree start at seq 0 with the first record written."""

    def __init__(
        self,
        stream: typing.TextIO,
        *,
        signer: keys.Signer,
        origin: str,
        cadence: Cadence | None = None,
        clock: typing.Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._stream = stream
        self._signer = signer
        self._origin = origin
        self._cadence = cadence or Cadence()
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = records.GENESIS
        self._tree = merkle.Frontier()
        self._checkpointed = 0
        self._checkpointed_at = clock()
        self._closed = False
        self._written: dict[str, int] = {}
        self._write_failures = 0

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def cadence(self) -> Cadence:
        return self._cadence

    def position(self) -> dict[str, typing.Any]:
        """Where the chain stands: the segment, the signing key's id, and the seq and hash of
        the last record written (a backup keeps it, pointing into the audit trail of what led to
        it, which the segment's checkpoints cover)."""
        with self._lock:
            return {
                "origin": self._origin,
                "keyId": self._signer.verifier.id,
                "seq": self._seq - 1,
                "hash": self._prev,
            }

    def record(
        self,
        decision: records.Decision,
        *,
        reason: str,
        message: str,
        subject: records.Subject | None = None,
        details: typing.Mapping[str, typing.Any] | None = None,
    ) -> records.Record:
        """Appends one record and returns it; never raises."""
        with self._lock:
            if self._closed:
                # Only a decision racing the stop gets here; it is kept, and `audit verify`
                # reports it as following the record that closed the segment.
                logger.warning("audit record seq %d follows the closed segment", self._seq)
            time = self._clock()
            try:
                record = records.seal(
                    seq=self._seq,
                    prev=self._prev,
                    time=time,
                    decision=decision,
                    reason=reason,
                    message=message,
                    signer=self._signer,
                    subject=subject,
                    details=details,
                )
            except Exception as error:
                # `records.safe` makes this unreachable for any input we know of; should it
                # happen anyway, the chain keeps a record that says a decision went unrecorded.
                logger.exception("audit record seq %d could not be sealed", self._seq)
                record = records.seal(
                    seq=self._seq,
                    prev=self._prev,
                    time=time,
                    decision=records.Decision.RECORD_FAILED,
                    reason=type(error).__name__,
                    message=f"the record of a {records.safe(str(decision))} decision could not"
                    " be made; the operator's log says why",
                    signer=self._signer,
                )
            # The chain and the tree move on even when the write fails: the gap that leaves is
            # what `modelguard audit verify` then reports, instead of a loss nobody can see.
            self._seq += 1
            self._prev = record["hash"]
            # The line is made once: it is both the tree's leaf and what is written.
            text = records.line(record)
            self._tree.append(merkle.leaf_hash(text.encode("ascii")))
            decided = str(record["decision"])
            self._written[decided] = self._written.get(decided, 0) + 1
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
            except Exception as error:
                self._write_failures += 1
                # OSError: a full disk; ValueError: the stream was closed. The error log says
                # what was lost, as one escaped line.
                logger.error(
                    "audit record seq %d not written (%s): %s",
                    record["seq"],
                    error,
                    text,
                )
            return record

    def counts(self) -> tuple[dict[str, int], int]:
        """Records made in this segment by decision, and how many of them could not be written
        (the operator's metrics)."""
        with self._lock:
            return dict(self._written), self._write_failures

    def checkpoint(self, *, force: bool = False) -> checkpoints.Signed | None:
        """The signed checkpoint of every record written so far, when one is due (`force`: now,
        unless it would repeat the last one); None otherwise. Never raises."""
        with self._lock:
            size = self._tree.size
            if size == self._checkpointed:
                return None
            now = self._clock()
            due = (
                force
                or size - self._checkpointed >= self._cadence.records
                or now - self._checkpointed_at >= datetime.timedelta(seconds=self._cadence.seconds)
            )
            if not due:
                return None
            checkpoint = checkpoints.Checkpoint(
                origin=self._origin, size=size, root=self._tree.root()
            )
            signed = checkpoints.sign(checkpoint, self._signer)
            self._checkpointed, self._checkpointed_at = size, now
            return signed

    def close(self, *, reason: str, message: str) -> checkpoints.Signed | None:
        """Ends the segment: an AuditChainClosed record, then its checkpoint."""
        self.record(records.Decision.AUDIT_CHAIN_CLOSED, reason=reason, message=message)
        with self._lock:
            self._closed = True
        return self.checkpoint(force=True)


def open_log(
    target: str,
    *,
    instance: str,
    signer: keys.Signer,
    cadence: Cadence | None = None,
    previous: checkpoints.Checkpoint | None = None,
    clock: typing.Callable[[], datetime.datetime] = _utc_now,
) -> Sink:
    """The audit log at `target` (a file appended to, or "-" for standard output), with a new
    segment started (`start`)."""
    stream: typing.TextIO
    if target == STANDARD_OUTPUT:
        stream = sys.stdout
    else:
        # Line-buffered, and flushed after every record anyway; never closed before exit.
        stream = pathlib.Path(target).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
    return start(
        stream, instance=instance, signer=signer, cadence=cadence, previous=previous, clock=clock
    )


def start(
    stream: typing.TextIO,
    *,
    instance: str,
    signer: keys.Signer,
    cadence: Cadence | None = None,
    previous: checkpoints.Checkpoint | None = None,
    clock: typing.Callable[[], datetime.datetime] = _utc_now,
    segment: str | None = None,
) -> Sink:
    """A new segment on `stream`, started by an AuditChainStarted record naming this operator
    `instance`, the segment's origin, the public key, the checkpoint cadence and `previous`, the
    last checkpoint of this log the operator found (so that a later cut of that segment shows).
    `segment` is chosen from the time and chance unless given."""
    origin = checkpoints.origin(signer.name, segment or checkpoints.new_segment(clock()))
    sink = Sink(stream, signer=signer, origin=origin, cadence=cadence, clock=clock)
    details: dict[str, typing.Any] = {
        "instance": instance,
        "origin": origin,
        "publicKey": signer.verifier.vkey,
        "checkpointEvery": {"records": sink.cadence.records, "seconds": sink.cadence.seconds},
    }
    if previous is not None:
        details["previous"] = {
            "origin": previous.origin,
            "size": previous.size,
            "root": previous.root_base64,
        }
    sink.record(
        records.Decision.AUDIT_CHAIN_STARTED,
        reason="OperatorStarted",
        message=f"operator {instance} started segment {origin}; records before this one belong "
        "to another segment",
        details=details,
    )
    return sink
