"""The observe step of a pass: one read of everything the decision needs, each object once (the
ModelDeployment, its namespace's labels, the live objects under its child names and the
namespace's NetworkPolicies, its pods and, when a pod reports, their ReplicaSets), then the
verification of the spec's version under its bound policy, the judgement of what serves, and the
namespace's approvals.

The policy, the bundle and the approvals have caches of their own (verification.Cache); what
is read here becomes `observations.Observed`, which decide.py reads and nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import typing

from modelguard.api import errors, modelapproval, v1alpha1
from modelguard.builders import labels
from modelguard.reconcile import conditions, observations, pods, runtime, verification
from modelguard.trust import reasons

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]

CHILD_KINDS: typing.Final = (
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
)
"""The kinds of a model's children, listed by the model's label."""

# A signature that verified before and no longer does because of the policy, not the bytes.
_REVOKED: typing.Final = frozenset(
    str(reason)
    for reason in (
        reasons.Reason.UNTRUSTED_SIGNER,
        reasons.Reason.TOO_FEW_SIGNERS,
        reasons.Reason.CERTIFICATE_EXPIRED,
    )
)


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
        pods=pods_now,
        replica_sets=replica_sets,
        now=datetime.datetime.now(datetime.UTC),
        network_policies=tuple(network_policies),
    )
    try:
        model = v1alpha1.parse(body)
    except errors.InvalidObjectError as error:
        return dataclasses.replace(seen, invalid=tuple(error.messages))
    if model.spec.backup is not None and context.backups is not None:
        seen = dataclasses.replace(seen, backup=await runtime.call(context.backups.observe(model)))
    if model.spec.quarantine:
        # The brake of an incident asks nothing that the incident may have broken (the source,
        # the policy, the approvals): only what the live Deployment already pins.
        return dataclasses.replace(seen, model=model)
    verdict = await runtime.call(
        verification.verify_model(
            kube_client,
            model,
            cache=context.verification_cache,
            slots=context.verification_slots,
            now=seen.now,
            credentials_role=context.credentials_role,
            namespace_labels=namespace_labels,
        )
    )
    # What serves is judged by the current policy too, whatever version the spec names now.
    revoked = await _serving_revoked(
        context,
        model,
        serving=observations.Serving.of(seen.deployment()),
        verdict=verdict,
        now=seen.now,
    )
    approvals = (
        await _approvals(context, namespace=namespace) if verdict.verified is not None else []
    )
    return dataclasses.replace(
        seen,
        model=model,
        verification=verdict,
        revoked=revoked,
        approvals=tuple(approvals),
    )


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


async def _serving_revoked(
    context: runtime.Context,
    model: v1alpha1.ModelDeployment,
    *,
    serving: observations.Serving | None,
    verdict: observations.Verdict,
    now: datetime.datetime,
) -> conditions.Decision | None:
    """Why the artifact that serves is no longer trusted by the bound policy (its signer revoked),
    or None. Judged on every pass (a verdict is cached per bundle and policy generation, so only a
    policy change costs a fetch), independent of the version the spec names: a held rollout must
    not shelter what serves."""
    if serving is None or verdict.policy is None:
        # Nothing serves, or no bound policy to judge it by (the hold reports that).
        return None
    verified = verdict.verified
    if (
        verified is not None
        and verified.root_digest == serving.root_digest
        and verified.signature_digest == serving.signature_digest
    ):
        return None  # what serves is what was just verified
    judged = await runtime.call(
        verification.verify_serving(
            context.kube,
            model,
            serving=serving,
            policy=verdict.policy,
            cache=context.verification_cache,
            slots=context.verification_slots,
            now=now,
            credentials_role=context.credentials_role,
        )
    )
    if judged.verified is not None or judged.decision.reason not in _REVOKED:
        if judged.transient:
            logger.warning(
                "%s/%s: what serves could not be judged again: %s",
                model.namespace,
                model.name,
                judged.decision.message,
            )
        return None
    return judged.decision
