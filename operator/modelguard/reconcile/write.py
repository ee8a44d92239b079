"""The write step of a pass: the outcome's children, then its status once, then its audit records
and Events; then when to look again.

A child is written only when its recorded intent is not the desired one, or when someone else
wrote to it and replacing it would change something; created children are the operator's by
their uid, recorded in the status. What the writes find is handed back as
`observations.Applied` for decide.conclude; nothing here decides.
"""

from __future__ import annotations

import logging
import typing

from modelguard import kube
from modelguard.audit import records
from modelguard.builders import intent
from modelguard.reconcile import decide, drift, observations, reports, runtime

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]

# Conflicts, throttling and server-side failures pass; anything else is a refusal of our intent.
_TRANSIENT: typing.Final = frozenset({409, 429, 500, 502, 503, 504})


class _Conflict(Exception):
    """A child's name is taken by an object this ModelDeployment does not control."""


async def children(context: runtime.Context, outcome: decide.Outcome) -> observations.Applied:
    """Makes every desired child exactly its manifest, in apply order, and says what it found.

    Stops at the first child someone else holds or the API server refuses (a rollout is all or
    nothing), except in a quarantine, which stops whatever it can. RetryLater when the API server
    cannot answer now; what was written until then is told first.
    """
    if not outcome.children:
        return observations.Applied()
    seen = outcome.observed
    namespace, name = seen.body["metadata"]["namespace"], seen.body["metadata"]["name"]
    quarantine = outcome.model is not None and outcome.model.spec.quarantine
    created: dict[tuple[str, str], str] = {}
    contents: dict[tuple[str, str], str] = {}
    written: list[str] = []
    reverted: list[tuple[str, tuple[str, ...]]] = []
    conflicts: list[str] = []
    deployment: Manifest | None = None

    def applied(**found: typing.Any) -> observations.Applied:
        return observations.Applied(
            created=created,
            written=tuple(written),
            reverted=tuple(reverted),
            deployment=deployment,
            conflicts=tuple(conflicts),
            contents=contents,
            **found,
        )

    for manifest in outcome.children:
        child = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            live, managers = await _write_child(
                context, manifest, seen=seen, created=created, contents=contents
            )
        except _Conflict as conflict:
            conflicts.append(str(conflict))
            if quarantine:
                continue
            break
        except kube.ApiError as error:
            if error.status in _TRANSIENT:
                await _tell(context, decide.conclude(outcome, applied()), written_only=True)
                raise runtime.RetryLater(f"API server: {error.reason}: {error.message}") from error
            # The API server refused our own intent (an admission policy, a quota...): which
            # child and why; what serves now keeps serving.
            return applied(
                refused=f"{manifest['kind']} {manifest['metadata']['name']}: {error.message}"
            )
        finally:
            if created:
                # Remembered at once, so that a failed status write cannot orphan what we made.
                context.created.setdefault((namespace, name), {}).update(created)
        if managers is not None:
            written.append(child)
        if managers:
            reverted.append((child, tuple(managers)))
            logger.warning("%s: %s: reverted what %s changed", namespace, child, managers)
        if manifest["kind"] == "Deployment":
            deployment = live
    if written:
        logger.info("%s: applied %s", namespace, ", ".join(written))
    return applied()


async def finish(context: runtime.Context, outcome: decide.Outcome) -> None:
    """When to look again, the status (once, if it changed), then audit records and Events;
    RetryLater when the outcome asks for a retry."""
    seen = outcome.observed
    metadata = seen.body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    if outcome.recheck_at is not None:
        context.recheck(namespace, name, outcome.recheck_at)
    if outcome.status_changed:
        try:
            await context.kube.apply_model_deployment_status(
                namespace=namespace,
                name=name,
                status=outcome.status.model_dump(mode="json", exclude_none=True),
            )
        except kube.ApiError as error:
            # The next pass decides the same again from the same status and tells it then; what
            # the writes did, it would not see again.
            await _tell(context, outcome, written_only=True)
            raise runtime.RetryLater(
                f"API server refused the status: {error.reason}: {error.message}"
            ) from error
        # The status holds the uids of the children created in this pass now.
        context.created.pop((namespace, name), None)
    quarantine = outcome.status.quarantine
    if quarantine is not None and quarantine != seen.status.quarantine:
        logger.warning("%s/%s: quarantined: %s", namespace, name, quarantine.message)
    # After the status write: when it fails, the retry derives the same records from the same
    # status read, so each decision is recorded once.
    await _tell(context, outcome)
    if outcome.backup is not None and context.backups is not None:
        # In the background: the pass that ends here never waits for a backup.
        context.backups.start(outcome.backup)
    if outcome.retry is not None:
        raise runtime.RetryLater(outcome.retry)


