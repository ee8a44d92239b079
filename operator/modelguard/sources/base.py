"""The interface every artifact source offers, and the settings they share.

A source is a folder of files. The control plane reads only the small signature bundle
(`read_small`); the in-pod agent lists the folder (`list_files`) and streams every file
(`stream`), several at once, hashing while it downloads. Names are always relative to the folder and
checked by locations.check_name before any I/O.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import AsyncGenerator

# Big enough that hashing and the event loop see few, large chunks; small enough that many files
# in parallel stay within a few MiB each.
DEFAULT_CHUNK_SIZE = 1 << 20


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One file of a source: its name relative to the folder, and its size in bytes."""

    name: str
    size: int


@dataclasses.dataclass(frozen=True)
class Transport:
    """Network settings of HTTP-based sources (S3 and HTTPS)."""

    # PEM certificates of the CAs to trust instead of the system's (a private CA), held in memory:
    # no file is written for them. TLS is always verified.
    ca_pem: bytes | None = None
    connect_timeout: float = 10.0
    # Longest wait for the next bytes of an answer, not for a whole download.
    read_timeout: float = 60.0
    # Parallel connections per source: how many files may stream at once.
    max_connections: int = 16
    # Attempts of a request that failed before any byte of its body was used.
    attempts: int = 3
    # Host names may resolve to private (non-global) addresses: the TrustPolicy source says
    # allowPrivateAddresses. Loopback, link-local and metadata addresses stay refused.
    private_addresses: bool = False


class Source(typing.Protocol):
    """A folder of model artifacts. Use as `async with`; close releases connections."""

    # The source's URI as configured (never holds credentials), for messages.
    uri: str
    # False when the source cannot enumerate its files (HTTPS): list_files raises
    # ListingUnsupported, and callers fetch the files a signed manifest names.
    can_list: bool

    async def read_small(self, name: str, *, max_bytes: int) -> bytes:
        """The whole file `name`; TooLarge, without reading on, when it exceeds `max_bytes`."""
        ...

    async def list_files(self) -> list[ObjectInfo]:
        """Every file below the folder, sorted by name."""
        ...

    def stream(
        self, name: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of `name` in chunks of at most `chunk_size`. An early stop should go through
        contextlib.aclosing, so that the connection is released at once."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> typing.Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...
