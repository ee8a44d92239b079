"""The audit sink: one flushed line per record, a chain that verifies, a new segment per start,
and records from many coroutines and threads at once still in one unbroken chain."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import threading
import typing
from pathlib import Path

import pytest

from modelguard.audit import chain, keys, records, sink

KEY = keys.Key(b"an audit key for the tests only, 32+ bytes")


class _Recorder(io.StringIO):
    """A stream that remembers what had been flushed, to tell written from merely buffered."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())


def test_each_record_is_one_flushed_line_continuing_the_chain() -> None:
    stream = _Recorder()
    log = sink.Sink(stream, key=KEY)
    first = log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="")
    second = log.record(records.Decision.ROLLED_OUT, reason="Available", message="2 of 2")
    assert stream.flushed == [
        records.line(first) + "\n",
        records.line(first) + "\n" + records.line(second) + "\n",
    ]
    assert (first["seq"], first["prev"]) == (0, records.GENESIS)
    assert (second["seq"], second["prev"]) == (1, first["hash"])
    assert chain.verify(stream.getvalue().splitlines(), key=KEY).intact


def test_a_file_log_starts_a_new_segment_at_every_open(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for instance in ("modelguard-0", "modelguard-1"):
        log = sink.open_log(str(path), instance=instance, key=KEY)
        log.record(records.Decision.VERIFIED, reason="SignatureVerified", message="ok")
    lines = path.read_text().splitlines()
    started = [json.loads(line) for line in lines if '"AuditChainStarted"' in line]
    assert [r["details"]["instance"] for r in started] == ["modelguard-0", "modelguard-1"]
    assert [r["seq"] for r in started] == [0, 0]
    assert chain.verify(lines, key=KEY).summary() == "4 records in 2 segments, chain intact"


def test_standard_output_carries_the_records(capsys: pytest.CaptureFixture[str]) -> None:
    sink.open_log(sink.STANDARD_OUTPUT, instance="modelguard-0", key=KEY)
    out, err = capsys.readouterr()
    assert json.loads(out)["decision"] == "AuditChainStarted"
    assert err == ""


def test_an_unwritable_log_is_an_error_at_open(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        sink.open_log(str(tmp_path / "missing" / "audit.jsonl"), instance="modelguard-0", key=KEY)


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
    log = sink.Sink(stream, key=KEY)
    log.record(records.Decision.AUDIT_CHAIN_STARTED, reason="OperatorStarted", message="")
    stream.fail = True
    lost = log.record(records.Decision.QUARANTINED, reason="SpecQuarantine", message="lost")
    stream.fail = False
    log.record(records.Decision.QUARANTINE_LIFTED, reason="SpecChanged", message="kept")
    assert "audit record seq 1 not written (" in caplog.text
    assert lost["hash"] in caplog.text
    result = chain.verify(stream.getvalue().splitlines(), key=KEY)
    assert result.summary() == "line 2: seq 2 follows seq 0: seq 1 deleted or moved"


def _record_many(log: sink.Sink, prefix: str, count: int) -> None:
    for number in range(count):
        log.record(
            records.Decision.VERIFIED, reason="SignatureVerified", message=f"{prefix}{number}"
        )


async def test_records_from_coroutines_and_threads_form_one_chain() -> None:
    stream = io.StringIO()
    log = sink.Sink(stream, key=KEY)
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
    assert chain.verify(lines, key=KEY).summary() == "1200 records in 1 segment, chain intact"
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
    log = sink.Sink(stream, key=KEY)
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
    assert chain.verify(lines, key=KEY).summary() == "3 records in 1 segment, chain intact"


def test_a_lone_surrogate_is_kept_as_its_escape() -> None:
    record = sink.Sink(io.StringIO(), key=KEY).record(
        records.Decision.VERIFICATION_REFUSED, reason="BadSignature", message="hint \udc80"
    )
    assert record["message"] == "hint \\udc80"
