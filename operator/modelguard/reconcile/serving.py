"""What serves, judged by the current TrustPolicy (pure): from what the operator recorded when it
verified it, never from anything a tenant can withdraw or replace.

The artifact a model's own Deployment pins (its root digest and signature file digest) was
verified once, and status.servingEvidence keeps what that verification established
(trust/evidence). Whenever the bound policy is a generation the record was not accepted under,
the record is judged again: the signatures under the policy's signers (a revoked key, a
certificate identity no longer pinned, too few signers), its hash algorithms and sources. A
spec that does not parse, a bundle deleted or replaced at its URI, credentials deleted: none of
them is read, so none of them shelters what serves. No policy to judge by (deleted, no longer
binding the namespace, not parsing) stops what serves too: fail closed. So does a record that
is missing.

What serves must also stay within the policy's other limits while a new version is held: the
code-capable formats its agent is told to admit, and what its own NetworkPolicies open.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import typing

from modelguard.api import trustpolicy, v1alpha1
from modelguard.builders import deployment as deployment_builder
from modelguard.builders import names
from modelguard.reconcile import conditions, observations
from modelguard.trust import access, evidence, reasons
from modelguard.trust import policy as policy_rules

Manifest = dict[str, typing.Any]


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What serves, judged: why it must stop (None: it may go on), and the records to keep."""

    refusal: conditions.Decision | None
    records: list[v1alpha1.ServingEvidence]


def judge(seen: observations.Observed, *, verified: observations.Verified | None) -> Judgement:
    """What serves (the model's own live Deployment) judged under `seen.policy`; `verified` is
    the spec's version as verified in this pass, whose record is kept for when it serves."""
    # The spec's version, just verified under the policy read in this pass.
    current = (
        to_status(
            verified.evidence,
            judged_under=seen.policy.key if seen.policy is not None else None,
        )
        if verified is not None and verified.evidence is not None
        else None
    )
    live = seen.deployment()
    artifact = deployment_builder.artifact_of(live) if live is not None else None
    if artifact is None or seen.policy is None:
        # Nothing of the operator's serves; or no policy was looked at (unit tables of other
        # rules): nothing to judge.
        return Judgement(None, _kept(seen, artifact, current))
    bound = seen.policy
    if bound.policy is None:
        why = bound.refusal.message if bound.refusal is not None else bound.name
        return Judgement(
            conditions.Decision(
                "False",
                v1alpha1.REASON_POLICY_WITHDRAWN,
                f"no TrustPolicy judges what serves ({artifact.root_digest}) any more: {why}",
            ),
            _kept(seen, artifact, current),
        )
    record = _record_of(seen.status.serving_evidence or [], artifact) or (
        current if current is not None and _matches(current, artifact) else None
    )
    if record is None:
        return Judgement(
            conditions.Decision(
                "False",
                v1alpha1.REASON_SERVING_UNVERIFIABLE,
                f"no verification of what serves ({artifact.root_digest}, signature "
                f"{artifact.signature_digest}) is recorded in status.servingEvidence to judge it "
                "by under the TrustPolicy",
            ),
            _kept(seen, artifact, current),
        )
    if record.judged_under != bound.key:
        refused = _refused_by(record, bound.policy, namespace=seen.body["metadata"]["namespace"])
        if refused is not None:
            return Judgement(
                conditions.Decision("False", v1alpha1.REASON_SIGNER_REVOKED, refused),
                _kept(seen, artifact, current),
            )
        record = record.model_copy(update={"judged_under": bound.key})
    outside = _formats_outside(artifact, bound.policy.spec) or _network_outside(
        seen, live, bound.policy.spec.network, policy_name=bound.name
    )
    records = [record, *([current] if current is not None and not _same(current, record) else [])]
    if outside is not None:
        return Judgement(
            conditions.Decision("False", v1alpha1.REASON_OUTSIDE_POLICY, outside), records
        )
    return Judgement(None, records)


def _refused_by(
    record: v1alpha1.ServingEvidence, policy: trustpolicy.TrustPolicy, *, namespace: str
) -> str | None:
    """Why the policy now refuses what `record` established, as `reason: message`; or None."""
    try:
        rules = policy_rules.rules_of(policy.spec)
        kept = _from_status(record)
    except reasons.VerificationError as error:
        return str(error.violation)
    except (ValueError, TypeError) as error:
        return f"status.servingEvidence does not read back: {error}"
    violation = evidence.judge(kept, rules, namespace=namespace)
    return None if violation is None else f"the version that serves: {violation}"


