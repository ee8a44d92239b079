"""What the operator sends the API server is valid UTF-8 whatever it quotes: the JSON encoder
(msgspec, as lightkube uses it) refuses a lone surrogate, and the whole write would fail."""

from __future__ import annotations

import json
import typing

import msgspec
import pytest

from modelguard.api import conventions, v1alpha1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("hint \udc80", "hint \\udc80", id="lone-low-surrogate"),
        pytest.param(
            {"conditions": [{"message": "\ud800x", "reason": "R"}], "n": 3, "ok": True},
            {"conditions": [{"message": "\\ud800x", "reason": "R"}], "n": 3, "ok": True},
            id="nested-status",
        ),
        pytest.param({"\udfff": None}, {"\\udfff": None}, id="a-key"),
    ],
)
def test_encodable(value: typing.Any, expected: typing.Any) -> None:
    with pytest.raises(UnicodeEncodeError):
        msgspec.json.encode(json.loads(json.dumps(value)))  # what lightkube would send
    safe = conventions.encodable(value)
    assert safe == expected
    assert json.loads(msgspec.json.encode(safe)) == expected


def test_valid_text_is_left_as_it_is() -> None:
    value = {"message": "plain é 模型 \u2028", "items": ["a", 1, None]}
    assert conventions.encodable(value) == value


def test_a_status_quotes_a_lone_surrogate_instead_of_failing() -> None:
    # pydantic refuses such a string: the status of the reconcile that quotes it would be lost.
    condition = v1alpha1.Condition(
        type="Verified",
        status="False",
        reason="UntrustedSigner",
        message="key hint \udc80",
        last_transition_time="2026-01-01T00:00:00Z",
    )
    assert condition.message == "key hint \\udc80"
    assert json.loads(msgspec.json.encode(condition.model_dump(mode="json")))["message"] == (
        "key hint \\udc80"
    )
