"""Whether what a model's audit proxy would record is within its TrustPolicy (pure): payloads,
which may hold personal data, only where the security owner's policy allows them."""

from __future__ import annotations

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import reasons


def check_inputs(
    spec: v1alpha1.ModelDeploymentSpec, *, audit: trustpolicy.InputAudit, policy_name: str
) -> list[reasons.Violation]:
    """A violation when spec.audit.inputs is Payload and the policy does not allow payloads."""
    if spec.audit.inputs != v1alpha1.AuditInputs.PAYLOAD or audit.allow_payload:
        return []
    return [
        reasons.Violation(
            reasons.Reason.PAYLOAD_AUDIT_NOT_ALLOWED,
            f"spec.audit.inputs is Payload, but TrustPolicy {policy_name} does not allow "
            "recording request payloads (its spec.audit.allowPayload is false); use Metadata, "
            "or ask the policy's owner to allow payloads",
        )
    ]
