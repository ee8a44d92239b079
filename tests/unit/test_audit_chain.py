"""The audit chain: canonical hashing, and a verifier that names the line of every edit, deletion,
insertion or reordering, skips other log lines, and never fails with a traceback."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import typing

import hypothesis
import pytest
from hypothesis import strategies

from modelguard.audit import chain, keys, records, sink

T0 = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
SUBJECT = records.Subject(
    api_version="modelguard.dev/v1alpha1",
    kind="ModelDeployment",
    namespace="team-nlp",
    name="sentiment",
    uid="0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b",
    generation=3,
)

KEY = keys.Key(b"an audit key for the tests only, 32+ bytes")


def _segment(count: int) -> list[str]:
    """A segment as the operator writes it: AuditChainStarted, then `count - 1` decisions."""
    out = io.StringIO()
    log = sink.Sink(out, key=KEY, clock=lambda: T0)
    log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="start")
    for number in range(1, count):
        log.record(
            records.Decision.VERIFIED,
            reason="SignatureVerified",
            message=f"decision {number}",
            subject=SUBJECT,
            details={"version": f"1.{number}.0"},
        )
    return out.getvalue().splitlines()


def _edited(line: str, **changes: typing.Any) -> str:
    record = json.loads(line)
    record.update(changes)
    return records.line(record)


def _resealed(line: str, **changes: typing.Any) -> str:
    """An edit by someone who holds the key and recomputes the record's own hash and mac (not
    the chain after it)."""
    record = json.loads(line)
    record.update(changes)
    record["hash"] = records.digest(record)
    record["mac"] = KEY.mac(record["hash"])
    return records.line(record)


def _forged(line: str, **changes: typing.Any) -> str:
    """An edit by someone without the key: the hash recomputed, the mac left or guessed."""
    record = json.loads(line)
    record.update(changes)
    record["hash"] = records.digest(record)
    return records.line(record)


INTACT = _segment(5)


@pytest.mark.parametrize(
    ("lines", "line", "problem"),
    [
        pytest.param(
            [*INTACT[:2], _edited(INTACT[2], message="nothing to see"), *INTACT[3:]],
            3,
            "seq 2 was edited: its hash does not match its content",
            id="edited-field",
        ),
        pytest.param(
            [*INTACT[:2], _resealed(INTACT[2], message="forged"), *INTACT[3:]],
            4,
            "seq 3 does not chain to seq 2 (prev differs): a record was replaced or inserted",
            id="edited-field-and-its-own-hash",
        ),
        pytest.param(
            [*INTACT[:2], _forged(INTACT[2], message="forged"), *INTACT[3:]],
            4,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="edited-and-rehashed-without-the-key",
        ),
        pytest.param(
            [*INTACT[:2], *INTACT[3:]],
            3,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="deleted-record",
        ),
        pytest.param(
            [*INTACT[:1], *INTACT[4:]],
            2,
            "seq 4 follows seq 0: seq 1 to 3 deleted or moved",
            id="deleted-records",
        ),
        pytest.param(
            [
                *INTACT[:3],
                _resealed(INTACT[2], seq=3, prev=json.loads(INTACT[2])["hash"]),
                *INTACT[3:],
            ],
            5,
            "seq 3 follows seq 3: a record was inserted, repeated or moved",
            id="inserted-record",
        ),
        pytest.param(
            [*INTACT[:2], INTACT[3], INTACT[2], *INTACT[4:]],
            3,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="swapped-records",
        ),
        pytest.param(
            [*INTACT[:2], INTACT[2][: len(INTACT[2]) // 2], *INTACT[3:]],
            4,
            "seq 3 follows seq 1: seq 2 deleted or moved",
            id="truncated-line",
        ),
        pytest.param(
            INTACT[2:],
            1,
            "the chain starts at seq 2: the records before it (from seq 0) are missing",
            id="head-missing",
        ),
        pytest.param(
            [_edited(INTACT[0], prev="1" * 64), *INTACT[1:]],
            1,
            "seq 0 was edited: its hash does not match its content",
            id="first-record-prev-edited",
        ),
        pytest.param(
            [_resealed(INTACT[0], prev="1" * 64), *INTACT[1:]],
            1,
            "seq 0 starts a segment, but its prev is not 64 zeros",
            id="first-record-prev-resealed",
        ),
        pytest.param(
            [*INTACT[:1], _edited(INTACT[1], seq=True), *INTACT[2:]],
            2,
            "seq is not a non-negative integer: true",
            id="seq-not-a-number",
        ),
        pytest.param(
            [*INTACT[:1], _edited(INTACT[1], kind="Other"), *INTACT[2:]],
            2,
            'apiVersion/kind are not audit.modelguard.dev/v1/AuditRecord: "audit.modelguard',
            id="wrong-kind",
        ),
        pytest.param(
            [*INTACT[:1], _edited(INTACT[1], hash="F" * 64), *INTACT[2:]],
            3,
            "seq 2 follows seq 0: seq 1 deleted or moved",
            id="hash-not-hex",
        ),
        pytest.param(
            [*INTACT[:1], _resealed(INTACT[1], reason=None), *INTACT[2:]],
            2,
            "seq 1: reason is missing or not a string",
            id="reason-missing",
        ),
    ],
)
def test_verifier_names_the_line_and_what_is_wrong(
    lines: list[str], line: int, problem: str
) -> None:
    result = chain.verify(lines, key=KEY)
    assert not result.intact
    assert result.line == line
    assert result.problem is not None
    assert result.problem.startswith(problem)
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
        pytest.param(INTACT, "5 records in 1 segment, chain intact", id="intact-chain"),
        pytest.param(INTACT[:1], "1 record in 1 segment, chain intact", id="only-the-chain-start"),
        pytest.param(
            [OTHER_LINES[0], INTACT[0], *OTHER_LINES, *INTACT[1:3], OTHER_LINES[0], *INTACT[3:]],
            "5 records in 1 segment, chain intact",
            id="other-log-lines-skipped",
        ),
        pytest.param(
            [*INTACT, *_segment(3)],
            "8 records in 2 segments, chain intact",
            id="two-segments-an-operator-restart",
        ),
        pytest.param(
            [f"2030-01-02T03:04:05.678901234Z {line}" for line in INTACT],
            "5 records in 1 segment, chain intact",
            id="kubectl-logs-timestamps",
        ),
        pytest.param(
            [line + "\r\n" for line in INTACT],
            "5 records in 1 segment, chain intact",
            id="crlf-line-ends",
        ),
    ],
)
def test_intact_chains_verify(lines: list[str], summary: str) -> None:
    result = chain.verify(lines, key=KEY)
    assert result.intact
    assert result.summary() == summary


def test_input_without_records_is_not_intact() -> None:
    result = chain.verify(OTHER_LINES, key=KEY)
    assert not result.intact
    assert result.line is None
    assert result.summary() == (
        f"no audit records (audit.modelguard.dev/v1) of key {KEY.id} in 5 lines"
    )


def test_canonical_form_is_sorted_compact_utf8() -> None:
    fields = {"b": [1, "é"], "a": {"z": None, "y": True}}
    assert records.canonical(fields) == '{"a":{"y":true,"z":null},"b":[1,"é"]}'.encode()
    assert (
        records.digest({**fields, "hash": "ignored"})
        == hashlib.sha256(records.canonical(fields)).hexdigest()
    )


def test_record_hash_and_mac_are_stable() -> None:
    # A known answer: a change of the canonical form, of the fields or of the mac would break
    # every log already written, so it must be a deliberate, visible change here.
    record = records.seal(
        seq=1,
        prev=records.GENESIS,
        time=T0,
        decision=records.Decision.QUARANTINED,
        reason="SpecQuarantine",
        message="spec.quarantine is true",
        key=KEY,
        subject=SUBJECT,
        details={"version": "1.4.0"},
    )
    key_id = hmac.new(KEY.secret, b"modelguard audit key id\x00", hashlib.sha256).hexdigest()
    assert key_id[:16] == "eac11ba3086334e0"
    obj = (
        '"object":{"apiVersion":"modelguard.dev/v1alpha1","generation":3,"kind":"ModelDeployment",'
        '"name":"sentiment","namespace":"team-nlp","uid":"0b5e8c1a-8d6f-4f7e-9a51-3c2d1e0f9a8b"},'
    )
    head = (
        '{"apiVersion":"audit.modelguard.dev/v1","decision":"Quarantined",'
        '"details":{"version":"1.4.0"},'
    )
    middle = '"keyId":"eac11ba3086334e0","kind":"AuditRecord",'
    tail = (
        '"message":"spec.quarantine is true",'
        + obj
        + f'"prev":"{"0" * 64}","reason":"SpecQuarantine","seq":1,'
        + '"time":"2030-01-02T03:04:05.678Z"}'
    )
    expected = "e097504b4cb54b5a7b18d717c12115f3fc6e2368378f357ac8194efe850d77af"
    assert hashlib.sha256((head + middle + tail).encode()).hexdigest() == expected
    assert record["hash"] == expected
    mac = hmac.new(
        KEY.secret, b"modelguard audit record\x00" + expected.encode(), hashlib.sha256
    ).hexdigest()
    assert mac == "fb432b86b14495932ba194c9d7e34fc718888b626c4c1b732850566492427653"
    assert records.line(record) == f'{head}"hash":"{expected}",{middle}"mac":"{mac}",{tail}'


def test_values_json_cannot_hash_exactly_are_refused() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        records.canonical({"x": float("nan")})


_LINE_PIECES = strategies.one_of(
    strategies.text(max_size=200),
    strategies.sampled_from(INTACT),
    strategies.sampled_from(INTACT).map(lambda line: line[: len(line) // 3]),
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
        '"message":"m","details":{"x":NaN,"y":"\\ud800"}}'
    ),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(strategies.lists(_LINE_PIECES, max_size=12))
def test_no_input_crashes_the_verifier(lines: list[str]) -> None:
    result = chain.verify(lines, key=KEY)
    assert result.intact == (result.problem is None)
    assert result.summary()


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    strategies.integers(min_value=0, max_value=len(INTACT) - 1),
    strategies.integers(min_value=0, max_value=10_000),
    strategies.characters(codec="utf-8"),
)
def test_any_changed_character_of_a_record_is_caught(index: int, at: int, char: str) -> None:
    line = INTACT[index]
    at %= len(line)
    hypothesis.assume(line[at] != char)
    changed = line[:at] + char + line[at + 1 :]
    lines = [*INTACT[:index], changed, *INTACT[index + 1 :]]
    result = chain.verify(lines, key=KEY)
    # A change may turn the record into a line that is no record at all; then the gap it
    # leaves is found on the next line, unless it was the last (a missing tail).
    if result.intact:
        assert index == len(INTACT) - 1
        assert result.records == len(INTACT) - 1
    else:
        assert result.line in {index + 1, index + 2}


OTHER_KEY = keys.Key(b"another installation's key, or a guess at ours")


def _forged_segment(
    count: int, *, key: keys.Key = OTHER_KEY, key_id: str | None = None
) -> list[str]:
    """What an outsider can write: whole records, hashed and chained, sealed with a key of their
    own, and labelled with ours when `key_id` is given."""
    out = io.StringIO()
    log = sink.Sink(out, key=key, clock=lambda: T0)
    for seq in range(count):
        log.record(records.Decision.APPROVED, reason="Approved", message=f"forged {seq}")
    lines = out.getvalue().splitlines()
    if key_id is None:
        return lines
    return [records.line({**json.loads(line), "keyId": key_id}) for line in lines]


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(_forged_segment(3), id="another-key"),
        pytest.param(_forged_segment(3, key_id=KEY.id), id="our-key-id-another-mac"),
        pytest.param(
            [_forged(line, mac="0" * 64) for line in _forged_segment(3, key_id=KEY.id)],
            id="our-key-id-zero-mac",
        ),
        pytest.param(
            [
                records.line({k: v for k, v in json.loads(line).items() if k != "mac"})
                for line in _forged_segment(3, key_id=KEY.id)
            ],
            id="no-mac",
        ),
    ],
)
def test_a_forged_segment_in_log_output_is_not_this_operators(forged: list[str]) -> None:
    # A tenant's S3 endpoint answers with an error text that carries a whole segment; the log
    # line quoting it ends with one record, the rest are lines of their own (were they not
    # escaped), and an operator restart follows.
    quoted = f"[2030-01-02 03:04:05,678] kopf.objects [WARNING ] S3 said: {forged[0]}"
    lines = [*INTACT, quoted, *forged[1:], *_segment(2)]
    result = chain.verify(lines, key=KEY)
    assert result.intact
    assert result.records == len(INTACT) + 2
    assert result.segments == 2
    assert result.foreign == len(forged)
    assert result.summary() == (
        "7 records in 2 segments, chain intact; 3 lines that look like audit records are not "
        "this installation's (first: line 6: no valid mac under the key), ignored"
    )


def test_a_forged_record_cannot_fill_a_gap() -> None:
    # Deleting a record of ours and putting a forged one in its place still leaves the gap.
    forged = _forged(INTACT[2], message="nothing happened here", mac="1" * 64)
    result = chain.verify([*INTACT[:2], forged, *INTACT[3:]], key=KEY)
    assert result.summary().startswith("line 4: seq 3 follows seq 1: seq 2 deleted or moved")


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param('{"apiVersion":"audit.modelguard.dev/v1", garbage', id="malformed"),
        pytest.param(INTACT[4][: len(INTACT[4]) // 2], id="cut-off-copy"),
    ],
)
def test_other_text_with_the_marker_is_ignored_and_counted(garbage: str) -> None:
    result = chain.verify([*INTACT[:2], garbage, *INTACT[2:]], key=KEY)
    assert result.intact
    assert (result.records, result.foreign, result.first_foreign) == (5, 1, 3)
    assert result.summary().endswith(
        "is not this installation's (line 3: no valid mac under the key), ignored"
    )


def test_the_wrong_key_finds_no_records() -> None:
    result = chain.verify(INTACT, key=OTHER_KEY)
    assert not result.intact
    assert result.summary().startswith(
        f"no audit records (audit.modelguard.dev/v1) of key {OTHER_KEY.id} in 5 lines; 5 lines"
    )
