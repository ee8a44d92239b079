"""How soon a refused signature bundle is looked at again: backoff counted in time; and which
pending re-evaluation of a model wins."""

from __future__ import annotations

import asyncio
import datetime

import kopf
import pytest

from modelguard.reconcile import schedule, verification

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


async def test_the_earliest_pending_recheck_stands() -> None:
    # An approval expiring in a minute and a bundle to read again in five: a later request must
    # not push the earlier one out (the reconcile it runs asks again for what is due later).
    async def run(namespace: str, name: str) -> None:
        raise AssertionError(f"{namespace}/{name} reconciled before its time")

    loop = asyncio.get_running_loop()
    now = datetime.datetime.now(datetime.UTC)
    scheduler = schedule.Scheduler(run)
    try:
        scheduler.recheck("ns", "m", now + datetime.timedelta(minutes=1))
        scheduler.recheck("ns", "m", now + datetime.timedelta(minutes=5))
        due = scheduler.due("ns", "m")
        assert due is not None
        assert due - loop.time() < 90
        scheduler.recheck("ns", "m", now + datetime.timedelta(seconds=10))
        due = scheduler.due("ns", "m")
        assert due is not None
        assert due - loop.time() < 30
    finally:
        scheduler.close()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(None, 300, id="unset-is-five-minutes"),
        pytest.param("30", 30, id="whole-seconds"),
        pytest.param("0", None, id="zero-refused"),
        pytest.param("-5", None, id="negative-refused"),
        pytest.param("1.5", None, id="fraction-refused"),
        pytest.param("86401", None, id="more-than-a-day-refused"),
    ],
)
def test_bundle_reread_interval(value: str | None, seconds: int | None) -> None:
    from modelguard import handlers  # noqa: PLC0415 - kopf is needed here only

    if seconds is None:
        with pytest.raises(kopf.PermanentError, match=handlers.REREAD_ENV):
            handlers._reread_interval(value)
    else:
        assert handlers._reread_interval(value) == datetime.timedelta(seconds=seconds)


async def test_a_reconcile_from_an_event_that_fails_is_due_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf does not retry event handlers, and no further event may come (the failed pass may
    have been the one after a Deployment's rollout finished): the model is due again soon."""
    from modelguard import handlers  # noqa: PLC0415 - kopf and the handlers are heavy
    from modelguard.reconcile import election, modeldeployment, runtime  # noqa: PLC0415

    passes: list[tuple[str, str]] = []

    async def refused(_: object, *, namespace: str, name: str) -> None:
        passes.append((namespace, name))
        if len(passes) == 1:
            raise runtime.RetryLater("API server: InternalError: failed calling webhook")

    monkeypatch.setattr(modeldeployment, "reconcile", refused)
    memo = kopf.Memo(leadership=election.Always(), context=None)

    async def run(namespace: str, name: str) -> None:
        await handlers._reconcile_quietly(memo, namespace=namespace, name=name)

    memo.scheduler = schedule.Scheduler(run)
    await handlers._reconcile_quietly(memo, namespace="ml", name="bert")
    assert passes == [("ml", "bert")]
    # Due again after the retry delay (5 s, and the scheduler's second).
    (timer,) = memo.scheduler._timers.values()
    assert 5 <= timer.when() - asyncio.get_running_loop().time() <= 6.5
    memo.scheduler.close()
