"""sources.transport's read timeout of streamed bodies, against a loopback HTTP server: a body that
stops arriving fails after the timeout, a consumer that stops reading does not."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib

import pytest

from modelguard.sources import base, errors, transport

BODY_BYTES = 3 << 20
READ_TIMEOUT = 0.4


@contextlib.asynccontextmanager
async def _server(*, sent: int) -> collections.abc.AsyncIterator[str]:
    """An HTTP server announcing BODY_BYTES and sending the first `sent`, then going quiet."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {BODY_BYTES}\r\n\r\n".encode())
        writer.write(b"x" * sent)
        await writer.drain()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/blob"
    finally:
        server.close()
        # Handlers still sleeping are cancelled; their writers close with them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=1)


def _never(status: int, body: bytes, what: str) -> errors.SourceError:
    raise AssertionError(f"{what}: unexpected status {status}")


async def _read(url: str, *, pause_first: int = 0) -> int:
    """Bytes streamed from `url`; the consumer stops for 1.5 read timeouts after each of the first
    `pause_first` chunks."""
    client = transport.HttpClient(transport=base.Transport(read_timeout=READ_TIMEOUT, attempts=1))
    received = 0
    try:
        async with client.get(url, what="blob", headers=lambda _: {}, error_for=_never) as response:
            async for chunk in transport.iter_body(response, chunk_size=1 << 20, what="blob"):
                received += len(chunk)
                if pause_first > 0:
                    pause_first -= 1
                    await asyncio.sleep(1.5 * READ_TIMEOUT)
    finally:
        await client.aclose()
    return received


async def test_a_body_that_stops_arriving_fails_after_the_read_timeout() -> None:
    loop = asyncio.get_running_loop()
    async with _server(sent=BODY_BYTES // 3) as url:
        started = loop.time()
        # The server stays quiet for a minute: without a read timeout this would end in
        # wait_for's TimeoutError, not in the source's error.
        with pytest.raises(errors.SourceUnreachable, match="Timeout on reading data"):
            await asyncio.wait_for(_read(url), timeout=30)
        # Never before the timeout: waiting is what counts, not the pieces that did arrive.
        assert loop.time() - started >= READ_TIMEOUT


async def test_a_consumer_that_stops_reading_is_not_a_stalled_source() -> None:
    async with _server(sent=BODY_BYTES) as url:
        # Each pause outlasts the read timeout while the socket, paused, holds the rest.
        assert await _read(url, pause_first=3) == BODY_BYTES
