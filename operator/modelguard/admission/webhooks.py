"""The kopf side of the admission webhooks: each validating handler's request rebuilt from kopf's
arguments, judged by a pure decision over the operator's caches (kopf indexes), and enforced.

Nothing here waits on the network: the API server is waiting for the answer. handlers.py
registers each function below with kopf and does nothing else; the index ids below are the names
kopf passes each index by.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime
import time
import typing
from collections.abc import Iterator

import kopf

from modelguard.admission import decisions, serving
from modelguard.api import errors, modelapproval, trustpolicy, v1alpha1
from modelguard.builders import labels

# The ids of the admission-only indexes: kopf passes every index to every handler as a keyword
# argument named by its id.
TRUST_POLICIES: typing.Final = "trust_policy_names"
APPROVALS_BY_MODEL: typing.Final = "approvals_by_model"
MANAGED_DEPLOYMENTS: typing.Final = "managed_deployments"
POLICIES_BY_MODEL: typing.Final = "policies_by_model"
NAMESPACE_LABELS: typing.Final = "namespace_labels"
MODELS_BY_NAMESPACE: typing.Final = "model_pods_by_namespace"
MODEL_PODS: typing.Final = "model_pods_by_name"
MODEL_POD_LABELS: typing.Final = "model_pod_labels"


@dataclasses.dataclass
class Caches:
    """Whether kopf has filled the indexes from its first listing. kopf starts serving admission
    before that, while its other handlers wait for it: until then, a policy, approval, namespace
    or model pod missing from an index may only be one not listed yet, so the webhooks that judge
    from them refuse (`decisions.caches_not_filled`), and the replica is not Ready."""

    filled: bool = False
    indexes: dict[str, typing.Sized] = dataclasses.field(default_factory=dict)
    """kopf's indexes by id, once a handler was given them (their sizes are metrics)."""


INDEXES: typing.Final = (
    TRUST_POLICIES,
    APPROVALS_BY_MODEL,
    MANAGED_DEPLOYMENTS,
    POLICIES_BY_MODEL,
    NAMESPACE_LABELS,
    MODELS_BY_NAMESPACE,
)


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    """Hands kopf the webhook server `modelguard run` asked for (none without --webhook-port)."""
    options: serving.Options | None = memo.get("webhook")
    if options is None:
        options = serving.Options(
            port=None, cert_dir=None, addr="", identity=decisions.Identity(operator_username="")
        )
        memo.webhook = options
    # One object for the whole operator: kopf gives each handler a shallow copy of the memo.
    memo.admission_caches = Caches()
    settings.admission.server = serving.server(options)


