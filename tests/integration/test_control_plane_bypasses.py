"""Ways around the control-plane hardening of issue 11 that still work, each as a test that fails
while the hole is open: what serves escapes revocation when the spec does not parse, when its
bundle cannot be read again from the tenant's store, or while its policy is unbound; objects
pass as a model's own in tools that follow ownerReferences by uid; a NetworkPolicy opens a
model's pods through a label admission does not predict."""

from __future__ import annotations

import contextlib
import json
import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from test_admission import IDLE_NAMESPACE, _editor, webhook  # noqa: F401 - the fixture, used by name
from test_approval_gate import _wait, decoy_deployment
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

import s3server
import signedmodel

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]
Manifest = dict[str, typing.Any]


def _revocable_policy(
    kubectl: harness.Kubectl,
    *,
    name: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> dict[str, typing.Any]:
    policy = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    kubectl.apply(policy)
    return policy


def _revoke(kubectl: harness.Kubectl, policy: dict[str, typing.Any], tmp_path: Path) -> None:
    """The security owner revokes the signer: the policy now trusts another key only."""
    policy["spec"]["signers"] = [
        {"name": "successor", "publicKey": signedmodel.generate_key(tmp_path)[1]}
    ]
    kubectl.apply(policy)


def _assert_quarantined(kubectl: harness.Kubectl, namespace: str, name: str) -> None:
    def quarantined() -> None:
        replicas = kubectl.json("get", "deployment", name, "-n", namespace)["spec"]["replicas"]
        body = kubectl.json("get", "modeldeployment", name, "-n", namespace)
        assert replicas == 0, (
            f"the revoked version still serves ({replicas} replicas); status: {body['status']}"
        )

    harness.eventually(quarantined, timeout=60)


# --- Revocation: what serves must be judged whatever the spec, the policy binding or the store say


@contextlib.contextmanager
def _serving_under_a_revocable_policy(
    kubectl: harness.Kubectl,
    *,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> Iterator[tuple[str, Manifest]]:
    """Model `m` at 1.4.0, Ready under a TrustPolicy of its own that the test may revoke its
    signer from; yields the model's URI and the policy, and deletes the policy afterwards."""
    name = f"revocable-{namespace}"
    policy = _revocable_policy(
        kubectl, name=name, signing_key=signing_key, model_sources=model_sources
    )
    try:
        uri = publish_model("1.4.0")
        kubectl.apply(model_deployment("m", source=uri, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        yield uri, policy
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_a_spec_that_does_not_parse_shelters_what_serves_from_revocation(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    tmp_path: Path,
    webhook: typing.Any,  # noqa: F811 - the fixture imported above
) -> None:
    # The model owner makes the spec one the CRD schema and the webhook admit but the operator
    # cannot parse (a request above its limit; maxBytes "0" does the same). The pass then ends
    # in Refuse(InvalidSpec) before anything judges what serves.
    del webhook
    with _serving_under_a_revocable_policy(
        kubectl,
        namespace=namespace,
        publish_model=publish_model,
        signing_key=signing_key,
        model_sources=model_sources,
    ) as (uri, policy):
        unparsable = model_deployment("m", source=uri, trustPolicy=policy["metadata"]["name"])
        unparsable["spec"]["serving"]["resources"] = {
            "requests": {"memory": "2Gi"},
            "limits": {"memory": "1Gi"},
        }
        kubectl.apply(unparsable, namespace=namespace)  # admitted
        _wait(kubectl, namespace, "m", "Ready", status="False", reason="InvalidSpec")
        _revoke(kubectl, policy, tmp_path)
        _assert_quarantined(kubectl, namespace, "m")


def test_a_tenant_that_withdraws_its_bundle_keeps_a_revoked_version_serving(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
    tmp_path: Path,
) -> None:
    # Whoever may write the model's prefix in the store (the tenant, or whoever put a model
    # signed with a stolen key there) deletes model.sig before the signer is revoked. The
    # serving version's bundle is then fetched again to judge it, the fetch fails, and every
    # failure of that fetch counts as transient: nothing is ever quarantined.
    with _serving_under_a_revocable_policy(
        kubectl,
        namespace=namespace,
        publish_model=publish_model,
        signing_key=signing_key,
        model_sources=model_sources,
    ) as (uri, policy):
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        s3.delete_object(bucket, f"{prefix}{signedmodel.SIGNATURE_FILE}")
        _revoke(kubectl, policy, tmp_path)
        _assert_quarantined(kubectl, namespace, "m")


def test_a_tenant_that_replaces_its_bundle_keeps_a_revoked_version_serving(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
    tmp_path: Path,
) -> None:
    # The same with any other bytes at model.sig: "not the bundle that serves any more" is
    # treated as transient too, for ever.
    with _serving_under_a_revocable_policy(
        kubectl,
        namespace=namespace,
        publish_model=publish_model,
        signing_key=signing_key,
        model_sources=model_sources,
    ) as (uri, policy):
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        s3.put_object(bucket, f"{prefix}{signedmodel.SIGNATURE_FILE}", b"{}")
        _revoke(kubectl, policy, tmp_path)
        _assert_quarantined(kubectl, namespace, "m")


def test_a_namespace_editor_who_deletes_the_credentials_keeps_a_revoked_version_serving(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    as_service_account: typing.Callable[[str], harness.Kubectl],
    tmp_path: Path,
) -> None:
    # No store needed: the `edit` role may delete the namespace's Secrets. Without the storage
    # credentials the serving bundle cannot be fetched, which again counts as transient.
    with _serving_under_a_revocable_policy(
        kubectl,
        namespace=namespace,
        publish_model=publish_model,
        signing_key=signing_key,
        model_sources=model_sources,
    ) as (_uri, policy):
        editor = _editor(kubectl, namespace, as_service_account)
        editor.run("delete", "secret", "models-readonly", "-n", namespace)
        _revoke(kubectl, policy, tmp_path)
        _assert_quarantined(kubectl, namespace, "m")


def test_an_unbound_policy_shelters_what_serves_from_revocation(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    # The policy binds the namespace by a label, as the field documentation allows. Whoever may
    # label the namespace (on many platforms, its owner) removes it: the model is then refused
    # (PolicyNotBound), what serves keeps serving, and with no bound policy nothing judges it,
    # so revoking its signer stops nothing.
    name = f"revocable-{namespace}"
    policy = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    policy["spec"]["namespaceSelector"] = {"matchLabels": {"models.example/tier": name}}
    kubectl.run("label", "namespace", namespace, f"models.example/tier={name}")
    kubectl.apply(policy)
    try:
        uri = publish_model("1.4.0")
        kubectl.apply(model_deployment("m", source=uri, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        kubectl.run("label", "namespace", namespace, "models.example/tier-")
        # Verified, not Ready: what serves may be stopped at once (an unbound policy judges
        # nothing, which fails closed), and Ready then says Quarantined.
        _wait(kubectl, namespace, "m", "Verified", status="False", reason="PolicyNotBound")
        _revoke(kubectl, policy, tmp_path)
        _assert_quarantined(kubectl, namespace, "m")
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


# --- Objects owned by a ModelDeployment: tools follow ownerReferences by uid ----------------------


def test_an_owner_reference_naming_the_models_uid_in_another_spelling_is_refused(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # Argo CD draws its resource tree by ownerReference uid alone (gitops-engine's buildGraph and
    # isParentOf compare uids, never apiVersion or kind), and so does kubectl tree: an object
    # naming the model's uid under any apiVersion passes as the model's child there. The chart's
    # policy matches only apiVersions starting with "modelguard.dev/".
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    uid = kubectl.json("get", "modeldeployment", "m", "-n", namespace)["metadata"]["uid"]
    editor = _editor(kubectl, namespace, as_service_account)
    spellings = {
        "core group": {"apiVersion": "v1", "kind": "ModelDeployment"},
        "a group suffix": {
            "apiVersion": "modelguard.dev.example/v1alpha1",
            "kind": "ModelDeployment",
        },
        "a leading space": {"apiVersion": " modelguard.dev/v1alpha1", "kind": "ModelDeployment"},
        "another kind": {"apiVersion": "v1", "kind": "ConfigMap"},
    }
    admitted = []
    for what, spelling in spellings.items():
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"m-{len(admitted)}-{abs(hash(what)) % 10000}",
                "ownerReferences": [{**spelling, "name": "m", "uid": uid, "controller": True}],
            },
            "data": {"a": "b"},
        }
        result = editor.apply(manifest, namespace=namespace, check=False)
        if result.returncode == 0:
            admitted.append(what)
    assert not admitted, f"objects naming ModelDeployment m's uid were admitted: {admitted}"


def test_an_owner_reference_naming_one_of_the_models_children_is_refused(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # Tools that draw a model's tree follow ownerReferences down every level: an object owned
    # by the model's Deployment (or Service, ServiceAccount) is drawn under the model as
    # surely as one owned by the model itself. The policy matches only references to the
    # ModelDeployment.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    editor = _editor(kubectl, namespace, as_service_account)
    admitted = []
    for kind, api_version in (("Deployment", "apps/v1"), ("Service", "v1")):
        uid = kubectl.json("get", kind.lower(), "m", "-n", namespace)["metadata"]["uid"]
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"under-{kind.lower()}",
                "ownerReferences": [
                    {"apiVersion": api_version, "kind": kind, "name": "m", "uid": uid}
                ],
            },
            "data": {"a": "b"},
        }
        if editor.apply(manifest, namespace=namespace, check=False).returncode == 0:
            admitted.append(kind)
    assert not admitted, f"objects owned by the model's children were admitted: {admitted}"


# --- A policy tightened while a rollout is held: what serves keeps the old policy's permissions --


def _agent_args(kubectl: harness.Kubectl, namespace: str, name: str) -> list[str]:
    live = kubectl.json("get", "deployment", name, "-n", namespace)
    (agent,) = [
        c for c in live["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-verify"
    ]
    return list(agent["args"])


def test_a_format_allowance_withdrawn_while_a_rollout_is_held_stays_pinned_in_what_serves(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> None:
    # The policy allowed pickles; the security owner withdraws that. A model whose next version
    # waits for its approval (the default mode) keeps serving with `--allow-format Pickle` pinned
    # in its pods' verifying agent, so every pod that starts from now on (a reschedule, an
    # eviction) admits pickles again, for as long as the rollout is held.
    name = f"pickles-{namespace}"
    policy = signedmodel.trust_policy(
        name=name, public_key=signing_key[1], sources=model_sources, approver_key=approver_key[1]
    )
    policy["spec"]["formats"] = {"allow": ["Pickle"]}
    kubectl.apply(policy)
    try:
        uri = publish_model("1.4.0")
        kubectl.apply(model_deployment("m", source=uri, trustPolicy=name), namespace=namespace)
        wait_ready(kubectl, namespace, "m")
        assert "Pickle" in _agent_args(kubectl, namespace, "m")
        held = publish_model("1.5.0", approve=False)
        kubectl.apply(
            model_deployment("m", source=held, version="1.5.0", trustPolicy=name),
            namespace=namespace,
        )
        _wait(kubectl, namespace, "m", "Ready", status="False", reason="NotApproved")
        policy["spec"]["formats"] = {"allow": []}
        kubectl.apply(policy)

        def withdrawn() -> None:
            replicas = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"]
            args = _agent_args(kubectl, namespace, "m")
            assert replicas == 0 or "Pickle" not in args, (
                f"what serves still admits pickles: {replicas} replicas, agent args {args}"
            )

        harness.eventually(withdrawn, timeout=60)
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_egress_ranges_withdrawn_from_the_policy_stay_open_in_what_serves(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> None:
    # The security owner narrows spec.network.egressCIDRs. The model's spec now asks for more
    # than its policy allows, so the version is held (Isolated=False/BroadAccessRefused) and
    # nothing is written: the model's own NetworkPolicy keeps allowing the withdrawn range.
    name = f"egress-{namespace}"
    policy = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    policy["spec"]["network"] = {"egressCIDRs": ["203.0.113.0/24"]}
    kubectl.apply(policy)
    try:
        uri = publish_model("1.4.0")
        access = {"egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}
        kubectl.apply(
            model_deployment("m", source=uri, trustPolicy=name, access=access),
            namespace=namespace,
        )
        wait_ready(kubectl, namespace, "m")
        policy["spec"]["network"] = {"egressCIDRs": []}
        kubectl.apply(policy)
        _wait(kubectl, namespace, "m", "Isolated", status="False", reason="BroadAccessRefused")

        def closed() -> None:
            live = kubectl.json("get", "networkpolicy", "m-allow-egress", "-n", namespace)
            replicas = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"]
            opened = [
                peer["ipBlock"]["cidr"]
                for rule in live["spec"].get("egress") or []
                for peer in rule.get("to") or []
                if "ipBlock" in peer
            ]
            assert replicas == 0 or not opened, (
                f"what serves ({replicas} replicas) may still reach {opened}, which its "
                "TrustPolicy no longer allows"
            )

        harness.eventually(closed, timeout=60)
    finally:
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


# --- Admission of NetworkPolicies, quarantine of an unparsable spec, Events as the operator ------


@contextlib.contextmanager
def _model_where_the_webhook_watches(
    kubectl: harness.Kubectl,
    *,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
) -> Iterator[str]:
    """A ready model in the namespace the test's webhook process watches (its caches of models
    and their pods cover that namespace alone, as an operator's cover the namespaces it
    watches), under a TrustPolicy of its own; yields its name, deletes both afterwards."""
    where = IDLE_NAMESPACE
    name = f"hash-{uuid.uuid4().hex[:6]}"
    policy = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    kubectl.apply(policy)
    kubectl.apply(signedmodel.credentials_secret(s3, name="models-readonly"), namespace=where)
    kubectl.run(
        "create",
        "rolebinding",
        "modelguard-source-credentials",
        "-n",
        where,
        "--clusterrole=modelguard-source-credentials",
        "--serviceaccount=modelguard-system:modelguard",
        check=False,
    )
    try:
        uri = publish_model("1.4.0", approve=False)
        kubectl.apply(model_deployment(name, source=uri, trustPolicy=name), namespace=where)
        # Not Ready: the session's operator and the test's webhook process both reconcile this
        # namespace (two operators owning one namespace, which a real installation must not do),
        # and the later may take the other's children for someone else's. What the tests here
        # need is the model's pods, with the labels their Deployment gives them.
        harness.eventually(
            lambda: _assert_pods(kubectl, where, name),
            timeout=90,
        )
        yield name
    finally:
        kubectl.run("delete", "modeldeployment", name, "-n", where, check=False)
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def _assert_pods(kubectl: harness.Kubectl, namespace: str, name: str) -> None:
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}={name}")["items"]
    assert pods, f"no pod of model {name} yet"
    assert all("pod-template-hash" in pod["metadata"]["labels"] for pod in pods)


def test_a_network_policy_selecting_the_model_pods_by_their_template_hash_is_refused(
    kubectl: harness.Kubectl,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
    webhook: typing.Any,  # noqa: F811 - the fixture imported above
) -> None:
    # Admission judges a NetworkPolicy against the labels the operator's builder gives the
    # model's pods; the Deployment controller adds pod-template-hash to every pod, which anyone
    # who may list pods reads (`kubectl get pods --show-labels`). `podSelector: {}` is refused;
    # the same rule selecting the same pods by that label is admitted (the reconcile reports it
    # afterwards, as it does what the webhook never saw). In the namespace the test's webhook
    # process watches, so that its cache has the model.
    del webhook
    where = IDLE_NAMESPACE
    created: list[str] = []
    with (
        _model_where_the_webhook_watches(
            kubectl,
            publish_model=publish_model,
            signing_key=signing_key,
            model_sources=model_sources,
            s3=s3,
        ) as name,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(
            kubectl.run,
            "delete",
            "networkpolicy",
            *created,
            "-n",
            where,
            "--ignore-not-found",
            check=False,
        )
        (pod, *_) = kubectl.json("get", "pods", "-n", where, "-l", f"{SELECTOR}={name}")["items"]
        template_hash = pod["metadata"]["labels"]["pod-template-hash"]

        def opening(suffix: str, pod_selector: dict[str, typing.Any]) -> Manifest:
            created.append(f"{name}-{suffix}")
            return {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"{name}-{suffix}"},
                "spec": {
                    "podSelector": pod_selector,
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"namespaceSelector": {}}]}],
                },
            }

        def control_refused() -> None:
            result = kubectl.apply(opening("all", {}), namespace=where, check=False)
            assert result.returncode != 0, "podSelector {} opening every namespace was admitted"

        # The webhook's caches of models and policies follow a watch.
        harness.eventually(control_refused, timeout=30)
        selectors = {
            "matchLabels pod-template-hash": {"matchLabels": {"pod-template-hash": template_hash}},
            "Exists pod-template-hash": {
                "matchExpressions": [{"key": "pod-template-hash", "operator": "Exists"}]
            },
        }
        admitted = [
            what
            for index, (what, selector) in enumerate(selectors.items())
            if kubectl.apply(opening(str(index), selector), namespace=where, check=False).returncode
            == 0
        ]
        assert not admitted, f"NetworkPolicies opening the model's pods were admitted: {admitted}"


def test_quarantine_through_the_spec_stops_what_serves_even_when_the_spec_does_not_parse(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    webhook: typing.Any,  # noqa: F811 - the fixture imported above
) -> None:
    # The brake of an incident must not depend on the rest of the spec: a model owner who left
    # (or made) the spec unparsable keeps it serving through spec.quarantine: true.
    del webhook
    uri = publish_model("1.4.0")
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    unparsable = model_deployment("m", source=uri)
    unparsable["spec"]["model"]["maxBytes"] = "0"
    kubectl.apply(unparsable, namespace=namespace)  # admitted
    _wait(kubectl, namespace, "m", "Ready", status="False", reason="InvalidSpec")
    kubectl.run(
        "patch",
        "modeldeployment",
        "m",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"quarantine":true}}',
    )
    _assert_quarantined(kubectl, namespace, "m")


def test_a_namespace_editor_cannot_post_events_as_the_operator(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # Events are one of the three ways ModelGuard reports (docs/status.md). The `edit` role may
    # create Events, and one naming the model, with the operator's reporting controller and a
    # reason of its vocabulary, reads in `kubectl describe` and `kubectl events` exactly as the
    # operator's own: a forged "RolledOut" or "QuarantineLifted", or a "Quarantined" that never
    # happened. Unlike audit records, nothing tells them apart.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    body = wait_ready(kubectl, namespace, "m")
    editor = _editor(kubectl, namespace, as_service_account)
    forged = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "m.forged"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "modelguard.dev/operator",
        "reportingInstance": "modelguard-7d4b9c-x2x9z",
        "action": "Quarantine",
        "reason": "QuarantineLifted",
        "type": "Normal",
        "note": "quarantine lifted by the security team; version 1.4.0 serves again",
        "regarding": {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "namespace": namespace,
            "name": "m",
            "uid": body["metadata"]["uid"],
        },
    }
    result = editor.apply(forged, namespace=namespace, check=False)
    assert result.returncode != 0, "an Event as modelguard.dev/operator was admitted"


# --- Drift: what others change is found by the name they give their field manager ---------------


def test_a_change_made_under_the_operators_field_manager_name_is_reverted_and_recorded(
    kubectl: harness.Kubectl, namespace: str, publish_model: PublishModel
) -> None:
    # Drift is looked for only when managedFields name a manager other than "modelguard" and
    # "kube-controller-manager", and a writer names its manager itself (--field-manager). A
    # break-glass member (who is promised a revert and an audit record) can thus open the
    # model to everyone and add a sidecar for good: nothing is reverted, nothing recorded, and
    # the model reports Isolated=True.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    sidecar = {
        "name": "exfil",
        "image": "registry.example/exfil@sha256:" + "1" * 64,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    writes = {
        ("networkpolicy", "m-allow-ingress"): (
            "kube-controller-manager",
            {"spec": {"ingress": [{}]}},
        ),
        ("deployment", "m"): (
            "modelguard",
            {"spec": {"template": {"spec": {"containers": [sidecar]}}}},
        ),
    }
    for (kind, name), (manager, patch) in writes.items():
        kubectl.run(
            "patch",
            kind,
            name,
            "-n",
            namespace,
            "--type=strategic",
            "-p",
            json.dumps(patch),
            f"--field-manager={manager}",
            *harness.BREAK_GLASS,
        )

    def reverted() -> None:
        policy = kubectl.json("get", "networkpolicy", "m-allow-ingress", "-n", namespace)
        assert not policy["spec"].get("ingress"), (
            f"the model's ingress policy still allows {policy['spec']['ingress']}"
        )
        live = kubectl.json("get", "deployment", "m", "-n", namespace)
        containers = [c["name"] for c in live["spec"]["template"]["spec"]["containers"]]
        assert containers == ["model-server", "audit-proxy"], (
            f"the model's pods still run {containers}"
        )

    harness.eventually(reverted, timeout=60)


def test_metadata_that_changes_what_a_child_does_is_reverted(
    kubectl: harness.Kubectl, namespace: str, publish_model: PublishModel
) -> None:
    # "Labels and annotations others add stay, as they change nothing the child does" does not
    # hold for every key: a workload identity annotation on the model's ServiceAccount gives its
    # pods a cloud identity (EKS, GKE and Azure read it from the ServiceAccount when a pod
    # starts), and kube-proxy ignores a Service labelled service.kubernetes.io/service-proxy-name
    # (or .../headless), cutting the model off. Written by break-glass, who is promised a revert
    # and a record, they stay for good, unrecorded.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    role = "eks.amazonaws.com/role-arn=arn:aws:iam::111122223333:role/exfil"
    kubectl.run("annotate", "serviceaccount", "m", "-n", namespace, role, *harness.BREAK_GLASS)
    kubectl.run(
        "label",
        "service",
        "m",
        "-n",
        namespace,
        "service.kubernetes.io/service-proxy-name=nobody",
        *harness.BREAK_GLASS,
    )

    def reverted() -> None:
        account = kubectl.json("get", "serviceaccount", "m", "-n", namespace)
        service = kubectl.json("get", "service", "m", "-n", namespace)
        annotations = account["metadata"].get("annotations") or {}
        labels = service["metadata"].get("labels") or {}
        assert "eks.amazonaws.com/role-arn" not in annotations, annotations
        assert "service.kubernetes.io/service-proxy-name" not in labels, labels

    harness.eventually(reverted, timeout=60)


# --- status: "only the operator writes the status subresource" is assumed, not enforced ---------


def test_a_model_owner_cannot_make_the_operator_adopt_a_deployment_through_the_status(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
    s3: s3server.S3Server,
) -> None:
    # status.children says which objects are the operator's, status.verifiedDigests which bytes
    # a version may have, status.quarantine what keeps a model quarantined. Decision 0015 rests
    # on "only the operator writes the status subresource", but nothing refuses anyone else: a
    # team role over the modelguard.dev group (resources "*", which RBAC matches against
    # subresources too) plus `edit` in the namespace is enough. The owner of a model held for
    # approval makes the model's Deployment in advance, pinning the held version's root digest,
    # records its uid as the operator's child, and the gate takes those bytes for "already
    # serving": hole 1 of issue 11, reopened.
    uri = publish_model("1.4.0", approve=False)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    digest = signedmodel.root_digest(s3.get_object(bucket, f"{prefix}model.sig"))
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    _wait(kubectl, namespace, "m", "Approved", status="False", reason="ApprovalMissing")
    owner = _editor(kubectl, namespace, as_service_account)
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "model-owner"},
            "rules": [{"apiGroups": ["modelguard.dev"], "resources": ["*"], "verbs": ["*"]}],
        },
        namespace=namespace,
    )
    kubectl.run(
        "create",
        "rolebinding",
        "model-owner",
        "-n",
        namespace,
        "--role=model-owner",
        f"--serviceaccount={namespace}:editor",
    )
    decoy = decoy_deployment("m", labels={SELECTOR: "m"}, digest=digest)
    decoy["metadata"]["labels"] = {SELECTOR: "m"}  # listed with the model's children
    (decoy_agent,) = [c["image"] for c in decoy["spec"]["template"]["spec"]["initContainers"]]
    owner.apply(decoy, namespace=namespace)
    uid = kubectl.json("get", "deployment", "m", "-n", namespace)["metadata"]["uid"]
    children = {"status": {"children": [{"kind": "Deployment", "name": "m", "uid": uid}]}}
    # Refused or not, what counts is whether the operator acts on it.
    owner.run(
        "patch",
        "modeldeployment",
        "m",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(children),
        check=False,
    )
    owner.run("annotate", "modeldeployment", "m", "-n", namespace, "example.com/poke=1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
        live = kubectl.json("get", "deployment", "m", "-n", namespace)
        images = [c["image"] for c in live["spec"]["template"]["spec"]["initContainers"]]
        ready = harness.condition(body, "Ready")
        adopted = "activeVersion" in body["status"] or images != [decoy_agent]
        assert not adopted, (
            f"version 1.4.0 rolled out unapproved into a Deployment the operator did not make "
            f"(its agent now {images}; Ready {ready.get('status')}/{ready.get('reason')}, "
            f"activeVersion {body['status'].get('activeVersion')})"
        )
        time.sleep(1)


def test_a_scale_by_an_autoscaler_the_editor_made_is_reverted(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # The scale webhook fails open (Ignore), so a scale written while no operator pod answers
    # gets through; drift detection is what puts it back. The `edit` role may create
    # HorizontalPodAutoscalers: the HPA controller then writes the model's scale as
    # kube-controller-manager, the one field manager drift detection never suspects. The
    # replica count it set stays after the HPA is gone.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    editor = _editor(kubectl, namespace, as_service_account)
    editor.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "squeeze"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"},
                "minReplicas": 1,
                "maxReplicas": 1,
            },
        },
        namespace=namespace,
    )

    def squeezed() -> None:
        # The HPA's write is seen either as it stands, or, when the operator was quicker than
        # this poll, as the revert the operator tells of.
        replicas = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"]
        events = kubectl.json(
            "get", "events", "-n", namespace, "--field-selector", "reason=DriftReverted"
        )["items"]
        reverted = [e for e in events if str(e.get("message", "")).startswith("Deployment/m:")]
        assert replicas == 1 or reverted, f"the HPA has not scaled the model yet ({replicas})"

    harness.eventually(squeezed, timeout=90, interval=1)
    editor.run("delete", "hpa", "squeeze", "-n", namespace)

    def restored() -> None:
        replicas = kubectl.json("get", "deployment", "m", "-n", namespace)["spec"]["replicas"]
        assert replicas == 2, f"the model runs {replicas} of its 2 replicas"

    harness.eventually(restored, timeout=60, interval=1)


