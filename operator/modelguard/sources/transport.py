"""HTTP plumbing shared by the S3 and HTTPS sources and the S3 backup stores: one aiohttp session
per client, verified TLS, bounded retries, and every transport failure turned into a typed error.

Requests go only to the URL's own scheme, host and port, which the TrustPolicy bound: a redirect
is refused, not followed, and addresses.py keeps names from leading to non-global addresses (unless
the source admits private ones), and never to loopback, link-local or metadata addresses. What a
server says reaches messages only bounded and quoted.
Bodies are read as stored (no transparent decompression): the bytes hashed are the bytes signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import yarl

from modelguard.sources import addresses, base, errors

# Statuses worth another attempt: the server or a proxy in front of it is briefly unwell.
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Error bodies are read for their reason only.
_MAX_ERROR_BODY = 64 << 10
# aiohttp's read buffer per connection (its default is 64 KiB); it pauses the socket at twice
# this. Network reads arrive in pieces of up to 256 KiB: below 1 MiB, reading pauses and resumes
# (two epoll calls) nearly every piece. Memory stays bounded by it times the connection limit.
_READ_BUFSIZE = 1 << 20
_BACKOFF_SECONDS = 0.2

# (status, body prefix, what) -> the error to raise for a non-success answer.
ErrorFor = Callable[[int, bytes, str], errors.SourceError]


class HttpClient:
    """GET requests for one source; the session is made on first use (inside the event loop)."""

    def __init__(self, *, transport: base.Transport) -> None:
        self._transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        # Made on the first https request only: loading a CA store costs tens of milliseconds,
        # which a plain-http endpoint (a MinIO in the cluster) should not pay per source.
        if self._ssl is None:
            ca_pem = self._transport.ca_pem
            # An explicit bundle replaces the system store: a private CA is trusted alone.
            self._ssl = _system_context() if ca_pem is None else _context(ca_pem)
        return self._ssl

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            transport = self._transport
            self._session = aiohttp.ClientSession(
                # TLS settings go with each https request (see _send), verified always.
                connector=aiohttp.TCPConnector(
                    limit=transport.max_connections,
                    resolver=addresses.GuardedResolver(
                        private_addresses=transport.private_addresses
                    ),
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=transport.connect_timeout,
                    sock_read=transport.read_timeout,
                ),
                auto_decompress=False,
                # aiohttp asks for gzip by default; the bytes wanted are the stored ones.
                headers={"Accept-Encoding": "identity"},
                read_bufsize=_READ_BUFSIZE,
                # Proxies from the environment are not followed silently.
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def get(
        self,
        url: str,
        *,
        what: str,
        headers: Callable[[str], dict[str, str]],
        error_for: ErrorFor,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response to GET `url`, released on exit. `headers(url)` is called
        per attempt (a signature carries the time); `what` names the file in messages."""
        async with self.request(
            "GET", url, what=what, headers=headers, error_for=error_for
        ) as response:
            yield response

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Callable[[str], dict[str, str]],
        error_for: ErrorFor,
        body: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful (2xx) response to `method` `url`, released on exit, under the same rules
        as every read: the bound address, no redirect, typed failures. `body` is bytes (sent
        again on a retry) or a factory of a stream of chunks (sent once: a stream cannot be
        replayed, so a failed attempt is the failure)."""
        session = self._get_session()
        attempts = max(1, self._transport.attempts) if not callable(body) else 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._send(
                    session,
                    method,
                    url,
                    what=what,
                    headers=headers,
                    data=body() if callable(body) else body,
                )
            except errors.SourceUnreachable:
                if attempt == attempts:
                    raise
                await asyncio.sleep(_BACKOFF_SECONDS * attempt)
                continue
            if 200 <= response.status < 300:
                try:
                    yield response
                finally:
                    response.release()
                return
            try:
                failed = await read_error_body(response)
            finally:
                response.release()
            error = error_for(response.status, failed, what)
            if response.status not in _RETRY_STATUSES or attempt == attempts:
                raise error
            await asyncio.sleep(_BACKOFF_SECONDS * attempt)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        *,
        what: str,
        headers: Callable[[str], dict[str, str]],
        data: bytes | AsyncIterator[bytes] | None = None,
    ) -> aiohttp.ClientResponse:
        host = urllib.parse.urlsplit(url).hostname or ""
        with translated(what):
            # encoded=True: the path is sent exactly as it was signed.
            response = await session.request(
                method,
                yarl.URL(url, encoded=True),
                headers=headers(url),
                data=data,
                allow_redirects=False,
                ssl=self._ssl_context() if url.startswith("https://") else True,
            )
        try:
            _check_peer(
                response,
                host=host,
                what=what,
                private_addresses=self._transport.private_addresses,
            )
        except errors.SourceError:
            response.release()
            raise
        if response.status in _REDIRECT_STATUSES:
            location = response.headers.get("Location", "")
            response.release()
            # Not even to the same host: the policy bound this URL, not wherever it points.
            raise errors.RedirectRefused(
                f"{what}: HTTP {response.status} redirect to {errors.quoted(location)} not "
                "followed; name the final location in the spec and the TrustPolicy's sources"
            )
        return response


def _check_peer(
    response: aiohttp.ClientResponse, *, host: str, what: str, private_addresses: bool
) -> None:
    """The address actually connected to, checked once more (the resolver checked it first)."""
    connection = response.connection
    socket_transport = connection.transport if connection is not None else None
    peer = socket_transport.get_extra_info("peername") if socket_transport is not None else None
    if not peer:
        return
    try:
        addresses.check_peer(host, str(peer[0]), private_addresses=private_addresses)
    except addresses.RefusedAddress as error:
        raise errors.AddressRefused(f"{what}: {error}") from None


@functools.cache
def _system_context() -> ssl.SSLContext:
    # One per process: a context is safe to share between connections and event loops.
    return ssl.create_default_context()


@functools.lru_cache(maxsize=16)
def _context(ca_pem: bytes) -> ssl.SSLContext:
    # In memory, and a few kept: Secrets that share a CA share its context, and nothing grows
    # with the number of distinct bundles seen.
    try:
        return ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as error:
        raise errors.InvalidSource(f"CA bundle: not PEM certificates ({error})") from None


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turns aiohttp and socket failures inside the block into typed source errors."""
    try:
        yield
    except aiohttp.ClientConnectorDNSError as error:
        if isinstance(error.os_error, addresses.RefusedAddress):
            raise errors.AddressRefused(f"{what}: {error.os_error}") from None
        raise errors.SourceUnreachable(f"{what}: name resolution failed: {_cause(error)}") from None
    except addresses.RefusedAddress as error:
        raise errors.AddressRefused(f"{what}: {error}") from None
    except (aiohttp.ClientSSLError, ssl.SSLError) as error:
        raise errors.SourceUnreachable(f"{what}: TLS failed: {_cause(error)}") from None
    except aiohttp.ClientConnectorError as error:
        raise errors.SourceUnreachable(f"{what}: cannot connect: {_cause(error)}") from None
    except aiohttp.ClientPayloadError as error:
        raise errors.SourceUnreachable(f"{what}: transfer broken off: {_cause(error)}") from None
    except (aiohttp.ClientConnectionError, ConnectionError) as error:
        raise errors.SourceUnreachable(f"{what}: connection lost: {_cause(error)}") from None
    except TimeoutError:
        raise errors.SourceUnreachable(f"{what}: timed out") from None
    except aiohttp.InvalidURL as error:
        raise errors.InvalidSource(f"{what}: invalid URL {_cause(error)}") from None
    except aiohttp.ClientError as error:
        raise errors.BadResponse(f"{what}: {_cause(error)}") from None


