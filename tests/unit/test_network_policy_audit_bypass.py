"""A way around the audit proxy (decision 0026) through admission of others' NetworkPolicies
(decision 0025): ports are not judged. Fails while the hole is open.

Decision 0026 rests on the network: "the model's NetworkPolicy admits callers to [the proxy's]
port only, so no caller reaches the server around the proxy, whatever address the server binds".
NetworkPolicies add up, and a namespace editor's NetworkPolicy that selects the model's pods and
admits peers the TrustPolicy allows (pods of the same namespace, by podSelector) is admitted
whatever ports it opens: `trust.access.check_network_policy` says "Ports are not judged"."""

from __future__ import annotations

import typing

import pytest
from test_admission_decisions import BERT, GATEWAY, IDENTITY, POLICIES, review

from modelguard.admission import decisions


def _opening(ports: list[dict[str, typing.Any]] | None) -> dict[str, typing.Any]:
    rule: dict[str, typing.Any] = {"from": [GATEWAY]}
    if ports is not None:
        rule["ports"] = ports
    return {
        "metadata": {"name": "debug-direct", "namespace": "ml"},
        "spec": {
            "podSelector": {"matchLabels": {"modelguard.dev/model-deployment": "bert"}},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


@pytest.mark.parametrize(
    "ports",
    [
        pytest.param([{"port": "model", "protocol": "TCP"}], id="the-servers-named-port"),
        pytest.param([{"port": 8080, "protocol": "TCP"}], id="the-servers-port-number"),
        pytest.param([{"port": 1, "endPort": 65535, "protocol": "TCP"}], id="every-port-range"),
    ],
)
def test_a_network_policy_opening_the_model_servers_own_port_is_refused(
    ports: list[dict[str, typing.Any]],
) -> None:
    """Attack (a namespace editor, then any pod of the namespace it chooses, its own included):
    a NetworkPolicy selecting the model's pods, admitting the namespace's `app: gateway` pods (a
    peer the model owner may allow) to the model server's own port (`model`, 8080) rather than
    the audit proxy's. It is admitted: the peers are within the TrustPolicy, and ports are not
    judged. The gateway pods (or the editor's own pod labelled so) then call
    <pod-ip>:8080 directly: inferences the audit proxy never sees, with no record, no rate
    limit and no size limit, on a model whose spec.audit.inputs says every input is recorded.
    Expected: a NetworkPolicy from anyone but the operator that opens a model pod's ports other
    than the audit proxy's is refused (a rule without ports opens them all, the server's too)."""
    decision = decisions.network_policy(
        review("CREATE", new=_opening(ports), kind="NetworkPolicy"),
        identity=IDENTITY,
        models=(BERT,),
        policies=POLICIES,
    )
    assert not decision.allowed, "a NetworkPolicy opening the model server's own port was admitted"
