"""Ways around the audit proxy (decision 0026) that still work, each as a test that fails while
the hole is open: a network caller of a model gets a request answered by the model server with
no record naming it, holds the proxy's connections with a body that never ends, or puts an
identity of its choosing into the record.

The model server here is Python's own http.server (ThreadingHTTPServer, HTTP/1.1 keep-alive),
a real server many small model servers are built on; like h11 (uvicorn) it takes a bare LF as
the end of a header line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import signal
import socket
import threading
import time
import typing

import h11
import harness
import pytest
from test_audit_proxy import Proxy

from modelguard.agent import auditproxy, inputrecords, proxymetrics
from modelguard.api import inputaudit

BIG = 32 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: typing.ClassVar[list[str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).served.append(self.path)
        body = b"x" * BIG if self.path == "/big" else b'{"outputs":[1]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(ConnectionError):
            self.wfile.write(body)

    do_GET = _answer  # noqa: N815 - http.server's names
    do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: typing.Any) -> None:
        del format, args


@pytest.fixture
def model_server() -> typing.Iterator[tuple[int, list[str]]]:
    served: list[str] = []
    handler = type("Handler", (_Handler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], served
    finally:
        server.shutdown()
        server.server_close()


def _recorded_paths(proxy: Proxy) -> list[str]:
    return [r["details"]["path"] for r in proxy.requests()]


def test_a_request_smuggled_in_with_a_bare_lf_is_answered_and_never_recorded(
    model_server: tuple[int, list[str]],
) -> None:
    """Attack (a network caller of the model): one request whose head holds
    `X-Pad: a<LF>Content-Length: 0` before `Content-Length: 42`, and whose 42-byte body is a
    second request. The proxy reads one Content-Length (42), records one POST and passes the
    head on unchanged; the model server reads the bare LF as a line end, takes the first
    Content-Length (0), and answers the body as a request of its own: `GET /smuggled` is served
    and no record names it (its answer is left waiting on the proxy's connection, to be handed
    to whatever the caller asks next). Expected: every request the model server answers has a
    record; here, the proxy refuses the head (400) and the model server never sees it."""
    port, served = model_server
    proxy = Proxy(port)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n"
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nX-Pad: a\nContent-Length: 0\r\n"
        + f"Content-Length: {len(smuggled)}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(head + smuggled)
        with contextlib.suppress(TimeoutError):
            raw.settimeout(2)
            raw.recv(65536)
        time.sleep(1)
    proxy.stop()
    unrecorded = [path for path in served if path not in _recorded_paths(proxy)]
    assert not unrecorded, f"answered by the model server, never recorded: {unrecorded}"


def test_a_request_in_flight_at_shutdown_is_recorded(model_server: tuple[int, list[str]]) -> None:
    """Attack (a network caller): ask for a large answer and read none of it, then wait for the
    pod to stop (a rollout, a node drain, an eviction). The model server has answered; the proxy
    is stuck writing the answer to a caller that does not read. At SIGTERM it waits 20 s for
    exchanges in flight, then cancels them: the cancelled exchange is never handed to the record
    writer, so a request the model server processed leaves no record, in a segment that closes
    and verifies as complete. Expected: a cut-off exchange is recorded like any other that did not
    complete (status and an error saying it was cut off at shutdown)."""
    port, served = model_server
    proxy = Proxy(port)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.sendall(b"GET /big HTTP/1.1\r\nHost: m\r\n\r\n")

        def answered() -> None:
            assert "/big" in served

        harness.eventually(answered, timeout=30, interval=0.2)
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(60)
    assert proxy._reader is not None
    proxy._reader.join(10)
    # The segment closed as complete (its last checkpoint written): nothing says one is missing.
    assert proxy.records()[-1]["decision"] == "AuditChainClosed"
    assert "/big" in _recorded_paths(proxy), "the model server answered /big; no record names it"


def test_duplicate_identity_headers_do_not_record_the_first_as_the_caller() -> None:
    """Attack (a network caller behind a platform proxy that adds the identity header): the
    caller sends its own `X-Caller: spiffe://.../sa/admin`; a front proxy that appends its own
    header (rather than replacing every one of that name) leaves both. The audit proxy records
    the first as the caller's identity, which is the one the caller wrote. Expected: a request
    carrying the identity header more than once is refused (400) or recorded with no identity
    claimed from it; never with the first value as the identity."""

    async def scenario() -> list[inputrecords.Exchange]:
        return await _in_process(
            b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n"
            b"X-Caller: spiffe://cluster/ns/prod/sa/admin\r\n"
            b"X-Caller: spiffe://cluster/ns/frontend/sa/web\r\n\r\n{}",
            identity_header="x-caller",
        )

    (exchange,) = asyncio.run(scenario())
    assert exchange.status == 400 or exchange.identity != "spiffe://cluster/ns/prod/sa/admin", (
        f"recorded the caller-written identity: {exchange.identity}"
    )


def test_a_body_that_never_ends_does_not_hold_the_connection() -> None:
    """Attack (slowloris on the body, by a network caller): send a head declaring a 1 MiB body,
    one byte of it, and nothing more. The head must arrive within `head_seconds` and an idle
    connection ends after `idle_seconds`, but reading the body has no time limit: the caller's
    connection and the proxy's connection to the model server stay open for ever. With no cap
    on connections, a few thousand such callers exhaust the pod's file descriptors (and the
    model server's connection slots), and keep the memory of each connection's buffers.
    Expected: a body that stalls longer than the head timeout is answered 408 (or cut off) and
    recorded."""

    async def scenario() -> bool:
        recorder = _Recorder()
        upstream = await asyncio.start_server(_drain_forever, "127.0.0.1", 0)
        settings = _settings(upstream.sockets[0].getsockname()[1], identity_header=None)
        proxy = auditproxy.Proxy(settings, recorder=recorder, metrics=proxymetrics.Metrics())  # type: ignore[arg-type]
        server = await asyncio.start_server(proxy.serve_caller, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nContent-Length: 1048576\r\n\r\nx")
        await writer.drain()
        # Ten times the head and idle timeouts.
        try:
            answer = await asyncio.wait_for(reader.read(1), 5.0)
        except TimeoutError:
            answer = None
        writer.close()
        server.close()
        upstream.close()
        return answer is not None  # b"" (closed) or the first byte of a 408

    assert asyncio.run(scenario()), "the proxy still holds a body stalled for 10x its timeouts"


def test_a_stalled_body_is_recorded_as_a_timeout_not_a_bad_request() -> None:
    """A body that stops arriving is answered 408; its record and the refusal metric must say
    RequestTimeout, not BadRequest: an investigator counting malformed requests (framing
    attacks) must not find slow or stalled callers among them, nor miss them under a timeout."""

    async def scenario() -> tuple[bytes, list[inputrecords.Exchange], dict[str, int]]:
        recorder = _Recorder()
        metrics = proxymetrics.Metrics()
        upstream = await asyncio.start_server(_drain_forever, "127.0.0.1", 0)
        settings = _settings(upstream.sockets[0].getsockname()[1], identity_header=None)
        proxy = auditproxy.Proxy(settings, recorder=recorder, metrics=metrics)  # type: ignore[arg-type]
        server = await asyncio.start_server(proxy.serve_caller, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nContent-Length: 10\r\n\r\nx")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        server.close()
        upstream.close()
        return answer, recorder.exchanges, metrics.refused

    answer, exchanges, refused = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert [e.status for e in exchanges] == [408]
    assert [inputrecords.reason_of(e) for e in exchanges] == [inputaudit.REASON_REQUEST_TIMEOUT]
    assert exchanges[0].request_bytes == 1
    assert refused == {inputaudit.REASON_REQUEST_TIMEOUT: 1}


def test_connections_past_the_bound_are_answered_503_and_recorded() -> None:
    """The other half of holding connections: past `max_connections` callers' connections at
    once, a new one is answered 503 and recorded, not served (nor left to use a descriptor)."""

    async def scenario() -> tuple[bytes, list[inputrecords.Exchange]]:
        recorder = _Recorder()
        upstream = await asyncio.start_server(_drain_forever, "127.0.0.1", 0)
        settings = dataclasses.replace(
            _settings(upstream.sockets[0].getsockname()[1], identity_header=None),
            max_connections=1,
            idle_seconds=5.0,
        )
        proxy = auditproxy.Proxy(settings, recorder=recorder, metrics=proxymetrics.Metrics())  # type: ignore[arg-type]
        server = await asyncio.start_server(proxy.serve_caller, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, holder = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        holder.close()
        server.close()
        upstream.close()
        return answer, recorder.exchanges

    answer, exchanges = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert [e.status for e in exchanges] == [503]


class _Recorder:
    """Stands for the record writer's pipe: the exchanges the proxy hands over."""

    def __init__(self) -> None:
        self.exchanges: list[inputrecords.Exchange] = []

    def submit(self, exchange: inputrecords.Exchange) -> None:
        self.exchanges.append(exchange)


