"""`modelguard agent audit-proxy`: the sidecar in front of the model server that records every
inference request in a signed, chained, checkpointed audit log, and enforces the request limits.

An HTTP/1.1 stream proxy on asyncio streams: each caller connection gets its own connection to
the model server (on localhost), requests are read head first and their bodies streamed through
in pieces, hashed as they pass; nothing is buffered beyond a piece, except the request body up to
the payload bound when payloads are recorded. Framing is checked before anything is passed on
(one Content-Length, or chunked alone; no obsolete line folding), so the proxy and the server
cannot disagree on where a request ends. Records go to a bounded queue that a writer thread
drains into the audit log (signing, chaining, checkpoints): a slow log never slows requests, and
requests served while the queue is full are counted and the count is itself recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import queue
import secrets
import signal
import sys
import threading
import time
import typing

from modelguard.agent import inputrecords, proxymetrics
from modelguard.audit import checkpoints, keys, records, sink

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES: typing.Final = 64 * 1024
PIECE_BYTES: typing.Final = 64 * 1024
# Past this many bytes waiting to be sent to a peer, the proxy waits for it (backpressure).
_HIGH_WATER: typing.Final = 256 * 1024
CHECKPOINT_KIND: typing.Final = "AuditCheckpoint"
_CHECK_EVERY_SECONDS: typing.Final = 1.0
_NO_BODY_STATUSES: typing.Final = frozenset({204, 304})
_REASONS: typing.Final = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    mode: str
    """inputrecords.METADATA or inputrecords.PAYLOAD."""
    log_name: str
    max_request_bytes: int
    rate: float | None = None
    """Requests per second over all callers; None: no rate limit."""
    burst: int = 1
    redaction: inputrecords.Redaction = inputrecords.Redaction()
    identity_header: str | None = None
    """The header the TrustPolicy names as carrying the caller's identity (lower case)."""
    payload_bytes: int = 64 * 1024
    queue_size: int = 10_000
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    metrics_port: int | None = None
    cadence: sink.Cadence = sink.Cadence()
    idle_seconds: float = 75.0
    """How long a caller's connection may wait for its next request head."""
    head_seconds: float = 30.0
    """How long a request head may take to arrive once the connection was used."""


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class _Head:
    method: str
    target: str
    keep_alive: bool
    length: int | None
    chunked: bool
    headers: list[tuple[str, str]]
    expect_continue: bool


