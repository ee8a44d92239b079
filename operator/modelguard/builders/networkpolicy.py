"""NetworkPolicies that isolate the model's pods: deny all traffic, then allow what the spec says.

Four policies rather than one, so that each says one thing when read on its own: deny, callers,
the model server's destinations, and the artifact source that the verifying init container reads.
NetworkPolicies are additive: the allow policies open exactly their rules and nothing more,
whatever order they are applied in. All four always exist; an allow policy with no rules allows
nothing. So quarantine, or
removing every caller, is one replacement that empties the rules: no child to delete, no
moment where a stale allow policy outlives the spec, and no delete permission for the operator.
"""

import typing

from modelguard.api import v1alpha1
from modelguard.builders import deployment, labels, meta, names

DNS_NAMESPACE: typing.Final = "kube-system"
DNS_POD_LABELS: typing.Final = {"k8s-app": "kube-dns"}
DNS_PORT: typing.Final = 53

_API_VERSION: typing.Final = "networking.k8s.io/v1"


def build(md: v1alpha1.ModelDeployment) -> list[meta.Manifest]:
    """The policies of `md`: default deny, then the allow policies (empty: nothing allowed)."""
    return [default_deny(md), allow_ingress(md), allow_egress(md), allow_source(md)]


def default_deny(md: v1alpha1.ModelDeployment) -> meta.Manifest:
    """Selects the model's pods for both directions with no rules: nothing in, nothing out."""
    return _policy(md, name=names.child_names(md.name).default_deny, types=["Ingress", "Egress"])


def allow_ingress(md: v1alpha1.ModelDeployment) -> meta.Manifest:
    """The declared callers, to the serving port only; no rule when nobody may call the model."""
    policy = _policy(md, name=names.child_names(md.name).allow_ingress, types=["Ingress"])
    callers = [] if md.spec.quarantine else md.spec.access.ingress
    policy["spec"]["ingress"] = (
        [
            {
                "from": [_peer(peer) for peer in callers],
                "ports": [{"protocol": "TCP", "port": deployment.ingress_port(md)}],
            }
        ]
        if callers
        else []
    )
    return policy


def allow_egress(md: v1alpha1.ModelDeployment) -> meta.Manifest:
    """Cluster DNS plus the declared destinations; no rule at all while quarantined."""
    policy = _policy(md, name=names.child_names(md.name).allow_egress, types=["Egress"])
    policy["spec"]["egress"] = (
        []
        if md.spec.quarantine
        else [_dns_rule(), *(_egress_rule(rule) for rule in md.spec.access.egress)]
    )
    return policy


def allow_source(md: v1alpha1.ModelDeployment) -> meta.Manifest:
    """The artifact source's endpoint, as spec.model.source.egress declares it; no rule while
    quarantined, or when the source needs no network (pvc://)."""
    policy = _policy(md, name=names.child_names(md.name).allow_source, types=["Egress"])
    policy["spec"]["egress"] = (
        [] if md.spec.quarantine else [_egress_rule(rule) for rule in md.spec.model.source.egress]
    )
    return policy


def _policy(md: v1alpha1.ModelDeployment, *, name: str, types: list[str]) -> meta.Manifest:
    manifest = meta.child(md, api_version=_API_VERSION, kind="NetworkPolicy", name=name)
    manifest["spec"] = {
        "podSelector": {"matchLabels": labels.selector(md.name)},
        "policyTypes": types,
    }
    return manifest


def _dns_rule() -> dict[str, typing.Any]:
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}
                },
                "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
            }
        ],
        "ports": [
            {"protocol": "UDP", "port": DNS_PORT},
            {"protocol": "TCP", "port": DNS_PORT},
        ],
    }


def _egress_rule(rule: v1alpha1.EgressRule) -> dict[str, typing.Any]:
    manifest: dict[str, typing.Any] = {"to": [_peer(peer) for peer in rule.to]}
    # Absent ports means every port, which is what an empty list in the spec says.
    if rule.ports:
        manifest["ports"] = [{"protocol": str(p.protocol), "port": p.port} for p in rule.ports]
    return manifest


def _peer(peer: v1alpha1.NetworkPeer) -> dict[str, typing.Any]:
    # The spec's peer has the NetworkPolicyPeer shape by design; an empty selector stays {}.
    dumped: dict[str, typing.Any] = peer.model_dump(mode="json", exclude_none=True)
    return dumped
