"""The operator's audit log: appends one record per line and flushes it, continuing the chain.

Recording never raises: a decision already taken is not undone, and the other records of the same
reconcile are not lost, because one record could not be made or written.

The chain state (the next seq, the hash of the last record) lives here, one per process: each
start of the operator opens a new segment with an AuditChainStarted record, so that restarts
show in the log. Writing is synchronous and short (one line), under a lock: reconcile coroutines
call it from the event loop, and kopf runs synchronous handlers in threads.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import sys
import threading
import typing

from modelguard.audit import keys, records

logger = logging.getLogger(__name__)

STANDARD_OUTPUT: typing.Final = "-"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Sink:
    """Writes records to `stream`, sealed with `key`; the chain starts at seq 0 with the first
    record written."""

    def __init__(
        self,
        stream: typing.TextIO,
        *,
        key: keys.Key,
        clock: typing.Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._stream = stream
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = records.GENESIS

    def position(self) -> dict[str, typing.Any]:
        """Where the chain stands: the key's id, and the seq and hash of the last record written
        (a backup keeps it, pointing into the audit trail of what led to it)."""
        with self._lock:
            return {"keyId": self._key.id, "seq": self._seq - 1, "hash": self._prev}

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
            time = self._clock()
            try:
                record = records.seal(
                    seq=self._seq,
                    prev=self._prev,
                    time=time,
                    decision=decision,
                    reason=reason,
                    message=message,
                    key=self._key,
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
                    key=self._key,
                )
            # The chain moves on even when the write fails: the gap that leaves is what
            # `modelguard audit verify` then reports, instead of a loss nobody can see.
            self._seq += 1
            self._prev = record["hash"]
            try:
                self._stream.write(records.line(record) + "\n")
                self._stream.flush()
            except Exception as error:
                # OSError: a full disk; ValueError: the stream was closed. The error log says
                # what was lost, as one escaped line.
                logger.error(
                    "audit record seq %d not written (%s): %s",
                    record["seq"],
                    error,
                    records.line(record),
                )
            return record


def open_log(target: str, *, instance: str, key: keys.Key) -> Sink:
    """The audit log at `target` (a file appended to, or "-" for standard output), sealed with
    `key`, with a new segment started by an AuditChainStarted record naming this operator
    `instance`."""
    stream: typing.TextIO
    if target == STANDARD_OUTPUT:
        stream = sys.stdout
    else:
        # Line-buffered, and flushed after every record anyway; never closed before exit.
        stream = pathlib.Path(target).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
    sink = Sink(stream, key=key)
    sink.record(
        records.Decision.AUDIT_CHAIN_STARTED,
        reason="OperatorStarted",
        message=f"operator {instance} started; records before this one belong to another segment",
        details={"instance": instance},
    )
    return sink