def parse_request_head(head: bytes) -> _Head:
    """The request line and headers of `head` (ending in CRLF CRLF); _Malformed when the framing
    is ambiguous or the syntax is not HTTP/1.1's."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Malformed(400, "the request line is not METHOD TARGET VERSION")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _Malformed(400, "only HTTP/1.1 and HTTP/1.0 are served")
    headers: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection = b""
    expect = b""
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            # Also a continuation line (obsolete folding), which RFC 9112 lets a proxy refuse.
            raise _Malformed(400, "a header line is not NAME: VALUE")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.update(item.strip() for item in value.split(b","))
        elif lowered == b"transfer-encoding":
            codings.extend(item.strip().lower() for item in value.split(b",") if item.strip())
        elif lowered == b"connection":
            connection += b"," + value.lower()
        elif lowered == b"expect":
            expect = value.lower()
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    length: int | None = None
    if codings:
        if lengths:
            raise _Malformed(400, "both Transfer-Encoding and Content-Length")
        if codings != [b"chunked"]:
            raise _Malformed(501, "only the chunked transfer coding is accepted")
    elif lengths:
        if len(lengths) != 1:
            raise _Malformed(400, "several different Content-Length values")
        (text,) = lengths
        if not text.isdigit() or len(text) > 18:
            raise _Malformed(400, "Content-Length is not a decimal number")
        length = int(text)
    tokens = {token.strip() for token in connection.split(b",")}
    keep_alive = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    return _Head(
        method=method.decode("latin-1"),
        target=target.decode("latin-1"),
        keep_alive=keep_alive,
        length=length,
        chunked=bool(codings),
        headers=headers,
        expect_continue=expect == b"100-continue",
    )


@dataclasses.dataclass
class _ResponseHead:
    status: int
    length: int | None
    chunked: bool
    close: bool


def parse_response_head(head: bytes) -> _ResponseHead:
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise _Malformed(502, "the model server's answer is not HTTP/1.x")
    try:
        status = int(status_line[9:12])
    except ValueError:
        raise _Malformed(502, "the model server's status code is not a number") from None
    length: int | None = None
    chunked = False
    close = status_line.startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            text = value.strip()
            if not text.isdigit():
                raise _Malformed(502, "the model server's Content-Length is not a number")
            length = int(text)
        elif lowered == b"transfer-encoding":
            chunked = value.strip().lower().endswith(b"chunked")
        elif lowered == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    if chunked:
        length = None
    return _ResponseHead(status=status, length=length, chunked=chunked, close=close)


def refusal_bytes(status: int, message: str, *, close: bool) -> bytes:
    body = (message + "\n").encode("utf-8")
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + ("Retry-After: 1\r\n" if status == 429 else "")
        + "\r\n"
    ).encode("ascii") + body


class _UpstreamBroken(Exception):
    """The model server refused the connection or broke it off."""


class _CallerGone(Exception):
    """The caller closed its connection before the exchange was complete."""


class Recorder:
    """The bounded queue of exchanges and the thread that writes their records."""

    def __init__(
        self,
        log: sink.Sink,
        *,
        settings: Settings,
        hmac_key: bytes,
        metrics: proxymetrics.Metrics,
        emit: typing.Callable[[str], None],
    ) -> None:
        self._log = log
        self._settings = settings
        self._key = hmac_key
        self._metrics = metrics
        self._emit = emit
        self._queue: queue.Queue[inputrecords.Exchange | None] = queue.Queue(settings.queue_size)
        self._dropped_lock = threading.Lock()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="audit-records", daemon=True)
        metrics.queue_depth = self._queue.qsize

    def start(self) -> None:
        self._thread.start()

    def submit(self, exchange: inputrecords.Exchange) -> None:
        """Queues the exchange's record; when the queue is full, counts it as dropped."""
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1

    def stop(self, *, reason: str) -> None:
        """Writes what is queued, the drops, the closing record and its checkpoint."""
        self._queue.put(None)
        self._thread.join()
        self._write_drops()
        signed = self._log.close(reason=reason, message="the audit proxy stopped; its last "
                                 "checkpoint covers this segment to here")
        self._publish(signed)

    def _run(self) -> None:
        while True:
            try:
                exchange = self._queue.get(timeout=_CHECK_EVERY_SECONDS)
            except queue.Empty:
                self._write_drops()
                self._publish(self._log.checkpoint())
                continue
            if exchange is None:
                return
            self._write_drops()
            self._write(exchange)
            self._publish(self._log.checkpoint())

    def _write(self, exchange: inputrecords.Exchange) -> None:
        try:
            details = inputrecords.details_of(
                exchange, mode=self._settings.mode, rules=self._settings.redaction, key=self._key
            )
            reason = inputrecords.reason_of(exchange)
            message = inputrecords.message_of(exchange)
        except Exception as error:  # one record never stops the writer
            logger.exception("input record not built")
            details, reason, message = {}, type(error).__name__, "the record could not be built"
        self._log.record(
            records.Decision.INFERENCE_REQUEST, reason=reason, message=message, details=details
        )
        self._metrics.records += 1

    def _write_drops(self) -> None:
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, 0
        if not dropped:
            return
        self._metrics.records_dropped += dropped
        self._log.record(
            records.Decision.INPUT_RECORDS_DROPPED,
            reason="QueueFull",
            message=f"{dropped} request(s) served without a record: the record queue "
            f"({self._settings.queue_size}) was full",
            details={"dropped": dropped, "queueSize": self._settings.queue_size},
        )

    def _publish(self, signed: checkpoints.Signed | None) -> None:
        if signed is None:
            return
        self._metrics.checkpoints += 1
        self._emit(checkpoint_line(signed))


