"""The glue between kopf's validating handlers and the decisions, over the operator's caches:
what is judged while kopf's first listing is still being indexed, and what once it is in."""

from __future__ import annotations

import typing

import kopf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.admission import decisions, serving, webhooks

KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _policy(name: str, namespace_selector: dict[str, typing.Any]) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "TrustPolicy",
            "metadata": {"name": name},
            "spec": {
                "signers": [{"name": "release", "publicKey": KEY}],
                "namespaceSelector": namespace_selector,
            },
        }
    )


def _memo(*, filled: bool) -> kopf.Memo:
    memo = kopf.Memo()
    memo.webhook = serving.Options(
        port=None, cert_dir=None, addr="", identity=decisions.Identity(operator_username="op")
    )
    memo.admission_caches = webhooks.Caches(filled=filled)
    return memo


def _kwargs(
    policy: str, *, policies: dict[str, list[kopf.Body]], namespaces: dict[str, list[typing.Any]]
) -> dict[str, typing.Any]:
    body = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bert", "namespace": "ml"},
        "spec": {"model": {"name": "bert", "version": "1"}, "trustPolicy": policy},
    }
    return {
        "body": kopf.Body(body),
        "new": kopf.Body(body),
        "old": None,
        "operation": "CREATE",
        "userinfo": {"username": "alice"},
        webhooks.TRUST_POLICIES: policies,
        webhooks.NAMESPACE_LABELS: namespaces,
        webhooks.APPROVALS_BY_MODEL: {},
    }


ML = {"ml": [{"kubernetes.io/metadata.name": "ml"}]}
BOUND = {"strict": [_policy("strict", {"matchLabels": {"kubernetes.io/metadata.name": "ml"}})]}
ELSEWHERE = {"sandbox": [_policy("sandbox", {"matchLabels": {"tier": "sandbox"}})]}


@pytest.mark.parametrize(
    ("policy", "filled", "policies", "namespaces", "refusal"),
    [
        pytest.param("strict", True, BOUND, ML, None, id="bound"),
        pytest.param("typo", True, BOUND, ML, "does not exist", id="missing-once-filled"),
        pytest.param("typo", False, BOUND, ML, None, id="missing-while-filling"),
        pytest.param("typo", False, {}, ML, None, id="nothing-indexed-yet"),
        pytest.param("sandbox", True, ELSEWHERE, ML, "does not bind namespace ml", id="unbound"),
        # Its labels are not indexed yet (made a moment ago): the reconcile decides.
        pytest.param("sandbox", True, ELSEWHERE, {}, None, id="namespace-not-indexed"),
    ],
)
def test_model_deployment_judges_from_the_caches(
    policy: str,
    filled: bool,
    policies: dict[str, list[kopf.Body]],
    namespaces: dict[str, list[typing.Any]],
    refusal: str | None,
) -> None:
    kwargs = _kwargs(policy, policies=policies, namespaces=namespaces)
    if refusal is None:
        webhooks.model_deployment(_memo(filled=filled), kwargs)
        return
    with pytest.raises(kopf.AdmissionError, match=refusal):
        webhooks.model_deployment(_memo(filled=filled), kwargs)


def test_a_namespace_event_marks_the_caches_filled() -> None:
    memo = kopf.Memo()
    webhooks.configure(kopf.OperatorSettings(), memo)
    assert memo.admission_caches.filled is False
    # kopf hands each handler a shallow copy of the operator's memo: the flag must be shared.
    webhooks.caches_filled(kopf.Memo(memo))
    assert memo.admission_caches.filled is True
