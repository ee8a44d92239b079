"""Which TrustPolicies bind a namespace, as named table cases."""

from __future__ import annotations

import typing

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import trustpolicy, v1alpha1
from modelguard.reconcile import binding
from modelguard.trust import selectors

KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
TEAM = {"kubernetes.io/metadata.name": "team-a", "tier": "prod"}


def _selector(**fields: typing.Any) -> v1alpha1.LabelSelector:
    return v1alpha1.LabelSelector.model_validate(fields, by_alias=True)


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        pytest.param({}, TEAM, True, id="empty-selects-everything"),
        pytest.param({"matchLabels": {"tier": "prod"}}, TEAM, True, id="match-labels"),
        pytest.param({"matchLabels": {"tier": "dev"}}, TEAM, False, id="match-labels-differ"),
        pytest.param({"matchLabels": {"team": "a"}}, TEAM, False, id="match-labels-absent"),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod", "x"]}]},
            TEAM,
            True,
            id="in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["prod"]}]},
            TEAM,
            False,
            id="not-in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
            TEAM,
            True,
            id="not-in-absent-label-holds",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, TEAM, True, id="exists"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
            TEAM,
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {
                "matchLabels": {"tier": "prod"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["dev"]}],
            },
            TEAM,
            False,
            id="every-term-must-hold",
        ),
    ],
)
def test_selects(selector: dict[str, typing.Any], labels: dict[str, str], selected: bool) -> None:
    assert selectors.selects(_selector(**selector), labels) is selected


POD = {"app": "bert"}
HASH = "pod-template-hash"


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        pytest.param({"matchLabels": {HASH: "7c54bb5d48"}}, True, id="any-value"),
        pytest.param({"matchLabels": {HASH: "7c54bb5d48", "app": "bert"}}, True, id="and-known"),
        pytest.param({"matchLabels": {HASH: "7c54bb5d48", "app": "web"}}, False, id="known-differ"),
        pytest.param(
            {"matchExpressions": [{"key": HASH, "operator": "In", "values": ["x"]}]}, True, id="in"
        ),
        pytest.param(
            {"matchExpressions": [{"key": HASH, "operator": "NotIn", "values": ["x"]}]},
            True,
            id="not-in",
        ),
        pytest.param(
            {"matchExpressions": [{"key": HASH, "operator": "Exists"}]}, True, id="exists"
        ),
        pytest.param(
            {"matchExpressions": [{"key": HASH, "operator": "DoesNotExist"}]},
            False,
            id="does-not-exist",
        ),
    ],
)
def test_a_label_of_unknown_value_may_be_selected_by_any_term_but_its_absence(
    selector: dict[str, typing.Any], selected: bool
) -> None:
    assert selectors.may_select(_selector(**selector), POD, unknown=(HASH,)) is selected
    # Without unknown keys, exactly `selects`.
    assert selectors.may_select(_selector(**selector), POD) is selectors.selects(
        _selector(**selector), POD
    )


def _policy(selector: dict[str, typing.Any] | None) -> trustpolicy.TrustPolicy:
    spec: dict[str, typing.Any] = {"signers": [{"name": "release", "publicKey": KEY}]}
    if selector is not None:
        spec["namespaceSelector"] = selector
    return trustpolicy.TrustPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": spec}, by_alias=True
    )


@pytest.mark.parametrize(
    ("selector", "labels", "refusal"),
    [
        pytest.param(None, TEAM, "binds no namespace", id="unset-binds-nothing"),
        pytest.param({}, TEAM, None, id="empty-binds-every-namespace"),
        pytest.param(
            {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
            TEAM,
            None,
            id="bound-by-name",
        ),
        pytest.param(
            {"matchLabels": {"kubernetes.io/metadata.name": "sandbox"}},
            TEAM,
            "does not bind namespace team-a",
            id="bound-elsewhere",
        ),
        pytest.param({}, None, "does not bind namespace team-a", id="namespace-unreadable"),
    ],
)
def test_check(
    selector: dict[str, typing.Any] | None, labels: dict[str, str] | None, refusal: str | None
) -> None:
    decision = binding.check(_policy(selector), name="p", namespace="team-a", labels=labels)
    if refusal is None:
        assert decision is None
        return
    assert decision is not None
    assert (decision.status, decision.reason) == ("False", "PolicyNotBound")
    assert refusal in decision.message
    assert 'spec.trustPolicy: TrustPolicy "p"' in decision.message
