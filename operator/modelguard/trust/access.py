"""Network access a model is opened to, checked against its TrustPolicy (pure): what its
ModelDeployment asks for, and what NetworkPolicies others make around its pods add to it.

Model owners declare callers and destinations; anything broad (an IP range the policy does not
list, every namespace) is refused unless the security owner's policy allows it, and the message
says which policy field would.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import ipaddress
import typing

import pydantic

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import reasons, selectors


def check_access(
    spec: v1alpha1.ModelDeploymentSpec, *, network: trustpolicy.Network, policy_name: str
) -> list[reasons.Violation]:
    """Every peer of spec.access and spec.model.source.egress that the policy does not allow,
    one violation each."""
    violations: list[reasons.Violation] = []
    for index, peer in enumerate(spec.access.ingress):
        violations += _check_peer(
            namespace_selector=peer.namespace_selector,
            cidr=peer.ip_block.cidr if peer.ip_block else None,
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
                    namespace_selector=peer.namespace_selector,
                    cidr=peer.ip_block.cidr if peer.ip_block else None,
                    field=f"{prefix}[{index}].to[{position}]",
                    cidrs=network.egress_cidrs,
                    cidr_field="egressCIDRs",
                    network=network,
                    policy_name=policy_name,
                )
    return violations


@dataclasses.dataclass(frozen=True)
class _Direction:
    """Ingress or egress, as a NetworkPolicy and the TrustPolicy's limits name it."""

    policy_type: str
    rules: str
    peers: str
    cidr_field: str
    everyone: str

    def cidrs(self, network: trustpolicy.Network) -> list[str]:
        return network.ingress_cidrs if self.policy_type == "Ingress" else network.egress_cidrs


_INGRESS: typing.Final = _Direction("Ingress", "ingress", "from", "ingressCIDRs", "source")
_EGRESS: typing.Final = _Direction("Egress", "egress", "to", "egressCIDRs", "destination")
# What a rule without peers allows: every namespace and every address of both families.
_EVERY_ADDRESS: typing.Final = ("0.0.0.0/0", "::/0")


@dataclasses.dataclass(frozen=True)
class AuditedPort:
    """The one pod port callers of a model that records its inputs may reach: the audit proxy's,
    by its container port's name and number."""

    name: str
    number: int


def check_network_policy(
    network_policy: collections.abc.Mapping[str, typing.Any],
    *,
    pod_labels: collections.abc.Mapping[str, str],
    network: trustpolicy.Network,
    policy_name: str,
    unknown_labels: collections.abc.Collection[str] = (),
    disclose: bool = True,
    audited_port: AuditedPort | None = None,
) -> list[reasons.Violation]:
    """Every rule of `network_policy` (a networking.k8s.io/v1 NetworkPolicy as the API server
    holds it) that opens pods labelled `pod_labels` beyond what `network` (of the TrustPolicy
    `policy_name`) allows, one violation each, naming the NetworkPolicy and the rule; [] when it
    does not select such pods, or opens them within the limits.

    `unknown_labels` are keys the pods will carry with values not known yet (pod-template-hash
    before the ReplicaSet exists): a selector on them counts as selecting the pods. Without
    `disclose`, the messages name neither the TrustPolicy nor its ranges, for whoever writes
    the NetworkPolicy, who may read neither.

    NetworkPolicies add up: a pod selected by several is allowed what any of them allows, so a
    policy someone else makes around a model's pods widens the model's own default-deny ones.
    Its peers are judged by the rules of a ModelDeployment's spec.access: pods of the same
    namespace by podSelector are the model owner's to allow; every namespace, and IP ranges
    outside the policy's CIDRs, are not; a rule without peers allows everyone. What cannot be
    read counts as allowing everything.

    Ports are judged only for a model whose audit proxy records its inputs (`audited_port`,
    decision 0026): an ingress rule may admit its callers to the proxy's port alone, as the
    model's own NetworkPolicy does. Any other port (the model server's, by name or number, a
    range, a rule without ports, which opens every port) lets callers reach the server around
    the proxy, with no record of what they asked.
    """
    metadata = _mapping(network_policy.get("metadata"))
    spec = _mapping(network_policy.get("spec"))
    pod_selector = _selector(spec.get("podSelector"), unreadable={})
    if not selectors.may_select(pod_selector, pod_labels, unknown=unknown_labels):
        return []
    # Named in messages only to those who may read the policy (the model's status).
    policy: str | None = policy_name if disclose else None
    found: list[reasons.Violation] = []
    for direction in _directions(spec):
        rules = spec.get(direction.rules)
        for index, rule in enumerate(rules if isinstance(rules, list) else []):
            field = f"spec.{direction.rules}[{index}].{direction.peers}"
            peers = _mapping(rule).get(direction.peers)
            if not peers:
                found += _everyone(field, direction=direction, network=network, name=policy)
                continue
            for position, peer in enumerate(peers if isinstance(peers, list) else [None]):
                found += _check_network_policy_peer(
                    _mapping(peer),
                    field=f"{field}[{position}]",
                    direction=direction,
                    network=network,
                    policy_name=policy,
                )
            if direction is _INGRESS and audited_port is not None:
                found += _check_ports(
                    _mapping(rule).get("ports"),
                    field=f"spec.ingress[{index}].ports",
                    audited_port=audited_port,
                )
    where = f"NetworkPolicy {metadata.get('namespace')}/{metadata.get('name')}"
    return [
        reasons.Violation(reasons.Reason.OPENED_BY_NETWORK_POLICY, f"{where}: {v.message}")
        for v in found
    ]


