"""The operator's audit log: appends one record per line and flushes it, continuing the chain.

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

from modelguard.audit import records

logger = logging.getLogger(__name__)

STANDARD_OUTPUT: typing.Final = "-"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Sink:
    """Writes records to `stream`; the chain starts at seq 0 with the first record written."""

    def __init__(
        self,
        stream: typing.TextIO,
        *,
        clock: typing.Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = records.GENESIS

    def record(
        self,
        decision: records.Decision,
        *,
        reason: str,
        message: str,
        subject: records.Subject | None = None,
        details: typing.Mapping[str, typing.Any] | None = None,
    ) -> records.Record:
        """Appends one record and returns it."""
        with self._lock:
            record = records.seal(
                seq=self._seq,
                prev=self._prev,
                time=self._clock(),
                decision=decision,
                reason=reason,
                message=message,
                subject=subject,
                details=details,
            )
            # The chain moves on even when the write fails: the gap that leaves is what
            # `modelguard audit verify` then reports, instead of a loss nobody can see.
            self._seq += 1
            self._prev = record["hash"]
            try:
                self._stream.write(records.line(record) + "\n")
                self._stream.flush()
            except (OSError, ValueError) as error:
                # ValueError: the stream was closed. A decision already taken is not undone
                # because its record could not be written; the error log says what was lost.
                logger.error(
                    "audit record seq %d not written (%s): %s", record["seq"], error, record
                )
            return record


def open_log(target: str, *, instance: str) -> Sink:
    """The audit log at `target` (a file appended to, or "-" for standard output), with a new
    segment started by an AuditChainStarted record naming this operator `instance`."""
    stream: typing.TextIO
    if target == STANDARD_OUTPUT:
        stream = sys.stdout
    else:
        # Line-buffered, and flushed after every record anyway; never closed before exit.
        stream = pathlib.Path(target).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
    sink = Sink(stream)
    sink.record(
        records.Decision.AUDIT_CHAIN_STARTED,
        reason="OperatorStarted",
        message=f"operator {instance} started; records before this one belong to another segment",
        details={"instance": instance},
    )
    return sink
