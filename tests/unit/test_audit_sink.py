"""The audit sink: one flushed line per record, a chain that verifies, a new segment per start,
records from many coroutines and threads at once still in one unbroken chain, and checkpoints
made on the cadence, at the start and at the stop, from a frontier of O(log n) hashes."""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import json
import threading
import typing
from pathlib import Path

import pytest

from modelguard.audit import chain, checkpoints, keys, merkle, records, sink

SIGNER = keys.generate("modelguard-system/modelguard")
KEYRING = keys.Keyring.of([SIGNER.verifier])
ORIGIN = checkpoints.origin(SIGNER.name, "20300102-030405-0a1b2c3d")


def _sink(stream: typing.TextIO, **options: typing.Any) -> sink.Sink:
    return sink.Sink(stream, signer=SIGNER, origin=ORIGIN, **options)


def _chain_only(lines: list[str]) -> chain.Result:
    return chain.verify(lines, keyring=KEYRING, anchors=None)


class _Recorder(io.StringIO):
    """A stream that remembers what had been flushed, to tell written from merely buffered."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())


def test_each_record_is_one_flushed_line_continuing_the_chain() -> None:
    stream = _Recorder()
    log = _sink(stream)
    first = log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="")
    second = log.record(records.Decision.ROLLED_OUT, reason="Available", message="2 of 2")
    assert stream.flushed == [
        records.line(first) + "\n",
        records.line(first) + "\n" + records.line(second) + "\n",
    ]
    assert (first["seq"], first["prev"]) == (0, records.GENESIS)
    assert (second["seq"], second["prev"]) == (1, first["hash"])
    assert _chain_only(stream.getvalue().splitlines()).intact


def test_a_file_log_starts_a_new_segment_at_every_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for instance in ("modelguard-0", "modelguard-1"):
        log = sink.open_log(str(path), instance=instance, signer=SIGNER)
        log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="ok")
    lines = path.read_text().splitlines()
    started = [json.loads(line) for line in lines if '"AuditChainStarted"' in line]
    assert [r["details"]["instance"] for r in started] == ["modelguard-0", "modelguard-1"]
    assert [r["seq"] for r in started] == [0, 0]
    assert _chain_only(lines).summary().startswith("4 records in 2 segments, chain intact; ")


def test_standard_output_carries_the_records(capsys: pytest.CaptureFixture[str]) -> None:
    sink.open_log(sink.STANDARD_OUTPUT, instance="modelguard-0", signer=SIGNER)
    out, err = capsys.readouterr()
    assert json.loads(out)["decision"] == "AuditChainStarted"
    assert err == ""


def test_an_unwritable_log_is_an_error_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        sink.open_log(
            str(tmp_path / "missing" / "audit.jsonl"), instance="modelguard-0", signer=SIGNER
        )


class _Failing(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def write(self, text: str) -> int:
        if self.fail:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_a_failed_write_leaves_a_gap_that_verify_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = _Failing()
    log = _sink(stream)
    log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="")
    stream.fail = True
    lost = log.record(records.Decision.QUARANTINED, reason="SpecQuarantine", message="lost")
    stream.fail = False
    log.record(records.Decision.QUARANTINE_LIFTED, reason="SpecChanged", message="kept")
    assert "audit record seq 1 not written (" in caplog.text
    assert lost["hash"] in caplog.text
    result = _chain_only(stream.getvalue().splitlines())
    assert result.summary() == "line 2: seq 2 follows seq 0: seq 1 deleted or moved"


def _record_many(log: sink.Sink, prefix: str, count: int) -> None:
    for number in range(count):
        log.record(
            records.Decision.VERIFIED, reason="SignatureVerified", message=f"{prefix}{number}"
        )


async def test_records_from_coroutines_and_threads_form_one_chain() -> None:
    stream = io.StringIO()
    log = _sink(stream)
    threads = [
        threading.Thread(target=_record_many, args=(log, f"thread{n}-", 200)) for n in range(4)
    ]
    for thread in threads:
        thread.start()

    async def coroutine(number: int) -> None:
        for index in range(50):
            log.record(records.Decision.APPROVED, reason="Approved", message=f"{number}-{index}")
            await asyncio.sleep(0)

    await asyncio.gather(*(coroutine(n) for n in range(8)))
    for thread in threads:
        thread.join()
    lines = stream.getvalue().splitlines()
    assert _chain_only(lines).summary().startswith("1200 records in 1 segment, chain intact; ")
    seqs: list[typing.Any] = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1200))


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


@pytest.mark.parametrize(
    ("message", "details"),
    [
        pytest.param(
            "key hint \udc80\udcff from a hostile bundle", {}, id="lone-surrogate-message"
        ),
        pytest.param(
            "ok", {"signer\ud800": ["\udfff", {"\ud83d": "x"}]}, id="lone-surrogates-in-details"
        ),
        pytest.param("ok", {"ratio": float("nan"), "limit": float("inf")}, id="non-finite-numbers"),
        pytest.param("ok", {"thing": _Unprintable()}, id="an-object-without-text"),
        pytest.param(
            "ok",
            {"deep": functools.reduce(lambda inner, _: [inner], range(100), [])},
            id="deeply-nested",
        ),
    ],
)
def test_no_outside_value_drops_a_record_or_the_ones_after_it(
    message: str, details: dict[str, typing.Any]
) -> None:
    stream = io.StringIO()
    log = _sink(stream)
    log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="")
    written = log.record(
        records.Decision.VERIFICATION_REFUSED,
        reason="BadSignature",
        message=message,
        details=details,
    )
    log.record(records.Decision.ROLLED_OUT, reason="Available", message="after it")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert all(line.isascii() for line in lines)
    assert json.loads(lines[1])["decision"] == "VerificationRefused"
    assert written["seq"] == 1
    assert _chain_only(lines).summary().startswith("3 records in 1 segment, chain intact; ")


def test_a_lone_surrogate_is_kept_as_its_escape() -> None:
    record = _sink(io.StringIO()).record(
        records.Decision.VERIFICATION_REFUSED, reason="BadSignature", message="hint \udc80"
    )
    assert record["message"] == "hint \\udc80"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


def test_checkpoints_follow_the_cadence_and_only_when_records_were_added() -> None:
    clock = _Clock()
    stream = io.StringIO()
    assert _sink(io.StringIO()).checkpoint(force=True) is None  # nothing written yet
    log = sink.start(
        stream,
        instance="modelguard-0",
        signer=SIGNER,
        cadence=sink.Cadence(records=3, seconds=60),
        clock=clock,
        segment="20300102-030405-0a1b2c3d",
    )
    first = log.checkpoint(force=True)
    assert first is not None
    assert first.checkpoint.size == 1
    assert log.checkpoint(force=True) is None  # it would repeat the last one
    for _ in range(2):
        log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
        assert log.checkpoint() is None  # neither 3 records nor 60 s yet
    log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
    by_count = log.checkpoint()
    assert by_count is not None
    assert by_count.checkpoint.size == 4
    clock.now += datetime.timedelta(seconds=59)
    log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
    assert log.checkpoint() is None
    clock.now += datetime.timedelta(seconds=1)
    by_time = log.checkpoint()
    assert by_time is not None
    assert by_time.checkpoint.size == 5
    clock.now += datetime.timedelta(hours=5)
    assert log.checkpoint() is None  # idle: nothing new, nothing written
    last = log.close(reason="OperatorStopped", message="stopping")
    assert last is not None
    assert last.checkpoint.size == 6
    lines = stream.getvalue().splitlines()
    assert json.loads(lines[-1])["decision"] == "AuditChainClosed"
    leaves = [merkle.leaf_hash(line.encode()) for line in lines]
    for made in (first, by_count, by_time, last):
        assert made.checkpoint.origin == ORIGIN
        assert made.checkpoint.root == merkle.root(leaves[: made.checkpoint.size])
        assert checkpoints.open_signed(made.note, KEYRING) == made.checkpoint
    anchors = chain.load_anchors(
        [(str(n), made.note) for n, made in enumerate((first, by_count, by_time, last))],
        keyring=KEYRING,
    )
    assert chain.verify(lines, keyring=KEYRING, anchors=anchors).summary() == (
        "6 records in 1 segment, chain intact; 4 checkpoints proven"
    )


def test_the_writer_holds_a_frontier_not_the_records() -> None:
    log = _sink(io.StringIO(), cadence=sink.Cadence(records=10**9, seconds=10**9))
    for _ in range(1023):
        log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="")
    assert log._tree.size == 1023
    assert log._tree.hashes == 10


def test_a_segment_starts_naming_its_origin_key_cadence_and_the_one_before() -> None:
    stream = io.StringIO()
    previous = checkpoints.Checkpoint(
        origin=checkpoints.origin(SIGNER.name, "20300101-000000-00000000"),
        size=42,
        root=merkle.root([]),
    )
    log = sink.start(
        stream,
        instance="modelguard-0",
        signer=SIGNER,
        cadence=sink.Cadence(records=7, seconds=30),
        previous=previous,
    )
    started = json.loads(stream.getvalue())
    assert started["details"] == {
        "instance": "modelguard-0",
        "origin": log.origin,
        "publicKey": SIGNER.verifier.vkey,
        "checkpointEvery": {"records": 7, "seconds": 30},
        "previous": {"origin": previous.origin, "size": 42, "root": previous.root_base64},
    }
    segment = checkpoints.segment_of(log.origin, SIGNER.name)
    assert segment is not None
    assert checkpoints.segment_start(segment) is not None
