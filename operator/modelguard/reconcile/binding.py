"""Which TrustPolicies apply in a namespace, as a status decision: the rule is trust.binding's
(admission refuses by the same rule when a model is written)."""

from __future__ import annotations

import typing

from modelguard.api import trustpolicy
from modelguard.reconcile import conditions
from modelguard.trust import binding


def check(
    policy: trustpolicy.TrustPolicy,
    *,
    name: str,
    namespace: str,
    labels: typing.Mapping[str, str] | None,
) -> conditions.Decision | None:
    """None when `policy` (named `name`) binds `namespace`, whose labels are `labels` (None: the
    namespace could not be read, which binds nothing); else the refusal, naming the field."""
    unbound = binding.check(policy.spec, name=name, namespace=namespace, labels=labels)
    if unbound is None:
        return None
    return conditions.Decision("False", unbound.reason, unbound.message)
