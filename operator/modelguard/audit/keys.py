"""The installation's audit key: what tells this operator's records from any other text.

Every record carries `keyId` (which key) and `mac`, an HMAC-SHA256 under the key of the record's
`hash`. Whoever can only put text into the log (an S3 error message, a tenant's object name,
another container's output) cannot compute a `mac`, so `modelguard audit verify` with the key
accepts no record they wrote, a whole segment started "after a restart" included. The key is a
Secret in the operator's namespace: those who may read it may verify, and could also forge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pathlib
import secrets
import typing

MIN_BYTES: typing.Final = 32
"""An HMAC-SHA256 key shorter than its output would be the weak part."""
MAX_BYTES: typing.Final = 4096
# Separates the uses of the key, so that a key id is never a valid mac of anything.
_ID_CONTEXT: typing.Final = b"modelguard audit key id\x00"
_MAC_CONTEXT: typing.Final = b"modelguard audit record\x00"


class InvalidKey(ValueError):
    """The key file cannot be used; the message names the file and what is accepted."""


@dataclasses.dataclass(frozen=True, repr=False)
class Key:
    """An audit key; `repr` never shows the secret."""

    secret: bytes

    def __post_init__(self) -> None:
        if not MIN_BYTES <= len(self.secret) <= MAX_BYTES:
            raise InvalidKey(f"an audit key has {MIN_BYTES} to {MAX_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Key(id={self.id})"

    @property
    def id(self) -> str:
        """16 hex digits naming the key in every record; they reveal nothing of the secret."""
        return hmac.new(self.secret, _ID_CONTEXT, hashlib.sha256).hexdigest()[:16]

    def mac(self, record_hash: str) -> str:
        """The hex HMAC-SHA256 of a record's `hash`, which covers every other field."""
        return hmac.new(
            self.secret, _MAC_CONTEXT + record_hash.encode("ascii"), hashlib.sha256
        ).hexdigest()

    def verifies(self, record_hash: str, mac: str) -> bool:
        return hmac.compare_digest(self.mac(record_hash), mac)


def generate() -> Key:
    return Key(secrets.token_bytes(MIN_BYTES))


def load(path: pathlib.Path) -> Key:
    """The key in `path` (its raw bytes, as a mounted Secret key gives them, a trailing newline
    ignored); InvalidKey naming the file otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 2)
    except OSError as error:
        raise InvalidKey(f"audit key {path}: {error.strerror or error}") from None
    data = data.removesuffix(b"\n")
    if not MIN_BYTES <= len(data) <= MAX_BYTES:
        raise InvalidKey(
            f"audit key {path}: has {len(data)} bytes; expected {MIN_BYTES} to {MAX_BYTES} "
            "random bytes (e.g. `head -c 32 /dev/urandom`), as the chart's Secret holds"
        )
    return Key(data)