def _settings(upstream_port: int, *, identity_header: str | None) -> auditproxy.Settings:
    return auditproxy.Settings(
        listen_host="127.0.0.1",
        listen_port=0,
        upstream_host="127.0.0.1",
        upstream_port=upstream_port,
        mode=inputrecords.METADATA,
        log_name="team-a/model-0/inputs",
        max_request_bytes=16 << 20,
        identity_header=identity_header,
        idle_seconds=0.5,
        head_seconds=0.5,
    )


async def _drain_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A model server that reads and answers every head with a small JSON answer."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
    writer.close()


async def _in_process(
    request: bytes, *, identity_header: str | None
) -> list[inputrecords.Exchange]:
    recorder = _Recorder()
    upstream = await asyncio.start_server(_drain_forever, "127.0.0.1", 0)
    settings = _settings(upstream.sockets[0].getsockname()[1], identity_header=identity_header)
    proxy = auditproxy.Proxy(settings, recorder=recorder, metrics=proxymetrics.Metrics())  # type: ignore[arg-type]
    server = await asyncio.start_server(proxy.serve_caller, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.write(request)
    await writer.drain()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    writer.close()
    await asyncio.sleep(0.2)
    server.close()
    upstream.close()
    return recorder.exchanges


class _H11Server:
    """A model server on h11, the HTTP/1.1 parser of uvicorn (FastAPI, and the Python model
    servers built on it): every request it parses is answered 200 and its target kept."""

    def __init__(self) -> None:
        self.served: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _H11Server:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER)
        with contextlib.suppress(ConnectionError, h11.ProtocolError):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    connection.receive_data(data)
                    if not data:
                        break
                    continue
                if isinstance(event, h11.Request):
                    self.served.append(event.target.decode())
                elif isinstance(event, h11.EndOfMessage):
                    answer = b'{"outputs":[1]}'
                    writer.write(
                        connection.send(
                            h11.Response(
                                status_code=200,
                                headers=[("content-length", str(len(answer)))],
                            )
                        )
                        + connection.send(h11.Data(data=answer))
                        + connection.send(h11.EndOfMessage())
                    )
                    await writer.drain()
                    connection.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        writer.close()


