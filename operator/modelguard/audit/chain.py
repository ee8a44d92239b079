"""Verification of an audit log (pure): is every record unchanged, present and in its place?

The input is lines as `kubectl logs` or the log file gives them, and the installation's audit
key. A record counts only when its `mac` verifies under the key: every other line, whatever it
looks like (the operator's other output, interleaved; text an outsider got into the log, a
whole forged segment included; records of another installation), is not this operator's and is
skipped, and the lines that looked like records are counted and named in the summary. A record
with seq 0 and `prev` of zeros starts a new segment (the operator restarted); inside a segment
each record must follow the one before it, so a record of ours that is edited, deleted, moved or
cut off still shows: by its hash, or by the gap it leaves.

What this cannot see: a missing tail or a whole missing segment (nothing follows to notice), and
a chain recomputed by someone who holds the key. Signed checkpoints are meant to close these.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing

from modelguard.audit import keys, records

_HEX_DIGEST: typing.Final = re.compile(r"[0-9a-f]{64}")
# The first key of every record as the sink writes it (sorted keys): a log line that merely
# mentions the format is not mistaken for a record.
_MARKER: typing.Final = re.compile(r'"apiVersion"\s*:\s*"' + re.escape(records.API_VERSION) + '"')
# Text fields every record has; `object` and `details` are optional.
_TEXT_FIELDS: typing.Final = ("time", "decision", "reason", "message")


@dataclasses.dataclass(frozen=True)
class Result:
    records: int
    """Records checked before the first problem (all of them when intact)."""
    segments: int
    problem: str | None = None
    line: int | None = None
    """1-based line of the problem; None when intact, or when the problem is the whole input."""
    foreign: int = 0
    """Lines that carry the record marker but are not records of this key: ignored."""
    first_foreign: int | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is None:
            return (
                f"{_counted(self.records, 'record')} in {_counted(self.segments, 'segment')}, "
                f"chain intact{self._foreign_note()}"
            )
        if self.line is None:
            return self.problem + self._foreign_note()
        return f"line {self.line}: {self.problem}{self._foreign_note()}"

    def _foreign_note(self) -> str:
        if not self.foreign:
            return ""
        if self.foreign == 1:
            return (
                f"; 1 line that looks like an audit record is not this installation's (line "
                f"{self.first_foreign}: no valid mac under the key), ignored"
            )
        return (
            f"; {self.foreign} lines that look like audit records are not this installation's "
            f"(first: line {self.first_foreign}: no valid mac under the key), ignored"
        )


class _Broken(Exception):
    """A problem found at the current line; it ends the verification."""


@dataclasses.dataclass
class _Segment:
    seq: int
    hash: str


def verify(lines: typing.Iterable[str], *, key: keys.Key) -> Result:
    """Checks every audit record of `key` in `lines`, in order; stops at the first problem."""
    count = 0
    segments = 0
    foreign = 0
    first_foreign: int | None = None
    current: _Segment | None = None
    number = 0
    for number, text in enumerate(lines, start=1):
        marker = _MARKER.search(text)
        if marker is None:
            continue
        candidate = _authentic(text, marker_at=marker.start(), key=key)
        if candidate is None:
            foreign += 1
            first_foreign = first_foreign or number
            continue
        try:
            record = _parse(candidate)
            current = _follow(current, record)
        except _Broken as problem:
            return Result(
                records=count,
                segments=segments,
                problem=str(problem),
                line=number,
                foreign=foreign,
                first_foreign=first_foreign,
            )
        if record["seq"] == 0:
            segments += 1
        count += 1
    if count == 0:
        return Result(
            records=0,
            segments=0,
            problem=f"no audit records ({records.API_VERSION}) of key {key.id} in "
            f"{_counted(number, 'line')}",
            foreign=foreign,
            first_foreign=first_foreign,
        )
    return Result(records=count, segments=segments, foreign=foreign, first_foreign=first_foreign)


def _authentic(text: str, *, marker_at: int, key: keys.Key) -> dict[str, typing.Any] | None:
    """The JSON object on this line if `key` made its hash (its mac verifies), else None.

    Only the hash is authenticated here; that the content still matches it is `_parse`'s check,
    so an edit of a record of ours is reported as an edit, not skipped.
    """
    # Prefixes that `kubectl logs --timestamps` or `--prefix` add end before the object starts.
    start = text.rfind("{", 0, marker_at)
    if start < 0:
        return None
    try:
        record = json.loads(text[start:])
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON and integers too long to convert. A record of ours
        # cut off here leaves a gap in its segment, which is reported where the gap shows.
        return None
    if not isinstance(record, dict) or record.get("keyId") != key.id:
        return None
    seal, mac = record.get("hash"), record.get("mac")
    if not (isinstance(seal, str) and _HEX_DIGEST.fullmatch(seal)):
        return None
    if not (isinstance(mac, str) and _HEX_DIGEST.fullmatch(mac) and key.verifies(seal, mac)):
        return None
    return record


def _parse(record: dict[str, typing.Any]) -> records.Record:
    """The record, checked field by field; _Broken when it is malformed or edited."""
    if record.get("apiVersion") != records.API_VERSION or record.get("kind") != records.KIND:
        raise _Broken(
            f"apiVersion/kind are not {records.API_VERSION}/{records.KIND}: "
            f"{_shown(record.get('apiVersion'))}/{_shown(record.get('kind'))}"
        )
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise _Broken(f"seq is not a non-negative integer: {_shown(seq)}")
    prev = record.get("prev")
    if not isinstance(prev, str) or not _HEX_DIGEST.fullmatch(prev):
        raise _Broken(f"seq {seq}: prev is not 64 lowercase hex digits: {_shown(prev)}")
    for field in _TEXT_FIELDS:
        if not isinstance(record.get(field), str):
            raise _Broken(f"seq {seq}: {field} is missing or not a string")
    try:
        expected = records.digest(record)
    except (ValueError, RecursionError):
        raise _Broken(f"seq {seq}: has values JSON cannot hash exactly") from None
    if expected != record["hash"]:
        raise _Broken(f"seq {seq} was edited: its hash does not match its content")
    return record


def _follow(current: _Segment | None, record: records.Record) -> _Segment:
    """The segment state after `record`; _Broken when it does not follow the record before it."""
    seq: int = record["seq"]
    prev: str = record["prev"]
    if seq == 0:
        if prev != records.GENESIS:
            raise _Broken("seq 0 starts a segment, but its prev is not 64 zeros")
        return _Segment(seq=0, hash=record["hash"])
    if current is None:
        raise _Broken(
            f"the chain starts at seq {seq}: the records before it (from seq 0) are missing"
        )
    expected = current.seq + 1
    if seq > expected:
        missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
        raise _Broken(f"seq {seq} follows seq {current.seq}: {missing} deleted or moved")
    if seq < expected:
        raise _Broken(
            f"seq {seq} follows seq {current.seq}: a record was inserted, repeated or moved"
        )
    if prev != current.hash:
        raise _Broken(
            f"seq {seq} does not chain to seq {current.seq} (prev differs): a record was "
            "replaced or inserted"
        )
    return _Segment(seq=seq, hash=record["hash"])


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _shown(value: object) -> str:
    """A value for a message, bounded: the input may be anything."""
    text = json.dumps(value) if isinstance(value, str | int | None) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."
