"""Kubernetes label selector semantics, for namespaces a policy binds and pods a NetworkPolicy
selects (pure)."""

from __future__ import annotations

import typing

from modelguard.api import v1alpha1


def selects(selector: v1alpha1.LabelSelector, labels: typing.Mapping[str, str]) -> bool:
    """Whether `selector` selects an object labelled `labels`: every term must hold; {} selects
    everything."""
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
