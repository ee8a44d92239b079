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
        # Before kopf's first listing is in, a policy missing from the cache may only be one not
        # read yet: refused rather than admitted (what a full cache refuses, as above).
        pytest.param("typo", False, BOUND, ML, "caches not yet filled", id="missing-while-filling"),
        pytest.param("typo", False, {}, ML, "caches not yet filled", id="nothing-indexed-yet"),
        pytest.param("strict", False, BOUND, ML, "caches not yet filled", id="bound-while-filling"),
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
    policies = {"default": ["body"]}
    webhooks.caches_filled(kopf.Memo(memo), {webhooks.TRUST_POLICIES: policies, "other": {}})
    assert memo.admission_caches.filled is True
    # ...and the indexes kopf passes, whose sizes the metrics report.
    assert memo.admission_caches.indexes == {webhooks.TRUST_POLICIES: policies}


def _review(kind: str, operation: str, **extra: typing.Any) -> dict[str, typing.Any]:
    body = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "ml"}}
    if kind == "NetworkPolicy":
        body["spec"] = {"podSelector": {}, "ingress": [{}]}
    if kind == "ModelApproval":
        body["spec"] = {"model": "bert", "version": "1"}
    return {
        "body": kopf.Body(body),
        "new": kopf.Body(body),
        "old": kopf.Body(body) if operation == "UPDATE" else None,
        "operation": operation,
        "userinfo": {"username": "alice"},
        **{index: {} for index in webhooks.INDEXES},
        webhooks.MODEL_PODS: {},
        webhooks.MODEL_POD_LABELS: {},
        **extra,
    }


@pytest.mark.parametrize(
    ("webhook", "kwargs"),
    [
        pytest.param(
            webhooks.network_policy,
            _review("NetworkPolicy", "CREATE"),
            id="network-policy",
        ),
        pytest.param(
            webhooks.managed_scale,
            _review(
                "Scale",
                "UPDATE",
                subresource="scale",
                **{webhooks.MANAGED_DEPLOYMENTS: {}},
            ),
            id="managed-scale",
        ),
        pytest.param(
            lambda memo, kwargs: webhooks.model_approval(memo, [], kwargs),
            # A request the decision admits without reading anything: the refusal comes first.
            _review("ModelApproval", "DELETE"),
            id="model-approval",
        ),
        pytest.param(
            webhooks.model_pod_connect,
            _review("PodExecOptions", "CONNECT", subresource="exec"),
            id="model-pod-connect",
        ),
    ],
)
def test_every_webhook_that_judges_from_the_caches_refuses_until_they_are_filled(
    webhook: typing.Callable[[kopf.Memo, dict[str, typing.Any]], None],
    kwargs: dict[str, typing.Any],
) -> None:
    # With empty caches each of these requests is admitted: no model, policy or model pod is
    # known to say otherwise.
    webhook(_memo(filled=True), kwargs)
    with pytest.raises(kopf.AdmissionError, match="caches not yet filled"):
        webhook(_memo(filled=False), kwargs)


def test_webhooks_that_read_no_cache_answer_while_the_caches_fill() -> None:
    # The operator's own writes of a model's children (and everyone's, judged by identity alone)
    # need no cache: they are not held up by a replica that is starting.
    memo = _memo(filled=False)
    review = _review("ConfigMap", "CREATE")
    webhooks.managed_child(memo, {**review, "userinfo": {"username": "op"}})