def _check_ports(
    ports: object, *, field: str, audited_port: AuditedPort
) -> list[reasons.Violation]:
    """An ingress rule's ports, when they may reach more than the audit proxy's port."""
    allowed = f"the audit proxy's port ({audited_port.name!r}, {audited_port.number}/TCP)"
    why = (
        "callers would reach the model server around its audit proxy, which records every "
        "call (spec.audit.inputs): admit them to "
        f"{allowed} only"
    )
    if not ports:
        return [
            reasons.Violation(
                reasons.Reason.OPENED_BY_NETWORK_POLICY,
                f"{field} is empty, which opens every port of the model's pods; {why}",
            )
        ]
    found: list[reasons.Violation] = []
    for position, port in enumerate(ports if isinstance(ports, list) else [None]):
        if not _only_audited_port(_mapping(port), audited_port=audited_port):
            found.append(
                reasons.Violation(
                    reasons.Reason.OPENED_BY_NETWORK_POLICY,
                    f"{field}[{position}] opens {_port_text(_mapping(port))} of the model's pods, "
                    f"not {allowed} alone; {why}",
                )
            )
    return found


def _only_audited_port(
    port: collections.abc.Mapping[str, typing.Any], *, audited_port: AuditedPort
) -> bool:
    # No protocol is TCP (the API server's default); no port is every port of the protocol.
    if port.get("protocol", "TCP") != "TCP":
        return False
    number = port.get("port")
    end = port.get("endPort")
    if number == audited_port.name:
        return end is None
    return number == audited_port.number and end in (None, audited_port.number)


def _port_text(port: collections.abc.Mapping[str, typing.Any]) -> str:
    protocol = port.get("protocol", "TCP")
    if port.get("port") is None:
        return f"every {protocol} port"
    if port.get("endPort") is not None:
        return f"ports {port.get('port')}-{port.get('endPort')}/{protocol}"
    return f"port {port.get('port')!r}/{protocol}"


def _directions(spec: collections.abc.Mapping[str, typing.Any]) -> list[_Direction]:
    types = spec.get("policyTypes")
    if not isinstance(types, list) or not types:
        # The API server's default: Ingress, and Egress when there are egress rules.
        types = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    return [direction for direction in (_INGRESS, _EGRESS) if direction.policy_type in types]


def _check_network_policy_peer(
    peer: collections.abc.Mapping[str, typing.Any],
    *,
    field: str,
    direction: _Direction,
    network: trustpolicy.Network,
    policy_name: str | None,
) -> list[reasons.Violation]:
    if not peer:
        return _everyone(field, direction=direction, network=network, name=policy_name)
    block = peer.get("ipBlock")
    cidr = _mapping(block).get("cidr") if block is not None else None
    return _check_peer(
        # A namespace selector that cannot be read counts as selecting every namespace.
        namespace_selector=(
            _selector(peer["namespaceSelector"], unreadable={})
            if "namespaceSelector" in peer
            else None
        ),
        cidr=None if block is None else str(cidr or ""),
        field=field,
        cidrs=direction.cidrs(network),
        cidr_field=direction.cidr_field,
        network=network,
        policy_name=policy_name,
    )


def _everyone(
    field: str, *, direction: _Direction, network: trustpolicy.Network, name: str | None
) -> list[reasons.Violation]:
    cidrs = direction.cidrs(network)
    if network.allow_all_namespaces and all(_inside(every, cidrs) for every in _EVERY_ADDRESS):
        return []
    return [
        reasons.Violation(
            reasons.Reason.OPENED_BY_NETWORK_POLICY,
            f"{field} is empty, which allows every {direction.everyone} (every namespace and "
            f"every address); {_trust_policy(name)} allows that only with "
            f"spec.network.allowAllNamespaces: true and spec.network.{direction.cidr_field} "
            f"covering {' and '.join(_EVERY_ADDRESS)}: list the {direction.everyone}s instead",
        )
    ]


def _selector(value: object, *, unreadable: dict[str, typing.Any]) -> v1alpha1.LabelSelector:
    """A selector as the API server holds it; one that cannot be read is `unreadable`."""
    try:
        return v1alpha1.LabelSelector.model_validate(value or {}, by_alias=True)
    except pydantic.ValidationError:
        return v1alpha1.LabelSelector.model_validate(unreadable, by_alias=True)


def _mapping(value: object) -> collections.abc.Mapping[str, typing.Any]:
    return value if isinstance(value, dict) else {}


def _check_peer(
    *,
    namespace_selector: v1alpha1.LabelSelector | None,
    cidr: str | None,
    field: str,
    cidrs: list[str],
    cidr_field: str,
    network: trustpolicy.Network,
    policy_name: str | None,
) -> list[reasons.Violation]:
    """`policy_name` None: the messages name neither the policy nor the ranges it allows."""
    found: list[reasons.Violation] = []
    selector = namespace_selector
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
                f"{field}.namespaceSelector: {what} {_trust_policy(policy_name)} must set "
                "spec.network.allowAllNamespaces: true to allow it",
            )
        )
    if cidr is not None and not _inside(cidr, cidrs):
        listed = f" ({', '.join(cidrs) or 'none'})" if policy_name is not None else ""
        found.append(
            reasons.Violation(
                reasons.Reason.BROAD_ACCESS_REFUSED,
                f"{field}.ipBlock.cidr: {cidr} is not inside the ranges "
                f"{_trust_policy(policy_name)} allows in spec.network.{cidr_field}{listed}; add it "
                "there or narrow the range",
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
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False  # a range that cannot be read is inside nothing
    for candidate in allowed:
        outer = ipaddress.ip_network(candidate, strict=False)
        if outer.version == network.version and network.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False


def _trust_policy(name: str | None) -> str:
    """The TrustPolicy as a message names it: by name, or, where its reader may not read it,
    as the model's."""
    return f'TrustPolicy "{name}"' if name is not None else "the model's TrustPolicy"
