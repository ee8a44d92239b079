"""Whether a TrustPolicy binds a namespace: its security owner binds it with
spec.namespaceSelector, and a model may answer only to a policy bound to its own (pure)."""

from __future__ import annotations

import typing

from modelguard.api import trustpolicy
from modelguard.trust import reasons, selectors

# Set by the API server to the namespace's own name, on every namespace, and immutable: the one
# namespace label a policy can trust whoever may create or label namespaces.
NAME_LABEL: typing.Final = "kubernetes.io/metadata.name"


def check(
    policy: trustpolicy.TrustPolicySpec,
    *,
    name: str,
    namespace: str,
    labels: typing.Mapping[str, str] | None,
) -> reasons.Violation | None:
    """None when `policy` (named `name`) binds `namespace`, whose labels are `labels` (None: the
    namespace could not be read, which binds nothing); else the refusal, naming the field. The
    message names this policy only: whoever may write a model need not learn of the others."""
    selector = policy.namespace_selector
    if selector is not None and labels is not None and selectors.selects(selector, labels):
        return None
    why = (
        "binds no namespace (its spec.namespaceSelector is unset)"
        if selector is None
        else f"does not bind namespace {namespace} (its spec.namespaceSelector does not select it)"
    )
    return reasons.Violation(
        reasons.Reason.POLICY_NOT_BOUND,
        f'spec.trustPolicy: TrustPolicy "{name}" {why}; a security owner binds policies to '
        f"namespaces, e.g. with matchLabels {NAME_LABEL}: {namespace}. Name a policy bound to "
        "this namespace.",
    )
