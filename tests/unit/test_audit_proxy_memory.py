"""What one caller's connection holds in the audit proxy, measured on the real proxy process: the
figure its memory limit is sized from (api/inputaudit.py), per connection held open the two ways
a caller can make the proxy buffer, against a model server on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path

import pytest

from modelguard.api import inputaudit

CONNECTIONS: typing.Final = 120
MIB: typing.Final = 1 << 20


def _rss(pid: int) -> int:
    """Resident bytes of the proxy and its record writer."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in (pid, *map(int, children)):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class _ModelServer:
    """A model server on loopback: `answer` False takes connections and never reads a byte (a
    busy server); True reads the request head and answers with a body larger than any buffer."""

    def __init__(self, *, answer: bool) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while not self.stopping.is_set():
                connection, _ = self.listener.accept()
                self.held.append(connection)
                if self.answer:
                    threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            piece = b"x" * 65536
            while not self.stopping.is_set():
                connection.sendall(piece)

    def close(self) -> None:
        self.stopping.set()
        for connection in [self.listener, *self.held]:
            connection.close()


def _proxy(upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("modelguard")),
            *("agent", "audit-proxy", "--port", str(port), "--listen-host", "127.0.0.1"),
            *("--upstream-port", str(upstream), "--log-name", "t/p/inputs"),
            *("--max-request-bytes", str(64 * MIB), "--inputs", "Payload"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the audit proxy did not start")
            time.sleep(0.1)


def _settled(pid: int) -> int:
    """The proxy's RSS once it stops growing (its buffers full, every connection paused): no
    growth of a MiB over three seconds, so that a proxy slowed by a busy machine is not taken
    for a settled one."""
    samples = [_rss(pid)]
    for _ in range(180):
        time.sleep(0.5)
        samples.append(_rss(pid))
        if len(samples) > 6 and samples[-1] - samples[-7] < MIB:
            break
    return samples[-1]


def _send_bodies(port: int) -> list[socket.socket]:
    """Callers each sending a body larger than every buffer to a server that reads none."""
    callers = []
    head = b"POST /v1 HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % (32 * MIB)
    for _ in range(CONNECTIONS):
        caller = socket.create_connection(("127.0.0.1", port))
        caller.sendall(head)
        caller.setblocking(False)
        callers.append(caller)
    piece = b"a" * 65536
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        moved = False
        for caller in callers:
            with contextlib.suppress(BlockingIOError):
                moved = caller.send(piece) > 0 or moved
        if not moved:
            time.sleep(0.2)
    return callers


def _read_nothing(port: int) -> list[socket.socket]:
    """Callers each asking for a large answer and never reading it."""
    callers = []
    for _ in range(CONNECTIONS):
        caller = socket.create_connection(("127.0.0.1", port))
        caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        caller.sendall(b"GET /v1/models HTTP/1.1\r\nHost: m\r\n\r\n")
        callers.append(caller)
    return callers


@pytest.mark.parametrize(
    ("answer", "hold"),
    [
        pytest.param(False, _send_bodies, id="bodies-to-a-server-that-does-not-read"),
        pytest.param(True, _read_nothing, id="answers-nobody-reads"),
    ],
)
def test_a_connection_held_open_stays_within_what_the_limit_gives_it(
    answer: bool, hold: typing.Callable[[int], list[socket.socket]]
) -> None:
    server = _ModelServer(answer=answer)
    process, port = _proxy(server.port)
    callers: list[socket.socket] = []
    try:
        idle = _settled(process.pid)
        callers = hold(port)
        held = _settled(process.pid)
        per_connection = (held - idle) / CONNECTIONS
        print(
            f"\naudit proxy: {idle / MIB:.0f} MiB idle, {per_connection / 1024:.0f} KiB per"
            f" connection held open ({CONNECTIONS} connections); budget"
            f" {inputaudit.PROXY_BASE_MEMORY_MIB} MiB +"
            f" {inputaudit.PROXY_CONNECTION_MEMORY_MIB} MiB per connection"
        )
        assert process.poll() is None, "the proxy died"
        # The buffers were filled: a measure of nothing would pass any budget.
        assert per_connection > 256 * 1024
        assert per_connection <= inputaudit.PROXY_CONNECTION_MEMORY_MIB * MIB
        assert idle <= inputaudit.PROXY_BASE_MEMORY_MIB * MIB
    finally:
        for caller in callers:
            caller.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.close()