def checkpoint_line(signed: checkpoints.Signed) -> str:
    """A checkpoint as one JSON line of the proxy's output, shaped as a ConfigMap's data so that
    `modelguard audit verify --checkpoints` reads it from the same file as the records."""
    import json  # noqa: PLC0415 - only here

    return json.dumps(
        {
            "kind": CHECKPOINT_KIND,
            "metadata": {"name": f"{signed.checkpoint.origin}@{signed.checkpoint.size}"},
            "data": {"checkpoint": signed.note},
        },
        sort_keys=True,
        separators=(",", ":"),
    )


class Proxy:
    def __init__(
        self, settings: Settings, *, recorder: Recorder, metrics: proxymetrics.Metrics
    ) -> None:
        self._settings = settings
        self._recorder = recorder
        self._metrics = metrics
        self._bucket = (
            inputrecords.TokenBucket(
                rate=settings.rate, burst=settings.burst, now=time.monotonic()
            )
            if settings.rate is not None
            else None
        )
        self._capture = settings.mode == inputrecords.PAYLOAD
        self._identity = (settings.identity_header or "").lower() or None
        self._connections: set[asyncio.Task[None]] = set()

    async def serve_caller(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        caller = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            used = False
            while True:
                try:
                    head = await asyncio.wait_for(
                        reader.readuntil(b"\r\n\r\n"),
                        self._settings.head_seconds if used else self._settings.idle_seconds,
                    )
                except asyncio.LimitOverrunError:
                    exchange = inputrecords.Exchange(
                        caller=caller, method="", target="", started=time.monotonic()
                    )
                    await self._refuse(
                        writer,
                        exchange,
                        inputrecords.Refusal(
                            431, inputrecords.REASON_BAD_REQUEST,
                            f"request head larger than {MAX_HEAD_BYTES} bytes",
                        ),
                        close=True,
                    )
                    return
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                used = True
                keep, upstream = await self._exchange(reader, writer, head, caller, upstream)
                if not keep:
                    return
        except asyncio.CancelledError:
            pass
        finally:
            if upstream is not None:
                upstream[1].transport.abort()
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        caller: str,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        """One request and its answer; (keep the caller's connection, the upstream one)."""
        started = time.monotonic()
        exchange = inputrecords.Exchange(caller=caller, method="", target="", started=started)
        try:
            request = parse_request_head(head)
        except _Malformed as malformed:
            refusal = inputrecords.Refusal(
                malformed.status, inputrecords.REASON_BAD_REQUEST, str(malformed)
            )
            await self._refuse(writer, exchange, refusal, close=True)
            return False, upstream
        exchange.method, exchange.target = request.method, request.target
        if self._capture:
            exchange.headers = request.headers
            exchange.content_type = next(
                (v for n, v in request.headers if n.lower() == "content-type"), ""
            )
        if self._identity is not None:
            exchange.identity = next(
                (v[:512] for n, v in request.headers if n.lower() == self._identity), None
            )
        limit = self._settings.max_request_bytes
        refusal = inputrecords.size_refusal(declared=request.length, seen=0, limit=limit)
        if refusal is not None:
            # Refused before a byte of the body is read: the connection cannot be reused.
            exchange.declared_bytes = request.length
            await self._refuse(writer, exchange, refusal, close=True)
            return False, upstream
        refusal = inputrecords.rate_refusal(self._bucket, now=started)
        if refusal is not None:
            # A body of known length is read and hashed, so the record is complete and the
            # connection stays usable; a chunked one is not read at all.
            reusable = request.length is not None and request.keep_alive
            if not request.length and not request.chunked:
                exchange.request_sha256 = inputrecords.EMPTY_SHA256
            if reusable and request.length:
                try:
                    await self._discard(reader, request.length, exchange)
                except (asyncio.IncompleteReadError, ConnectionError):
                    reusable = False
            await self._refuse(writer, exchange, refusal, close=not reusable)
            return reusable, upstream
        self._metrics.in_flight += 1
        try:
            return await self._pass_on(reader, writer, head, request, exchange, upstream)
        finally:
            self._metrics.in_flight -= 1

    async def _pass_on(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        request: _Head,
        exchange: inputrecords.Exchange,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        answered = False
        try:
            if upstream is None:
                try:
                    upstream = await asyncio.open_connection(
                        self._settings.upstream_host,
                        self._settings.upstream_port,
                        limit=MAX_HEAD_BYTES,
                    )
                except OSError as error:
                    raise _UpstreamBroken(f"cannot connect to the model server: {error}") from None
            up_reader, up_writer = upstream
            up_writer.write(head)
            if request.expect_continue and (request.length or request.chunked):
                # The caller waits for this before it sends the body; the model server's own
                # 100 follows later and is passed on too, which HTTP allows.
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            refusal = await self._send_body(reader, up_writer, request, exchange)
            if refusal is not None:
                # Over the limit mid-stream: the model server's half-sent request is cut off.
                up_writer.transport.abort()
                await self._refuse(writer, exchange, refusal, close=True)
                return False, None
            answered, close = await self._relay_answer(up_reader, writer, request, exchange)
        except _UpstreamBroken as broken:
            self._metrics.upstream_errors += 1
            if upstream is not None:
                upstream[1].transport.abort()
            exchange.error = str(broken)
            if not answered and exchange.response_bytes == 0 and exchange.status == 0:
                exchange.status = 502
                await self._write_refusal(writer, 502, "the model server did not answer", close=True)
            self._finish(exchange)
            return False, None
        except (_CallerGone, ConnectionError, asyncio.IncompleteReadError) as gone:
            if upstream is not None:
                upstream[1].transport.abort()
            exchange.error = f"the caller closed the connection ({type(gone).__name__})"
            self._finish(exchange)
            return False, None
        self._finish(exchange)
        keep = request.keep_alive and not close
        return keep, (upstream if not close else None)

    async def _send_body(
        self,
        reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        request: _Head,
        exchange: inputrecords.Exchange,
    ) -> inputrecords.Refusal | None:
        digest = hashlib.sha256()
        limit = self._settings.max_request_bytes
        captured = bytearray() if self._capture else None
        seen = 0

        def take(piece: bytes) -> None:
            nonlocal captured
            digest.update(piece)
            if captured is not None:
                if len(captured) + len(piece) <= self._settings.payload_bytes:
                    captured += piece
                else:
                    captured = None
                    exchange.payload_complete = False

        try:
            if request.length is not None:
                remaining = request.length
                while remaining:
                    piece = await reader.read(min(remaining, PIECE_BYTES))
                    if not piece:
                        raise _CallerGone("the caller's body ended early")
                    remaining -= len(piece)
                    take(piece)
                    up_writer.write(piece)
                    await self._backpressure(up_writer)
                seen = request.length
            elif request.chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = _chunk_size(size_line)
                    if size is None:
                        raise _CallerGone("a chunk size is not hexadecimal")
                    if size == 0:
                        up_writer.write(size_line)
                        while True:  # trailers, up to the empty line
                            trailer = await reader.readuntil(b"\r\n")
                            up_writer.write(trailer)
                            if trailer == b"\r\n":
                                break
                        break
                    seen += size
                    refusal = inputrecords.size_refusal(declared=None, seen=seen, limit=limit)
                    if refusal is not None:
                        # What was passed on of it; no digest, since the body was not read whole.
                        exchange.request_bytes = seen - size
                        return refusal
                    up_writer.write(size_line)
                    remaining = size
                    while remaining:
                        piece = await reader.read(min(remaining, PIECE_BYTES))
                        if not piece:
                            raise _CallerGone("the caller's body ended early")
                        remaining -= len(piece)
                        take(piece)
                        up_writer.write(piece)
                        await self._backpressure(up_writer)
                    if await reader.readexactly(2) != b"\r\n":
                        raise _CallerGone("a chunk does not end in CRLF")
                    up_writer.write(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _CallerGone("a chunk line is too long") from None
        exchange.request_bytes = seen
        exchange.request_sha256 = digest.hexdigest()
        if captured is not None:
            exchange.payload = bytes(captured)
        return None

    async def _relay_answer(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: _Head,
        exchange: inputrecords.Exchange,
    ) -> tuple[bool, bool]:
        """Streams the model server's answer to the caller; (answered, close afterwards)."""
        while True:
            try:
                head = await up_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                raise _UpstreamBroken("the model server closed without an answer") from None
            try:
                response = parse_response_head(head)
            except _Malformed as malformed:
                raise _UpstreamBroken(str(malformed)) from None
            writer.write(head)
            if 100 <= response.status < 200 and response.status != 101:
                continue  # 100 Continue and other interim answers precede the real one
            break
        exchange.status = response.status
        sent = 0
        try:
            if request.method == "HEAD" or response.status in _NO_BODY_STATUSES:
                pass
            elif response.status == 101:
                raise _UpstreamBroken("protocol upgrades are not passed through")
            elif response.chunked:
                while True:
                    size_line = await up_reader.readuntil(b"\r\n")
                    size = _chunk_size(size_line)
                    if size is None:
                        raise _UpstreamBroken("the model server's chunk size is not hexadecimal")
                    writer.write(size_line)
                    if size == 0:
                        while True:
                            trailer = await up_reader.readuntil(b"\r\n")
                            writer.write(trailer)
                            if trailer == b"\r\n":
                                break
                        break
                    # The data and its CRLF, in pieces.
                    sent += size
                    await self._copy(up_reader, writer, size + 2)
            elif response.length is not None:
                await self._copy(up_reader, writer, response.length)
                sent = response.length
            else:
                # Delimited by the server closing the connection.
                while piece := await up_reader.read(PIECE_BYTES):
                    writer.write(piece)
                    sent += len(piece)
                    await self._backpressure(writer)
                response.close = True
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            exchange.response_bytes = sent
            raise _UpstreamBroken("the model server broke off its answer") from None
        exchange.response_bytes = sent
        if writer.transport.get_write_buffer_size() > 0:
            await writer.drain()
        return True, response.close

    async def _copy(
        self, source: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int
    ) -> None:
        remaining = count
        while remaining:
            piece = await source.read(min(remaining, PIECE_BYTES))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            writer.write(piece)
            await self._backpressure(writer)

    @staticmethod
    async def _backpressure(writer: asyncio.StreamWriter) -> None:
        if writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await writer.drain()

    async def _discard(
        self, reader: asyncio.StreamReader, length: int, exchange: inputrecords.Exchange
    ) -> None:
        digest = hashlib.sha256()
        remaining = length
        while remaining:
            piece = await reader.read(min(remaining, PIECE_BYTES))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            digest.update(piece)
        exchange.request_bytes = length
        exchange.request_sha256 = digest.hexdigest()

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        exchange: inputrecords.Exchange,
        refusal: inputrecords.Refusal,
        *,
        close: bool,
    ) -> None:
        exchange.refusal = refusal
        exchange.status = refusal.status
        self._metrics.refuse(refusal.reason)
        with contextlib.suppress(ConnectionError):
            await self._write_refusal(writer, refusal.status, refusal.message, close=close)
        self._finish(exchange)

    @staticmethod
    async def _write_refusal(
        writer: asyncio.StreamWriter, status: int, message: str, *, close: bool
    ) -> None:
        writer.write(refusal_bytes(status, message, close=close))
        await writer.drain()

    def _finish(self, exchange: inputrecords.Exchange) -> None:
        exchange.finished = time.monotonic()
        self._metrics.observe(
            status=exchange.status,
            seconds=exchange.finished - exchange.started,
            request_bytes=exchange.request_bytes,
            response_bytes=exchange.response_bytes,
        )
        self._recorder.submit(exchange)

    async def drain_connections(self, grace: float) -> None:
        """Waits up to `grace` seconds for the exchanges in flight, then cuts them off."""
        deadline = time.monotonic() + grace
        while self._metrics.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)


def _chunk_size(line: bytes) -> int | None:
    text = line[:-2].split(b";", 1)[0].strip()
    if not text or len(text) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in text):
        return None
    return int(text, 16)