def test_a_namespace_editor_cannot_exec_into_a_model_pod(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
    as_service_account: typing.Callable[[str], harness.Kubectl],
    webhook: typing.Any,  # noqa: F811 - the fixture imported above
) -> None:
    # Debug containers are refused (pods/ephemeralcontainers), but `edit` may also exec, attach
    # and port-forward, and admission never sees those: the webhook selects pods by their
    # managed-by label, and a CONNECT request's object (PodExecOptions) carries none. The model
    # server image holds Python: an editor reads the model's files (the weights leave the
    # cluster) and changes the serving process (same user, same pod) with no refusal, no drift
    # and no audit record. In the namespace the test's webhook process watches, so that its
    # cache has the model's pods (an operator knows the pods of the namespaces it watches).
    del webhook
    where = IDLE_NAMESPACE
    with _model_where_the_webhook_watches(
        kubectl,
        publish_model=publish_model,
        signing_key=signing_key,
        model_sources=model_sources,
        s3=s3,
    ) as name:
        (pod, *_) = kubectl.json("get", "pods", "-n", where, "-l", f"{SELECTOR}={name}")["items"]
        editor = as_service_account("editor")
        binding = f"editor-{namespace}"
        kubectl.run(
            "create",
            "rolebinding",
            binding,
            "-n",
            where,
            "--clusterrole=edit",
            f"--serviceaccount={namespace}:editor",
        )
        try:
            for verb in (
                ("exec", pod["metadata"]["name"], "--", "python3", "-c", "print(1)"),
                ("attach", pod["metadata"]["name"]),
            ):

                def refused(verb: tuple[str, ...] = verb) -> None:
                    # The webhook's cache of model pods follows a watch.
                    result = editor.run(verb[0], "-n", where, *verb[1:], check=False, timeout=30)
                    assert result.returncode != 0
                    assert "denied the request" in result.stderr, (
                        f"{verb[0]}: {result.stderr.strip()}"
                    )

                harness.eventually(refused, timeout=30)
        finally:
            kubectl.run("delete", "rolebinding", binding, "-n", where, check=False)


def test_a_network_policy_opening_the_model_is_reported_while_its_version_cannot_be_verified(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    s3: s3server.S3Server,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # What the NetworkPolicy webhook lets through (it fails open) is reported by the reconcile,
    # but only on the path where the spec's version verified: while verification fails (the
    # tenant's store down or its bundle withdrawn, the policy unbound), Isolated keeps its old
    # True and no Event or audit record says that what serves was opened to everyone.
    uri = publish_model("1.4.0")
    kubectl.apply(model_deployment("m", source=uri), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    s3.delete_object(bucket, f"{prefix}{signedmodel.SIGNATURE_FILE}")
    _wait(kubectl, namespace, "m", "Verified", status="False", reason="MissingFile")
    editor = _editor(kubectl, namespace, as_service_account)
    editor.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "open-to-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
        },
        namespace=namespace,
    )
    _wait(kubectl, namespace, "m", "Isolated", status="False", reason="OpenedByNetworkPolicy")
