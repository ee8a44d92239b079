"""The audit proxy's record writer: a process of its own that turns what the proxy saw of each
request into signed, chained records and checkpoints on standard output (the container's log).

It is a process, not a thread, because signing and hashing a record costs more CPU than passing
the request on, and a thread would hold the proxy's event loop back through the GIL: requests
would wait behind records. The proxy sends one JSON line per exchange through a pipe; the pipe
and the proxy's bounded buffer in front of it are the record queue. The signing key is made here,
at the start, and never leaves this process's memory; so is the HMAC key of redaction.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import logging
import os
import secrets
import select
import sys
import typing

from modelguard.agent import inputrecords
from modelguard.audit import checkpoints, keys, records, sink

logger = logging.getLogger(__name__)

CHECKPOINT_KIND: typing.Final = "AuditCheckpoint"
_TICK_SECONDS: typing.Final = 1.0
_READ_BYTES: typing.Final = 1 << 16
# One message never exceeds a request's recorded payload (base64) and its headers.
MAX_MESSAGE_BYTES: typing.Final = 4 << 20


@dataclasses.dataclass(frozen=True)
class WriterSettings:
    """What the writer needs, sent by the proxy as the first line."""

    log_name: str
    instance: str
    mode: str
    redact_paths: tuple[str, ...]
    redact_headers: tuple[str, ...]
    checkpoint_records: int
    checkpoint_seconds: int
    limits: dict[str, typing.Any]

    def line(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> WriterSettings:
        fields = json.loads(line)
        fields["redact_paths"] = tuple(fields["redact_paths"])
        fields["redact_headers"] = tuple(fields["redact_headers"])
        return cls(**fields)


def encode(exchange: inputrecords.Exchange) -> bytes:
    """One exchange as one line of the pipe."""
    message: dict[str, typing.Any] = {
        "c": exchange.caller,
        "m": exchange.method,
        "t": exchange.target,
        "s": exchange.status,
        "l": round((exchange.finished - exchange.started) * 1000, 3),
        "rq": exchange.request_bytes,
        "rs": exchange.response_bytes,
    }
    if exchange.request_sha256 is not None:
        message["h"] = exchange.request_sha256
    if exchange.identity is not None:
        message["i"] = exchange.identity
    if exchange.declared_bytes is not None:
        message["d"] = exchange.declared_bytes
    if exchange.refusal is not None:
        refusal = exchange.refusal
        message["r"] = [refusal.status, refusal.reason, refusal.message]
    if exchange.error is not None:
        message["e"] = exchange.error
    if exchange.headers:
        message["hd"] = exchange.headers
        message["ct"] = exchange.content_type
        message["pc"] = exchange.payload_complete
        if exchange.payload is not None:
            message["p"] = base64.b64encode(exchange.payload).decode()
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_drops(count: int) -> bytes:
    return b'{"dropped":%d}\n' % count


def decode(message: dict[str, typing.Any]) -> inputrecords.Exchange:
    refusal = message.get("r")
    payload = message.get("p")
    return inputrecords.Exchange(
        caller=str(message["c"]),
        method=str(message["m"]),
        target=str(message["t"]),
        started=0.0,
        finished=float(message["l"]) / 1000,
        status=int(message["s"]),
        request_bytes=int(message["rq"]),
        response_bytes=int(message["rs"]),
        request_sha256=message.get("h"),
        identity=message.get("i"),
        declared_bytes=message.get("d"),
        refusal=inputrecords.Refusal(*refusal) if refusal else None,
        error=message.get("e"),
        headers=[(str(n), str(v)) for n, v in message.get("hd", [])],
        content_type=str(message.get("ct", "")),
        payload_complete=bool(message.get("pc", True)),
        payload=base64.b64decode(payload) if payload is not None else None,
    )


def checkpoint_line(signed: checkpoints.Signed) -> str:
    """A checkpoint as one JSON line of the log, shaped as a ConfigMap's data so that `modelguard
    audit verify --checkpoints` reads it from the same file as the records."""
    return json.dumps(
        {
            "kind": CHECKPOINT_KIND,
            "metadata": {"name": f"{signed.checkpoint.origin}@{signed.checkpoint.size}"},
            "data": {"checkpoint": signed.note},
        },
        sort_keys=True,
        separators=(",", ":"),
    )


class Writer:
    def __init__(self, settings: WriterSettings, stream: typing.TextIO) -> None:
        self._settings = settings
        self._stream = stream
        self._rules = inputrecords.Redaction.of(
            paths=settings.redact_paths, headers=settings.redact_headers
        )
        self._key = secrets.token_bytes(32)
        signer = keys.generate(settings.log_name)
        self.verifier = signer.verifier
        origin = checkpoints.origin(
            signer.name, checkpoints.new_segment(datetime.datetime.now(datetime.UTC))
        )
        self._log = sink.Sink(
            stream,
            signer=signer,
            origin=origin,
            cadence=sink.Cadence(
                records=settings.checkpoint_records, seconds=settings.checkpoint_seconds
            ),
        )
        self._log.record(
            records.Decision.AUDIT_CHAIN_STARTED,
            reason="AuditProxyStarted",
            message=f"audit proxy {settings.instance} started segment {origin} of the input "
            "log, signed by a key made at its start and never stored",
            details={
                "instance": settings.instance,
                "origin": origin,
                "publicKey": signer.verifier.vkey,
                "checkpointEvery": {
                    "records": settings.checkpoint_records,
                    "seconds": settings.checkpoint_seconds,
                },
                "inputs": settings.mode,
                "limits": settings.limits,
                "redaction": {
                    "paths": sorted(settings.redact_paths),
                    "headers": sorted(self._rules.headers),
                },
            },
        )
        self._publish(self._log.checkpoint(force=True))

    @property
    def origin(self) -> str:
        return self._log.origin

    def take(self, line: bytes) -> None:
        """One message of the proxy: an exchange, or a count of dropped ones."""
        try:
            message = json.loads(line)
            if "dropped" in message:
                self._drops(int(message["dropped"]))
            else:
                self._exchange(decode(message))
        except (ValueError, KeyError, TypeError) as error:
            # The proxy wrote it; a message we cannot read is still a request served.
            self._log.record(
                records.Decision.INPUT_RECORDS_DROPPED,
                reason="Unreadable",
                message=f"a request's facts could not be read ({type(error).__name__}); it was "
                "served unrecorded",
                details={"dropped": 1},
            )
        self._publish(self._log.checkpoint())

    def tick(self) -> None:
        self._publish(self._log.checkpoint())

    def close(self, *, reason: str) -> None:
        self._publish(
            self._log.close(
                reason=reason,
                message="the audit proxy stopped; its last checkpoint covers this segment to here",
            )
        )

    def _exchange(self, exchange: inputrecords.Exchange) -> None:
        details = inputrecords.details_of(
            exchange, mode=self._settings.mode, rules=self._rules, key=self._key
        )
        self._log.record(
            records.Decision.INFERENCE_REQUEST,
            reason=inputrecords.reason_of(exchange),
            message=inputrecords.message_of(exchange),
            details=details,
        )

    def _drops(self, count: int) -> None:
        self._log.record(
            records.Decision.INPUT_RECORDS_DROPPED,
            reason="QueueFull",
            message=f"{count} request(s) served without a record: the record queue was full",
            details={"dropped": count},
        )

    def _publish(self, signed: checkpoints.Signed | None) -> None:
        if signed is None:
            return
        try:
            self._stream.write(checkpoint_line(signed) + "\n")
            self._stream.flush()
        except (OSError, ValueError) as error:
            logger.error("checkpoint not written (%s): %s", error, signed.note)


def run(source: int, stream: typing.TextIO) -> int:
    """Reads the settings line, then messages, from the file descriptor `source` until it ends."""
    pending = bytearray()
    writer: Writer | None = None
    while True:
        ready, _, _ = select.select([source], [], [], _TICK_SECONDS)
        if not ready:
            if writer is not None:
                writer.tick()
            continue
        data = os.read(source, _READ_BYTES)
        if not data:
            break
        pending += data
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[: end + 1]
            if writer is None:
                writer = Writer(WriterSettings.parse(line), stream)
                print(
                    f"audit proxy records: log {writer.origin}, key {writer.verifier.vkey}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                writer.take(line)
        if len(pending) > MAX_MESSAGE_BYTES:
            # Not a message the proxy writes; what it stood for is recorded as unreadable.
            pending.clear()
            if writer is not None:
                writer.take(b"")
    if writer is not None:
        writer.close(reason="AuditProxyStopped")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.stdin.fileno(), sys.stdout))
