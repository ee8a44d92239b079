"""Checkpoints of the audit log (pure): C2SP tlog-checkpoint notes (https://c2sp.org/tlog-checkpoint)
signed with the audit key, and the origins that name the log's segments.

Each start of the operator opens a segment of the log, and each segment is a Merkle tree of its
own (the writer cannot continue a tree whose tail it never saw), so each has its own origin:
`<log name>/<segment>`, the segment being its start time and a random part,
`YYYYMMDD-HHMMSS-xxxxxxxx` (UTC). The checkpoint text is the origin, the tree size and the
base64 root, one line each; it is signed under the log's name, as Rekor signs the origins of its
shards under one name. Nothing here reads files or talks to the API server.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
import secrets
import typing

from modelguard.audit import keys, merkle, notes

_SEGMENT: typing.Final = re.compile(r"(\d{8})-(\d{6})-([0-9a-f]{8})")
_SIZE: typing.Final = re.compile(r"0|[1-9][0-9]{0,18}")
MAX_SIZE: typing.Final = 2**63 - 1


class Malformed(ValueError):
    """Not a checkpoint of this format; the message says why."""


def new_segment(now: datetime.datetime) -> str:
    """A segment name for a log started at `now`: sortable by time, unique by its random part."""
    return f"{now.astimezone(datetime.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def segment_start(segment: str) -> datetime.datetime | None:
    """When the segment started (from its name), or None when it is not a segment name."""
    match = _SEGMENT.fullmatch(segment)
    if match is None:
        return None
    try:
        return datetime.datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return None


def origin(log_name: str, segment: str) -> str:
    return f"{log_name}/{segment}"


def segment_of(origin_line: str, log_name: str) -> str | None:
    """The segment an origin names in the log `log_name`, or None when it names another log or
    no segment."""
    prefix = log_name + "/"
    if not origin_line.startswith(prefix):
        return None
    segment = origin_line[len(prefix) :]
    return segment if segment_start(segment) is not None else None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A tree head: the segment's origin, how many records, and their RFC 6962 root."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @property
    def root_base64(self) -> str:
        return base64.b64encode(self.root).decode()


def parse(text: str) -> Checkpoint:
    """The checkpoint a note's text holds; Malformed saying which line is wrong otherwise.
    Extension lines are accepted and ignored, as the format allows; ours never writes any."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise Malformed("a checkpoint is at least three lines: origin, tree size, root hash")
    origin_line, size_line, root_line, *extensions = lines[:-1]
    if not origin_line:
        raise Malformed("the origin line is empty")
    if not _SIZE.fullmatch(size_line) or int(size_line) > MAX_SIZE:
        raise Malformed(
            f"the tree size is not a decimal number without leading zeros: {size_line[:40]!r}"
        )
    try:
        root = base64.b64decode(root_line, validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != merkle.HASH_BYTES:
        raise Malformed(f"the root hash is not base64 of {merkle.HASH_BYTES} bytes")
    if any(not line for line in extensions):
        raise Malformed("an extension line is empty")
    return Checkpoint(origin=origin_line, size=int(size_line), root=root)


@dataclasses.dataclass(frozen=True)
class Signed:
    """A checkpoint as a signed note, ready to be stored."""

    checkpoint: Checkpoint
    note: str


def sign(checkpoint: Checkpoint, signer: keys.Signer) -> Signed:
    return Signed(checkpoint=checkpoint, note=notes.sign(checkpoint.text(), signer))


def open_signed(note: str, known: keys.Keyring) -> Checkpoint:
    """The checkpoint in a signed note that a known key signed; notes.NoteError or Malformed
    otherwise."""
    return parse(notes.open_note(note, known).text)
