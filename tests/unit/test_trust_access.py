"""Broad network access is refused unless the TrustPolicy allows it (named table cases)."""

from __future__ import annotations

import typing

import pytest

from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import access, reasons

FRONTEND = {"namespaceSelector": {"matchLabels": {"team": "frontend"}}}
EVERY_NAMESPACE = {"namespaceSelector": {}}
INTERNET = {"ipBlock": {"cidr": "0.0.0.0/0"}}
STORE = {"ipBlock": {"cidr": "10.20.0.0/24"}}


def _namespaces_where(*terms: dict[str, typing.Any]) -> dict[str, typing.Any]:
    return {"namespaceSelector": {"matchExpressions": list(terms)}}


NAME = "kubernetes.io/metadata.name"


SOURCE_PORT = [{"port": 9000}]


def _check(
    access_spec: dict[str, typing.Any], network: dict[str, typing.Any]
) -> list[reasons.Violation]:
    """`access_spec` is spec.access, but for its key `source`: spec.model.source.egress."""
    spec = v1alpha1.ModelDeploymentSpec.model_validate(
        {
            "model": {
                "name": "m",
                "version": "1",
                "source": {"uri": "s3://models/m/", "egress": access_spec.pop("source", [])},
            },
            "serving": {"image": "registry.example/server@sha256:" + "0" * 64},
            "access": access_spec,
        }
    )
    return access.check_access(
        spec, network=trustpolicy.Network.model_validate(network), policy_name="default"
    )


@pytest.mark.parametrize(
    ("access_spec", "network", "refused_fields"),
    [
        pytest.param({"ingress": [FRONTEND]}, {}, [], id="callers-by-selector-need-no-say-so"),
        pytest.param({}, {}, [], id="nothing-declared"),
        pytest.param(
            {"ingress": [EVERY_NAMESPACE]},
            {},
            ["spec.access.ingress[0].namespaceSelector"],
            id="every-namespace-refused",
        ),
        pytest.param(
            {"ingress": [EVERY_NAMESPACE]},
            {"allowAllNamespaces": True},
            [],
            id="every-namespace-allowed-by-policy",
        ),
        pytest.param(
            {"ingress": [_namespaces_where({"key": NAME, "operator": "Exists"})]},
            {},
            ["spec.access.ingress[0].namespaceSelector"],
            id="name-label-exists-is-every-namespace",
        ),
        pytest.param(
            {"ingress": [_namespaces_where({"key": "team", "operator": "DoesNotExist"})]},
            {},
            ["spec.access.ingress[0].namespaceSelector"],
            id="label-does-not-exist-refused",
        ),
        pytest.param(
            {
                "egress": [
                    {
                        "to": [
                            _namespaces_where({"key": "team", "operator": "NotIn", "values": ["x"]})
                        ]
                    }
                ]
            },
            {},
            ["spec.access.egress[0].to[0].namespaceSelector"],
            id="label-not-in-refused-for-egress-too",
        ),
        pytest.param(
            {"ingress": [_namespaces_where({"key": "team", "operator": "Exists"})]},
            {},
            ["spec.access.ingress[0].namespaceSelector"],
            id="any-label-exists-refused",
        ),
        pytest.param(
            {
                "ingress": [
                    _namespaces_where(
                        {"key": "team", "operator": "Exists"},
                        {"key": NAME, "operator": "In", "values": ["frontend"]},
                    )
                ]
            },
            {},
            [],
            id="an-in-term-bounds-the-whole-selector",
        ),
        pytest.param(
            {"ingress": [_namespaces_where({"key": NAME, "operator": "Exists"})]},
            {"allowAllNamespaces": True},
            [],
            id="broad-expressions-allowed-by-policy",
        ),
        pytest.param(
            {"egress": [{"to": [INTERNET]}]},
            {},
            ["spec.access.egress[0].to[0].ipBlock.cidr"],
            id="egress-to-the-internet-refused",
        ),
        pytest.param(
            {"egress": [{"to": [STORE]}]},
            {"egressCIDRs": ["10.20.0.0/16"]},
            [],
            id="egress-inside-an-allowed-range",
        ),
        pytest.param(
            {"egress": [{"to": [INTERNET]}]},
            {"egressCIDRs": ["10.0.0.0/8"]},
            ["spec.access.egress[0].to[0].ipBlock.cidr"],
            id="egress-wider-than-the-allowed-range",
        ),
        pytest.param(
            {"ingress": [STORE]},
            {"egressCIDRs": ["10.20.0.0/16"]},
            ["spec.access.ingress[0].ipBlock.cidr"],
            id="ingress-ranges-are-their-own-list",
        ),
        pytest.param(
            {"source": [{"to": [INTERNET], "ports": SOURCE_PORT}]},
            {"egressCIDRs": ["10.20.0.0/16"]},
            ["spec.model.source.egress[0].to[0].ipBlock.cidr"],
            id="source-endpoint-outside-the-allowed-range",
        ),
        pytest.param(
            {"source": [{"to": [STORE], "ports": SOURCE_PORT}]},
            {"egressCIDRs": ["10.20.0.0/16"]},
            [],
            id="source-endpoint-inside-the-allowed-range",
        ),
        pytest.param(
            {"ingress": [{"ipBlock": {"cidr": "2001:db8::/64"}}]},
            {"ingressCIDRs": ["10.0.0.0/8"]},
            ["spec.access.ingress[0].ipBlock.cidr"],
            id="ipv6-never-inside-an-ipv4-range",
        ),
    ],
)
def test_check_access(
    access_spec: dict[str, typing.Any], network: dict[str, typing.Any], refused_fields: list[str]
) -> None:
    violations = _check(access_spec, network)
    assert [v.message.split(":")[0] for v in violations] == refused_fields
    for violation in violations:
        assert violation.reason is reasons.Reason.BROAD_ACCESS_REFUSED
        assert 'TrustPolicy "default"' in violation.message
        assert "spec.network." in violation.message
