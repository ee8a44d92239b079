"""Kubernetes label selector semantics, for namespaces a policy binds and pods a NetworkPolicy
selects (pure)."""

from __future__ import annotations

import typing

from modelguard.api import v1alpha1


def selects(selector: v1alpha1.LabelSelector, labels: typing.Mapping[str, str]) -> bool:
    """Whether `selector` selects an object labelled `labels`: every term must hold; {} selects
    everything."""
    return may_select(selector, labels)


def may_select(
    selector: v1alpha1.LabelSelector,
    labels: typing.Mapping[str, str],
    *,
    unknown: typing.Collection[str] = (),
) -> bool:
    """Whether `selector` may select an object labelled `labels` and also carrying the keys in
    `unknown`, whose values are not known yet (the pod-template-hash of a pod whose ReplicaSet
    does not exist yet): a term on such a key holds, unless it needs the key absent. Without
    `unknown`, exactly `selects`."""
    for key, value in (selector.match_labels or {}).items():
        if key not in unknown and labels.get(key) != value:
            return False
    for term in selector.match_expressions or []:
        if term.key in unknown:
            holds = term.operator is not v1alpha1.LabelSelectorOperator.DOES_NOT_EXIST
        else:
            holds = _holds(term, labels)
        if not holds:
            return False
    return True


def _holds(term: v1alpha1.LabelSelectorRequirement, labels: typing.Mapping[str, str]) -> bool:
    present = term.key in labels
    values = term.values or []
    match term.operator:
        case v1alpha1.LabelSelectorOperator.IN:
            return present and labels[term.key] in values
        case v1alpha1.LabelSelectorOperator.NOT_IN:
            return not present or labels[term.key] not in values
        case v1alpha1.LabelSelectorOperator.EXISTS:
            return present
        case v1alpha1.LabelSelectorOperator.DOES_NOT_EXIST:
            return not present
