"""Outside text made safe to quote (api/text.py): escaped, and cut by bytes, never mid-character."""

from __future__ import annotations

import pytest

from modelguard.api import text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain text, ünïcödé letters kept", "plain text, ünïcödé letters kept"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("left\u202eright", "left\\u202eright"),
        ("line\u2028separator", "line\\u2028separator"),
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
    ],
)
def test_escape_makes_every_unsafe_character_visible(raw: str, escaped: str) -> None:
    assert text.escape(raw) == escaped


@pytest.mark.parametrize("letter", ["a", "é", "€", "\U0001d54f"])
@pytest.mark.parametrize("limit", [3, 4, 5, 1023, 1024])
def test_fit_cuts_by_bytes_and_never_splits_a_character(letter: str, limit: int) -> None:
    cut = text.fit(letter * 2000, max_bytes=limit)
    encoded = cut.encode("utf-8")  # raises if a character was split into a lone surrogate
    assert len(encoded) <= limit
    assert cut.endswith("...")
    assert cut.removesuffix("...") == letter * len(cut.removesuffix("..."))


def test_fit_keeps_what_fits() -> None:
    assert text.fit("\U0001d54f" * 256, max_bytes=1024) == "\U0001d54f" * 256