def _formats_outside(
    artifact: deployment_builder.VerifiedArtifact, spec: trustpolicy.TrustPolicySpec
) -> str | None:
    """What the agent of what serves admits that the policy's spec.formats no longer allows."""
    if spec.enforcement is trustpolicy.Enforcement.AUDIT:
        return None
    allowed = set(spec.formats.allowed())
    if artifact.audit_formats:
        return (
            "what serves admits every code-capable format (it was rolled out under Audit "
            "enforcement), which the TrustPolicy no longer allows (spec.enforcement is Enforce)"
        )
    withdrawn = sorted(set(artifact.allow_formats) - allowed)
    if not withdrawn:
        return None
    return (
        f"what serves admits {', '.join(withdrawn)} files, which the TrustPolicy's "
        f"spec.formats.allow no longer allows ({', '.join(sorted(allowed)) or 'none'})"
    )


def _network_outside(
    seen: observations.Observed,
    live: Manifest | None,
    network: trustpolicy.Network,
    *,
    policy_name: str,
) -> str | None:
    """What the model's own NetworkPolicies (its callers and destinations) open beyond the
    policy's spec.network, judged by the labels of the pods that serve."""
    template = ((live or {}).get("spec") or {}).get("template") or {}
    pod_labels = (template.get("metadata") or {}).get("labels") or {}
    children = names.child_names(seen.body["metadata"]["name"])
    found: list[str] = []
    for name in (children.allow_ingress, children.allow_egress):
        own = seen.child("NetworkPolicy", name)
        if own is None:
            continue
        found += [
            violation.message
            for violation in access.check_network_policy(
                own, pod_labels=pod_labels, network=network, policy_name=policy_name
            )
        ]
    if not found:
        return None
    return "what serves opens more than the TrustPolicy's spec.network allows now: " + "; ".join(
        found[:5]
    )


# --- the records ---------------------------------------------------------------------------------


def _matches(
    record: v1alpha1.ServingEvidence, artifact: deployment_builder.VerifiedArtifact
) -> bool:
    return (
        record.root_digest == artifact.root_digest
        and record.signature_digest == artifact.signature_digest
    )


def _record_of(
    records: typing.Sequence[v1alpha1.ServingEvidence],
    artifact: deployment_builder.VerifiedArtifact,
) -> v1alpha1.ServingEvidence | None:
    return next((record for record in records if _matches(record, artifact)), None)


def _kept(
    seen: observations.Observed,
    artifact: deployment_builder.VerifiedArtifact | None,
    current: v1alpha1.ServingEvidence | None,
) -> list[v1alpha1.ServingEvidence]:
    """The record of what serves (as it was) and of the spec's version: nothing else is kept."""
    serving = (
        _record_of(seen.status.serving_evidence or [], artifact) if artifact is not None else None
    )
    if serving is not None and current is not None and _same(serving, current):
        return [serving]
    return [record for record in (serving, current) if record is not None]


def _same(first: v1alpha1.ServingEvidence, second: v1alpha1.ServingEvidence) -> bool:
    return (first.root_digest, first.signature_digest) == (
        second.root_digest,
        second.signature_digest,
    )


def to_status(kept: evidence.Evidence, *, judged_under: str | None) -> v1alpha1.ServingEvidence:
    """`kept` as status.servingEvidence holds it; `judged_under`: the policy (uid/generation) it
    was just accepted under."""
    return v1alpha1.ServingEvidence(
        root_digest=kept.root_digest,
        signature_digest=kept.signature_digest,
        hash_algorithm=kept.hash_algorithm,
        source_uri=kept.source_uri,
        signature_uri=kept.signature_uri,
        verified_at=kept.verified_at.isoformat(),
        message_digests={
            name: base64.b64encode(digest).decode() for name, digest in kept.message_digests.items()
        },
        signatures=[
            v1alpha1.KeptSignature(
                signature=base64.b64encode(item.signature).decode(),
                key_hint=item.key_hint,
                certificates=[base64.b64encode(der).decode() for der in item.certificates] or None,
            )
            for item in kept.signatures
        ],
        judged_under=judged_under,
    )


def _from_status(record: v1alpha1.ServingEvidence) -> evidence.Evidence:
    return evidence.Evidence(
        root_digest=record.root_digest,
        signature_digest=record.signature_digest,
        hash_algorithm=record.hash_algorithm,
        source_uri=record.source_uri,
        signature_uri=record.signature_uri,
        verified_at=datetime.datetime.fromisoformat(record.verified_at),
        message_digests={
            name: base64.b64decode(digest, validate=True)
            for name, digest in record.message_digests.items()
        },
        signatures=tuple(
            evidence.Signature(
                signature=base64.b64decode(item.signature, validate=True),
                key_hint=item.key_hint,
                certificates=tuple(
                    base64.b64decode(der, validate=True) for der in item.certificates or []
                ),
            )
            for item in record.signatures
        ),
    )
