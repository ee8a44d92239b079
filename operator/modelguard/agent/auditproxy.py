"""`modelguard agent audit-proxy`: the sidecar in front of the model server that records every
inference request in a signed, chained, checkpointed audit log, and enforces the request limits.

An HTTP/1.1 stream proxy on asyncio streams: each caller connection gets its own connection to
the model server (on localhost), requests are read head first and their bodies streamed through
in pieces, hashed as they pass; nothing is buffered beyond a piece, except the request body up to
the payload bound when payloads are recorded. Framing is checked before anything is passed on
(one Content-Length, or chunked alone; no obsolete line folding), so the proxy and the server
cannot disagree on where a request ends. What the proxy saw of each request goes through a
bounded queue to the record writer, a process of its own (modelguard.agent.recordwriter) that
signs, chains and checkpoints the records: a slow log never slows requests, and requests served
while the queue is full are counted and the count is itself recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import signal
import sys
import time
import typing

from modelguard.agent import inputrecords, proxymetrics, recordwriter
from modelguard.api import inputaudit
from modelguard.audit import sink

MAX_HEAD_BYTES: typing.Final = 64 * 1024
PIECE_BYTES: typing.Final = 64 * 1024
# Past this many bytes waiting to be sent to a peer, the proxy waits for it (backpressure).
_HIGH_WATER: typing.Final = 256 * 1024
# RFC 9110 section 5.6.2: the characters of a method or a field name.
_TOKEN: typing.Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A field value is visible characters, obs-text, SP and HTAB (RFC 9110 section 5.5).
_VALUE_FORBIDDEN: typing.Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A request target holds no white space and no control character (RFC 9112 section 3.2).
_TARGET_FORBIDDEN: typing.Final = re.compile(rb"[\x00-\x20\x7f]")
# Trailer bytes of a chunked request body, all lines together.
MAX_TRAILER_BYTES: typing.Final = 16 * 1024
DEFAULT_MAX_CONNECTIONS: typing.Final = 256
_NO_BODY_STATUSES: typing.Final = frozenset({204, 304})
_REASONS: typing.Final = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
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
    redaction: inputrecords.Redaction = dataclasses.field(default_factory=inputrecords.Redaction)
    identity_header: str | None = None
    """The header the TrustPolicy names as carrying the caller's identity (lower case)."""
    payload_bytes: int = 64 * 1024
    queue_bytes: int = 8 << 20
    """Bytes of records waiting for the record writer; past it requests are served unrecorded,
    counted, and the count recorded."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    metrics_port: int | None = None
    cadence: sink.Cadence = dataclasses.field(default_factory=sink.Cadence)
    idle_seconds: float = 75.0
    """How long a caller's connection may wait for its next request head."""
    head_seconds: float = 30.0
    """How long a request head may take to arrive once the connection was used, and how long a
    request body may stall (no byte from the caller) before it is answered 408."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Callers' connections served at once (each holds one to the model server too); past it a
    new connection is answered 503, recorded, and closed (spec.audit.maxConnections)."""


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class _Head:
    method: str
    target: str
    version: str
    keep_alive: bool
    length: int | None
    chunked: bool
    headers: list[tuple[str, str]]
    expect_continue: bool