async def _serve_metrics(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, metrics: proxymetrics.Metrics
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if path.split(b"?")[0] == b"/metrics":
            body = metrics.exposition().encode()
            status, content_type = "200 OK", proxymetrics.CONTENT_TYPE
        else:
            body, status, content_type = b"not found: /metrics\n", "404 Not Found", "text/plain"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}"
            "\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        pass
    finally:
        writer.close()


def start_log(
    stream: typing.TextIO, *, settings: Settings, instance: str
) -> tuple[sink.Sink, keys.Signer]:
    """A new segment of the input log, signed by a key made now and held in memory only."""
    signer = keys.generate(settings.log_name)
    origin = checkpoints.origin(
        signer.name, checkpoints.new_segment(datetime.datetime.now(datetime.UTC))
    )
    log = sink.Sink(stream, signer=signer, origin=origin, cadence=settings.cadence)
    log.record(
        records.Decision.AUDIT_CHAIN_STARTED,
        reason="AuditProxyStarted",
        message=f"audit proxy {instance} started segment {origin} of the input log, signed by "
        "a key made at its start and never stored",
        details={
            "instance": instance,
            "origin": origin,
            "publicKey": signer.verifier.vkey,
            "checkpointEvery": {
                "records": settings.cadence.records,
                "seconds": settings.cadence.seconds,
            },
            "inputs": settings.mode,
            "limits": {
                "maxRequestBytes": settings.max_request_bytes,
                "requestsPerSecond": settings.rate,
                "burst": settings.burst if settings.rate is not None else None,
            },
            "redaction": {
                "paths": ["$" + "".join(_step(s) for s in path) for path in settings.redaction.paths],
                "headers": sorted(settings.redaction.headers),
            },
        },
    )
    return log, signer


