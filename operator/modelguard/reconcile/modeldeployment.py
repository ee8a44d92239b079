"""Reconciles one ModelDeployment: observe (observe.py), decide (decide.py, pure), write
(write.py): its children, then its status once, then its audit records and Events.

Level-based and idempotent: every trigger (the object changed, a child changed, a resync, a
timer) runs the same pass, which reads the current state and converges it. Nothing is written
when nothing changed, so the status write that an event of ours triggers ends the loop.
"""

from __future__ import annotations

import asyncio
import collections

from modelguard.reconcile import decide, observe, runtime, write

# One pass at a time per object: the object's own handler and its children's handlers would
# otherwise race on the same status.
_locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
    asyncio.Lock
)


async def reconcile(context: runtime.Context, *, namespace: str, name: str) -> None:
    """One pass; RetryLater when the API server or a source should be asked again soon."""
    async with _locks[namespace, name]:
        seen = await observe.observe(context, namespace=namespace, name=name)
        if seen is None:
            # Gone or going: the garbage collector removes the children by their ownerReferences.
            return
        outcome = decide.decide(seen, agent_image=context.agent_image)
        applied = await write.children(context, outcome)
        await write.finish(context, decide.conclude(outcome, applied))
