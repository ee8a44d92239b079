"""Which TrustPolicies apply in a namespace: the security owner binds a policy to namespaces with
its spec.namespaceSelector, and a model may answer only to a policy bound to its own (pure)."""

from __future__ import annotations

import typing

from modelguard.api import trustpolicy, v1alpha1
from modelguard.reconcile import conditions

# Set by the API server to the namespace's own name, on every namespace, and immutable: the one
# namespace label a policy can trust whoever may create or label namespaces.
NAME_LABEL: typing.Final = "kubernetes.io/metadata.name"


def selects(selector: v1alpha1.LabelSelector, labels: typing.Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics: every term must hold; {} selects everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for term in selector.match_expressions or []:
        present = term.key in labels
        values = term.values or []
        match term.operator:
            case v1alpha1.LabelSelectorOperator.IN:
                holds = present and labels[term.key] in values
            case v1alpha1.LabelSelectorOperator.NOT_IN:
                holds = not present or labels[term.key] not in values
            case v1alpha1.LabelSelectorOperator.EXISTS:
                holds = present
            case v1alpha1.LabelSelectorOperator.DOES_NOT_EXIST:
                holds = not present
        if not holds:
            return False
    return True


def check(
    policy: trustpolicy.TrustPolicy,
    *,
    name: str,
    namespace: str,
    labels: typing.Mapping[str, str] | None,
) -> conditions.Decision | None:
    """None when `policy` (named `name`) binds `namespace`, whose labels are `labels` (None: the
    namespace could not be read, which binds nothing); else the refusal, naming the field."""
    selector = policy.spec.namespace_selector
    if selector is not None and labels is not None and selects(selector, labels):
        return None
    why = (
        "binds no namespace (its spec.namespaceSelector is unset)"
        if selector is None
        else f"does not bind namespace {namespace} (its spec.namespaceSelector does not select it)"
    )
    return conditions.Decision(
        "False",
        v1alpha1.REASON_POLICY_NOT_BOUND,
        f'spec.trustPolicy: TrustPolicy "{name}" {why}; a security owner binds policies to '
        f"namespaces, e.g. with matchLabels {NAME_LABEL}: {namespace}. Name a policy bound to "
        "this namespace.",
    )
