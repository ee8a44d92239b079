"""Reconciles one ModelDeployment: builds its children, applies what changed, writes its status.

Level-based and idempotent: every trigger (the object changed, a child changed, a resync) runs the
same function, which reads the current state and converges it. Nothing is written when nothing
changed, so the status write that an event of ours triggers ends the loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import typing

from modelguard import kube
from modelguard.api import errors, v1alpha1
from modelguard.builders import children
from modelguard.reconcile import conditions, readiness

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]


class RetryLater(Exception):
    """A failure worth retrying with backoff: the API server refused or was unreachable."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What every reconcile needs from the process that runs it."""

    kube: kube.Kube
    instance: str
    """This operator replica's name, reported on the Events it posts."""


# One reconcile at a time per object: the object's own handler and its children's handlers would
# otherwise race on the same status.
_locks: collections.defaultdict[tuple[str, str], asyncio.Lock] = collections.defaultdict(
    asyncio.Lock
)


async def reconcile(context: Context, *, namespace: str, name: str) -> None:
    async with _locks[namespace, name]:
        await _reconcile(context, namespace=namespace, name=name)


async def _reconcile(context: Context, *, namespace: str, name: str) -> None:
    body = await _call(context.kube.get_model_deployment(namespace=namespace, name=name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        # Gone or going: the garbage collector removes the children through their ownerReferences.
        return
    generation: int = body["metadata"].get("generation", 0)
    previous_status: Manifest = body.get("status") or {}
    now = datetime.datetime.now(datetime.UTC)

    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError as error:
        # The CRD schema refuses most of this at admission; what reaches here is what it cannot
        # say (or an object stored before a schema change).
        message = "; ".join(error.messages)
        await _write_status(
            context,
            body=body,
            status=_with_ready(
                previous_status,
                decision=conditions.Decision("False", "InvalidSpec", message),
                generation=generation,
                now=now,
            ),
        )
        await _event(
            context, body, type="Warning", reason="InvalidSpec", action="Validate", note=message
        )
        return

    applied: list[str] = []
    deployment: Manifest | None = None
    for manifest in children.build_children(model):
        try:
            live, written = await _apply_if_changed(context, manifest)
        except kube.ApiError as error:
            if error.status in _TRANSIENT:
                raise RetryLater(f"API server: {error.reason}: {error.message}") from error
            # The API server refused our own intent (an admission policy, a quota...): say which
            # child and why, keep what serves now, and try again on the next trigger.
            message = f"{manifest['kind']} {manifest['metadata']['name']}: {error.message}"
            await _write_status(
                context,
                body=body,
                status=_with_ready(
                    previous_status,
                    decision=conditions.Decision("False", "ApplyFailed", message),
                    generation=generation,
                    now=now,
                ),
            )
            await _event(
                context, body, type="Warning", reason="ApplyFailed", action="Apply", note=message
            )
            raise RetryLater(message) from error
        if written:
            applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        if manifest["kind"] == "Deployment":
            deployment = live
    if applied:
        logger.info("%s/%s: applied %s", namespace, name, ", ".join(applied))
        await _event(
            context,
            body,
            type="Normal",
            reason="Applied",
            action="Apply",
            note="applied " + ", ".join(applied),
        )

    decision = readiness.deployment_readiness(
        quarantined=model.spec.quarantine,
        replicas=model.spec.serving.replicas,
        deployment=deployment,
    )
    status = _with_ready(previous_status, decision=decision, generation=generation, now=now)
    if decision.status == "True":
        status["activeVersion"] = model.spec.model.version
    await _write_status(context, body=body, status=status)

    before = conditions.find(previous_status.get("conditions") or [], v1alpha1.CONDITION_READY)
    if before is None or before.get("status") != decision.status:
        await _event(
            context,
            body,
            type="Normal" if decision.status == "True" else "Warning",
            reason=decision.reason,
            action="Rollout",
            note=decision.message,
        )


def _with_ready(
    previous: Manifest, *, decision: conditions.Decision, generation: int, now: datetime.datetime
) -> Manifest:
    status = dict(previous)
    status["observedGeneration"] = generation
    status["conditions"] = conditions.set_condition(
        previous.get("conditions") or [],
        type=v1alpha1.CONDITION_READY,
        decision=decision,
        observed_generation=generation,
        now=now,
    )
    return status


async def _apply_if_changed(context: Context, manifest: Manifest) -> tuple[Manifest | None, bool]:
    """Applies `manifest` unless the live object already carries this exact intent."""
    intended = kube.with_intent(manifest)
    metadata = manifest["metadata"]
    live = await context.kube.get(
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        namespace=metadata["namespace"],
        name=metadata["name"],
    )
    wanted = intended["metadata"]["annotations"][kube.INTENT_ANNOTATION]
    if (
        live is not None
        and live["metadata"].get("annotations", {}).get(kube.INTENT_ANNOTATION) == wanted
    ):
        return live, False
    return await context.kube.apply(intended), True


async def _write_status(context: Context, *, body: Manifest, status: Manifest) -> None:
    if status == (body.get("status") or {}):
        return
    metadata = body["metadata"]
    await _call(
        context.kube.apply_model_deployment_status(
            namespace=metadata["namespace"], name=metadata["name"], status=status
        )
    )


async def _event(
    context: Context,
    body: Manifest,
    *,
    type: typing.Literal["Normal", "Warning"],
    reason: str,
    action: str,
    note: str,
) -> None:
    try:
        await context.kube.post_event(
            regarding=body,
            type=type,
            reason=reason,
            action=action,
            note=note,
            reporting_instance=context.instance,
        )
    except kube.ApiError as error:
        # An Event is a courtesy; failing to post one must not fail the reconcile.
        logger.warning("could not post event %s: %s", reason, error.message)


# Conflicts, throttling and server-side failures pass; anything else is a refusal of our intent.
_TRANSIENT = frozenset({409, 429, 500, 502, 503, 504})

_T = typing.TypeVar("_T")


async def _call(awaitable: typing.Awaitable[_T]) -> _T:
    try:
        return await awaitable
    except kube.ApiError as error:
        raise RetryLater(f"API server refused: {error.reason}: {error.message}") from error
