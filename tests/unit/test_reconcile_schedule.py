"""Fan-outs reconcile every model at once: one that never finishes delays no other."""

from __future__ import annotations

import asyncio

from modelguard.reconcile import schedule


async def test_a_stalled_reconcile_delays_no_other_in_a_fan_out() -> None:
    done: list[str] = []
    stalled = asyncio.Event()

    async def run(namespace: str, name: str) -> None:
        if name.startswith("slow"):
            await stalled.wait()  # a tenant's endpoint that never answers
        done.append(f"{namespace}/{name}")

    scheduler = schedule.Scheduler(run)
    # The stalled ones first, as a policy's index may list them.
    started = scheduler.fan_out([("a", "slow-0"), ("a", "slow-1"), ("b", "m"), ("b", "m")])
    assert started == 3  # each model once
    for _ in range(10):
        await asyncio.sleep(0)
    assert done == ["b/m"]
    stalled.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sorted(done) == ["a/slow-0", "a/slow-1", "b/m"]
    scheduler.close()


async def test_a_failing_reconcile_is_logged_not_raised() -> None:
    async def run(namespace: str, name: str) -> None:
        raise RuntimeError(f"{namespace}/{name} broke")

    scheduler = schedule.Scheduler(run)
    scheduler.fan_out([("a", "m")])
    for _ in range(5):
        await asyncio.sleep(0)
    scheduler.close()
