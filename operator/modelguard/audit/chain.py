"""Verification of an audit log against its checkpoints (pure, streaming).

The input is lines as `kubectl logs` or the log file gives them, the log's public keys and the
checkpoints found where the operator published them. A record counts only when its `sig` verifies
under one of the keys: every other line, whatever it looks like (the operator's other output,
interleaved; text an outsider got into the log; records of another log or key), is skipped, and
the lines that looked like records are counted and named in the summary.

Records are checked one by one (their hash), against the one before them (seq and `prev`), and
per segment against the segment's Merkle tree: each record is a leaf, and wherever a checkpoint
names a tree size the root computed from the records must be the one the checkpoint signed. So
the records up to a checkpoint are exactly those the operator wrote (inclusion), and two
checkpoints of a segment are consistent (both are roots of the same records). Only the tree's
frontier is held, O(log n) hashes per segment, and the log is read once.

What the checkpoints add to the chain: a missing tail (the log ends before a checkpoint's size), a
removed segment (checkpoints name a segment the log does not hold), a chain rewritten from an edit
onwards (the records no longer give the signed root), a segment that was never checkpointed
(forged by whoever holds the key, or its checkpoints lost), and an old checkpoint offered in
place of newer ones, which shows where a later segment names the last checkpoint before it, or
where the log goes on long after the last checkpoint although one is made every few minutes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import typing

from modelguard.audit import checkpoints, keys, merkle, notes, records

_HEX_DIGEST: typing.Final = re.compile(r"[0-9a-f]{64}")
_KEY_ID: typing.Final = re.compile(r"[0-9a-f]{8}")
# The first key of every record as the sink writes it (sorted keys): a log line that merely
# mentions the format is not mistaken for a record.
_MARKER: typing.Final = re.compile(r'"apiVersion"\s*:\s*"' + re.escape(records.API_VERSION) + '"')
# Text fields every record has; `object` and `details` are optional.
_TEXT_FIELDS: typing.Final = ("time", "decision", "reason", "message")
# How long past the cadence a checkpoint may take to be made and published before its absence
# counts: the writer makes one within a second of being due, and retries its publication.
_CADENCE_GRACE: typing.Final = datetime.timedelta(seconds=60)


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A tree size and root that the records of a segment must give, and where it comes from."""

    size: int
    root: bytes
    where: str


class Anchors:
    """The checkpoints a verifier holds, per segment origin, each size once."""

    def __init__(self) -> None:
        self._by_origin: dict[str, dict[int, Anchor]] = {}
        self.loaded = 0
        """Checkpoints of this log that were read (duplicates included)."""
        self.other_logs = 0
        """Checkpoints of other logs (signed by other keys under other names), ignored."""

    def add(self, origin: str, anchor: Anchor) -> str | None:
        """Adds the anchor; a problem when another one gives the same size another root: the
        key signed two different histories of one segment."""
        sizes = self._by_origin.setdefault(origin, {})
        known = sizes.get(anchor.size)
        if known is None:
            sizes[anchor.size] = anchor
            return None
        if known.root == anchor.root:
            return None
        return (
            f"{anchor.where} and {known.where} give segment {origin} at size {anchor.size} two "
            "different roots: the audit key signed two histories of it (the key was used by "
            "someone else, or one of them was forged with it)"
        )

    def of(self, origin: str) -> list[Anchor]:
        return sorted(self._by_origin.get(origin, {}).values(), key=lambda anchor: anchor.size)

    def origins(self) -> list[str]:
        return sorted(self._by_origin)


class LoadProblem(Exception):
    """A checkpoint that cannot be trusted; the message names it and says why."""


def load_anchors(found: typing.Iterable[tuple[str, str]], *, keyring: keys.Keyring) -> Anchors:
    """The checkpoints in `found` ((where, signed note) pairs); LoadProblem at the first one of
    this log that does not verify. A note is of this log when a signature names the log or its
    origin is a segment of it; notes of other logs are counted and ignored."""
    anchors = Anchors()
    for where, note in found:
        checkpoint = _checkpoint(where, note, keyring=keyring)
        if checkpoint is None:
            anchors.other_logs += 1
            continue
        anchors.loaded += 1
        if checkpoint.size == 0:
            # The empty tree: true of every segment, and our writer never signs one.
            if checkpoint.root != merkle.EMPTY_ROOT:
                raise LoadProblem(
                    f"checkpoint {where}: 0 records, but not the root of the empty tree"
                )
            continue
        problem = anchors.add(
            checkpoint.origin,
            Anchor(size=checkpoint.size, root=checkpoint.root, where=f"checkpoint {where}"),
        )
        if problem is not None:
            raise LoadProblem(problem)
    return anchors


