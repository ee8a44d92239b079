"""One RFC 3339 writer for the API's times (whole seconds) and the audit log's (milliseconds)."""

from __future__ import annotations

import datetime

import pytest

from modelguard.api import times

# 14:00:05.678901 at +02:00 is 12:00:05.678901 UTC.
MOMENT = datetime.datetime(
    2026, 6, 1, 14, 0, 5, 678901, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
)


@pytest.mark.parametrize(
    ("precision", "text"),
    [
        pytest.param("seconds", "2026-06-01T12:00:05Z", id="seconds-as-kubernetes-writes"),
        pytest.param("milliseconds", "2026-06-01T12:00:05.678Z", id="milliseconds-for-audit"),
    ],
)
def test_rfc3339_is_utc_with_the_precision_asked(precision: times.Precision, text: str) -> None:
    assert times.rfc3339(MOMENT, precision=precision) == text
    assert times.parse(text) <= MOMENT


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-06-01T12:00:05", id="no-offset"),
        pytest.param("tomorrow", id="not-a-time"),
    ],
)
def test_parse_refuses_what_is_not_rfc3339_with_an_offset(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        times.parse(text)
