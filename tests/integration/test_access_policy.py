"""Broad access is refused unless the TrustPolicy allows it: the model is not rolled out, and
Isolated=False names the spec field and the policy field that would allow it."""

from __future__ import annotations

import typing
from pathlib import Path

import harness
import pytest
from test_modeldeployment import SELECTOR, model_deployment, source, wait_ready

import signedmodel

__all__ = ["source"]  # the fixture, shared with test_modeldeployment

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
    approver_key: tuple[Path, str],
) -> None:
    name = f"open-{namespace}"
    policy = signedmodel.trust_policy(
        name=name,
        public_key=signing_key[1],
        sources=["s3://models/"],
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
