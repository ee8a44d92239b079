"""Typed failures of artifact sources, each with a machine-readable reason.

The reason is what a status condition, an Event and the agent's one-line exit message carry; the
message says what happened to which file, and never holds a credential.
"""

from __future__ import annotations


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
