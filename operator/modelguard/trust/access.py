"""Network access a ModelDeployment asks for, checked against its TrustPolicy (pure).

Model owners declare callers and destinations; anything broad (an IP range the policy does not
list, every namespace) is refused unless the security owner's policy allows it, and the message
says which policy field would.
"""

from __future__ import annotations

import ipaddress
import typing

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import reasons


def check_access(
    spec: v1alpha1.ModelDeploymentSpec, *, network: trustpolicy.Network, policy_name: str
) -> list[reasons.Violation]:
    """Every peer of spec.access and spec.model.source.egress that the policy does not allow,
    one violation each."""
    violations: list[reasons.Violation] = []
    for index, peer in enumerate(spec.access.ingress):
        violations += _check_peer(
            peer,
            field=f"spec.access.ingress[{index}]",
            cidrs=network.ingress_cidrs,
            cidr_field="ingressCIDRs",
            network=network,
            policy_name=policy_name,
        )
    destinations: dict[str, typing.Sequence[v1alpha1.EgressRule]] = {
        "spec.access.egress": spec.access.egress,
        "spec.model.source.egress": spec.model.source.egress,
    }
    for prefix, rules in destinations.items():
        for index, rule in enumerate(rules):
            for position, peer in enumerate(rule.to):
                violations += _check_peer(
                    peer,
                    field=f"{prefix}[{index}].to[{position}]",
                    cidrs=network.egress_cidrs,
                    cidr_field="egressCIDRs",
                    network=network,
                    policy_name=policy_name,
                )
    return violations


def _check_peer(
    peer: v1alpha1.NetworkPeer,
    *,
    field: str,
    cidrs: list[str],
    cidr_field: str,
    network: trustpolicy.Network,
    policy_name: str,
) -> list[reasons.Violation]:
    found: list[reasons.Violation] = []
    selector = peer.namespace_selector
    if selector is not None and not network.allow_all_namespaces and not _names(selector):
        what = (
            "{} selects every namespace;"
            if not selector.match_labels and not selector.match_expressions
            else "selects namespaces only by NotIn, Exists or DoesNotExist, which can match "
            "every namespace; name them with matchLabels or an In expression, or"
        )
        found.append(
            reasons.Violation(
                reasons.Reason.BROAD_ACCESS_REFUSED,
                f'{field}.namespaceSelector: {what} TrustPolicy "{policy_name}" must set '
                "spec.network.allowAllNamespaces: true to allow it",
            )
        )
    if peer.ip_block is not None and not _inside(peer.ip_block.cidr, cidrs):
        listed = ", ".join(cidrs) or "none"
        found.append(
            reasons.Violation(
                reasons.Reason.BROAD_ACCESS_REFUSED,
                f"{field}.ipBlock.cidr: {peer.ip_block.cidr} is not inside the ranges TrustPolicy "
                f'"{policy_name}" allows in spec.network.{cidr_field} ({listed}); add it there '
                "or narrow the range",
            )
        )
    return found


def _names(selector: v1alpha1.LabelSelector) -> bool:
    """Whether the selector names the namespaces it matches: by a label value (matchLabels or
    In), which someone had to set. Requirements are ANDed, so one such term bounds the whole.
    NotIn and DoesNotExist match whatever lacks a label, and Exists whatever has one (every
    namespace has kubernetes.io/metadata.name): each alone can match every namespace."""
    if selector.match_labels:
        return True
    return any(
        term.operator is v1alpha1.LabelSelectorOperator.IN
        for term in selector.match_expressions or []
    )


def _inside(cidr: str, allowed: list[str]) -> bool:
    network = ipaddress.ip_network(cidr, strict=False)
    for candidate in allowed:
        outer = ipaddress.ip_network(candidate, strict=False)
        if outer.version == network.version and network.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False
