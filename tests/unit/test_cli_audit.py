"""`modelguard audit verify`: a one-line summary and exit 0 for an intact log; exit 1 and the line
of the first problem otherwise; never a traceback."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from modelguard import cli
from modelguard.audit import keys, records, sink

KEY = keys.Key(b"an audit key for the tests only, 32+ bytes")


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(KEY.secret)
    return path


def _verify(target: str, key_file: Path) -> tuple[int, str, str]:
    return _run("audit", "verify", target, "--key-file", str(key_file))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    audit = sink.open_log(str(path), instance="modelguard-0", key=KEY)
    audit.record(records.Decision.QUARANTINED, reason="SpecQuarantine", message="cut off")
    audit.record(records.Decision.QUARANTINE_LIFTED, reason="SpecChanged", message="back")
    return path


def test_intact_log_verifies(log: Path, key_file: Path) -> None:
    assert _verify(str(log), key_file) == (
        0,
        "3 records in 1 segment, chain intact\n",
        "",
    )


def test_an_edited_byte_names_its_line(log: Path, key_file: Path) -> None:
    data = bytearray(log.read_bytes())
    data[data.index(b"cut off")] = ord("C")
    log.write_bytes(bytes(data))
    code, out, err = _verify(str(log), key_file)
    assert (code, out) == (1, "")
    assert err == "line 2: seq 1 was edited: its hash does not match its content\n"


def test_invalid_utf8_in_a_record_is_an_edit(log: Path, key_file: Path) -> None:
    data = bytearray(log.read_bytes())
    data[data.index(b"back")] = 0xFF
    log.write_bytes(bytes(data))
    code, _, err = _verify(str(log), key_file)
    assert code == 1
    assert err.startswith("line 3: seq 2 was edited")


def test_standard_input(log: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"operator log line\n" + log.read_bytes()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert _verify("-", key_file)[:2] == (0, "3 records in 1 segment, chain intact\n")


def test_missing_file(tmp_path: Path, key_file: Path) -> None:
    code, out, err = _verify(str(tmp_path / "nope.jsonl"), key_file)
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.jsonl'}: No such file or directory\n"


def test_a_file_without_records_fails(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "operator.log"
    path.write_text("kopf started\n")
    code, _, err = _verify(str(path), key_file)
    assert code == 1
    assert err == f"no audit records (audit.modelguard.dev/v1) of key {KEY.id} in 1 line\n"


def test_run_passes_the_audit_log_option() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["run"]).audit_log == "-"
    assert parser.parse_args(["run", "--audit-log", "/var/log/a.jsonl"]).audit_log == (
        "/var/log/a.jsonl"
    )


def test_a_forged_record_in_the_log_is_ignored_and_named(log: Path, key_file: Path) -> None:
    other = keys.Key(b"not the installation's key, 32 bytes or more")
    forged = sink.Sink(io.StringIO(), key=other)
    record = forged.record(records.Decision.APPROVED, reason="Approved", message="forged")
    log.write_text(log.read_text() + f"S3 said: {records.line(record)}\n")
    assert _verify(str(log), key_file) == (
        0,
        "3 records in 1 segment, chain intact; 1 line that looks like an audit record is not "
        "this installation's (line 4: no valid mac under the key), ignored\n",
        "",
    )


def test_a_missing_or_short_key_is_refused(tmp_path: Path, log: Path) -> None:
    code, out, err = _verify(str(log), tmp_path / "none.key")
    assert (code, out) == (1, "")
    assert err == f"audit key {tmp_path / 'none.key'}: No such file or directory\n"
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    code, _, err = _verify(str(log), short)
    assert code == 1
    assert err.startswith(f"audit key {short}: has 10 bytes; expected 32 to 4096 random bytes")


def test_run_needs_the_audit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELGUARD_AUDIT_KEY_FILE", raising=False)
    with pytest.raises(SystemExit, match=r"--audit-key-file .* is required"):
        cli.main(["run"])
