"""`modelguard audit verify`: a one-line summary and exit 0 for an intact log; exit 1 and the line
of the first problem otherwise; never a traceback."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from modelguard import cli
from modelguard.audit import records, sink


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    audit = sink.open_log(str(path), instance="modelguard-0")
    audit.record(records.Decision.QUARANTINED, reason="SpecQuarantine", message="cut off")
    audit.record(records.Decision.QUARANTINE_LIFTED, reason="SpecChanged", message="back")
    return path


def test_intact_log_verifies(log: Path) -> None:
    assert _run("audit", "verify", str(log)) == (
        0,
        "3 records in 1 segment, chain intact\n",
        "",
    )


def test_an_edited_byte_names_its_line(log: Path) -> None:
    data = bytearray(log.read_bytes())
    data[data.index(b"cut off")] = ord("C")
    log.write_bytes(bytes(data))
    code, out, err = _run("audit", "verify", str(log))
    assert (code, out) == (1, "")
    assert err == "line 2: seq 1 was edited: its hash does not match its content\n"


def test_invalid_utf8_in_a_record_is_an_edit(log: Path) -> None:
    data = bytearray(log.read_bytes())
    data[data.index(b"back")] = 0xFF
    log.write_bytes(bytes(data))
    code, _, err = _run("audit", "verify", str(log))
    assert code == 1
    assert err.startswith("line 3: seq 2 was edited")


def test_standard_input(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"operator log line\n" + log.read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert _run("audit", "verify", "-")[:2] == (0, "3 records in 1 segment, chain intact\n")


def test_missing_file(tmp_path: Path) -> None:
    code, out, err = _run("audit", "verify", str(tmp_path / "nope.jsonl"))
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.jsonl'}: No such file or directory\n"


def test_a_file_without_records_fails(tmp_path: Path) -> None:
    path = tmp_path / "operator.log"
    path.write_text("kopf started\n")
    code, _, err = _run("audit", "verify", str(path))
    assert code == 1
    assert err == "no audit records (audit.modelguard.dev/v1) in 1 line\n"


def test_run_passes_the_audit_log_option() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["run"]).audit_log == "-"
    assert parser.parse_args(["run", "--audit-log", "/var/log/a.jsonl"]).audit_log == (
        "/var/log/a.jsonl"
    )