def _step(step: str) -> str:
    if step == inputrecords.WILDCARD:
        return ".*"
    if step.startswith("#"):
        return f"[{step[1:]}]"
    return f".{step}"


async def serve(settings: Settings, *, instance: str, ready: asyncio.Event | None = None) -> int:
    """Runs the proxy until SIGTERM or SIGINT; then finishes what is in flight, closes the
    segment and writes its last checkpoint."""
    # The record writer is a thread of this process: a short switch interval lets the event
    # loop take the GIL back within a millisecond (the default is 5) when signing holds it.
    sys.setswitchinterval(0.001)
    metrics = proxymetrics.Metrics()
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    log, signer = start_log(sys.stdout, settings=settings, instance=instance)
    recorder = Recorder(
        log, settings=settings, hmac_key=secrets.token_bytes(32), metrics=metrics, emit=emit
    )
    recorder.start()
    proxy = Proxy(settings, recorder=recorder, metrics=metrics)
    server = await asyncio.start_server(
        proxy.serve_caller,
        settings.listen_host,
        settings.listen_port,
        limit=MAX_HEAD_BYTES,
        reuse_address=True,
    )
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = await asyncio.start_server(
            lambda r, w: _serve_metrics(r, w, metrics),
            settings.metrics_host,
            settings.metrics_port,
            reuse_address=True,
        )
    print(
        f"audit proxy: {settings.listen_host}:{settings.listen_port} -> "
        f"{settings.upstream_host}:{settings.upstream_port}, inputs {settings.mode}, log "
        f"{log.origin}, key {signer.verifier.vkey}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    server.close()
    if metrics_server is not None:
        metrics_server.close()
    await proxy.drain_connections(grace=20.0)
    await loop.run_in_executor(None, lambda: recorder.stop(reason="AuditProxyStopped"))
    return 0


def run(settings: Settings, *, instance: str) -> int:
    """The command: serves until stopped; exit 0 after the segment is closed and checkpointed."""
    return asyncio.run(serve(settings, instance=instance))