def parse_request_head(head: bytes) -> _Head:
    """The request line and headers of `head` (ending in CRLF CRLF); _Malformed when the framing
    is ambiguous or the syntax is not HTTP/1.1's.

    Strict where a lenient parser elsewhere could read the same bytes differently (RFC 9112
    section 2.2, RFC 9110 section 5.5): a bare CR, a bare LF or a NUL anywhere, a control
    character in a field value, a method or field name that is not a token, a target holding
    white space: each is refused, never passed on for the model server to read its own way."""
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Malformed(400, "the request line is not METHOD TARGET VERSION")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise _Malformed(400, "the request method is not a token")
    if _TARGET_FORBIDDEN.search(target) is not None:
        raise _Malformed(400, "the request target holds a control character or white space")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _Malformed(400, "only HTTP/1.1 and HTTP/1.0 are served")
    headers: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection = b""
    expect = b""
    for line in lines[1:]:
        name, value = _field_line(line)
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
    if codings and version == b"HTTP/1.0":
        # RFC 9112 section 6.1: the framing of such a message is faulty; many servers ignore
        # Transfer-Encoding in HTTP/1.0 and would read the body as the next request.
        raise _Malformed(400, "Transfer-Encoding in an HTTP/1.0 request")
    length = _body_length(lengths, codings)
    tokens = {token.strip() for token in connection.split(b",")}
    keep_alive = b"close" not in tokens and (version == b"HTTP/1.1" or b"keep-alive" in tokens)
    return _Head(
        method=method.decode("latin-1"),
        target=target.decode("latin-1"),
        version=version.decode("latin-1"),
        keep_alive=keep_alive,
        length=length,
        chunked=bool(codings),
        headers=headers,
        expect_continue=expect == b"100-continue",
    )


def _field_line(line: bytes) -> tuple[bytes, bytes]:
    """The name and value (without surrounding white space) of a header or trailer line;
    _Malformed when it is not NAME: VALUE of RFC 9110 (an obsolete continuation line included,
    which RFC 9112 lets a proxy refuse)."""
    name, colon, value = line.partition(b":")
    if not colon or _TOKEN.fullmatch(name) is None:
        raise _Malformed(400, "a header line is not NAME: VALUE")
    value = value.strip(b" \t")
    if _VALUE_FORBIDDEN.search(value) is not None:
        raise _Malformed(400, "a header value holds CR, LF, NUL or another control character")
    return name, value


