"""Typed failures of artifact sources, each with a machine-readable reason.

The reason is what a status condition, an Event and the agent's one-line exit message carry; the
message says what happened to which file, and never holds a credential.
"""

from __future__ import annotations

import typing


class SourceError(Exception):
    """Base of every source failure: `reason` for machines, `message` for people."""

    reason = "SourceError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidSource(SourceError):
    """The source URI or its settings cannot be used (unknown scheme, no bucket, ...)."""

    reason = "InvalidSource"


class SourceUnreachable(SourceError):
    """No answer worth trusting: connection refused, DNS, TLS, timeouts, server errors."""

    reason = "SourceUnreachable"


class SourceDenied(SourceError):
    """The source answered but refused us: bad credentials, signature or permissions."""

    reason = "SourceDenied"


class SourceNotFound(SourceError):
    """The source itself (bucket, mounted claim, folder) does not exist."""

    reason = "SourceNotFound"


class MissingFile(SourceError):
    """A named file is not in the source."""

    reason = "MissingFile"


class TooLarge(SourceError):
    """A file is bigger than the caller allows."""

    reason = "TooLarge"


class UnsafePath(SourceError):
    """A name is absolute, climbs with `..`, uses backslashes or control characters, or is a
    symlink or other non-regular file."""

    reason = "UnsafePath"


class ListingUnsupported(SourceError):
    """The source cannot enumerate its files (plain HTTPS has no folder listing)."""

    reason = "ListingUnsupported"


class BadResponse(SourceError):
    """The server answered something the protocol does not allow (unparsable listing, ...)."""

    reason = "SourceBadResponse"


class AddressRefused(SourceError):
    """The source's host is, or resolves to, a loopback, link-local or cloud metadata address
    that no TrustPolicy source names."""

    reason = "SourceAddressRefused"


class RedirectRefused(SourceError):
    """The source answered with a redirect: sources are read only where the policy binds them."""

    reason = "SourceRedirectRefused"


class EndpointNotAllowed(SourceError):
    """The credentials name an S3 endpoint other than the one the source is bound to."""

    reason = "SourceEndpointNotAllowed"


class ObjectExists(SourceError):
    """A write that may only create an object found one already under its key (HTTP 412 to
    If-None-Match: *): nothing was overwritten."""

    reason = "ObjectExists"


# What a source says is its own: shown as data, never as our words.
MAX_QUOTED: typing.Final = 256


def quoted(text: str | bytes) -> str:
    """`text` from a source (a server's error message, a header) as a bounded, quoted literal:
    at most MAX_QUOTED characters, control characters, newlines and quotes escaped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    cut = len(text) > MAX_QUOTED
    shown = text[:MAX_QUOTED].encode("unicode_escape").decode("ascii").replace("'", "\\'")
    return f"'{shown}'" + ("..." if cut else "")


def answered(text: str | bytes) -> str:
    """`the source answered: '...'`, for a message that carries what a server said."""
    return f"the source answered: {quoted(text)}"