_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: m\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        # CL.TE: the proxy frames by Content-Length (it reads Transfer-Encoding as part of
        # X-Pad's value); h11 takes the bare LF as a line end and frames by chunked, so the
        # body after the last chunk is a request of its own.
        pytest.param(
            b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nX-Pad: a\nTransfer-Encoding: chunked\r\n"
            + f"Content-Length: {5 + len(_SMUGGLED)}\r\n\r\n".encode()
            + b"0\r\n\r\n"
            + _SMUGGLED,
            id="bare-lf-cl-te",
        ),
        # A trailer line holding LF LF: the proxy reads trailer lines up to CRLF CRLF and passes
        # them on unread; h11 ends the trailers at the LF LF, and what follows is a request.
        pytest.param(
            b"POST /v1/predict HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\nX-Trailer: a\n\n" + _SMUGGLED,
            id="chunked-trailer-lf-lf",
        ),
    ],
)
def test_a_request_smuggled_to_a_uvicorn_style_server_is_never_recorded(
    request_bytes: bytes,
) -> None:
    """Attack (a network caller of a model served by uvicorn, i.e. h11): a request the proxy
    frames one way and h11 another, carrying `GET /smuggled` where the proxy sees body or
    trailer bytes. The model server answers /smuggled; the proxy records one POST. Expected:
    every request the model server answers has a record: the proxy refuses heads, chunk lines
    and trailers holding a bare CR or LF (RFC 9110 section 5.5, RFC 9112 section 2.2) instead of
    passing them on."""
    with _H11Server() as server:
        proxy = Proxy(server.port)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            raw.sendall(request_bytes)
            with contextlib.suppress(TimeoutError):
                raw.settimeout(2)
                raw.recv(65536)
            time.sleep(1)
        # A well-formed request after the attack: shows the model server answers through the
        # proxy, so an empty `served` cannot pass for a refusal.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            raw.sendall(b"GET /control HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            while raw.recv(65536):
                pass
        proxy.stop()
        unrecorded = [path for path in server.served if path not in _recorded_paths(proxy)]
    assert "/control" in server.served, "the model server answered nothing through the proxy"
    assert not unrecorded, f"answered by the model server, never recorded: {unrecorded}"