def serialise_request_head(request: _Head) -> bytes:
    """The head passed to the model server, written anew from what the proxy parsed (never the
    caller's bytes): what the model server reads is what the proxy judged and recorded."""
    lines = [f"{request.method} {request.target} {request.version}"]
    lines.extend(f"{name}: {value}" for name, value in request.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _body_length(lengths: set[bytes], codings: list[bytes]) -> int | None:
    """The declared length of a request body (None: chunked, or no body)."""
    if codings:
        if lengths:
            raise _Malformed(400, "both Transfer-Encoding and Content-Length")
        if codings != [b"chunked"]:
            raise _Malformed(501, "only the chunked transfer coding is accepted")
        return None
    if not lengths:
        return None
    if len(lengths) != 1:
        raise _Malformed(400, "several different Content-Length values")
    (text,) = lengths
    if not text.isdigit() or len(text) > 18:
        raise _Malformed(400, "Content-Length is not a decimal number")
    return int(text)


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


def _bad_body(message: str) -> inputrecords.Refusal:
    return inputrecords.Refusal(400, inputaudit.REASON_BAD_REQUEST, message)


class _UpstreamBroken(Exception):
    """The model server refused the connection or broke it off."""


class _CallerGone(Exception):
    """The caller closed its connection before the exchange was complete."""


class RecordPipe:
    """The record queue: exchanges go as lines through a pipe to the record writer process
    (modelguard.agent.recordwriter); what the pipe has not taken waits in a buffer of at most
    `queue_bytes`. Past it an exchange is dropped, counted, and the count sent as soon as there
    is room again, so that the loss is itself a record of the chain."""

    def __init__(self, settings: Settings, *, metrics: proxymetrics.Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._process: asyncio.subprocess.Process | None = None
        self._dropped = 0

    async def start(self, *, instance: str) -> None:
        # The writer's standard output is this process's: the container's log.
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modelguard.agent.recordwriter", stdin=asyncio.subprocess.PIPE
        )
        redaction = self._settings.redaction
        settings = recordwriter.WriterSettings(
            log_name=self._settings.log_name,
            instance=instance,
            mode=self._settings.mode,
            redact_paths=tuple(inputrecords.path_text(path) for path in redaction.paths),
            redact_headers=tuple(sorted(redaction.headers)),
            checkpoint_records=self._settings.cadence.records,
            checkpoint_seconds=self._settings.cadence.seconds,
            limits={
                "maxRequestBytes": self._settings.max_request_bytes,
                "requestsPerSecond": self._settings.rate,
                "burst": self._settings.burst if self._settings.rate is not None else None,
                "maxConnections": self._settings.max_connections,
            },
        )
        self._stdin().write(settings.line())
        self._metrics.queue_depth = self._stdin().transport.get_write_buffer_size

    def _stdin(self) -> asyncio.StreamWriter:
        assert self._process is not None
        assert self._process.stdin is not None
        return self._process.stdin

    def submit(self, exchange: inputrecords.Exchange) -> None:
        stdin = self._stdin()
        if stdin.transport.is_closing() or (
            stdin.transport.get_write_buffer_size() > self._settings.queue_bytes
        ):
            self._dropped += 1
            self._metrics.records_dropped += 1
            return
        if self._dropped:
            stdin.write(recordwriter.encode_drops(self._dropped))
            self._dropped = 0
        stdin.write(recordwriter.encode(exchange))

    async def exited(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self) -> int:
        """Sends what is left, ends the pipe, and waits for the writer to close the segment."""
        stdin = self._stdin()
        if self._dropped and not stdin.transport.is_closing():
            stdin.write(recordwriter.encode_drops(self._dropped))
            self._dropped = 0
        with contextlib.suppress(ConnectionError):
            await stdin.drain()
            stdin.close()
        return await self.exited()


class Proxy:
    def __init__(
        self, settings: Settings, *, recorder: RecordPipe, metrics: proxymetrics.Metrics
    ) -> None:
        self._settings = settings
        self._recorder = recorder
        self._metrics = metrics
        self._bucket = (
            inputrecords.TokenBucket(rate=settings.rate, burst=settings.burst, now=time.monotonic())
            if settings.rate is not None
            else None
        )
        self._capture = settings.mode == inputrecords.PAYLOAD
        self._identity = (settings.identity_header or "").lower() or None
        self._connections: set[asyncio.Task[None]] = set()

    async def serve_caller(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        caller = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self._connections) >= self._settings.max_connections:
            # Connections held open (idle, or by slow callers) would otherwise exhaust the
            # pod's file descriptors and the model server's connection slots.
            exchange = inputrecords.Exchange(
                caller=caller, method="", target="", started=time.monotonic()
            )
            refusal = inputrecords.Refusal(
                503,
                inputaudit.REASON_TOO_MANY_CONNECTIONS,
                f"more than {self._settings.max_connections} connections at once "
                "(spec.audit.maxConnections)",
            )
            try:
                await self._refuse(writer, exchange, refusal, close=True)
            finally:
                writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
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
                            431,
                            inputaudit.REASON_BAD_REQUEST,
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
            return await self._serve_request(
                reader, writer, head=head, exchange=exchange, upstream=upstream
            )
        except asyncio.CancelledError:
            # Cut off at shutdown (past the grace period): the model server may have processed
            # the request, so it is recorded like any exchange that did not complete.
            if not exchange.finished:
                exchange.error = "cut off at shutdown, before the exchange completed"
                self._finish(exchange)
            raise

    async def _serve_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        head: bytes,
        exchange: inputrecords.Exchange,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        started = exchange.started
        try:
            request = parse_request_head(head)
        except _Malformed as malformed:
            bad = inputrecords.Refusal(
                malformed.status, inputaudit.REASON_BAD_REQUEST, str(malformed)
            )
            await self._refuse(writer, exchange, bad, close=True)
            return False, upstream
        exchange.method, exchange.target = request.method, request.target
        if self._capture:
            exchange.headers = request.headers
            exchange.content_type = next(
                (v for n, v in request.headers if n.lower() == "content-type"), ""
            )
        if self._identity is not None:
            claimed = [v for n, v in request.headers if n.lower() == self._identity]
            if len(claimed) > 1:
                # A front proxy that appends its header rather than replacing the caller's
                # leaves both; which one it wrote cannot be told, so none is believed and the
                # request is refused rather than recorded under an identity the caller chose.
                bad = inputrecords.Refusal(
                    400,
                    inputaudit.REASON_BAD_REQUEST,
                    f"the identity header {self._identity} appears {len(claimed)} times; "
                    "exactly one is accepted",
                )
                await self._refuse(writer, exchange, bad, close=True)
                return False, upstream
            exchange.identity = claimed[0][:512] if claimed else None
        limit = self._settings.max_request_bytes
        too_large = inputrecords.size_refusal(declared=request.length, seen=0, limit=limit)
        if too_large is not None:
            # Refused before a byte of the body is read: the connection cannot be reused.
            exchange.declared_bytes = request.length
            await self._refuse(writer, exchange, too_large, close=True)
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
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    reusable = False
            await self._refuse(writer, exchange, refusal, close=not reusable)
            return reusable, upstream
        self._metrics.in_flight += 1
        try:
            return await self._pass_on(
                reader, writer, request=request, exchange=exchange, upstream=upstream
            )
        finally:
            self._metrics.in_flight -= 1

    async def _pass_on(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        request: _Head,
        exchange: inputrecords.Exchange,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        answered = False
        if upstream is not None and (upstream[0].at_eof() or upstream[1].transport.is_closing()):
            # The model server closed the idle connection (its keep-alive timeout): a new one,
            # rather than a request written into a closed connection and answered 502.
            upstream[1].transport.abort()
            upstream = None
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
            up_writer.write(serialise_request_head(request))
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
                with contextlib.suppress(ConnectionError):
                    await self._write_refusal(
                        writer, 502, "the model server did not answer", close=True
                    )
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
                    piece = await self._read_body(reader, min(remaining, PIECE_BYTES))
                    if not piece:
                        raise _CallerGone("the caller's body ended early")
                    remaining -= len(piece)
                    seen += len(piece)
                    take(piece)
                    up_writer.write(piece)
                    await self._backpressure(up_writer)
            elif request.chunked:
                seen, refusal = await self._send_chunks(reader, up_writer, take=take, limit=limit)
                if refusal is not None:
                    # What was passed on of it; no digest, since the body was not read whole.
                    exchange.request_bytes = seen
                    return refusal
        except asyncio.LimitOverrunError:
            exchange.request_bytes = seen
            return _bad_body(f"a chunk-size or trailer line is longer than {MAX_HEAD_BYTES} bytes")
        except TimeoutError:
            exchange.request_bytes = seen
            return inputrecords.Refusal(
                408,
                inputaudit.REASON_REQUEST_TIMEOUT,
                f"the request body stalled: nothing for {self._settings.head_seconds:g} seconds",
            )
        exchange.request_bytes = seen
        exchange.request_sha256 = digest.hexdigest()
        if captured is not None:
            exchange.payload = bytes(captured)
        return None

    async def _send_chunks(
        self,
        reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        *,
        take: typing.Callable[[bytes], None],
        limit: int,
    ) -> tuple[int, inputrecords.Refusal | None]:
        """Passes a chunked body on; (its bytes, or those passed on before a refusal)."""
        seen = 0
        while True:
            size_line = await self._read_line(reader)
            size = _chunk_size(size_line)
            if size is None:
                return seen, _bad_body(
                    "a chunk-size line is not a hexadecimal size (with no "
                    "control character in its extensions) ending in CRLF"
                )
            if size == 0:
                trailers = await self._read_trailers(reader)
                if trailers is None:
                    return seen, _bad_body(
                        "a trailer line is not NAME: VALUE without CR, LF or NUL, or the "
                        f"trailers are larger than {MAX_TRAILER_BYTES} bytes"
                    )
                # Written anew, extensions dropped: the model server reads what was judged.
                up_writer.write(b"0\r\n" + trailers + b"\r\n")
                return seen, None
            refusal = inputrecords.size_refusal(declared=None, seen=seen + size, limit=limit)
            if refusal is not None:
                return seen, refusal
            seen += size
            up_writer.write(b"%x\r\n" % size)
            remaining = size
            while remaining:
                piece = await self._read_body(reader, min(remaining, PIECE_BYTES))
                if not piece:
                    raise _CallerGone("the caller's body ended early")
                remaining -= len(piece)
                take(piece)
                up_writer.write(piece)
                await self._backpressure(up_writer)
            async with asyncio.timeout(self._settings.head_seconds):
                end = await reader.readexactly(2)
            if end != b"\r\n":
                return seen, _bad_body("a chunk's data does not end in CRLF")
            up_writer.write(b"\r\n")

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        async with asyncio.timeout(self._settings.head_seconds):
            return await reader.readuntil(b"\r\n")

    async def _read_body(self, reader: asyncio.StreamReader, count: int) -> bytes:
        """Up to `count` bytes of a request body; TimeoutError when the caller sends nothing for
        `head_seconds` (a body that never ends would otherwise hold both connections)."""
        async with asyncio.timeout(self._settings.head_seconds):
            return await reader.read(count)

    async def _read_trailers(self, reader: asyncio.StreamReader) -> bytes | None:
        """The trailer lines up to the empty line, checked and written anew; None when one is
        not a field line or they are too large."""
        out = bytearray()
        total = 0
        while True:
            line = await self._read_line(reader)
            if line == b"\r\n":
                return bytes(out)
            total += len(line)
            if total > MAX_TRAILER_BYTES:
                return None
            try:
                name, value = _field_line(line[:-2])
            except _Malformed:
                return None
            out += name + b": " + value + b"\r\n"

    async def _relay_chunks(
        self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        """Passes a chunked answer on as it comes; its data bytes."""
        sent = 0
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
                        return sent
            sent += size
            # The data and its CRLF, in pieces.
            await self._copy(up_reader, writer, size + 2)

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
            if response.status == 101:
                # A tunnel would carry what no record could describe: refused, before the
                # caller sees the upgrade.
                raise _UpstreamBroken("protocol upgrades are not passed through")
            writer.write(head)
            if 100 <= response.status < 200:
                continue  # 100 Continue and other interim answers precede the real one
            break
        exchange.status = response.status
        sent = 0
        try:
            if request.method == "HEAD" or response.status in _NO_BODY_STATUSES:
                pass
            elif response.chunked:
                sent = await self._relay_chunks(up_reader, writer)
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
            piece = await self._read_body(reader, min(remaining, PIECE_BYTES))
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
        # Polled at the stop only; an event per exchange would cost every request.
        while self._metrics.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)


def _chunk_size(line: bytes) -> int | None:
    """The size of a chunk-size line (ending in CRLF); None when it is not one. A line holding a
    CR, LF, NUL or another control character before its CRLF is not one, even in an extension,
    which a lenient parser could end there and read a different size from what follows."""
    body = line[:-2]
    if not line.endswith(b"\r\n") or _VALUE_FORBIDDEN.search(body) is not None:
        return None
    text = body.split(b";", 1)[0].strip(b" \t")
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


async def serve(settings: Settings, *, instance: str) -> int:
    """Runs the proxy until SIGTERM or SIGINT; then finishes what is in flight and lets the
    record writer close the segment with its last checkpoint. Exit 1 if the record writer
    stops first: requests are never served unaudited for long."""
    metrics = proxymetrics.Metrics()
    recorder = RecordPipe(settings, metrics=metrics)
    await recorder.start(instance=instance)
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
        f"{settings.upstream_host}:{settings.upstream_port}, inputs {settings.mode}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    writer_exit = asyncio.ensure_future(recorder.exited())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({writer_exit, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if metrics_server is not None:
        metrics_server.close()
    if writer_exit.done():
        print(
            f"audit proxy: the record writer exited ({writer_exit.result()}); stopping, so "
            "that no request is served unrecorded",
            file=sys.stderr,
            flush=True,
        )
        await proxy.drain_connections(grace=0.0)
        return 1
    stopping.cancel()
    await proxy.drain_connections(grace=20.0)
    return 0 if await recorder.stop() == 0 else 1


def run(settings: Settings, *, instance: str) -> int:
    """The command: serves until stopped; exit 0 after the segment is closed and checkpointed."""
    return asyncio.run(serve(settings, instance=instance))
