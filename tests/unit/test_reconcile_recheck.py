"""How soon a refused signature bundle is looked at again: backoff counted in time."""

from __future__ import annotations

import datetime

import pytest

from modelguard.reconcile import verification

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
MODEL = ("s3://models/m/", "s3://models/m/model.sig", "uid", "1", "")


@pytest.mark.parametrize(
    ("refused_at_seconds", "expected_seconds"),
    [
        pytest.param([0], 10, id="first-refusal-soon"),
        pytest.param([0, 1], 10, id="a-reconcile-right-after-adds-no-delay"),
        pytest.param([0, 10, 20, 40], 40, id="grows-with-the-time-refused"),
        pytest.param([0, 3600], 300, id="never-more-than-five-minutes"),
    ],
)
def test_recheck_delay(refused_at_seconds: list[int], expected_seconds: int) -> None:
    cache = verification.Cache()
    delays = [
        cache.recheck_after(MODEL, now=T0 + datetime.timedelta(seconds=at))
        for at in refused_at_seconds
    ]
    assert delays[-1] == datetime.timedelta(seconds=expected_seconds)


def test_each_model_has_its_own_clock() -> None:
    cache = verification.Cache()
    cache.recheck_after(MODEL, now=T0)
    later = T0 + datetime.timedelta(minutes=2)
    other = ("s3://models/n/", *MODEL[1:])
    assert cache.recheck_after(other, now=later) == verification.FIRST_RECHECK
    assert cache.recheck_after(MODEL, now=later) == datetime.timedelta(minutes=2)