def caches_filled(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    """Called from a namespace event handler: kopf calls those only once every index is filled
    (and every cluster has namespaces). kopf hands every handler its indexes, which stay current:
    kept here for their sizes."""
    caches: Caches = memo.admission_caches
    caches.filled = True
    if not caches.indexes:
        caches.indexes = {name: kwargs[name] for name in INDEXES if name in kwargs}


# --- Indexes: what the decisions read instead of asking the API server ------------------------


def index_trust_policy(*, name: str, body: kopf.Body) -> dict[str, kopf.Body]:
    """The TrustPolicies that exist, by name."""
    return {name: body}


def index_approval(
    *, namespace: str | None, spec: kopf.Spec, body: kopf.Body
) -> dict[tuple[str | None, str], kopf.Body]:
    """ModelApprovals per (namespace, model), for Reject mode."""
    return {(namespace, str(spec.get("model", ""))): body}


def index_managed_deployment(
    *, namespace: str | None, name: str, meta: kopf.Meta
) -> dict[tuple[str | None, str], str]:
    """The ModelDeployment behind each managed Deployment: a Scale object has no labels to say."""
    return {(namespace, name): str(meta.labels.get(labels.MODEL_DEPLOYMENT, ""))}


def index_namespace(*, name: str, labels: kopf.Labels) -> dict[str, dict[str, str]]:
    """Each namespace's labels, which decide the TrustPolicies bound to it."""
    return {name: dict(labels)}


def index_model_pods(
    *, namespace: str | None, name: str, body: kopf.Body
) -> dict[str | None, decisions.ModelPods]:
    """Each namespace's ModelDeployments, with their TrustPolicy and the labels of their pods,
    for judging NetworkPolicies others write around those pods."""
    raw = dict(body)
    try:
        model = v1alpha1.parse(raw)
    except errors.InvalidObjectError:
        # Its pods, if any, still carry the selector label.
        spec = raw.get("spec") or {}
        policy = str(spec.get("trustPolicy") or trustpolicy.DEFAULT_NAME)
        return {namespace: decisions.ModelPods(name, policy, (labels.selector(name),))}
    pods = [labels.of(model)]
    serving_version = (raw.get("status") or {}).get("activeVersion")
    if serving_version and serving_version != model.spec.model.version:
        pods.append({**pods[0], labels.VERSION: str(serving_version)})
    return {
        namespace: decisions.ModelPods(
            name,
            model.spec.trust_policy,
            tuple(pods),
            audited_port=decisions.audited_port(model),
        )
    }


def index_model_pod(
    *, namespace: str | None, name: str, pod_labels: kopf.Labels
) -> dict[tuple[str | None, str], str]:
    """The ModelDeployment each model pod serves, by the pod's name: a CONNECT request (exec,
    attach, port-forward) names a pod and carries nothing else of it."""
    return {(namespace, name): str(pod_labels.get(labels.MODEL_DEPLOYMENT, ""))}


def index_model_pod_labels(
    *, namespace: str | None, pod_labels: kopf.Labels
) -> dict[tuple[str | None, str], dict[str, str]]:
    """The full labels of each model's pods (pod-template-hash, and whatever a mutating webhook
    added, among them), per (namespace, model): a NetworkPolicy may select them by any."""
    model = str(pod_labels.get(labels.MODEL_DEPLOYMENT, ""))
    return {(namespace, model): dict(pod_labels)}


def index_policy_by_model(
    *, namespace: str | None, spec: kopf.Spec
) -> dict[tuple[str | None, str], str]:
    """The TrustPolicy each logical model answers to, per namespace (approvals name models)."""
    model = str(spec.get("model", {}).get("name", ""))
    return {(namespace, model): str(spec.get("trustPolicy") or trustpolicy.DEFAULT_NAME)}


# --- The validating handlers' bodies -----------------------------------------------------------


@contextlib.contextmanager
def _measured(memo: kopf.Memo | None, webhook: str) -> Iterator[None]:
    """Counts and times one answer of `webhook` in the operator's metrics: allowed, denied (an
    AdmissionError) or error (anything else, which kopf answers as a failure)."""
    started = time.perf_counter()
    decision = "allowed"
    try:
        yield
    except kopf.AdmissionError:
        decision = "denied"
        raise
    except Exception:
        decision = "error"
        raise
    finally:
        recorder = memo.get("metrics") if memo is not None else None
        if recorder is not None:
            recorder.webhook(webhook, decision=decision, seconds=time.perf_counter() - started)


def managed_child(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    with _measured(memo, serving.MANAGED_CHILD_PATH):
        request = review_request(kwargs)
        serving.enforce(decisions.managed_child(request, identity=memo.webhook.identity))


def _require_filled(memo: kopf.Memo, request: dict[str, typing.Any]) -> None:
    """Refuses a review that would be judged from caches not filled yet."""
    if not memo.admission_caches.filled:
        serving.enforce(decisions.caches_not_filled(request))


def managed_scale(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    with _measured(memo, serving.MANAGED_SCALE_PATH):
        request = review_request(kwargs)
        _require_filled(memo, request)
        index: kopf.Index[tuple[str | None, str], str] = kwargs[MANAGED_DEPLOYMENTS]
        owner = next(iter(index.get((request["namespace"], request["name"]), [])), None)
        serving.enforce(
            decisions.managed_scale(request, identity=memo.webhook.identity, owner=owner)
        )


def trust_policy(warnings: list[str], kwargs: dict[str, typing.Any]) -> None:
    with _measured(kwargs.get("memo"), serving.TRUST_POLICY_PATH):
        serving.enforce(decisions.trust_policy(review_request(kwargs)), warnings=warnings)


def model_approval(memo: kopf.Memo, warnings: list[str], kwargs: dict[str, typing.Any]) -> None:
    with _measured(memo, serving.MODEL_APPROVAL_PATH):
        _model_approval(memo, warnings, kwargs)


def _model_approval(memo: kopf.Memo, warnings: list[str], kwargs: dict[str, typing.Any]) -> None:
    request = review_request(kwargs)
    _require_filled(memo, request)
    names: kopf.Index[tuple[str | None, str], str] = kwargs[POLICIES_BY_MODEL]
    model = str(((request.get("object") or {}).get("spec") or {}).get("model", ""))
    policies = {}
    for name in set(names.get((request.get("namespace"), model), [])):
        policy = cached_policy(kwargs[TRUST_POLICIES], name)
        if policy is not None:
            policies[name] = policy
    decision = decisions.model_approval(
        request, policies=policies, now=datetime.datetime.now(datetime.UTC)
    )
    serving.enforce(decision, warnings=warnings)


def network_policy(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    with _measured(memo, serving.NETWORK_POLICY_PATH):
        _network_policy(memo, kwargs)


def _network_policy(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    request = review_request(kwargs)
    _require_filled(memo, request)
    index: kopf.Index[str | None, decisions.ModelPods] = kwargs[MODELS_BY_NAMESPACE]
    live: kopf.Index[tuple[str | None, str], dict[str, str]] = kwargs[MODEL_POD_LABELS]
    namespace = request.get("namespace")
    models = []
    for model in index.get(namespace, []):
        found: list[dict[str, str]] = []
        for pod_labels in live.get((namespace, model.name), []):
            if pod_labels not in found:
                found.append(pod_labels)
        models.append(dataclasses.replace(model, live_pod_labels=tuple(found)))
    policies = {}
    for name in {model.policy_name for model in models}:
        policy = cached_policy(kwargs[TRUST_POLICIES], name)
        if policy is not None:
            policies[name] = policy
    serving.enforce(
        decisions.network_policy(
            request, identity=memo.webhook.identity, models=models, policies=policies
        )
    )


def model_pod_connect(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    request = review_request(kwargs)
    index: kopf.Index[tuple[str | None, str], str] = kwargs[MODEL_PODS]
    pod = decisions.connected_pod(str(request.get("name") or ""))
    # The proxy's `pod:port` names the pod before the colon: looked up by the whole name, no
    # model's pod would match.
    found: collections.abc.Iterable[str] = (
        index.get((request["namespace"], pod), []) if pod is not None else []
    )
    model = next(iter(found), None)
    serving.enforce(
        decisions.model_pod_connect(
            request,
            identity=memo.webhook.identity,
            model=model,
            caches_filled=memo.admission_caches.filled,
        )
    )


def model_deployment(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    with _measured(memo, serving.MODEL_DEPLOYMENT_PATH):
        _model_deployment(memo, kwargs)


def _model_deployment(memo: kopf.Memo, kwargs: dict[str, typing.Any]) -> None:
    index: kopf.Index[str, kopf.Body] = kwargs[TRUST_POLICIES]
    request = review_request(kwargs)
    # Before the first listing is in, a missing policy or approval may only be one not indexed
    # yet: an answer now could admit what the full caches refuse.
    _require_filled(memo, request)
    serving.enforce(decisions.model_deployment(request, known_policies=set(index)))
    spec = (request.get("object") or {}).get("spec") or {}
    policy_name = str(spec.get("trustPolicy") or trustpolicy.DEFAULT_NAME)
    policy = cached_policy(index, policy_name)
    namespaces: kopf.Index[str, dict[str, str]] = kwargs[NAMESPACE_LABELS]
    serving.enforce(
        decisions.policy_bound(
            request,
            policy=policy,
            policy_name=policy_name,
            namespace_labels=next(iter(namespaces.get(str(request.get("namespace")), [])), None),
        )
    )
    serving.enforce(decisions.broad_access(request, policy=policy, policy_name=policy_name))
    serving.enforce(
        decisions.unapproved_rejected(
            request,
            policy=policy,
            approvals=cached_approvals(
                kwargs[APPROVALS_BY_MODEL],
                namespace=request.get("namespace"),
                model=str((spec.get("model") or {}).get("name", "")),
            ),
            now=datetime.datetime.now(datetime.UTC),
        )
    )


# --- Reading the caches ------------------------------------------------------------------------


def cached_policy(
    index: kopf.Index[str, kopf.Body], name: str
) -> trustpolicy.TrustPolicySpec | None:
    """The named TrustPolicy's spec, or None when it is not cached or does not parse (the
    reconcile reports a policy it cannot read)."""
    for body in index.get(name, []):
        try:
            return trustpolicy.parse(dict(body)).spec
        except errors.InvalidObjectError:
            return None
    return None


def cached_approvals(
    index: kopf.Index[tuple[str | None, str], kopf.Body], *, namespace: str | None, model: str
) -> list[modelapproval.ModelApproval]:
    found = []
    for body in index.get((namespace, model), []):
        try:
            found.append(modelapproval.parse(dict(body)))
        except errors.InvalidObjectError:
            continue  # an unreadable approval counts for nothing
    return found


def review_request(kwargs: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """The AdmissionReview request fields the decisions read, rebuilt from kopf's kwargs."""
    body: kopf.Body = kwargs["body"]
    old: kopf.Body | None = kwargs.get("old")
    new: kopf.Body | None = kwargs.get("new")
    return {
        "operation": kwargs.get("operation"),
        "subResource": kwargs.get("subresource"),
        "userInfo": dict(kwargs.get("userinfo") or {}),
        "kind": {"kind": body.get("kind", "")},
        "namespace": body.metadata.namespace,
        "name": body.metadata.name,
        "object": dict(new) if new is not None else None,
        "oldObject": dict(old) if old is not None else None,
    }