async def _write_child(
    context: runtime.Context,
    manifest: Manifest,
    *,
    seen: observations.Observed,
    created: dict[tuple[str, str], str],
    contents: dict[tuple[str, str], str],
) -> tuple[Manifest | None, list[str] | None]:
    """Makes the live child exactly `manifest` (its intent recorded), unless it already is, and
    records in `contents` what it does as the API server holds it then.

    Returns the live object and None when nothing was written, else the written object and the
    managers whose changes the write reverted ([] for a plain change of our own intent).
    """
    live, managers = await _make_child(context, manifest, seen=seen, created=created)
    if live is not None:
        contents[manifest["kind"], manifest["metadata"]["name"]] = drift.content(live)
    return live, managers


async def _make_child(
    context: runtime.Context,
    manifest: Manifest,
    *,
    seen: observations.Observed,
    created: dict[tuple[str, str], str],
) -> tuple[Manifest | None, list[str] | None]:
    metadata = manifest["metadata"]
    key = (manifest["kind"], metadata["name"])
    live = seen.children.get(key)
    conflict = decide.conflict_message(*key)
    if live is None:
        try:
            made = await context.kube.create(manifest)
        except kube.ApiError as error:
            if error.status != 409:
                raise
            # The name is taken by an object without the model's label: ours, if its uid says
            # so (someone took the label away), else someone else's.
            live = await context.kube.get(
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                namespace=metadata["namespace"],
                name=metadata["name"],
            )
            if live is None or seen.owned.get(key) != live["metadata"].get("uid"):
                raise _Conflict(conflict) from error
        else:
            created[key] = made["metadata"]["uid"]
            return made, []
    elif seen.child(*key) is None:
        # Never adopted, never written to: a forced write would merge our intent into someone
        # else's object and keep what we do not set (a sidecar, a volume), as Helm and
        # cert-manager refuse to do too.
        raise _Conflict(conflict)
    replacement = drift.replacement(manifest, live)
    if intent.recorded(live) != intent.recorded(manifest):
        return await context.kube.replace(replacement), []
    recorded = seen.contents.get(key)
    if recorded is not None:
        # What the child does now against what our last write left, whoever wrote since and
        # whatever field manager name they gave.
        if drift.content(live) == recorded:
            return live, None
    elif not drift.differs(live, await context.kube.replace(replacement, dry_run=True)):
        # Nothing recorded of it yet (the status write after our last write failed): only the
        # API server can say whether replacing it with our intent would change anything (it
        # defaults what we leave out), so ask, storing nothing.
        return live, None
    return await context.kube.replace(replacement), drift.writers(live, own=kube.FIELD_MANAGER)


async def _tell(
    context: runtime.Context, outcome: decide.Outcome, *, written_only: bool = False
) -> None:
    """The outcome's audit records, then its Events (with `written_only`, only those of what the
    writes did, which no later pass would see again)."""
    subject = records.Subject.of(outcome.observed.body)
    for record in outcome.audit_records:
        if written_only and not record.written:
            continue
        context.audit.record(
            record.decision,
            reason=record.reason,
            message=record.message,
            subject=subject,
            details=record.details,
        )
        _count(context, record)
    for event in outcome.events:
        if written_only and not event.written:
            continue
        await _post(context, outcome.observed.body, event)


def _count(context: runtime.Context, record: reports.Record) -> None:
    """The metrics of decisions that are counted as the audit log records them."""
    if record.decision in {records.Decision.VERIFIED, records.Decision.VERIFICATION_REFUSED}:
        context.metrics.verification(
            verified=record.decision is records.Decision.VERIFIED, reason=record.reason
        )
    elif record.decision is records.Decision.QUARANTINED:
        trigger = str(record.details.get("trigger", ""))
        context.metrics.quarantine(
            trigger="spec" if trigger == "spec.quarantine" else "automatic", reason=record.reason
        )


async def _post(context: runtime.Context, body: Manifest, event: reports.Event) -> None:
    try:
        await context.kube.post_event(
            regarding=body,
            type=event.type,
            reason=event.reason,
            action=event.action,
            note=event.note,
            reporting_instance=context.instance,
        )
    except kube.ApiError as error:
        # An Event is a courtesy; failing to post one must not fail the reconcile.
        logger.warning("could not post event %s: %s", event.reason, error.message)
