"""The observe step of a pass: one read of everything the decision needs, each object once (the
ModelDeployment, its namespace's labels, the live objects under its child names and the
namespace's NetworkPolicies, its pods and, when a pod reports, their ReplicaSets), then the
verification of the spec's version under its bound policy (read whether or not the spec parses: it
judges what serves too, in decide, from what status.servingEvidence recorded), and the namespace's
approvals.

The policy, the bundle and the approvals have caches of their own (verification.Cache); what
is read here becomes `observations.Observed`, which decide.py reads and nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import typing

from modelguard.api import conventions, errors, modelapproval, v1alpha1
from modelguard.builders import labels
from modelguard.reconcile import observations, pods, runtime, verification

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]

CHILD_KINDS: typing.Final = (
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
)
"""The kinds of a model's children, listed by the model's label."""


async def observe(
    context: runtime.Context, *, namespace: str, name: str
) -> observations.Observed | None:
    """What one pass decides from; None when the model is gone or going."""
    kube_client = context.kube
    body = await runtime.call(kube_client.get_model_deployment(namespace=namespace, name=name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    namespace_labels = await runtime.call(kube_client.get_namespace_labels(namespace))
    found: dict[tuple[str, str], Manifest] = {}
    network_policies: list[Manifest] = []
    for api_version, kind in CHILD_KINDS:
        # NetworkPolicies are read whole, in the same one request: someone else's that selects
        # the model's pods opens them too.
        every = kind == "NetworkPolicy"
        for live in await runtime.call(
            kube_client.list_objects(
                api_version=api_version,
                kind=kind,
                namespace=namespace,
                selector={} if every else labels.selector(name),
            )
        ):
            if every:
                network_policies.append(live)
                if (live["metadata"].get("labels") or {}).get(labels.MODEL_DEPLOYMENT) != name:
                    continue
            found[kind, live["metadata"]["name"]] = live
    pods_now = await runtime.call(
        kube_client.list_pods(namespace=namespace, selector=labels.spawned(name))
    )
    # Looked up only when some pod reports something, which is rare.
    replica_sets = (
        await runtime.call(
            kube_client.list_replica_sets(namespace=namespace, selector=labels.spawned(name))
        )
        if pods.any_agent_report(pods_now)
        else []
    )
    status = observations.parse_status(body.get("status"))
    recorded = {(child.kind, child.name): child.uid for child in status.children or []}
    seen = observations.Observed(
        body=body,
        status=status,
        namespace_labels=namespace_labels,
        children=found,
        owned={**recorded, **context.created.get((namespace, name), {})},
        contents={
            (child.kind, child.name): child.content
            for child in status.children or []
            if child.content is not None
        },
        pods=pods_now,
        replica_sets=replica_sets,
        now=datetime.datetime.now(datetime.UTC),
        network_policies=tuple(network_policies),
    )
    # The policy is read whatever the spec says, and before it is parsed: it judges what serves
    # too, which a spec that does not parse must not shelter.
    policy = await runtime.call(
        verification.bound_policy(
            kube_client,
            name=policy_name(body),
            namespace=namespace,
            namespace_labels=namespace_labels,
        )
    )
    seen = dataclasses.replace(seen, policy=policy)
    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError as error:
        return dataclasses.replace(seen, invalid=tuple(error.messages))
    if model.spec.backup is not None and context.backups is not None:
        seen = dataclasses.replace(seen, backup=await runtime.call(context.backups.observe(model)))
    if model.spec.quarantine:
        # The brake of an incident asks nothing that the incident may have broken (the source,
        # the approvals): only what the live Deployment already pins.
        return dataclasses.replace(seen, model=model)
    verdict = await runtime.call(
        verification.verify_model(
            kube_client,
            model,
            bound=policy,
            cache=context.verification_cache,
            slots=context.verification_slots,
            now=seen.now,
            credentials_role=context.credentials_role,
        )
    )
    approvals = (
        await _approvals(context, namespace=namespace) if verdict.verified is not None else []
    )
    return dataclasses.replace(seen, model=model, verification=verdict, approvals=tuple(approvals))


def policy_name(body: Manifest) -> str:
    """spec.trustPolicy as written, read leniently (the spec may not parse): the default policy
    when it names none, or names it with something that is not a name."""
    spec = body.get("spec")
    named = spec.get("trustPolicy") if isinstance(spec, dict) else None
    return named if isinstance(named, str) and named else conventions.DEFAULT_TRUST_POLICY


async def _approvals(
    context: runtime.Context, *, namespace: str
) -> list[modelapproval.ModelApproval]:
    """The readable ModelApprovals of `namespace` (approvals only ever count in their own)."""
    found = []
    for body in await runtime.call(context.kube.list_model_approvals(namespace=namespace)):
        try:
            found.append(modelapproval.parse(body))
        except errors.InvalidObjectError as error:
            # The CRD schema refuses most of this; an unreadable approval counts for nothing.
            logger.warning("ModelApproval %s ignored: %s", body["metadata"]["name"], error)
    return found
