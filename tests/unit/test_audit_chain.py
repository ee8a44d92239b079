"""The audit log's verifier: canonical hashing and signed records; a verifier that names the line
of every edit, deletion, insertion or reordering, skips other log lines and never fails with a
traceback; and, with the checkpoints, one test per attack the chain alone could not see."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import io
import json
import typing

import hypothesis
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import strategies

from modelguard.audit import chain, checkpoints, keys, merkle, records, sink

T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
SUBJECT = records.Subject(
    api_version="modelguard.dev/v1alpha1",
    kind="ModelDeployment",
    namespace="team-nlp",
    name="sentiment",
    uid="0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b",
    generation=3,
)
LOG = "modelguard-system/modelguard"
# A fixed key: the known-answer test below depends on it.
SIGNER = keys.Signer(
    name=LOG, private=ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
)
KEYRING = keys.Keyring.of([SIGNER.verifier])
OTHER = keys.generate(LOG)
"""Someone else's key under our log's name: what an attacker without ours can sign with."""


@dataclasses.dataclass
class Segment:
    lines: list[str]
    made: list[checkpoints.Signed]
    origin: str

    @property
    def final(self) -> checkpoints.Checkpoint:
        return self.made[-1].checkpoint


def _segment(
    count: int,
    *,
    name: str = "20300102-030405-0a1b2c3d",
    every: int = 4,
    seconds: int = 300,
    step: datetime.timedelta = datetime.timedelta(seconds=1),
    start: datetime.datetime = T0,
    previous: checkpoints.Checkpoint | None = None,
    close: bool = True,
    signer: keys.Signer = SIGNER,
) -> Segment:
    """A segment as the operator writes it: AuditChainStarted (and its checkpoint), decisions with
    a checkpoint every `every` records, and (`close`) AuditChainClosed with the last checkpoint.
    The clock moves on `step` per record."""
    now = [start]

    def clock() -> datetime.datetime:
        now[0] += step
        return now[0]

    out = io.StringIO()
    audit = sink.start(
        out,
        instance="modelguard-0",
        signer=signer,
        cadence=sink.Cadence(records=every, seconds=seconds),
        previous=previous,
        clock=clock,
        segment=name,
    )
    made = [audit.checkpoint(force=True)]
    for number in range(1, count - (1 if close else 0)):
        audit.record(
            records.Decision.VERIFIED,
            reason="SignatureVerified",
            message=f"decision {number}",
            subject=SUBJECT,
            details={"version": f"1.{number}.0"},
        )
        made.append(audit.checkpoint())
    if close:
        made.append(audit.close(reason="OperatorStopped", message="stop"))
    return Segment(
        lines=out.getvalue().splitlines(), made=[c for c in made if c], origin=audit.origin
    )


def _anchors(*segments: Segment, keyring: keys.Keyring = KEYRING) -> chain.Anchors:
    return chain.load_anchors(
        [(f"#{n}", c.note) for n, c in enumerate(c for s in segments for c in s.made)],
        keyring=keyring,
    )


def _verify(
    lines: list[str], *segments: Segment, since: datetime.datetime | None = None
) -> chain.Result:
    return chain.verify(lines, keyring=KEYRING, anchors=_anchors(*segments), since=since)


def _edited(line: str, **changes: typing.Any) -> str:
    record = json.loads(line)
    record.update(changes)
    return records.line(record)


def _resigned(line: str, *, signer: keys.Signer = SIGNER, **changes: typing.Any) -> str:
    """An edit by someone who holds `signer` and recomputes the record's own hash and signature
    (not the chain after it)."""
    record = json.loads(line)
    record.update(changes)
    record["keyId"] = signer.verifier.id
    record["hash"] = records.digest(record)
    message = records.signed_message(signer.name, record["hash"])
    record["sig"] = base64.b64encode(signer.sign(message)).decode()
    return records.line(record)


def _rechained(
    lines: list[str], *, signer: keys.Signer, edit_at: int, **changes: typing.Any
) -> list[str]:
    """The segment rewritten from record `edit_at` onwards: edited there, then every record after
    it hashed and chained again, signed by `signer`. What someone who can rewrite the log and
    holds a key does to make the chain consistent again."""
    following = [json.loads(line) for line in lines[edit_at:]]
    following[0].update(changes)
    return _chained(lines[:edit_at], following, signer=signer)


def _chained(
    head: list[str], following: list[dict[str, typing.Any]], *, signer: keys.Signer
) -> list[str]:
    """`head`, then `following` numbered and chained after it, each signed by `signer`."""
    out = list(head)
    for record in following:
        last = json.loads(out[-1])
        out.append(
            _resigned(records.line(record), signer=signer, seq=last["seq"] + 1, prev=last["hash"])
        )
    return out


INTACT = _segment(8)
A = _segment(9, name="20300102-030405-0a1b2c3d")
B = _segment(7, name="20300102-040000-1b2c3d4e", previous=A.final)
C = _segment(6, name="20300102-050000-2c3d4e5f", previous=B.final)
ABC = [*A.lines, *B.lines, *C.lines]


# --- The chain: each record, and the one before it ----------------------------------------------


@pytest.mark.parametrize(
    ("lines", "line", "problem"),
    [
        pytest.param(
            [
                *INTACT.lines[:2],
                _edited(INTACT.lines[2], message="nothing to see"),
                *INTACT.lines[3:],
            ],
            3,
            "seq 2 was edited: its hash does not match its content",
            id="edited-field",
        ),
        pytest.param(
            [*INTACT.lines[:2], _resigned(INTACT.lines[2], message="forged"), *INTACT.lines[3:]],
            4,
            "seq 3 does not chain to seq 2 (prev differs): a record was replaced or inserted",
            id="edited-field-and-its-own-hash-by-the-keys-holder",
        ),
        pytest.param(
            [
                *INTACT.lines[:2],
                _resigned(INTACT.lines[2], signer=OTHER, message="forged"),
                *INTACT.lines[3:],
            ],
            4,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="edited-and-resigned-without-the-key",
        ),
        pytest.param(
            [*INTACT.lines[:2], *INTACT.lines[3:]],
            3,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="deleted-record",
        ),
        pytest.param(
            [*INTACT.lines[:1], *INTACT.lines[4:]],
            2,
            "seq 4 follows seq 0: seq 1 to 3 deleted or moved",
            id="deleted-records",
        ),
        pytest.param(
            [*INTACT.lines[:3], INTACT.lines[2], *INTACT.lines[3:]],
            4,
            "seq 2 follows seq 2: a record was inserted, repeated or moved",
            id="inserted-copy-of-a-record",
        ),
        pytest.param(
            [*INTACT.lines[:2], INTACT.lines[3], INTACT.lines[2], *INTACT.lines[4:]],
            3,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="reordered-records",
        ),
        pytest.param(
            [*INTACT.lines[:2], INTACT.lines[2][: len(INTACT.lines[2]) // 2], *INTACT.lines[3:]],
            4,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="truncated-line",
        ),
        pytest.param(
            INTACT.lines[2:],
            1,
            "the chain starts at seq 2: the records before it (from seq 0) are missing",
            id="head-missing",
        ),
        pytest.param(
            [_edited(INTACT.lines[0], prev="1" * 64), *INTACT.lines[1:]],
            1,
            "seq 0 was edited: its hash does not match its content",
            id="first-record-prev-edited",
        ),
        pytest.param(
            [_resigned(INTACT.lines[0], prev="1" * 64), *INTACT.lines[1:]],
            1,
            "seq 0 starts a segment, but its prev is not 64 zeros",
            id="first-record-prev-resigned",
        ),
        pytest.param(
            [*INTACT.lines[:1], _resigned(INTACT.lines[1], seq=True), *INTACT.lines[2:]],
            2,
            "seq is not a non-negative integer: true",
            id="seq-not-a-number",
        ),
        pytest.param(
            [*INTACT.lines[:1], _resigned(INTACT.lines[1], kind="Other"), *INTACT.lines[2:]],
            2,
            'apiVersion/kind are not audit.modelguard.dev/v1/AuditRecord: "audit.modelguard',
            id="wrong-kind",
        ),
        pytest.param(
            [*INTACT.lines[:1], _resigned(INTACT.lines[1], reason=None), *INTACT.lines[2:]],
            2,
            "seq 1: reason is missing or not a string",
            id="reason-missing",
        ),
    ],
)
def test_verifier_names_the_line_and_what_is_wrong(
    lines: list[str], line: int, problem: str
) -> None:
    for anchors in (_anchors(INTACT), None):
        result = chain.verify(lines, keyring=KEYRING, anchors=anchors)
        assert not result.intact
        assert result.line == line
        assert result.problem is not None
        assert result.problem.startswith(problem), result.problem
        assert result.summary().startswith(f"line {line}: {problem}")


OTHER_LINES = [
    "[2030-01-02 03:04:05,678] kopf.objects [INFO] [team-nlp/sentiment] Handler succeeded.",
    "",
    "not json at all {",
    '{"apiVersion": "v1", "kind": "Event"}',
    "writing audit.modelguard.dev/v1 records to standard output",
]


@pytest.mark.parametrize(
    ("lines", "summary"),
    [
        pytest.param(
            ABC,
            "22 records in 3 segments, chain intact; 11 checkpoints proven",
            id="three-segments",
        ),
        pytest.param(
            [OTHER_LINES[0], A.lines[0], *OTHER_LINES, *A.lines[1:3], OTHER_LINES[0], *A.lines[3:]],
            "9 records in 1 segment, chain intact; 3 checkpoints proven",
            id="other-log-lines-skipped",
        ),
        pytest.param(
            [f"2030-01-02T03:04:05.678901234Z {line}" for line in A.lines],
            "9 records in 1 segment, chain intact; 3 checkpoints proven",
            id="kubectl-logs-timestamps",
        ),
        pytest.param(
            [line + "\r\n" for line in A.lines],
            "9 records in 1 segment, chain intact; 3 checkpoints proven",
            id="crlf-line-ends",
        ),
    ],
)
def test_intact_logs_verify(lines: list[str], summary: str) -> None:
    result = _verify(lines, *(A, B, C) if len(lines) == len(ABC) else (A,))
    assert result.intact, result.summary()
    assert result.summary() == summary


def test_a_live_segment_has_records_not_proven_yet() -> None:
    live = _segment(7, every=100, close=False)
    with_tail = _segment(7, every=100, close=False)
    assert [c.checkpoint.size for c in live.made] == [1]
    result = _verify(with_tail.lines, with_tail)
    assert result.intact
    assert result.summary() == (
        "7 records in 1 segment, chain intact; 1 checkpoint proven; 6 records after the newest "
        f"checkpoint of {with_tail.origin} (from line 2) signed and chained, not yet proven"
    )


def test_without_checkpoints_the_summary_says_what_would_not_show() -> None:
    result = chain.verify(A.lines[:-2], keyring=KEYRING, anchors=None)
    assert result.summary() == (
        "7 records in 1 segment, chain intact; no checkpoints checked (--no-checkpoints): a "
        "missing tail, a removed segment or a chain rewritten with the key would not show"
    )


def test_input_without_records_is_not_intact() -> None:
    result = _verify(OTHER_LINES, A)
    assert not result.intact
    assert result.line is None
    assert result.summary() == (
        f"no audit records (audit.modelguard.dev/v1) of log {LOG} signed by key "
        f"{SIGNER.verifier.id} in 5 lines"
    )


# --- One test per attack ---------------------------------------------------------------------


def test_attack_edit() -> None:
    at = A.lines[4].index("decision 4") + len("decision ")
    edited = A.lines[4][:at] + "5" + A.lines[4][at + 1 :]
    result = _verify([*A.lines[:4], edited, *A.lines[5:]], A)
    assert result.summary() == "line 5: seq 4 was edited: its hash does not match its content"


def test_attack_delete() -> None:
    result = _verify([*A.lines[:4], *A.lines[5:]], A)
    assert result.summary() == "line 5: seq 5 follows seq 3: seq 4 deleted or moved"


def test_attack_insert_a_record_signed_by_the_key() -> None:
    # Whoever holds the key signs a record of their own and chains it in: the records after it
    # no longer chain, and rechained they no longer give the checkpoints' roots.
    forged = _resigned(A.lines[3], message="approved by nobody")
    assert _verify([*A.lines[:3], forged, *A.lines[3:]], A).summary() == (
        "line 5: seq 3 follows seq 3: a record was inserted, repeated or moved"
    )
    new = {**json.loads(A.lines[3]), "message": "approved by nobody"}
    inserted = _chained(
        A.lines[:3], [new, *(json.loads(line) for line in A.lines[3:])], signer=SIGNER
    )
    assert chain.verify(inserted, keyring=KEYRING, anchors=None).intact
    result = _verify(inserted, A)
    assert result.summary().startswith(
        f"line 5: the records of segment {A.origin} up to seq 4 do not give the root that "
        "checkpoint #1 signed for 5 records: one of seq 1 to 4 (lines 2 to 5) was changed"
    )


def test_attack_insert_an_unsigned_record_is_not_a_record() -> None:
    forged = _resigned(A.lines[3], signer=OTHER, message="approved by nobody")
    result = _verify([*A.lines[:3], forged, *A.lines[3:]], A)
    assert result.intact
    assert result.summary().endswith(
        "1 line that looks like an audit record is not signed by the keys given (line 4), ignored"
    )


def test_attack_reorder() -> None:
    result = _verify([*A.lines[:3], A.lines[4], A.lines[3], *A.lines[5:]], A)
    assert result.summary() == "line 4: seq 4 follows seq 2: seq 3 deleted or moved"


def test_attack_truncated_tail() -> None:
    # The chain alone cannot see it: nothing follows the cut.
    assert chain.verify(A.lines[:6], keyring=KEYRING, anchors=None).intact
    result = _verify(A.lines[:6], A)
    assert result.summary() == (
        f"line 6: segment {A.origin} ends at seq 5, but checkpoint #2 shows 9 records: the "
        "last 3 records (seq 6 to 8) are missing"
    )


def test_attack_truncated_tail_of_an_earlier_segment() -> None:
    result = _verify([*A.lines[:-1], *B.lines], A, B)
    assert result.summary() == (
        f"line 8: segment {A.origin} ends at seq 7, but checkpoint #2 shows 9 records: the "
        "last record (seq 8) is missing"
    )


def test_attack_removed_segment() -> None:
    assert chain.verify([*A.lines, *C.lines], keyring=KEYRING, anchors=None).intact
    result = _verify([*A.lines, *C.lines], A, B, C)
    assert result.line is None
    assert result.summary() == (
        f"segment {B.origin} is not in the log, but checkpoint #5 shows 7 records of it: the "
        "segment was removed"
    )


def test_attack_removed_segment_with_its_checkpoints() -> None:
    # The segment after it names it: removing its checkpoints too does not hide it.
    result = _verify([*A.lines, *C.lines], A, C)
    assert result.summary() == (
        f"segment {B.origin} is not in the log, but the start of segment {C.origin} (line 10) "
        "shows 7 records of it: the segment was removed"
    )


def test_attack_chain_rewritten_from_an_edit_onwards_without_the_signing_key() -> None:
    # Someone who can rewrite the log and recompute every hash and prev, but signs with a key of
    # their own: none of the rewritten records is this log's, so the segment ends at the edit.
    rewritten = _rechained(A.lines, signer=OTHER, edit_at=3, message="nothing happened")
    assert chain.verify(rewritten, keyring=KEYRING, anchors=None).intact
    result = _verify(rewritten, A)
    assert result.summary() == (
        f"line 3: segment {A.origin} ends at seq 2, but checkpoint #2 shows 9 records: the last "
        "6 records (seq 3 to 8) are missing; 6 lines that look like audit records are not "
        "signed by the keys given (first: line 4), ignored"
    )


def test_attack_chain_rewritten_from_an_edit_onwards_with_the_signing_key() -> None:
    # Whoever holds the key rewrites the chain consistently; the checkpoints published before
    # still hold the roots of what was really written.
    rewritten = _rechained(A.lines, signer=SIGNER, edit_at=3, message="nothing happened")
    assert chain.verify(rewritten, keyring=KEYRING, anchors=None).intact
    result = _verify(rewritten, A)
    assert result.summary() == (
        f"line 5: the records of segment {A.origin} up to seq 4 do not give the root that "
        "checkpoint #1 signed for 5 records: one of seq 1 to 4 (lines 2 to 5) was changed, "
        "inserted, removed or moved, or the chain was rewritten from there on"
    )


def test_attack_checkpoint_signed_by_another_key() -> None:
    forged = checkpoints.sign(
        checkpoints.Checkpoint(origin=A.origin, size=6, root=merkle.root([])), OTHER
    )
    found = [(f"#{n}", c.note) for n, c in enumerate(A.made)] + [("#forged", forged.note)]
    with pytest.raises(chain.LoadProblem) as raised:
        chain.load_anchors(found, keyring=KEYRING)
    assert str(raised.value) == (
        f"checkpoint #forged: a checkpoint of log {LOG} signed by {LOG}+{OTHER.verifier.id}, "
        "which is none of the public keys given: a key of this log missing from --public-key "
        "(after a rotation give every key), or a forgery"
    )
    # Altered after signing: the known key's signature fails.
    altered = A.made[1].note.replace("\n5\n", "\n6\n")
    with pytest.raises(
        chain.LoadProblem,
        match=r"checkpoint #altered: not a signed checkpoint: "
        r"the signature of key .* does not verify",
    ):
        chain.load_anchors([("#altered", altered)], keyring=KEYRING)


def test_checkpoints_of_other_logs_are_ignored_and_counted() -> None:
    other_log = _segment(3, signer=keys.generate("team-b/modelguard"))
    anchors = chain.load_anchors(
        [(f"#{n}", c.note) for n, c in enumerate([*A.made, *other_log.made])], keyring=KEYRING
    )
    assert (anchors.loaded, anchors.other_logs) == (3, 2)
    result = chain.verify(A.lines, keyring=KEYRING, anchors=anchors)
    assert result.summary().endswith("; 2 checkpoints of other logs ignored")


def test_attack_old_checkpoint_replayed_in_place_of_the_newer_ones() -> None:
    # A's tail is cut and its checkpoints past the cut removed: what is left (the old checkpoint
    # at 5 records) agrees with the cut log. The next segment named A's last checkpoint.
    kept = dataclasses.replace(A, made=[c for c in A.made if c.checkpoint.size <= 5])
    result = _verify([*A.lines[:5], *B.lines], kept, B)
    assert result.summary() == (
        f"line 6: segment {A.origin} ends at seq 4, but the start of segment {B.origin} (line 6) "
        "shows 9 records: the last 4 records (seq 5 to 8) are missing (the checkpoints past its "
        "end are gone too: an old checkpoint was left in their place)"
    )


def test_attack_old_checkpoint_replayed_while_the_log_goes_on() -> None:
    # The live segment's newer checkpoints are removed; the log goes on for far longer than the
    # cadence without one, which the writer would never do.
    live = _segment(40, every=1000, seconds=60, step=datetime.timedelta(seconds=5), close=False)
    assert [c.checkpoint.size for c in live.made] == [1, 7, 13, 19, 25, 31, 37]
    old = dataclasses.replace(live, made=live.made[:2])
    assert _verify(live.lines, live).intact
    # Records are 10 s apart: more than twice the cadence and a minute of grace after seq 7.
    result = _verify(live.lines, old)
    assert result.summary() == (
        "line 27: seq 7 (line 8) and the records after it are covered by no checkpoint, yet "
        "the segment goes on 190 s after it although its start says a checkpoint is made every "
        "60 s: its newer checkpoints are missing (removed, never published, or an old "
        "checkpoint given in their place)"
    )
    # Within that time, a tail not yet checkpointed is what a live log looks like.
    assert _verify(live.lines[:26], old).intact


def test_attack_records_from_another_operator() -> None:
    # Another installation's records (its own key and log name) in place of ours: not ours, so
    # ours are missing.
    theirs = _segment(9, signer=keys.generate("prod-b/modelguard"), name="20300102-030405-0a1b2c3d")
    result = _verify([*A.lines[:3], *theirs.lines[3:]], A)
    assert result.summary() == (
        f"line 3: segment {A.origin} ends at seq 2, but checkpoint #2 shows 9 records: the last "
        "6 records (seq 3 to 8) are missing; 6 lines that look like audit records are not signed "
        "by the keys given (first: line 4), ignored"
    )


def test_attack_records_of_another_log_signed_with_a_shared_key() -> None:
    # The same private key installed under another log name: its records name that log in
    # their signature, so they are not this log's.
    shared = keys.Signer(name="staging/modelguard", private=SIGNER.private)
    theirs = _segment(9, signer=shared)
    result = _verify([*A.lines[:3], *theirs.lines[3:]], A)
    assert result.summary().startswith(f"line 3: segment {A.origin} ends at seq 2")
    # And a segment start, signed by this key, that names another log's origin is refused.
    foreign_start = _resigned(
        A.lines[0],
        details={
            **json.loads(A.lines[0])["details"],
            "origin": "staging/modelguard/20300102-030405-0a1b2c3d",
        },
    )
    result = _verify([foreign_start, *A.lines[1:]], A)
    assert result.summary() == (
        'line 1: seq 0 starts a segment of another log: its origin "staging/modelguard/'
        '20300102-030405-0a1b2c3d" is not a segment of log modelguard-system/modelguard'
    )


def test_attack_a_segment_forged_with_the_key_has_no_checkpoint() -> None:
    forged = _segment(4, name="20300102-043000-99999999")
    result = _verify([*A.lines, *forged.lines], A)
    assert result.summary() == (
        f"line 10: segment {forged.origin} has no checkpoint: none of the checkpoints given names "
        "it. It was never published (the operator's log says why), its checkpoints were "
        "removed, or the segment was written by someone else holding the key"
    )


def test_attack_a_segment_copied_twice() -> None:
    result = _verify([*A.lines, *A.lines], A)
    assert result.summary() == (
        f"line 10: segment {A.origin} starts again (it started at line 1): a copy of its records"
    )


def test_attack_records_appended_after_the_segment_closed() -> None:
    after = _chained(A.lines, [json.loads(A.lines[4])], signer=SIGNER)
    result = _verify(after, A)
    assert result.summary() == (
        f"line 10: seq 9 follows the record that closed segment {A.origin} (line 9): records "
        "were added after the operator stopped"
    )


def test_since_leaves_out_segments_that_started_before() -> None:
    since = datetime.datetime(2030, 1, 2, 4, 30, tzinfo=datetime.UTC)
    result = _verify(C.lines, A, B, C, since=since)
    assert result.summary() == (
        "6 records in 1 segment, chain intact; 3 checkpoints proven; 2 checkpointed segments "
        "started before --since, not checked"
    )
    assert not _verify(C.lines, A, B, C).intact


def test_two_checkpoints_of_one_size_with_two_roots_are_a_split_history() -> None:
    fork = checkpoints.sign(
        checkpoints.Checkpoint(origin=A.origin, size=5, root=merkle.root([])), SIGNER
    )
    with pytest.raises(chain.LoadProblem, match=r"give segment .* at size 5 two different roots"):
        chain.load_anchors(
            [*((f"#{n}", c.note) for n, c in enumerate(A.made)), ("#fork", fork.note)],
            keyring=KEYRING,
        )


# --- The record format ----------------------------------------------------------------------


def test_canonical_form_is_sorted_compact_utf8() -> None:
    fields = {"b": [1, "é"], "a": {"z": None, "y": True}}
    assert records.canonical(fields) == '{"a":{"y":true,"z":null},"b":[1,"é"]}'.encode()
    assert (
        records.digest({**fields, "hash": "ignored", "sig": "ignored"})
        == hashlib.sha256(records.canonical(fields)).hexdigest()
    )


def test_record_hash_and_signature_are_stable() -> None:
    # A known answer: a change of the canonical form, of the fields or of what is signed would
    # break every log already written, so it must be a deliberate, visible change here.
    record = records.seal(
        seq=1,
        prev=records.GENESIS,
        time=T0,
        decision=records.Decision.QUARANTINED,
        reason="SpecQuarantine",
        message="spec.quarantine is true",
        signer=SIGNER,
        subject=SUBJECT,
        details={"version": "1.4.0"},
    )
    assert SIGNER.verifier.id == "3c96147b"
    obj = (
        '"object":{"apiVersion":"modelguard.dev/v1alpha1","generation":3,"kind":"ModelDeployment",'
        '"name":"sentiment","namespace":"team-nlp","uid":"0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b"},'
    )
    head = (
        '{"apiVersion":"audit.modelguard.dev/v1","decision":"Quarantined",'
        '"details":{"version":"1.4.0"},'
    )
    middle = '"keyId":"3c96147b","kind":"AuditRecord",'
    tail = (
        '"message":"spec.quarantine is true",'
        + obj
        + f'"prev":"{"0" * 64}","reason":"SpecQuarantine","seq":1,'
    )
    end = '"time":"2030-01-02T03:04:05.678Z"}'
    expected = hashlib.sha256((head + middle + tail + end).encode()).hexdigest()
    assert record["hash"] == expected
    signature = SIGNER.sign(b"modelguard audit record\n" + LOG.encode() + b"\n" + expected.encode())
    sig = base64.b64encode(signature).decode()
    assert records.line(record) == f'{head}"hash":"{expected}",{middle}{tail}"sig":"{sig}",{end}'
    assert records.leaf(record) == hashlib.sha256(b"\x00" + records.line(record).encode()).digest()


def test_values_json_cannot_hash_exactly_are_refused() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        records.canonical({"x": float("nan")})


# --- No input crashes the verifier; no change goes unseen -------------------------------------

_LINE_PIECES = strategies.one_of(
    strategies.text(max_size=200),
    strategies.sampled_from(A.lines),
    strategies.sampled_from(A.lines).map(lambda line: line[: len(line) // 3]),
    strategies.builds(
        lambda head, tail: f'{head}{{"apiVersion":"audit.modelguard.dev/v1"{tail}',
        strategies.text(max_size=20),
        strategies.text(max_size=200),
    ),
    strategies.just('{"apiVersion":"audit.modelguard.dev/v1","x":' + "[" * 100_000),
    strategies.just('{"apiVersion":"audit.modelguard.dev/v1","seq":' + "9" * 5000 + "}"),
    strategies.just(
        '{"apiVersion":"audit.modelguard.dev/v1","kind":"AuditRecord","seq":1,'
        f'"prev":"{"0" * 64}","hash":"{"0" * 64}","time":"t","decision":"d","reason":"r",'
        f'"keyId":"{SIGNER.verifier.id}","sig":"AAAA",'
        '"message":"m","details":{"x":NaN,"y":"\\ud800"}}'
    ),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(strategies.lists(_LINE_PIECES, max_size=12))
def test_no_input_crashes_the_verifier(lines: list[str]) -> None:
    result = _verify(lines, A)
    assert result.intact == (result.problem is None)
    assert result.summary()


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    strategies.integers(min_value=0, max_value=len(A.lines) - 1),
    strategies.integers(min_value=0, max_value=10_000),
    strategies.characters(codec="utf-8"),
)
def test_any_changed_character_of_a_record_is_caught(index: int, at: int, char: str) -> None:
    line = A.lines[index]
    at %= len(line)
    hypothesis.assume(line[at] != char)
    changed = line[:at] + char + line[at + 1 :]
    hypothesis.assume(json.loads(changed) != json.loads(line) if _parses(changed) else True)
    lines = [*A.lines[:index], changed, *A.lines[index + 1 :]]
    result = _verify(lines, A)
    # Even the last record: the segment's last checkpoint covers it. A record that no longer
    # reads as one leaves a gap, seen at the record after it or, at the end, at the one before.
    assert not result.intact
    assert result.line in {index, index + 1, index + 2}


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_a_forged_segment_quoted_in_log_output_is_not_this_logs() -> None:
    # A tenant's S3 endpoint answers with an error text that carries a whole segment, signed
    # with a key of their own under our log's name; the log line quoting it ends with one
    # record, the rest are lines of their own (were they not escaped).
    forged = _segment(3, signer=OTHER, name="20300102-033000-0f0f0f0f", close=False).lines
    quoted = f"[2030-01-02 03:04:05,678] kopf.objects [WARNING ] S3 said: {forged[0]}"
    result = _verify([*A.lines, quoted, *forged[1:], *B.lines], A, B)
    assert result.intact
    assert result.records == len(A.lines) + len(B.lines)
    assert result.foreign == len(forged)
    assert result.summary().endswith(
        "; 3 lines that look like audit records are not signed by the keys given (first: line "
        "10), ignored"
    )


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param('{"apiVersion":"audit.modelguard.dev/v1", garbage', id="malformed"),
        pytest.param(A.lines[4][: len(A.lines[4]) // 2], id="cut-off-copy"),
    ],
)
def test_other_text_with_the_marker_is_ignored_and_counted(garbage: str) -> None:
    result = _verify([*A.lines[:2], garbage, *A.lines[2:]], A)
    assert result.intact
    assert (result.records, result.foreign, result.first_foreign) == (9, 1, 3)


def test_the_wrong_key_finds_no_records() -> None:
    other = keys.Keyring.of([OTHER.verifier])
    result = chain.verify(A.lines, keyring=other, anchors=chain.Anchors())
    assert not result.intact
    assert result.summary().startswith(
        f"no audit records (audit.modelguard.dev/v1) of log {LOG} signed by key "
        f"{OTHER.verifier.id} in 9 lines; 9 lines"
    )


def test_a_checkpoint_of_the_empty_tree_says_nothing_and_a_false_one_is_refused() -> None:
    empty = checkpoints.sign(
        checkpoints.Checkpoint(origin=A.origin, size=0, root=merkle.EMPTY_ROOT), SIGNER
    )
    found = [*((f"#{n}", c.note) for n, c in enumerate(A.made)), ("#empty", empty.note)]
    anchors = chain.load_anchors(found, keyring=KEYRING)
    assert chain.verify(A.lines, keyring=KEYRING, anchors=anchors).intact
    false = checkpoints.sign(
        checkpoints.Checkpoint(origin=A.origin, size=0, root=merkle.leaf_hash(b"x")), SIGNER
    )
    with pytest.raises(chain.LoadProblem, match="0 records, but not the root of the empty tree"):
        chain.load_anchors([("#false", false.note)], keyring=KEYRING)