def _checkpoint(where: str, note: str, *, keyring: keys.Keyring) -> checkpoints.Checkpoint | None:
    try:
        checkpoint = checkpoints.open_signed(note, keyring)
    except notes.Unverified as unverified:
        ours = any(signature.name == keyring.name for signature in unverified.signatures)
        try:
            claimed = checkpoints.parse(unverified.text).origin
        except checkpoints.Malformed:
            claimed = ""
        if not ours and checkpoints.segment_of(claimed, keyring.name) is None:
            return None
        others = ", ".join(
            f"{signature.name}+{signature.id}" for signature in unverified.signatures
        )
        raise LoadProblem(
            f"checkpoint {where}: a checkpoint of log {keyring.name} signed by {others}, which "
            "is none of the public keys given: a key of this log missing from --public-key "
            "(after a rotation give every key), or a forgery"
        ) from None
    except (notes.NoteError, checkpoints.Malformed) as error:
        raise LoadProblem(f"checkpoint {where}: not a signed checkpoint: {error}") from None
    if checkpoints.segment_of(checkpoint.origin, keyring.name) is None:
        raise LoadProblem(
            f"checkpoint {where}: signed by this log's key, but its origin "
            f"{_shown(checkpoint.origin)} is not a segment of log {keyring.name}"
        )
    return checkpoint


