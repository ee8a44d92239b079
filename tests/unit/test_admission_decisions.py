"""Admission decisions as named table cases: who may write managed children, and which
ModelDeployments are refused before they are stored."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.admission import decisions
from modelguard.api import trustpolicy

OPERATOR = "system:serviceaccount:modelguard-system:modelguard"
IDENTITY = decisions.Identity(operator_username=OPERATOR)
MANAGED = {"app.kubernetes.io/managed-by": "modelguard", "modelguard.dev/model-deployment": "bert"}


def child(*, labels: dict[str, str] | None = None) -> dict[str, typing.Any]:
    return {"metadata": {"name": "bert", "namespace": "ml", "labels": labels or {}}}


def review(
    operation: str,
    *,
    user: str = "alice",
    groups: tuple[str, ...] = ("system:authenticated",),
    new: dict[str, typing.Any] | None = None,
    old: dict[str, typing.Any] | None = None,
    subresource: str | None = None,
    kind: str = "Deployment",
) -> dict[str, typing.Any]:
    return {
        "operation": operation,
        "subResource": subresource,
        "userInfo": {"username": user, "groups": list(groups)},
        "kind": {"kind": kind},
        "namespace": "ml",
        "name": "bert",
        "object": new,
        "oldObject": old,
    }


@dataclasses.dataclass(frozen=True)
class Case:
    request: dict[str, typing.Any]
    allowed: bool


GC = "system:serviceaccount:kube-system:generic-garbage-collector"
DEPLOYMENTS = "system:serviceaccount:kube-system:deployment-controller"
REPLICA_SETS = "system:serviceaccount:kube-system:replicaset-controller"
CHILD_CASES = {
    "user updates a managed Deployment": Case(
        review("UPDATE", new=child(labels=MANAGED), old=child(labels=MANAGED)), allowed=False
    ),
    "user deletes a managed Service": Case(
        review("DELETE", old=child(labels=MANAGED), kind="Service"), allowed=False
    ),
    "user creates an object posing as managed": Case(
        review("CREATE", new=child(labels=MANAGED), kind="NetworkPolicy"), allowed=False
    ),
    "user removes the managed-by label": Case(
        review("UPDATE", new=child(), old=child(labels=MANAGED)), allowed=False
    ),
    "user edits an unmanaged Deployment": Case(
        review("UPDATE", new=child(), old=child()), allowed=True
    ),
    "labelled by another manager": Case(
        review(
            "UPDATE",
            new=child(labels={"app.kubernetes.io/managed-by": "Helm"}),
            old=child(labels={"app.kubernetes.io/managed-by": "Helm"}),
        ),
        allowed=True,
    ),
    "operator applies a child": Case(
        review("CREATE", user=OPERATOR, new=child(labels=MANAGED)), allowed=True
    ),
    "operator's name in another namespace is someone else": Case(
        review(
            "UPDATE",
            user="system:serviceaccount:ml:modelguard",
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
        ),
        allowed=False,
    ),
    "break-glass group member": Case(
        review(
            "UPDATE",
            groups=("system:authenticated", "modelguard:break-glass"),
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
        ),
        allowed=True,
    ),
    "garbage collector deletes a child": Case(
        review("DELETE", user=GC, old=child(labels=MANAGED)), allowed=True
    ),
    "garbage collector updates ownerReferences": Case(
        review("UPDATE", user=GC, new=child(labels=MANAGED), old=child(labels=MANAGED)),
        allowed=True,
    ),
    "garbage collector cannot create": Case(
        review("CREATE", user=GC, new=child(labels=MANAGED)), allowed=False
    ),
    "namespace controller empties a namespace": Case(
        review(
            "DELETE",
            user="system:serviceaccount:kube-system:namespace-controller",
            old=child(labels=MANAGED),
        ),
        allowed=True,
    ),
    "deployment controller writes the revision annotation": Case(
        review(
            "UPDATE",
            user="system:serviceaccount:kube-system:deployment-controller",
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
        ),
        allowed=True,
    ),
    "deployment controller cannot delete": Case(
        review(
            "DELETE",
            user="system:serviceaccount:kube-system:deployment-controller",
            old=child(labels=MANAGED),
        ),
        allowed=False,
    ),
    "status subresource is never intercepted": Case(
        review(
            "UPDATE",
            user="system:serviceaccount:kube-system:deployment-controller",
            subresource="status",
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
        ),
        allowed=True,
    ),
    "scale is judged by its own webhook": Case(
        review("UPDATE", subresource="scale", new={"kind": "Scale"}, old={"kind": "Scale"}),
        allowed=True,
    ),
    "user writes a sidecar into a model ReplicaSet": Case(
        review("UPDATE", new=child(labels=MANAGED), old=child(labels=MANAGED), kind="ReplicaSet"),
        allowed=False,
    ),
    "deployment controller makes a model ReplicaSet": Case(
        review("CREATE", user=DEPLOYMENTS, new=child(labels=MANAGED), kind="ReplicaSet"),
        allowed=True,
    ),
    "deployment controller deletes an old model ReplicaSet": Case(
        review("DELETE", user=DEPLOYMENTS, old=child(labels=MANAGED), kind="ReplicaSet"),
        allowed=True,
    ),
    "deployment controller may not make a model pod": Case(
        review("CREATE", user=DEPLOYMENTS, new=child(labels=MANAGED), kind="Pod"),
        allowed=False,
    ),
    "replicaset controller makes a model pod": Case(
        review("CREATE", user=REPLICA_SETS, new=child(labels=MANAGED), kind="Pod"),
        allowed=True,
    ),
    "replicaset controller adopts a model pod": Case(
        review("UPDATE", user=REPLICA_SETS, new=child(labels=MANAGED), old=child(), kind="Pod"),
        allowed=True,
    ),
    "user makes a pod posing as the model's": Case(
        review("CREATE", new=child(labels=MANAGED), kind="Pod"), allowed=False
    ),
    "user swaps the image of a model pod": Case(
        review("UPDATE", new=child(labels=MANAGED), old=child(labels=MANAGED), kind="Pod"),
        allowed=False,
    ),
    "user adds a debug container to a model pod": Case(
        review(
            "UPDATE",
            subresource="ephemeralcontainers",
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
            kind="Pod",
        ),
        allowed=False,
    ),
    "break-glass may debug a model pod": Case(
        review(
            "UPDATE",
            groups=("system:authenticated", "modelguard:break-glass"),
            subresource="ephemeralcontainers",
            new=child(labels=MANAGED),
            old=child(labels=MANAGED),
            kind="Pod",
        ),
        allowed=True,
    ),
    "debugging a pod of no model is not ours to judge": Case(
        review("UPDATE", subresource="ephemeralcontainers", new=child(), old=child(), kind="Pod"),
        allowed=True,
    ),
    "CONNECT is not ours to judge": Case(review("CONNECT", new=child(labels=MANAGED)), True),
    "malformed labels count as unmanaged": Case(
        review("UPDATE", new={"metadata": {"labels": None}}, old={"metadata": "x"}), True
    ),
}


@pytest.mark.parametrize("case", CHILD_CASES.values(), ids=CHILD_CASES.keys())
def test_managed_child(case: Case) -> None:
    decision = decisions.managed_child(case.request, identity=IDENTITY)
    assert decision.allowed is case.allowed, decision.message
    assert bool(decision.message) is not case.allowed


def test_refusal_names_the_model_to_edit_instead() -> None:
    decision = decisions.managed_child(
        review("DELETE", old=child(labels=MANAGED), kind="Service"), identity=IDENTITY
    )
    assert decision.message.startswith("Service ml/bert is managed by ModelGuard; deleting it")
    assert "edit the ModelDeployment ml/bert instead (kubectl edit modeldeployment bert -n ml)" in (
        decision.message
    )


def test_refusal_without_owner_label_still_says_what_to_do() -> None:
    labels = {"app.kubernetes.io/managed-by": "modelguard"}
    decision = decisions.managed_child(
        review("CREATE", new=child(labels=labels)), identity=IDENTITY
    )
    assert "edit the ModelDeployment that owns it instead" in decision.message


def test_a_custom_break_glass_group_replaces_the_default() -> None:
    identity = decisions.Identity(operator_username=OPERATOR, break_glass_group="sre:oncall")
    request = review(
        "UPDATE",
        groups=("modelguard:break-glass",),
        new=child(labels=MANAGED),
        old=child(labels=MANAGED),
    )
    assert not decisions.managed_child(request, identity=identity).allowed
    request["userInfo"]["groups"] = ["sre:oncall"]
    assert decisions.managed_child(request, identity=identity).allowed


def md(policy: str | None = None) -> dict[str, typing.Any]:
    spec: dict[str, typing.Any] = {"model": {"name": "bert"}}
    if policy is not None:
        spec["trustPolicy"] = policy
    return {"metadata": {"name": "bert"}, "spec": spec}


@dataclasses.dataclass(frozen=True)
class ModelCase:
    request: dict[str, typing.Any]
    known: frozenset[str] | None
    allowed: bool


KNOWN = frozenset({"default", "strict"})
MODEL_CASES = {
    "create naming an existing policy": ModelCase(
        review("CREATE", new=md("strict")), KNOWN, allowed=True
    ),
    "create with the default policy": ModelCase(review("CREATE", new=md()), KNOWN, allowed=True),
    "create naming a missing policy": ModelCase(
        review("CREATE", new=md("typo")), KNOWN, allowed=False
    ),
    "default policy missing": ModelCase(
        review("CREATE", new=md()), frozenset({"strict"}), allowed=False
    ),
    "update switching to a missing policy": ModelCase(
        review("UPDATE", new=md("typo"), old=md("strict")), KNOWN, allowed=False
    ),
    "update leaving a since-deleted policy alone (e.g. quarantine)": ModelCase(
        review("UPDATE", new=md("gone"), old=md("gone")), KNOWN, allowed=True
    ),
    "cache not filled yet": ModelCase(review("CREATE", new=md("typo")), None, allowed=True),
    "delete is never refused": ModelCase(review("DELETE", old=md("typo")), KNOWN, allowed=True),
    "status subresource": ModelCase(
        review("UPDATE", new=md("typo"), old=md("x"), subresource="status"), KNOWN, allowed=True
    ),
}


@pytest.mark.parametrize("case", MODEL_CASES.values(), ids=MODEL_CASES.keys())
def test_model_deployment(case: ModelCase) -> None:
    decision = decisions.model_deployment(case.request, known_policies=case.known)
    assert decision.allowed is case.allowed, decision.message


def test_missing_policy_message_names_no_other_policy() -> None:
    # A tenant who may write ModelDeployments learns nothing of the cluster's other policies
    # from a denial: `kubectl get trustpolicies`, where RBAC allows it, lists them.
    decision = decisions.model_deployment(review("CREATE", new=md("typo")), known_policies=KNOWN)
    assert decision.message == (
        "spec.trustPolicy: TrustPolicy 'typo' does not exist; create it first, or name an"
        " existing one (kubectl get trustpolicies)"
    )
    for name in KNOWN:
        assert name not in decision.message


def policy(namespace_selector: dict[str, typing.Any] | None) -> trustpolicy.TrustPolicySpec:
    spec: dict[str, typing.Any] = {"signers": [{"name": "release", "publicKey": KEY}]}
    if namespace_selector is not None:
        spec["namespaceSelector"] = namespace_selector
    return trustpolicy.TrustPolicySpec.model_validate(spec, by_alias=True)


KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ML = {"kubernetes.io/metadata.name": "ml"}
BOUND_HERE = policy({"matchLabels": {"kubernetes.io/metadata.name": "ml"}})
BOUND_ELSEWHERE = policy({"matchLabels": {"kubernetes.io/metadata.name": "sandbox"}})


@dataclasses.dataclass(frozen=True)
class BindingCase:
    request: dict[str, typing.Any]
    policy: trustpolicy.TrustPolicySpec | None
    namespace_labels: dict[str, str] | None
    allowed: bool


BINDING_CASES = {
    "create under a policy bound to the namespace": BindingCase(
        review("CREATE", new=md("strict")), BOUND_HERE, ML, allowed=True
    ),
    "create under a policy bound to every namespace": BindingCase(
        review("CREATE", new=md("strict")), policy({}), ML, allowed=True
    ),
    "create under a policy bound elsewhere": BindingCase(
        review("CREATE", new=md("sandbox")), BOUND_ELSEWHERE, ML, allowed=False
    ),
    "create under a policy bound nowhere": BindingCase(
        review("CREATE", new=md("sandbox")), policy(None), ML, allowed=False
    ),
    "the default policy is bound like any other": BindingCase(
        review("CREATE", new=md()), BOUND_ELSEWHERE, ML, allowed=False
    ),
    "update switching to a policy bound elsewhere": BindingCase(
        review("UPDATE", new=md("sandbox"), old=md("strict")), BOUND_ELSEWHERE, ML, allowed=False
    ),
    "update leaving a since-unbound policy alone (e.g. quarantine)": BindingCase(
        review("UPDATE", new=md("sandbox"), old=md("sandbox")), BOUND_ELSEWHERE, ML, allowed=True
    ),
    "namespace not in the cache yet: the reconcile decides": BindingCase(
        review("CREATE", new=md("sandbox")), BOUND_ELSEWHERE, None, allowed=True
    ),
    "policy not in the cache: the reconcile decides": BindingCase(
        review("CREATE", new=md("sandbox")), None, ML, allowed=True
    ),
    "delete is never refused": BindingCase(
        review("DELETE", old=md("sandbox")), BOUND_ELSEWHERE, ML, allowed=True
    ),
}


@pytest.mark.parametrize("case", BINDING_CASES.values(), ids=BINDING_CASES.keys())
def test_policy_bound(case: BindingCase) -> None:
    name = str((((case.request["object"] or {}).get("spec")) or {}).get("trustPolicy", "default"))
    decision = decisions.policy_bound(
        case.request, policy=case.policy, policy_name=name, namespace_labels=case.namespace_labels
    )
    assert decision.allowed is case.allowed, decision.message


def test_unbound_policy_message_names_the_field_and_no_other_policy() -> None:
    decision = decisions.policy_bound(
        review("CREATE", new=md("sandbox")),
        policy=BOUND_ELSEWHERE,
        policy_name="sandbox",
        namespace_labels=ML,
    )
    assert decision.message == (
        'spec.trustPolicy: TrustPolicy "sandbox" does not bind namespace ml (its '
        "spec.namespaceSelector does not select it); a security owner binds policies to "
        "namespaces, e.g. with matchLabels kubernetes.io/metadata.name: ml. Name a policy bound "
        "to this namespace."
    )


def netpol(pods: dict[str, typing.Any], *peers: dict[str, typing.Any]) -> dict[str, typing.Any]:
    # To the audit proxy's port, the one a model recording its inputs may be opened on (0026),
    # so that these cases judge the peers alone.
    return {
        "metadata": {"name": "bert", "namespace": "ml"},
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": list(peers), "ports": [{"port": "http", "protocol": "TCP"}]}],
        },
    }


BERT = decisions.ModelPods(
    "bert", "default", ({"modelguard.dev/model-deployment": "bert", "app": "bert"},)
)
HELD = decisions.ModelPods(
    "held",
    "strict",
    (
        {"modelguard.dev/model-deployment": "held", "app.kubernetes.io/version": "2"},
        {"modelguard.dev/model-deployment": "held", "app.kubernetes.io/version": "1"},
    ),
)
# A model whose pods exist, with the labels others gave them.
RUNNING = dataclasses.replace(
    BERT,
    live_pod_labels=(
        {
            "modelguard.dev/model-deployment": "bert",
            "app": "bert",
            "pod-template-hash": "7c54bb5d48",
            "sidecar.example/injected": "true",
        },
    ),
)
LIVE_HASH = {"matchLabels": {"pod-template-hash": "7c54bb5d48"}}
ANY_HASH = {"matchLabels": {"pod-template-hash": "6b9f8d7c5"}}
POLICIES = {"default": policy({}), "strict": policy({})}
INTERNET = {"ipBlock": {"cidr": "0.0.0.0/0"}}
GATEWAY = {"podSelector": {"matchLabels": {"app": "gateway"}}}
EVERY_POD: dict[str, typing.Any] = {}
SERVING_VERSION = {"matchLabels": {"app.kubernetes.io/version": "1"}}


@dataclasses.dataclass(frozen=True)
class NetworkPolicyCase:
    request: dict[str, typing.Any]
    allowed: bool
    models: tuple[decisions.ModelPods, ...] = (BERT, HELD)


NETWORK_POLICY_CASES = {
    "opens every pod to every address": NetworkPolicyCase(
        review("CREATE", new=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"), allowed=False
    ),
    "opens the serving version's pods of a held rollout": NetworkPolicyCase(
        review("CREATE", new=netpol(SERVING_VERSION, INTERNET), kind="NetworkPolicy"),
        allowed=False,
    ),
    "opens the model to pods of its namespace": NetworkPolicyCase(
        review("CREATE", new=netpol(EVERY_POD, GATEWAY), kind="NetworkPolicy"), allowed=True
    ),
    "opens other pods": NetworkPolicyCase(
        review(
            "CREATE", new=netpol({"matchLabels": {"app": "web"}}, INTERNET), kind="NetworkPolicy"
        ),
        allowed=True,
    ),
    "opens the model's pods by their template hash": NetworkPolicyCase(
        review("CREATE", new=netpol(LIVE_HASH, INTERNET), kind="NetworkPolicy"),
        allowed=False,
        models=(RUNNING,),
    ),
    "opens pods to come by a template hash of any value": NetworkPolicyCase(
        review("CREATE", new=netpol(ANY_HASH, INTERNET), kind="NetworkPolicy"), allowed=False
    ),
    "opens pods to come by the existence of a template hash": NetworkPolicyCase(
        review(
            "CREATE",
            new=netpol(
                {"matchExpressions": [{"key": "pod-template-hash", "operator": "Exists"}]},
                INTERNET,
            ),
            kind="NetworkPolicy",
        ),
        allowed=False,
    ),
    "opens pods without a template hash (none of a Deployment's)": NetworkPolicyCase(
        review(
            "CREATE",
            new=netpol(
                {"matchExpressions": [{"key": "pod-template-hash", "operator": "DoesNotExist"}]},
                INTERNET,
            ),
            kind="NetworkPolicy",
        ),
        allowed=True,
        models=(BERT,),
    ),
    "opens the model's pods by a label a mutating webhook gave them": NetworkPolicyCase(
        review(
            "CREATE",
            new=netpol({"matchLabels": {"sidecar.example/injected": "true"}}, INTERNET),
            kind="NetworkPolicy",
        ),
        allowed=False,
        models=(RUNNING,),
    ),
    "opens another Deployment's pods by their template hash": NetworkPolicyCase(
        review(
            "CREATE",
            new=netpol({"matchLabels": {"app": "web", "pod-template-hash": "5d8f7"}}, INTERNET),
            kind="NetworkPolicy",
        ),
        allowed=True,
        models=(RUNNING,),
    ),
    "no model in the namespace": NetworkPolicyCase(
        review("CREATE", new=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"),
        allowed=True,
        models=(),
    ),
    "the model's policy not in the cache: the reconcile reports": NetworkPolicyCase(
        review("CREATE", new=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"),
        allowed=True,
        models=(dataclasses.replace(BERT, policy_name="unknown"),),
    ),
    "the operator's own": NetworkPolicyCase(
        review("CREATE", user=OPERATOR, new=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"),
        allowed=True,
    ),
    "break-glass is not the operator": NetworkPolicyCase(
        review(
            "CREATE",
            groups=("modelguard:break-glass",),
            new=netpol(EVERY_POD, INTERNET),
            kind="NetworkPolicy",
        ),
        allowed=False,
    ),
    "widened by an update": NetworkPolicyCase(
        review(
            "UPDATE",
            new=netpol(EVERY_POD, INTERNET),
            old=netpol(EVERY_POD, GATEWAY),
            kind="NetworkPolicy",
        ),
        allowed=False,
    ),
    "an update leaving the spec alone (labels, the garbage collector)": NetworkPolicyCase(
        review(
            "UPDATE",
            new=netpol(EVERY_POD, INTERNET),
            old=netpol(EVERY_POD, INTERNET),
            kind="NetworkPolicy",
        ),
        allowed=True,
    ),
    "delete is never refused": NetworkPolicyCase(
        review("DELETE", old=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"), allowed=True
    ),
}


@pytest.mark.parametrize("case", NETWORK_POLICY_CASES.values(), ids=NETWORK_POLICY_CASES.keys())
def test_network_policy(case: NetworkPolicyCase) -> None:
    decision = decisions.network_policy(
        case.request, identity=IDENTITY, models=case.models, policies=POLICIES
    )
    assert decision.allowed is case.allowed, decision.message


def test_a_widening_network_policy_is_refused_naming_it_the_rule_and_the_model() -> None:
    # Neither the TrustPolicy nor its ranges: the writer of a NetworkPolicy may read neither.
    decision = decisions.network_policy(
        review("CREATE", new=netpol(EVERY_POD, INTERNET), kind="NetworkPolicy"),
        identity=IDENTITY,
        models=(BERT,),
        policies=POLICIES,
    )
    assert decision.message == (
        "NetworkPolicy ml/bert: spec.ingress[0].from[0].ipBlock.cidr: 0.0.0.0/0 is not inside "
        "the ranges the model's TrustPolicy allows in spec.network.ingressCIDRs; add it there "
        "or narrow the range. It selects the pods of ModelDeployment ml/bert, which it would "
        "open beyond what the model's TrustPolicy allows: narrow spec.podSelector so that it "
        "does not select them (by any label they carry), or the rule"
    )


# --- exec, attach, port-forward and proxy into a model's pods (CONNECT) -------------------------

EXEC_OPTIONS = {"kind": "PodExecOptions", "apiVersion": "v1", "command": ["python3"]}


@dataclasses.dataclass(frozen=True)
class ConnectCase:
    request: dict[str, typing.Any]
    model: str | None
    allowed: bool
    caches_filled: bool = True


def connect(subresource: str, **kwargs: typing.Any) -> dict[str, typing.Any]:
    return review("CONNECT", new=EXEC_OPTIONS, subresource=subresource, kind="Pod", **kwargs)


CONNECT_CASES = {
    "exec into a model's pod": ConnectCase(connect("exec"), model="bert", allowed=False),
    "attach to a model's pod": ConnectCase(connect("attach"), model="bert", allowed=False),
    "port-forward to a model's pod": ConnectCase(
        connect("portforward"), model="bert", allowed=False
    ),
    "proxy to a model's pod": ConnectCase(connect("proxy"), model="bert", allowed=False),
    "a cluster admin is no exception": ConnectCase(
        connect("exec", user="kubernetes-admin", groups=("system:masters",)),
        model="bert",
        allowed=False,
    ),
    "the operator is no exception (it never execs)": ConnectCase(
        connect("exec", user=OPERATOR), model="bert", allowed=False
    ),
    "break-glass may": ConnectCase(
        connect("exec", groups=("modelguard:break-glass",)), model="bert", allowed=True
    ),
    "exec into any other pod": ConnectCase(connect("exec"), model=None, allowed=True),
    "before the cache of model pods is filled: refused": ConnectCase(
        connect("exec"), model=None, allowed=False, caches_filled=False
    ),
}


@pytest.mark.parametrize("case", CONNECT_CASES.values(), ids=CONNECT_CASES.keys())
def test_model_pod_connect(case: ConnectCase) -> None:
    decision = decisions.model_pod_connect(
        case.request, identity=IDENTITY, model=case.model, caches_filled=case.caches_filled
    )
    assert decision.allowed is case.allowed, decision.message


def test_an_exec_refusal_names_the_pod_the_model_and_what_to_do_instead() -> None:
    decision = decisions.model_pod_connect(
        connect("exec"), identity=IDENTITY, model="bert", caches_filled=True
    )
    assert decision.message == (
        "pod ml/bert serves ModelDeployment ml/bert, and nobody may exec into a model's pods: "
        "its files are the verified model and its process serves it. Read its logs (kubectl "
        "logs), status and Events instead (kubectl describe modeldeployment bert -n ml); in an "
        "incident, the break-glass group may."
    )