def _cause(error: BaseException) -> str:
    # aiohttp's messages may carry what the server sent (a header, a status line).
    return errors.quoted(str(error)) if str(error) else type(error).__name__


async def read_error_body(response: aiohttp.ClientResponse) -> bytes:
    # The status alone still says enough when the error body cannot be read. read(n) returns
    # what has arrived so far, not n bytes: read on to the bound or the end, or a busy network
    # cuts the server's reason short.
    parts: list[bytes] = []
    total = 0
    try:
        while total < _MAX_ERROR_BODY:
            chunk = await response.content.read(_MAX_ERROR_BODY - total)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return b""
    return b"".join(parts)


async def read_bounded(response: aiohttp.ClientResponse, *, max_bytes: int, what: str) -> bytes:
    """The whole body, refused with TooLarge as soon as it passes `max_bytes`."""
    length = response.content_length
    if length is not None and length > max_bytes:
        raise errors.TooLarge(f"{what}: {length} bytes, more than the {max_bytes} allowed")
    parts: list[bytes] = []
    total = 0
    with translated(what):
        async for chunk in response.content.iter_chunked(_READ_BUFSIZE):
            total += len(chunk)
            if total > max_bytes:
                raise errors.TooLarge(f"{what}: more than the {max_bytes} bytes allowed")
            parts.append(chunk)
    return b"".join(parts)


async def iter_body(
    response: aiohttp.ClientResponse, *, chunk_size: int, what: str
) -> AsyncIterator[bytes]:
    """The body in chunks of at most `chunk_size`, transport failures typed."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    content = response.content
    with _StallWatch(response) as watch:
        while True:
            with translated(what):
                # One buffered network read at a time: read(n) would join several into a new
                # bytes object, copying every byte once more before the consumer sees it.
                watch.waiting()
                chunk, end_of_http_chunk = await content.readchunk()
                watch.arrived()
            if not chunk:
                if end_of_http_chunk:
                    continue  # a chunked-encoding boundary, not the end
                return
            for start in range(0, len(chunk), chunk_size):
                yield chunk if len(chunk) <= chunk_size else chunk[start : start + chunk_size]


class _StallWatch:
    """The read timeout of a streamed body, kept by one coarse timer.

    aiohttp keeps its read timeout (sock_read) by cancelling and making a timer for every piece
    that arrives: thousands per large file, several percent of a download's CPU. While a body
    streams, that timeout is switched off and this one keeps it instead: it fails the read, as
    aiohttp would, once it has waited for the network longer than the timeout; a slow consumer
    (a paused socket) never counts. Checked every quarter of the timeout, so a stall is caught
    after 1 to 1.25 timeouts.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        connection = response.connection
        # None once the whole body is buffered and the connection released: nothing to watch.
        self._protocol = connection.protocol if connection is not None else None
        self._timeout = (self._protocol.read_timeout if self._protocol is not None else None) or 0.0
        self._content = response.content
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> _StallWatch:
        if self._protocol is not None and self._timeout > 0:
            self._protocol.read_timeout = None
            self._timer = self._loop.call_later(self._timeout / 4, self._check)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._protocol is not None and self._timeout > 0:
            if self._timer is not None:
                self._timer.cancel()
            self._protocol.read_timeout = self._timeout

    def waiting(self) -> None:
        self._since = self._loop.time()

    def arrived(self) -> None:
        self._since = None

    def _check(self) -> None:
        if self._since is not None and self._loop.time() - self._since >= self._timeout:
            # What aiohttp's own read timeout raises, so that it reads the same downstream.
            self._content.set_exception(
                aiohttp.SocketTimeoutError("Timeout on reading data from socket")
            )
            self._timer = None
            return
        self._timer = self._loop.call_later(self._timeout / 4, self._check)