@dataclasses.dataclass(frozen=True)
class Result:
    records: int
    """Records checked before the first problem (all of them when intact)."""
    segments: int
    problem: str | None = None
    line: int | None = None
    """1-based line of the problem; None when intact, or when it is not at one line."""
    foreign: int = 0
    """Lines that carry the record marker but no signature of the keys: ignored."""
    first_foreign: int | None = None
    checked: bool = True
    """Whether checkpoints were checked at all."""
    proven: int = 0
    """Checkpoints (and links between segments) the records were found to match."""
    unproven: int = 0
    """Records after the newest checkpoint of their segment: signed and chained, not proven."""
    first_unproven: tuple[int, str] | None = None
    """(line, origin) of the first such record."""
    skipped: int = 0
    """Checkpointed segments that started before --since and are not in the log."""
    other_logs: int = 0

    @property
    def intact(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            where = "" if self.line is None else f"line {self.line}: "
            return where + self.problem + "".join(f"; {note}" for note in self._foreign_note())
        head = (
            f"{_counted(self.records, 'record')} in {_counted(self.segments, 'segment')}, "
            "chain intact"
        )
        return head + "".join(f"; {note}" for note in [*self._notes(), *self._foreign_note()])

    def _notes(self) -> list[str]:
        if not self.checked:
            return [
                "no checkpoints checked (--no-checkpoints): a missing tail, a removed segment "
                "or a chain rewritten with the key would not show"
            ]
        out = [f"{_counted(self.proven, 'checkpoint')} proven"]
        if self.unproven:
            line, origin = self.first_unproven or (0, "")
            out.append(
                f"{_counted(self.unproven, 'record')} after the newest checkpoint of {origin} "
                f"(from line {line}) signed and chained, not yet proven"
            )
        if self.skipped:
            out.append(
                f"{_counted(self.skipped, 'checkpointed segment')} started before --since, "
                "not checked"
            )
        if self.other_logs:
            out.append(f"{_counted(self.other_logs, 'checkpoint')} of other logs ignored")
        return out

    def _foreign_note(self) -> list[str]:
        if not self.foreign:
            return []
        if self.foreign == 1:
            return [
                f"1 line that looks like an audit record is not signed by the keys given "
                f"(line {self.first_foreign}), ignored"
            ]
        return [
            f"{self.foreign} lines that look like audit records are not signed by the keys "
            f"given (first: line {self.first_foreign}), ignored"
        ]


class _Broken(Exception):
    """A problem found at the current line (or at `line`); it ends the verification."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclasses.dataclass
class _Segment:
    origin: str
    first_line: int
    seq: int
    hash: str
    anchors: list[Anchor]
    interval: datetime.timedelta | None
    tree: merkle.Frontier = dataclasses.field(default_factory=merkle.Frontier)
    next_anchor: int = 0
    proven: int = 0
    """Size of the last checkpoint the records matched."""
    open_line: int = 0
    """Line of the first record after the last checkpoint the records matched."""
    last_line: int = 0
    closed_at: int | None = None
    first_unproven: tuple[datetime.datetime | None, int, int] | None = None
    """(time, line, seq) of the first record no checkpoint will cover."""
    roots: dict[int, bytes] = dataclasses.field(default_factory=dict)
    """Roots at the sizes checkpoints named, for links that later segments make to this one."""

    @property
    def newest_anchor(self) -> int:
        return self.anchors[-1].size if self.anchors else 0


@dataclasses.dataclass
class _State:
    keyring: keys.Keyring
    anchors: Anchors | None
    since: datetime.datetime | None
    count: int = 0
    segments: int = 0
    foreign: int = 0
    first_foreign: int | None = None
    proven: int = 0
    current: _Segment | None = None
    """The segment being read; None before the first seq 0."""
    chain_seq: int | None = None
    chain_hash: str = ""
    finished: dict[str, _Segment] = dataclasses.field(default_factory=dict)
    unproven: int = 0
    first_unproven: tuple[int, str] | None = None


def verify(
    lines: typing.Iterable[str],
    *,
    keyring: keys.Keyring,
    anchors: Anchors | None,
    since: datetime.datetime | None = None,
) -> Result:
    """Checks every record of the log `keyring` names in `lines`, in order, against `anchors`
    (None: the chain only); stops at the first problem."""
    state = _State(keyring=keyring, anchors=anchors, since=since)
    number = 0
    try:
        for number, text in enumerate(lines, start=1):
            marker = _MARKER.search(text)
            if marker is None:
                continue
            candidate = _authentic(text, marker_at=marker.start(), keyring=keyring)
            if candidate is None:
                state.foreign += 1
                state.first_foreign = state.first_foreign or number
                continue
            _take(state, _parse(candidate), line=number)
    except _Broken as problem:
        return _result(state, problem=str(problem), line=problem.line or number)
    if state.count == 0:
        return _result(
            state,
            problem=f"no audit records ({records.API_VERSION}) of log {keyring.name} signed by "
            f"{_keys(keyring)} in {_counted(number, 'line')}",
        )
    try:
        _finish(state)
    except _Broken as problem:
        return _result(state, problem=str(problem), line=problem.line)
    missing = _missing_segments(state)
    if missing is not None:
        return _result(state, problem=missing)
    skipped = _skipped_segments(state)
    return dataclasses.replace(_result(state), skipped=skipped)


def _result(state: _State, *, problem: str | None = None, line: int | None = None) -> Result:
    return Result(
        records=state.count,
        segments=state.segments,
        problem=problem,
        line=line,
        foreign=state.foreign,
        first_foreign=state.first_foreign,
        checked=state.anchors is not None,
        proven=state.proven,
        unproven=state.unproven,
        first_unproven=state.first_unproven,
        other_logs=state.anchors.other_logs if state.anchors is not None else 0,
    )


def _keys(keyring: keys.Keyring) -> str:
    ids = sorted(verifier.id for verifier in keyring.by_id.values())
    return ("key " if len(ids) == 1 else "keys ") + ", ".join(ids)


def _authentic(text: str, *, marker_at: int, keyring: keys.Keyring) -> dict[str, typing.Any] | None:
    """The JSON object on this line if one of the keys signed its hash, else None.

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
    if not isinstance(record, dict):
        return None
    key_id, seal = record.get("keyId"), record.get("hash")
    if not (isinstance(key_id, str) and _KEY_ID.fullmatch(key_id)):
        return None
    if not (isinstance(seal, str) and _HEX_DIGEST.fullmatch(seal)):
        return None
    verifier = keyring.get(keyring.name, int(key_id, 16))
    if verifier is None or not records.signature_verifies(record, verifier):
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


def _take(state: _State, record: records.Record, *, line: int) -> None:
    """Follows `record` on its line: the chain, the segment, the tree and its checkpoints."""
    seq: int = record["seq"]
    if seq == 0:
        if record["prev"] != records.GENESIS:
            raise _Broken("seq 0 starts a segment, but its prev is not 64 zeros")
        _finish(state)
        _start(state, record, line=line)
    else:
        _follow(state, record)
    state.chain_seq, state.chain_hash = seq, record["hash"]
    state.count += 1
    if state.current is not None:
        _grow(state, state.current, record, line=line)


def _follow(state: _State, record: records.Record) -> None:
    """_Broken when `record` does not follow the record before it in its segment."""
    seq: int = record["seq"]
    if state.chain_seq is None:
        raise _Broken(
            f"the chain starts at seq {seq}: the records before it (from seq 0) are missing"
        )
    expected = state.chain_seq + 1
    if seq > expected:
        missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
        raise _Broken(f"seq {seq} follows seq {state.chain_seq}: {missing} deleted or moved")
    if seq < expected:
        raise _Broken(
            f"seq {seq} follows seq {state.chain_seq}: a record was inserted, repeated or moved"
        )
    if record["prev"] != state.chain_hash:
        raise _Broken(
            f"seq {seq} does not chain to seq {state.chain_seq} (prev differs): a record was "
            "replaced or inserted"
        )
    segment = state.current
    if segment is not None and segment.closed_at is not None:
        raise _Broken(
            f"seq {seq} follows the record that closed segment {segment.origin} (line "
            f"{segment.closed_at}): records were added after the operator stopped"
        )


def _start(state: _State, record: records.Record, *, line: int) -> None:
    """Opens the segment that the seq 0 `record` starts."""
    state.segments += 1
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    assert isinstance(details, dict)
    origin = details.get("origin")
    if state.anchors is None:
        # Without checkpoints there is nothing to check a tree against.
        state.current = None
        return
    if not isinstance(origin, str):
        raise _Broken("seq 0 starts a segment but names no origin (details.origin)")
    if checkpoints.segment_of(origin, state.keyring.name) is None:
        raise _Broken(
            f"seq 0 starts a segment of another log: its origin {_shown(origin)} is not a "
            f"segment of log {state.keyring.name}"
        )
    if origin in state.finished:
        raise _Broken(
            f"segment {origin} starts again (it started at line "
            f"{state.finished[origin].first_line}): a copy of its records"
        )
    _link(state, details.get("previous"), named_at=line, by=origin)
    anchors = state.anchors.of(origin)
    if not anchors:
        raise _Broken(
            f"segment {origin} has no checkpoint: none of the checkpoints given names it. It "
            "was never published (the operator's log says why), its checkpoints were removed, "
            "or the segment was written by someone else holding the key"
        )
    interval = None
    every = details.get("checkpointEvery")
    seconds = every.get("seconds") if isinstance(every, dict) else None
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
        interval = datetime.timedelta(seconds=seconds)
    state.current = _Segment(
        origin=origin,
        first_line=line,
        seq=0,
        hash=record["hash"],
        anchors=anchors,
        interval=interval,
    )


def _link(state: _State, previous: object, *, named_at: int, by: str) -> None:
    """A segment's start names the last checkpoint the operator found of the segment before it:
    an anchor for that segment, checked now when it was read already."""
    if not isinstance(previous, dict) or state.anchors is None:
        return
    origin, size, root = previous.get("origin"), previous.get("size"), previous.get("root")
    if not (isinstance(origin, str) and isinstance(size, int) and isinstance(root, str)):
        return
    if checkpoints.segment_of(origin, state.keyring.name) is None or isinstance(size, bool):
        return
    if size < 1:
        return
    try:
        anchor_root = checkpoints.parse(f"{origin}\n{size}\n{root}\n").root
    except checkpoints.Malformed:
        return
    anchor = Anchor(
        size=size,
        root=anchor_root,
        where=f"the start of segment {by} (line {named_at})",
    )
    problem = state.anchors.add(origin, anchor)
    if problem is not None:
        raise _Broken(problem)
    done = state.finished.get(origin)
    if done is None:
        return
    if size > done.tree.size:
        raise _Broken(
            _cut(done, anchor)
            + " (the checkpoints past its end are gone too: an old checkpoint was left in "
            "their place)"
        )
    known = done.roots.get(size)
    if known is None and size == done.tree.size:
        known = done.tree.root()
    if known is not None and known != anchor_root:
        raise _Broken(
            f"segment {origin} at size {size} does not match {anchor.where}, which names it as "
            "the segment before: its records were changed"
        )
    if known is not None:
        state.proven += 1


def _grow(state: _State, segment: _Segment, record: records.Record, *, line: int) -> None:
    """Adds the record to its segment's tree and checks the checkpoints at the new size."""
    segment.tree.append(records.leaf(record))
    segment.last_line = line
    size = segment.tree.size
    if size == segment.proven + 1:
        segment.open_line = line
    while segment.next_anchor < len(segment.anchors):
        anchor = segment.anchors[segment.next_anchor]
        if anchor.size > size:
            break
        segment.next_anchor += 1
        root = segment.tree.root()
        if anchor.root != root:
            raise _Broken(
                f"the records of segment {segment.origin} up to seq {size - 1} do not give the "
                f"root that {anchor.where} signed for {size} records: one of seq "
                f"{segment.proven} to {size - 1} (lines {segment.open_line} to {line}) was "
                "changed, inserted, removed or moved, or the chain was rewritten from there on"
            )
        segment.roots[size] = root
        segment.proven = size
        state.proven += 1
    if record.get("decision") == records.Decision.AUDIT_CHAIN_CLOSED:
        segment.closed_at = line
    if size > segment.newest_anchor:
        _unproven(segment, record, line=line)


def _unproven(segment: _Segment, record: records.Record, *, line: int) -> None:
    """A record no checkpoint covers: fine at the end of a live segment, not when the log goes
    on so long after it that the writer must have made a checkpoint of it."""
    time = _time(record)
    if segment.first_unproven is None:
        segment.first_unproven = (time, line, record["seq"])
        return
    started, first_line, first_seq = segment.first_unproven
    if segment.interval is None or started is None or time is None:
        return
    if time - started > 2 * segment.interval + _CADENCE_GRACE:
        raise _Broken(
            f"seq {first_seq} (line {first_line}) and the records after it are covered by no "
            f"checkpoint, yet the segment goes on {int((time - started).total_seconds())} s "
            f"after it although its start says a checkpoint is made every "
            f"{int(segment.interval.total_seconds())} s: its newer checkpoints are missing "
            "(removed, never published, or an old checkpoint given in their place)"
        )


def _finish(state: _State) -> None:
    """Closes the current segment: its records must reach every checkpoint of it."""
    segment = state.current
    if segment is None:
        return
    state.current = None
    state.finished[segment.origin] = segment
    remaining = segment.anchors[segment.next_anchor :]
    if remaining:
        raise _Broken(_cut(segment, remaining[-1]), line=segment.last_line)
    unproven = segment.tree.size - segment.proven
    if unproven:
        state.unproven += unproven
        if state.first_unproven is None and segment.first_unproven is not None:
            state.first_unproven = (segment.first_unproven[1], segment.origin)


def _cut(segment: _Segment, anchor: Anchor) -> str:
    size = segment.tree.size
    missing = (
        f"the last {anchor.size - size} records (seq {size} to {anchor.size - 1}) are missing"
        if anchor.size - size > 1
        else f"the last record (seq {size}) is missing"
    )
    return (
        f"segment {segment.origin} ends at seq {size - 1}, but {anchor.where} shows "
        f"{anchor.size} records: {missing}"
    )


def _missing_segments(state: _State) -> str | None:
    """The first checkpointed segment the log does not hold (one that started before --since
    excepted)."""
    if state.anchors is None:
        return None
    for origin in state.anchors.origins():
        if origin in state.finished or _before_since(state, origin):
            continue
        anchors = state.anchors.of(origin)
        newest = anchors[-1]
        return (
            f"segment {origin} is not in the log, but {newest.where} shows "
            f"{_counted(newest.size, 'record')} of it: the segment was removed"
        )
    return None


def _skipped_segments(state: _State) -> int:
    if state.anchors is None:
        return 0
    return sum(
        1
        for origin in state.anchors.origins()
        if origin not in state.finished and _before_since(state, origin)
    )


def _before_since(state: _State, origin: str) -> bool:
    if state.since is None:
        return False
    segment = checkpoints.segment_of(origin, state.keyring.name)
    started = checkpoints.segment_start(segment) if segment is not None else None
    return started is not None and started < state.since


def _time(record: records.Record) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(record["time"])
    except (TypeError, ValueError):
        return None


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _shown(value: object) -> str:
    """A value for a message, bounded: the input may be anything."""
    text = json.dumps(value) if isinstance(value, str | int | None) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."
