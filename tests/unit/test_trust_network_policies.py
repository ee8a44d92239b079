"""NetworkPolicies others make around a model's pods, judged by its TrustPolicy's network limits
(named table cases): NetworkPolicies add up, so one that selects the model's pods and allows more
than the TrustPolicy would widens the model's isolation."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import access, reasons

MODEL_PODS = {
    "app.kubernetes.io/name": "bert",
    "app.kubernetes.io/instance": "bert",
    "app.kubernetes.io/version": "1.4.0",
    "app.kubernetes.io/managed-by": "modelguard",
    "modelguard.dev/model-deployment": "bert",
}
THE_MODEL = {"matchLabels": {"modelguard.dev/model-deployment": "bert"}}
OTHER_PODS = {"matchLabels": {"app": "frontend"}}
FRONTEND = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}
SAME_NAMESPACE = {"podSelector": {"matchLabels": {"app": "gateway"}}}
EVERY_NAMESPACE = {"namespaceSelector": {}}
INTERNET = {"ipBlock": {"cidr": "0.0.0.0/0"}}
STORE = {"ipBlock": {"cidr": "10.20.0.0/24", "except": ["10.20.0.1/32"]}}
OPEN = {"allowAllNamespaces": True, "egressCIDRs": ["0.0.0.0/0", "::/0"]}


def network_policy(
    pods: dict[str, typing.Any] | None = None, **spec: typing.Any
) -> dict[str, typing.Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "extra", "namespace": "ml"},
        "spec": {"podSelector": THE_MODEL if pods is None else pods, **spec},
    }


def ingress(*peers: dict[str, typing.Any], **rule: typing.Any) -> dict[str, typing.Any]:
    return {"policyTypes": ["Ingress"], "ingress": [{"from": list(peers), **rule}]}


def egress(*peers: dict[str, typing.Any], **rule: typing.Any) -> dict[str, typing.Any]:
    return {"policyTypes": ["Egress"], "egress": [{"to": list(peers), **rule}]}


@dataclasses.dataclass(frozen=True)
class Case:
    network_policy: dict[str, typing.Any]
    widening: list[str]
    """The fields named by the refusals, in order; [] when the NetworkPolicy widens nothing."""
    network: dict[str, typing.Any] = dataclasses.field(default_factory=dict)


CASES = {
    "callers of the same namespace by pod selector": Case(
        network_policy(**ingress(SAME_NAMESPACE)), []
    ),
    "callers of a namespace named by its label": Case(network_policy(**ingress(FRONTEND)), []),
    "every namespace as callers": Case(
        network_policy(**ingress(EVERY_NAMESPACE)), ["spec.ingress[0].from[0].namespaceSelector"]
    ),
    "every namespace, allowed by the policy": Case(
        network_policy(**ingress(EVERY_NAMESPACE)), [], network={"allowAllNamespaces": True}
    ),
    "namespaces only by NotIn": Case(
        network_policy(
            **ingress(
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {"key": "team", "operator": "NotIn", "values": ["attackers"]}
                        ]
                    },
                    "podSelector": {"matchLabels": {"app": "gateway"}},
                }
            )
        ),
        ["spec.ingress[0].from[0].namespaceSelector"],
    ),
    "an address range the policy does not list": Case(
        network_policy(**ingress(INTERNET)), ["spec.ingress[0].from[0].ipBlock.cidr"]
    ),
    "an address range inside the policy's": Case(
        network_policy(**egress(STORE)), [], network={"egressCIDRs": ["10.20.0.0/16"]}
    ),
    "ingress ranges do not open egress": Case(
        network_policy(**egress(STORE)),
        ["spec.egress[0].to[0].ipBlock.cidr"],
        network={"ingressCIDRs": ["10.20.0.0/16"]},
    ),
    "a rule without peers allows every source": Case(
        network_policy(policyTypes=["Ingress"], ingress=[{"ports": [{"port": 8080}]}]),
        ["spec.ingress[0].from"],
    ),
    "a rule without peers allows every destination": Case(
        network_policy(policyTypes=["Egress"], egress=[{}]), ["spec.egress[0].to"]
    ),
    "a rule without peers, under a policy open to everything": Case(
        network_policy(policyTypes=["Egress"], egress=[{}]), [], network=OPEN
    ),
    "a rule without peers needs both address families": Case(
        network_policy(policyTypes=["Egress"], egress=[{}]),
        ["spec.egress[0].to"],
        network={"allowAllNamespaces": True, "egressCIDRs": ["0.0.0.0/0"]},
    ),
    "deny-all (no rules) widens nothing": Case(
        network_policy(pods={}, policyTypes=["Ingress", "Egress"]), []
    ),
    "the namespace's default deny plus DNS": Case(
        network_policy(
            pods={},
            policyTypes=["Egress"],
            egress=[
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            }
                        }
                    ],
                    "ports": [{"port": 53, "protocol": "UDP"}],
                }
            ],
        ),
        [],
    ),
    "an empty pod selector selects the model's pods too": Case(
        network_policy(pods={}, **ingress(INTERNET)), ["spec.ingress[0].from[0].ipBlock.cidr"]
    ),
    "a selector by an expression the model's pods meet": Case(
        network_policy(
            pods={
                "matchExpressions": [{"key": "app.kubernetes.io/managed-by", "operator": "Exists"}]
            },
            **ingress(INTERNET),
        ),
        ["spec.ingress[0].from[0].ipBlock.cidr"],
    ),
    "other pods are not the model's business": Case(
        network_policy(pods=OTHER_PODS, **ingress(INTERNET, EVERY_NAMESPACE)), []
    ),
    "rules of a type the policy does not apply are inert": Case(
        network_policy(policyTypes=["Egress"], ingress=[{"from": [INTERNET]}], egress=[]), []
    ),
    "without policyTypes, egress rules apply (the API server's default)": Case(
        network_policy(egress=[{"to": [INTERNET]}]), ["spec.egress[0].to[0].ipBlock.cidr"]
    ),
    "each widening rule is named": Case(
        network_policy(
            policyTypes=["Ingress", "Egress"],
            ingress=[{"from": [FRONTEND, INTERNET]}, {"from": [EVERY_NAMESPACE]}],
            egress=[{"to": [SAME_NAMESPACE]}, {}],
        ),
        [
            "spec.ingress[0].from[1].ipBlock.cidr",
            "spec.ingress[1].from[0].namespaceSelector",
            "spec.egress[1].to",
        ],
    ),
    "a pod selector that cannot be read counts as selecting the model": Case(
        network_policy(pods={"matchLabels": "everything"}, **ingress(INTERNET)),
        ["spec.ingress[0].from[0].ipBlock.cidr"],
    ),
    "a namespace selector that cannot be read counts as every namespace": Case(
        network_policy(**ingress({"namespaceSelector": {"matchExpressions": "all"}})),
        ["spec.ingress[0].from[0].namespaceSelector"],
    ),
    "an address range that cannot be read is inside nothing": Case(
        network_policy(**ingress({"ipBlock": {"cidr": "not-a-range"}})),
        ["spec.ingress[0].from[0].ipBlock.cidr"],
        network={"ingressCIDRs": ["0.0.0.0/0"]},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_check_network_policy(case: Case) -> None:
    found = access.check_network_policy(
        case.network_policy,
        pod_labels=MODEL_PODS,
        network=trustpolicy.Network.model_validate(case.network),
        policy_name="default",
    )
    prefix = "NetworkPolicy ml/extra: "
    assert [v.message.removeprefix(prefix).split(":")[0].split(" ")[0] for v in found] == (
        case.widening
    ), found
    for violation in found:
        assert violation.reason is reasons.Reason.OPENED_BY_NETWORK_POLICY
        assert violation.message.startswith(prefix)


def test_the_message_names_the_network_policy_the_rule_and_the_limit() -> None:
    (violation,) = access.check_network_policy(
        network_policy(**ingress(INTERNET)),
        pod_labels=MODEL_PODS,
        network=trustpolicy.Network.model_validate({"ingressCIDRs": ["10.0.0.0/8"]}),
        policy_name="strict",
    )
    assert violation.message == (
        "NetworkPolicy ml/extra: spec.ingress[0].from[0].ipBlock.cidr: 0.0.0.0/0 is not inside "
        'the ranges TrustPolicy "strict" allows in spec.network.ingressCIDRs (10.0.0.0/8); add '
        "it there or narrow the range"
    )


def test_a_rule_without_peers_says_what_it_allows_and_what_would_allow_it() -> None:
    (violation,) = access.check_network_policy(
        network_policy(policyTypes=["Egress"], egress=[{"ports": [{"port": 443}]}]),
        pod_labels=MODEL_PODS,
        network=trustpolicy.Network(),
        policy_name="default",
    )
    assert violation.message == (
        "NetworkPolicy ml/extra: spec.egress[0].to is empty, which allows every destination "
        '(every namespace and every address); TrustPolicy "default" allows that only with '
        "spec.network.allowAllNamespaces: true and spec.network.egressCIDRs covering 0.0.0.0/0 "
        "and ::/0: list the destinations instead"
    )


def test_the_trust_reasons_are_the_api_reasons() -> None:
    # One vocabulary: a refusal of the trust layer becomes a condition reason as it is.
    assert reasons.Reason.OPENED_BY_NETWORK_POLICY == v1alpha1.REASON_OPENED_BY_NETWORK_POLICY
    assert reasons.Reason.POLICY_NOT_BOUND == v1alpha1.REASON_POLICY_NOT_BOUND


PROXY = access.AuditedPort("http", 8480)
PORT_CASES = {
    "the audit proxy's port by name": (
        ingress(SAME_NAMESPACE, ports=[{"port": "http", "protocol": "TCP"}]),
        [],
    ),
    "the audit proxy's port by number, protocol defaulted": (
        ingress(SAME_NAMESPACE, ports=[{"port": 8480}]),
        [],
    ),
    "the audit proxy's port as a one-port range": (
        ingress(SAME_NAMESPACE, ports=[{"port": 8480, "endPort": 8480}]),
        [],
    ),
    "no ports: every port, the server's too": (ingress(SAME_NAMESPACE), ["spec.ingress[0].ports"]),
    "the model server's port by name": (
        ingress(SAME_NAMESPACE, ports=[{"port": "http"}, {"port": "model"}]),
        ["spec.ingress[0].ports[1]"],
    ),
    "a range around the proxy's port": (
        ingress(SAME_NAMESPACE, ports=[{"port": 8000, "endPort": 9000}]),
        ["spec.ingress[0].ports[0]"],
    ),
    "every TCP port (a protocol, no port)": (
        ingress(SAME_NAMESPACE, ports=[{"protocol": "TCP"}]),
        ["spec.ingress[0].ports[0]"],
    ),
    "the proxy's number over UDP": (
        ingress(SAME_NAMESPACE, ports=[{"port": 8480, "protocol": "UDP"}]),
        ["spec.ingress[0].ports[0]"],
    ),
    "egress ports are not the proxy's business": (egress(SAME_NAMESPACE), []),
}


@pytest.mark.parametrize(("spec", "widening"), PORT_CASES.values(), ids=PORT_CASES.keys())
def test_a_model_recording_its_inputs_is_opened_on_the_audit_proxys_port_alone(
    spec: dict[str, typing.Any], widening: list[str]
) -> None:
    found = access.check_network_policy(
        network_policy(**spec),
        pod_labels=MODEL_PODS,
        network=trustpolicy.Network(),
        policy_name="default",
        audited_port=PROXY,
    )
    prefix = "NetworkPolicy ml/extra: "
    assert [v.message.removeprefix(prefix).split(" ")[0] for v in found] == widening, found


def test_ports_are_not_judged_for_a_model_that_records_no_inputs() -> None:
    # Without the audit proxy, the model server's port is the one callers are meant to reach.
    assert not access.check_network_policy(
        network_policy(**ingress(SAME_NAMESPACE, ports=[{"port": "model"}])),
        pod_labels=MODEL_PODS,
        network=trustpolicy.Network(),
        policy_name="default",
    )
