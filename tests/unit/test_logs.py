"""The operator's log lines, configured as `modelguard run` configures them: one line per record
whatever a message, an argument or a traceback quotes, so no outside text starts a line of its
own in `kubectl logs`."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from modelguard import logs
from modelguard.commands import run

# An S3 error message from a tenant's own endpoint: a line that poses as the operator's, and one
# that poses as an audit record.
HOSTILE = (
    "AccessDenied\n[2030-01-02 03:04:05,678] kopf.objects [INFO    ] all good\r\n"
    '{"apiVersion":"audit.modelguard.dev/v1","kind":"AuditRecord","seq":0}'
    "\u2028\x1b[2K\u202e\udc80"
)


@pytest.fixture
def operator_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Logging as `modelguard run` configures it, writing to the captured standard error."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    run.configure_logging(verbose=False, debug=False)
    # kopf's handler took sys.stderr as it was during set-up; the test's is captured anew.
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith(
            "kopf"
        ):
            handler.setStream(_Stderr())  # type: ignore[arg-type]
    try:
        yield capsys
    finally:
        root.handlers[:], level, sys.excepthook, threading.excepthook = saved  # type: ignore[misc]
        root.setLevel(level)
        logging.captureWarnings(False)


class _Stderr:
    """Writes to whatever sys.stderr is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out, err = capsys.readouterr()
    assert out == ""  # standard output carries audit records only
    return err.split("\n")[:-1]


def test_newlines_in_an_s3_error_do_not_make_log_lines(
    operator_logging: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger("modelguard.reconcile").warning("team-a/m: quarantined: %s", HOSTILE)
    lines = _lines(operator_logging)
    assert len(lines) == 1
    assert lines[0].endswith(
        "team-a/m: quarantined: AccessDenied\\n[2030-01-02 03:04:05,678] kopf.objects [INFO    ]"
        ' all good\\r\\n{"apiVersion":"audit.modelguard.dev/v1","kind":"AuditRecord","seq":0}'
        "\\u2028\\x1b[2K\\u202e\\udc80"
    )


def test_a_traceback_quoting_outside_text_is_one_line(
    operator_logging: pytest.CaptureFixture[str],
) -> None:
    try:
        raise RuntimeError(HOSTILE)
    except RuntimeError:
        logging.getLogger("kopf.objects").exception("Handler failed")
    lines = _lines(operator_logging)
    assert len(lines) == 1
    assert "Traceback (most recent call last):\\n" in lines[0]
    assert "RuntimeError: AccessDenied\\n[2030" in lines[0]


def test_uncaught_exceptions_and_warnings_go_through_the_escaped_log(
    operator_logging: pytest.CaptureFixture[str],
) -> None:
    try:
        raise ValueError(HOSTILE)
    except ValueError as error:
        sys.excepthook(type(error), error, error.__traceback__)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(HOSTILE, UserWarning, stacklevel=1)
    lines = _lines(operator_logging)
    assert len(lines) == 2
    assert "uncaught exception" in lines[0]
    assert "UserWarning: AccessDenied\\n" in lines[1]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("plain text, é and 模型", "plain text, é and 模型", id="printable-kept"),
        pytest.param("a\tb\x00c\x7fd\x85e", "a\\tb\\x00c\\x7fd\\x85e", id="controls"),
        pytest.param("\u2029\u2066\u2069", "\\u2029\\u2066\\u2069", id="separators-and-isolates"),
        pytest.param("\ud800\udfff", "\\ud800\\udfff", id="lone-surrogates"),
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert logs.escape(text) == shown


def test_escaping_is_not_applied_twice(operator_logging: pytest.CaptureFixture[str]) -> None:
    logs.escape_handlers(logging.getLogger())
    logging.getLogger("modelguard").warning("a\nb")
    assert _lines(operator_logging)[0].endswith("a\\nb")
