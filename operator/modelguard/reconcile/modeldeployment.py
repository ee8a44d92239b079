"""Reconciles one ModelDeployment: observe (observe.py), decide (decide.py, pure), write
(write.py): its children, then its status once, then its audit records and Events.

Level-based and idempotent: every trigger (the object changed, a child changed, a resync, a
timer) runs the same pass, which reads the current state and converges it. Nothing is written
when nothing changed, so the status write that an event of ours triggers ends the loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
import typing

from modelguard import metrics
from modelguard.api import times, v1alpha1
from modelguard.reconcile import conditions, decide, observe, pods, runtime, write

# One pass at a time per object: the object's own handler and its children's handlers would
# otherwise race on the same status.
_locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
    asyncio.Lock
)


async def reconcile(context: runtime.Context, *, namespace: str, name: str) -> None:
    """One pass; RetryLater when the API server or a source should be asked again soon. Timed
    and counted in the metrics by its outcome."""
    started = time.monotonic()
    result = _ERROR
    with context.metrics.in_flight():
        try:
            result = await _reconcile(context, namespace=namespace, name=name)
        finally:
            context.metrics.reconciled(result, time.monotonic() - started)


async def _reconcile(context: runtime.Context, *, namespace: str, name: str) -> str:
    async with _locks[namespace, name]:
        seen = await observe.observe(context, namespace=namespace, name=name)
        if seen is None:
            # Gone or going: the garbage collector removes the children by their ownerReferences.
            context.metrics.forget(namespace, name)
            return _GONE
        context.metrics.agent_reports(pods.agent_runs(seen.pods))
        outcome = decide.decide(seen, agent_image=context.agent_image, placement=context.placement)
        applied = await write.children(context, outcome)
        concluded = decide.conclude(outcome, applied)
        try:
            await write.finish(context, concluded)
        finally:
            # What the pass decided, whether or not it asks for a retry (a status write that
            # failed is decided the same again by the retry).
            context.metrics.model(namespace, name, _state(concluded))
        return str(concluded.action)


_ERROR: typing.Final = "Error"
_GONE: typing.Final = "Gone"


def _state(outcome: decide.Outcome) -> metrics.ModelState:
    """What the metrics count of the model, from its outcome."""
    status = outcome.status
    ready = conditions.find(status.conditions, v1alpha1.CONDITION_READY)
    stalled = conditions.find(status.conditions, v1alpha1.CONDITION_STALLED)
    quarantine = None
    if ready is not None and ready.reason == v1alpha1.REASON_QUARANTINED:
        quarantine = (
            ("automatic", str(status.quarantine.reason))
            if status.quarantine is not None
            else ("spec", v1alpha1.REASON_SPEC_QUARANTINE)
        )
    expires = status.approval.expires_at if status.approval is not None else None
    return metrics.ModelState(
        ready=ready.status.value if ready is not None else "Unknown",
        reason=ready.reason if ready is not None else "",
        held=outcome.action is decide.Action.HOLD,
        stalled=stalled.reason
        if stalled is not None and stalled.status == v1alpha1.ConditionStatus.TRUE
        else None,
        quarantine=quarantine,
        approval_expires=_timestamp(expires),
    )


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return times.parse(value).timestamp()
    except ValueError:
        return None
