"""Broad access is refused unless the TrustPolicy allows it: the model is not rolled out, and
Isolated=False names the spec field and the policy field that would allow it."""

from __future__ import annotations

import typing
from pathlib import Path

import harness
import pytest
from test_audit_records import _records_of, audit_log
from test_modeldeployment import SELECTOR, model_deployment, source, wait_ready

import signedmodel

__all__ = ["audit_log", "source"]  # fixtures, shared with test_audit_records, test_modeldeployment

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")


@pytest.mark.parametrize(
    ("access", "spec_field", "policy_field"),
    [
        pytest.param(
            {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
            "spec.access.egress[0].to[0].ipBlock.cidr",
            "spec.network.egressCIDRs",
            id="egress-to-anywhere",
        ),
        pytest.param(
            {"ingress": [{"namespaceSelector": {}}]},
            "spec.access.ingress[0].namespaceSelector",
            "spec.network.allowAllNamespaces",
            id="ingress-from-every-namespace",
        ),
    ],
)
def test_broad_access_is_refused_naming_the_policy_field(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    access: dict[str, typing.Any],
    spec_field: str,
    policy_field: str,
) -> None:
    kubectl.apply(model_deployment("wide", source=source, access=access), namespace=namespace)

    def refused() -> None:
        body = kubectl.get("modeldeployment", "wide", namespace=namespace)
        isolated = harness.condition(body, "Isolated")
        assert (isolated.get("status"), isolated.get("reason")) == ("False", "BroadAccessRefused")
        assert spec_field in isolated["message"]
        assert policy_field in isolated["message"]
        ready = harness.condition(body, "Ready")
        assert (ready.get("status"), ready.get("reason")) == ("False", "NotIsolated")

    harness.eventually(refused, timeout=60)
    assert (
        kubectl.json("get", "deployments", "-n", namespace, "-l", f"{SELECTOR}=wide")["items"] == []
    )


def test_broad_access_the_policy_allows_rolls_out(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
) -> None:
    name = f"open-{namespace}"
    policy = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    policy["spec"]["network"] = {"egressCIDRs": ["0.0.0.0/0"]}  # type: ignore[index]
    kubectl.apply(policy)
    try:
        body = model_deployment(
            "wide",
            source=source,
            trustPolicy=name,
            access={
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                        "ports": [{"port": 443, "protocol": "TCP"}],
                    }
                ]
            },
        )
        kubectl.apply(body, namespace=namespace)
        ready = wait_ready(kubectl, namespace, "wide")
        assert harness.condition(ready, "Isolated")["status"] == "True"
        egress = kubectl.json("get", "networkpolicy", "wide-allow-egress", "-n", namespace)["spec"][
            "egress"
        ]
        assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in egress[1]["to"]
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


LOOPBACK_S3 = {"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [{"port": 9000}]}


def _with_source_egress(body: dict[str, typing.Any]) -> dict[str, typing.Any]:
    body["spec"]["model"]["source"]["egress"] = [LOOPBACK_S3]
    return body


def test_the_source_endpoint_is_declared_in_a_policy_of_its_own(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    approver_key: tuple[Path, str],
) -> None:
    # Under the default policy (no egressCIDRs), even the source endpoint needs the say-so.
    kubectl.apply(
        _with_source_egress(model_deployment("fetches", source=source)), namespace=namespace
    )

    def refused() -> None:
        isolated = harness.condition(
            kubectl.get("modeldeployment", "fetches", namespace=namespace), "Isolated"
        )
        assert isolated.get("reason") == "BroadAccessRefused", isolated
        assert "spec.model.source.egress[0].to[0].ipBlock.cidr" in isolated["message"]

    harness.eventually(refused, timeout=60)

    name = f"store-{namespace}"
    policy = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    policy["spec"]["network"] = {"egressCIDRs": ["127.0.0.0/8"]}  # type: ignore[index]
    kubectl.apply(policy)
    try:
        body = _with_source_egress(model_deployment("fetches", source=source, trustPolicy=name))
        kubectl.apply(body, namespace=namespace)
        wait_ready(kubectl, namespace, "fetches")
        rules = kubectl.json("get", "networkpolicy", "fetches-allow-source", "-n", namespace)
        assert rules["spec"]["egress"] == [
            {"to": LOOPBACK_S3["to"], "ports": [{"port": 9000, "protocol": "TCP"}]}
        ]
        # The model server's own destinations stay DNS only.
        egress = kubectl.json("get", "networkpolicy", "fetches-allow-egress", "-n", namespace)
        assert len(egress["spec"]["egress"]) == 1

        # Quarantine cuts the source too.
        body["spec"]["quarantine"] = True
        kubectl.apply(body, namespace=namespace)

        def cut() -> None:
            cut = kubectl.json("get", "networkpolicy", "fetches-allow-source", "-n", namespace)
            assert cut["spec"].get("egress", []) == []

        harness.eventually(cut, timeout=60)
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_network_policy_of_someone_else_that_opens_the_model_is_reported(
    kubectl: harness.Kubectl,
    namespace: str,
    source: str,
    audit_log: Path,
) -> None:
    # NetworkPolicies add up. Where no webhook refused it (none is registered here, as while no
    # operator pod answers), an editor's allow-from-anywhere around every pod of the namespace
    # opens the model beyond its TrustPolicy: the model says so, naming it, and keeps serving.
    kubectl.apply(model_deployment("open", source=source), namespace=namespace)
    uid = wait_ready(kubectl, namespace, "open")["metadata"]["uid"]
    kubectl.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-from-anywhere"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            },
        },
        namespace=namespace,
    )
    rule = (
        f"NetworkPolicy {namespace}/allow-from-anywhere: spec.ingress[0].from[0].ipBlock.cidr: "
        '0.0.0.0/0 is not inside the ranges TrustPolicy "default" allows'
    )

    def reported() -> None:
        body = kubectl.get("modeldeployment", "open", namespace=namespace)
        isolated = harness.condition(body, "Isolated")
        assert (isolated.get("status"), isolated.get("reason")) == (
            "False",
            "OpenedByNetworkPolicy",
        ), isolated
        assert rule in isolated["message"]
        # What serves keeps serving: the model is not what opened it.
        assert harness.condition(body, "Ready").get("status") == "True"
        events = harness.model_events(kubectl, namespace, "open")
        assert any(
            e["reason"] == "OpenedByNetworkPolicy" and rule in e.get("note", "") for e in events
        ), events
        records = _records_of(audit_log, uid)
        records = [r for r in records if r["decision"] == "OpenedByNetworkPolicy"]
        assert records, "no audit record"
        assert rule in records[-1]["message"]

    harness.eventually(reported, timeout=60)
    kubectl.run("delete", "networkpolicy", "allow-from-anywhere", "-n", namespace)

    def isolated_again() -> None:
        body = kubectl.get("modeldeployment", "open", namespace=namespace)
        isolated = harness.condition(body, "Isolated")
        assert (isolated.get("status"), isolated.get("reason")) == ("True", "WithinPolicy")

    harness.eventually(isolated_again, timeout=60)
