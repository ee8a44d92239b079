"""`modelguard agent audit-proxy` as the sidecar runs it: a real process in front of a real HTTP
server on loopback, called over real sockets. Every request gets a signed, chained record, non-2xx
and refusals included; a body over the limit is refused without being held; the rate limit
answers 429; records the queue could not hold are counted in the chain; the log and its
checkpoints verify with `modelguard audit verify`, and an edited record does not."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest

MODELGUARD = str(Path(sys.executable).with_name("modelguard"))
MIB = 1 << 20


class Upstream:
    """A keep-alive HTTP/1.1 server on loopback that answers by path and counts what it got."""

    def __init__(self) -> None:
        self.body_bytes = 0
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Upstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def close_connections(self) -> None:
        """Closes every connection the server holds, from the server's side."""

        def close() -> None:
            for writer in list(self._writers):
                writer.close()

        self._loop.call_soon_threadsafe(close)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                fields = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(b":") for line in lines[1:] if line)
                }
                if b"content-length" in fields:
                    body = await reader.readexactly(int(fields[b"content-length"]))
                    self.body_bytes += len(body)
                elif fields.get(b"transfer-encoding") == b"chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        self.body_bytes += len(await reader.readexactly(size))
                        await reader.readexactly(2)
                status = {b"/missing": b"404 Not Found", b"/error": b"500 Internal Server Error"}
                answer = b'{"outputs":[1,2,3]}'
                if path == b"/stream":
                    # A chunked answer, in three pieces.
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n"
                    )
                    continue
                writer.write(
                    b"HTTP/1.1 "
                    + status.get(path, b"200 OK")
                    + b"\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Proxy:
    """The proxy process; its standard output (the input log) is read into `lines` unless
    `read_output` is False (then nobody reads it until `start_reading`)."""

    def __init__(self, upstream: int, *args: str, read_output: bool = True) -> None:
        self.port = _free_port()
        self.metrics_port = _free_port()
        command = [
            MODELGUARD, "agent", "audit-proxy", "--listen-host", "127.0.0.1",
            "--port", str(self.port), "--upstream-port", str(upstream),
            "--metrics-port", str(self.metrics_port), "--log-name", "team-a/model-0/inputs",
            "--max-request-bytes", str(MIB), "--checkpoint-records", "4", *args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None
        if read_output:
            self.start_reading()
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(self.process.stderr.read().decode())  # type: ignore[union-attr]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            assert time.monotonic() < deadline, "the proxy did not start listening"
            time.sleep(0.05)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                self.lines.append(raw.decode())

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0
        if self._reader is not None:
            self._reader.join(10)
        return self.process.stderr.read().decode()  # type: ignore[union-attr]

    def records(self) -> list[dict[str, typing.Any]]:
        return [json.loads(line) for line in self.lines if '"apiVersion"' in line]

    def requests(self) -> list[dict[str, typing.Any]]:
        return [r for r in self.records() if r["decision"] == "InferenceRequest"]

    def metrics(self) -> dict[str, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        return {
            name: float(value)
            for name, _, value in (line.rpartition(" ") for line in text.splitlines())
            if name and not name.startswith("#")
        }


@pytest.fixture
def upstream() -> typing.Iterator[Upstream]:
    with Upstream() as server:
        yield server


def _call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def _verify(log: Path, vkey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MODELGUARD, "audit", "verify", str(log), "--checkpoints", str(log), "--public-key", vkey],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_request_recorded_and_the_log_verifies(upstream: Upstream, tmp_path: Path) -> None:
    proxy = Proxy(upstream.port)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    body = json.dumps({"inputs": ["hello"]}).encode()
    assert _call(proxy.port, "POST", "/v1/predict", body, connection=connection) == (
        200,
        b'{"outputs":[1,2,3]}',
    )
    assert _call(proxy.port, "GET", "/missing", connection=connection)[0] == 404
    assert _call(proxy.port, "POST", "/error", b"x", connection=connection)[0] == 500
    assert _call(proxy.port, "GET", "/stream", connection=connection) == (200, b"abcdefgh")
    metrics = proxy.metrics()
    proxy.stop()

    requests = proxy.requests()
    assert [
        (r["details"]["method"], r["details"]["path"], r["details"]["status"]) for r in requests
    ] == [
        ("POST", "/v1/predict", 200),
        ("GET", "/missing", 404),
        ("POST", "/error", 500),
        ("GET", "/stream", 200),
    ]
    first = requests[0]["details"]
    assert first["requestBytes"] == len(body)
    assert first["requestSha256"] == __import__("hashlib").sha256(body).hexdigest()
    assert first["responseBytes"] == len(b'{"outputs":[1,2,3]}')
    assert first["caller"]["address"].startswith("127.0.0.1:")
    assert "headers" not in first
    assert "payload" not in first
    assert requests[3]["details"]["responseBytes"] == 8  # the chunked answer's data
    # One keep-alive connection to the proxy: the caller's port is the same every time.
    assert len({r["details"]["caller"]["address"] for r in requests}) == 1
    assert metrics['modelguard_audit_proxy_requests_total{code="200"}'] == 2
    assert metrics['modelguard_audit_proxy_requests_total{code="404"}'] == 1
    assert metrics['modelguard_audit_proxy_requests_total{code="500"}'] == 1

    log = tmp_path / "inputs.jsonl"
    # As `kubectl logs` gives it: the proxy's standard error first, among the records.
    log.write_text(
        "audit proxy: 0.0.0.0:8480 -> 127.0.0.1:8080, inputs Metadata\n" + "".join(proxy.lines)
    )
    records = proxy.records()
    assert records[0]["decision"] == "AuditChainStarted"
    assert records[-1]["decision"] == "AuditChainClosed"
    vkey = records[0]["details"]["publicKey"]
    verified = _verify(log, vkey)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "6 records in 1 segment, chain intact" in verified.stdout
    assert "checkpoints proven" in verified.stdout

    # An edited record (a 500 made a 200) no longer verifies.
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(log.read_text().replace('"status":500', '"status":200', 1))
    refused = _verify(tampered, vkey)
    assert refused.returncode != 0
    assert "edited" in refused.stdout + refused.stderr


def test_a_body_over_the_limit_is_refused_without_being_held(
    upstream: Upstream, tmp_path: Path
) -> None:
    proxy = Proxy(upstream.port)
    # Declared too large: refused before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: a\r\nContent-Length: 1073741824\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"spec.audit.maxRequestBytes" in answer
    # Streamed (chunked) well past the limit: cut off once past it, while 64 MiB more would come.
    sent = 0
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * (256 * 1024)
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        with contextlib.suppress(ConnectionError, TimeoutError):
            for _ in range(256):
                raw.sendall(chunk)
                sent += len(piece)
        answer = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while data := raw.recv(4096):
                answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 64 * MIB, "the proxy kept reading after the limit"
    # The model server got at most the limit; the proxy never held the body.
    assert upstream.body_bytes <= MIB
    status = Path(f"/proc/{proxy.process.pid}/status").read_text()
    peak_kib = int(
        next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    )
    assert peak_kib < 48 * 1024 + MIB // 1024, f"peak resident memory {peak_kib} KiB"
    proxy.stop()
    refused = [r for r in proxy.requests() if r["reason"] == "RequestTooLarge"]
    assert [r["details"]["status"] for r in refused] == [413, 413]
    assert refused[0]["details"]["declaredBytes"] == 1 << 30
    assert "requestSha256" not in refused[1]["details"]  # not read whole: no digest claimed


def test_rate_limit_answers_429_and_records_it(upstream: Upstream) -> None:
    proxy = Proxy(upstream.port, "--rate", "0.5", "--burst", "2")
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    statuses = [
        _call(proxy.port, "POST", "/v1/predict", b"{}", connection=connection)[0] for _ in range(4)
    ]
    metrics = proxy.metrics()
    proxy.stop()
    assert statuses == [200, 200, 429, 429]
    # The refused requests never reached the model server, and the connection stayed usable.
    assert upstream.requests == 2
    reasons = [r["reason"] for r in proxy.requests()]
    assert reasons == ["Answered", "Answered", "RateLimited", "RateLimited"]
    assert metrics['modelguard_audit_proxy_refused_total{reason="RateLimited"}'] == 2


def test_the_connection_bound_is_a_flag_and_is_recorded(upstream: Upstream) -> None:
    """`--max-connections` (what the builder passes from spec.audit.maxConnections) bounds the
    callers' connections: with 2, a third connection while two are held is answered 503 and
    recorded; the bound is named in the segment's first record beside the other limits."""
    proxy = Proxy(upstream.port, "--max-connections", "2")
    held = [http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10) for _ in range(2)]
    for connection in held:
        assert _call(proxy.port, "GET", "/held", connection=connection)[0] == 200
    third = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    status, answer = _call(proxy.port, "GET", "/third", connection=third)
    for connection in held:
        connection.close()
    time.sleep(0.3)
    # Once the held connections are gone, a new one is served again.
    assert _call(proxy.port, "GET", "/after")[0] == 200
    proxy.stop()
    assert status == 503
    assert b"spec.audit.maxConnections" in answer
    reasons = [(r["reason"], r["details"]["status"]) for r in proxy.requests()]
    assert reasons == [("Answered", 200)] * 2 + [("TooManyConnections", 503), ("Answered", 200)]
    assert proxy.records()[0]["details"]["limits"]["maxConnections"] == 2


def test_records_the_queue_cannot_hold_are_counted_in_the_chain(
    upstream: Upstream, tmp_path: Path
) -> None:
    # Nobody reads the proxy's output at first: once that pipe is full the record writer blocks,
    # the pipe to it and the queue (2 KiB) fill, and the requests after that are served
    # unrecorded.
    proxy = Proxy(upstream.port, "--queue-bytes", "2048", read_output=False)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    served = 0
    for _ in range(1500):
        assert _call(proxy.port, "POST", "/v1/predict", b"{}", connection=connection)[0] == 200
        served += 1
    proxy.start_reading()
    time.sleep(0.5)
    assert _call(proxy.port, "GET", "/after", connection=connection)[0] == 200
    served += 1
    metrics = proxy.metrics()
    proxy.stop()
    records = proxy.records()
    drops = [r for r in records if r["decision"] == "InputRecordsDropped"]
    assert drops, "no drop was recorded"
    dropped = sum(r["details"]["dropped"] for r in drops)
    assert dropped > 0
    assert len(proxy.requests()) + dropped == served
    assert metrics["modelguard_audit_proxy_records_dropped_total"] == dropped
    # The drops are part of the chain like any record: the log verifies as a whole.
    log = tmp_path / "inputs.jsonl"
    log.write_text("".join(proxy.lines))
    verified = _verify(log, records[0]["details"]["publicKey"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_payload_is_recorded_redacted(upstream: Upstream) -> None:
    proxy = Proxy(
        upstream.port,
        "--inputs", "Payload", "--redact-path", "$.user.email", "--redact-header", "x-user",
        "--identity-header", "x-caller",
    )  # fmt: skip
    body = json.dumps({"user": {"email": "alice@corp.example"}, "prompt": "hi"}).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer s3cr3t-token",
        "X-User": "alice",
        "X-Caller": "spiffe://cluster/ns/frontend/sa/web",
    }
    assert _call(proxy.port, "POST", "/v1/predict", body, headers)[0] == 200
    proxy.stop()
    output = "".join(proxy.lines)
    for secret in ("alice@corp.example", "s3cr3t-token", '"alice"'):
        assert secret not in output
    (record,) = proxy.requests()
    details = record["details"]
    assert details["caller"]["identity"] == "spiffe://cluster/ns/frontend/sa/web"
    assert details["payload"]["json"]["prompt"] == "hi"
    email = details["payload"]["json"]["user"]["email"]["redacted"]
    assert email["length"] == len("alice@corp.example")
    assert email["hmac"].startswith("hmac-sha256:")
    redacted_headers = {name for name, value in details["headers"] if isinstance(value, dict)}
    assert {"authorization", "x-user"} <= redacted_headers


def test_model_server_down_is_answered_502_and_recorded() -> None:
    proxy = Proxy(_free_port())
    assert _call(proxy.port, "POST", "/v1/predict", b"{}")[0] == 502
    proxy.stop()
    (record,) = proxy.requests()
    assert record["reason"] == "UpstreamFailed"
    assert record["details"]["status"] == 502
    assert "cannot connect" in record["details"]["error"]


def test_bad_arguments_are_named() -> None:
    done = subprocess.run(
        [MODELGUARD, "agent", "audit-proxy", "--port", "1", "--upstream-port", "2",
         "--log-name", "a/b", "--max-request-bytes", "10", "--redact-path", "user.email"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "redaction path 'user.email' does not start with $" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_closing_idle_connections_is_reconnected_not_answered_502(
    upstream: Upstream,
) -> None:
    proxy = Proxy(upstream.port)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    assert _call(proxy.port, "GET", "/a", connection=connection)[0] == 200
    upstream.close_connections()  # as a server's keep-alive timeout does
    time.sleep(0.3)
    assert _call(proxy.port, "GET", "/b", connection=connection)[0] == 200
    proxy.stop()
    assert [r["details"]["status"] for r in proxy.requests()] == [200, 200]
