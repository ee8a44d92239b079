"""Reading files below an HTTPS URL (plain http only when the URI says so).

HTTP has no folder listing that servers agree on, so an HTTPS source cannot say which files exist:
list_files raises ListingUnsupported and callers fetch exactly the files that the signed manifest
names. A file added on the server is then never fetched, so never served; a missing or changed one
fails as with any other source. Redirects are refused: the TrustPolicy binds the scheme, host and
port of the URI, and a redirect would read from wherever the server points instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from modelguard.sources import base, errors, locations, transport


def _no_headers(_: str) -> dict[str, str]:
    return {}


def _error_for(status: int, _body: bytes, what: str) -> errors.SourceError:
    if status in (404, 410):
        return errors.MissingFile(f"{what}: not found (HTTP {status})")
    if status in (401, 403):
        return errors.SourceDenied(f"{what}: HTTP {status}")
    if status >= 500:
        return errors.SourceUnreachable(f"{what}: HTTP {status}")
    return errors.BadResponse(f"{what}: HTTP {status}")


class HttpsSource:
    """Files below `https://host/path/`, fetched by name."""

    can_list = False

    def __init__(
        self, location: locations.HttpLocation, *, transport_settings: base.Transport
    ) -> None:
        self.location = location
        self.uri = str(location)
        self._client = transport.HttpClient(transport=transport_settings)

    async def __aenter__(self) -> HttpsSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_files(self) -> list[base.ObjectInfo]:
        raise errors.ListingUnsupported(
            f"{self.uri}: HTTP has no folder listing; the signed manifest names the files"
        )

    async def read_small(self, name: str, *, max_bytes: int) -> bytes:
        url = locations.http_url(self.location, name)
        async with self._client.get(
            url, what=url, headers=_no_headers, error_for=_error_for
        ) as response:
            return await transport.read_bounded(response, max_bytes=max_bytes, what=url)

    def stream(
        self, name: str, *, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        url = locations.http_url(self.location, name)
        return self._stream(url, chunk_size=chunk_size)

    async def _stream(self, url: str, *, chunk_size: int) -> AsyncGenerator[bytes, None]:
        async with self._client.get(
            url, what=url, headers=_no_headers, error_for=_error_for
        ) as response:
            async for chunk in transport.iter_body(response, chunk_size=chunk_size, what=url):
                yield chunk
