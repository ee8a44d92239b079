"""The admission webhook on the real control plane: the kube-apiserver calls `modelguard run` over
TLS, with the rules, selectors and failure policy the chart ships, and refuses direct changes to
what the operator manages while Kubernetes' own controllers and the operator keep working."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
import test_operator_metrics as operator_metrics
import yaml

import localcluster
import localoperator
import signedmodel
import webhookconfig
from modelguard.admission import certs, serving, webhooks

DIGEST = "sha256:" + "4f" * 32
SELECTOR = "modelguard.dev/model-deployment"
CHILD_KINDS = "serviceaccounts,deployments,services,networkpolicies"
AGENT_IMAGE = "registry.example/modelguard@sha256:" + "0" * 64
# A namespace of its own for the webhook process's reconciler, which must not compete with the
# session's operator: this process is here to serve admission.
IDLE_NAMESPACE = "modelguard-admission-idle"

pytestmark = pytest.mark.usefixtures("operator")


@dataclasses.dataclass
class Webhook:
    """`modelguard run` serving the webhook on loopback; stop() and start() it at will."""

    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    metrics: str
    """Where it serves its Prometheus metrics."""
    readiness: str
    """Its readiness endpoint: 200 once its caches are filled."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Ready, as the chart's probe waits before the Service sends it reviews: before its
        # caches are filled it refuses what it judges from them.
        localoperator.wait_until_ready(self.process, readiness=self.readiness, log=self.log)

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def webhook(
    kubectl: harness.Kubectl,
    chart_installed: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Webhook]:
    directory = tmp_path_factory.mktemp("webhook")
    bundle = certs.generate(ip_addresses=["127.0.0.1"])
    certs.write(bundle, directory / "tls")
    audit_key = directory / "audit.pem"
    audit_key.write_bytes(localoperator.audit_key_pem())
    identity = harness.token_kubeconfig(
        kubectl,
        namespace=chart_installed,
        service_account="modelguard",
        path=directory / "operator.kubeconfig",
    )
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": IDLE_NAMESPACE}})
    port = _free_port()
    metrics_port = _free_port()
    readiness = f"http://127.0.0.1:{_free_port()}/readyz"
    served = Webhook(
        command=[
            sys.executable,
            "-m",
            "modelguard.cli",
            "run",
            "--verbose",
            f"--namespace={IDLE_NAMESPACE}",
            f"--webhook-port={port}",
            "--webhook-addr=127.0.0.1",
            f"--webhook-cert-dir={directory / 'tls'}",
            f"--operator-username=system:serviceaccount:{chart_installed}:modelguard",
            f"--audit-key-file={audit_key}",
            # A log of its own: its segments are not in the session operator's log, which other
            # tests verify; checkpoints of another log are ignored there.
            "--audit-log-name=modelguard-system/modelguard-webhook-test",
            f"--audit-checkpoints-namespace={chart_installed}",
            "--audit-checkpoints-prefix=modelguard-audit",
            # The local API server presents its webhook client certificate: answer it alone.
            f"--webhook-client-ca={localcluster.webhook_client_ca(kubectl.kubeconfig)}",
            f"--webhook-client-name={localcluster.WEBHOOK_CLIENT_NAME}",
            "--metrics-addr=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--readiness={readiness}",
        ],
        env={
            **os.environ,
            "KUBECONFIG": str(identity.kubeconfig),
            "POD_NAME": "modelguard-webhook-test",
            "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
        },
        port=port,
        log=directory / "webhook.log",
        metrics=f"http://127.0.0.1:{metrics_port}/metrics",
        readiness=readiness,
    )
    served.start()
    name = f"modelguard-test-admission-{os.getpid()}"
    kubectl.apply(
        webhookconfig.loopback(name=name, port=port, ca=bundle.ca, namespace=chart_installed)
    )
    try:
        yield served
    finally:
        kubectl.run("delete", "validatingwebhookconfiguration", name, check=False)
        served.stop()
        print(f"\nwebhook log: {served.log}", file=sys.stderr)


def _model_deployment(name: str, *, source: str, **spec: typing.Any) -> dict[str, typing.Any]:
    body: dict[str, typing.Any] = {
        "model": {
            "name": "sentiment-bert",
            "version": "1.4.0",
            "source": {"uri": source, "credentialsSecret": "models-readonly"},
        },
        "serving": {"image": f"registry.example/model-server@{DIGEST}", "replicas": 1},
        **spec,
    }
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


@pytest.fixture
def model(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: typing.Callable[..., str],
    source_credentials: str,
    trust_policy: str,
    webhook: Webhook,
) -> str:
    """A ready ModelDeployment whose children were written through the webhook."""
    del source_credentials, trust_policy, webhook
    kubectl.apply(_model_deployment("guarded", source=publish_model("1.4.0")), namespace=namespace)
    kubectl.run(
        "wait",
        "--for=condition=Ready",
        "modeldeployment/guarded",
        "-n",
        namespace,
        "--timeout=90s",
    )
    return "guarded"


def _children(kubectl: harness.Kubectl, namespace: str, name: str) -> list[dict[str, typing.Any]]:
    items: list[dict[str, typing.Any]] = kubectl.json(
        "get", CHILD_KINDS, "-n", namespace, "-l", f"{SELECTOR}={name}"
    )["items"]
    return items


def _editor(
    kubectl: harness.Kubectl,
    namespace: str,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> harness.Kubectl:
    """An ordinary user: a ServiceAccount with the built-in `edit` role in the namespace."""
    user = as_service_account("editor")
    kubectl.run(
        "create",
        "rolebinding",
        "editor",
        "-n",
        namespace,
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:editor",
    )
    return user


def test_direct_edit_of_managed_children_by_a_user_is_refused_with_the_way_to_do_it(
    kubectl: harness.Kubectl,
    namespace: str,
    model: str,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    user = _editor(kubectl, namespace, as_service_account)
    expected = f"edit the ModelDeployment {namespace}/{model} instead"
    attempts = {
        "scale up": ("patch", "deployment", model, "--type=merge", "-p", '{"spec":{"replicas":5}}'),
        "swap image": (
            "set",
            "image",
            f"deployment/{model}",
            "model-server=registry.example/evil:latest",
        ),
        "drop the label": ("label", "service", model, "app.kubernetes.io/managed-by-"),
        "delete policy": ("delete", "networkpolicies", "-l", f"{SELECTOR}={model}"),
        "delete account": ("delete", "serviceaccount", "-l", f"{SELECTOR}={model}"),
    }
    for what, args in attempts.items():
        result = user.run(*args, "-n", namespace, check=False)
        assert result.returncode != 0, f"{what}: allowed"
        # The webhook refuses, or first the API server's own policy on objects that name a
        # ModelDeployment as their owner (creates and updates): both say what to do instead.
        assert "denied the request" in result.stderr or (
            "ValidatingAdmissionPolicy 'modelguard-owned-objects'" in result.stderr
        ), f"{what}: {result.stderr}"
        assert expected in result.stderr, f"{what}: {result.stderr}"
    # Faking a managed object is refused too, while unmanaged objects are the user's business.
    fake = user.run(
        "create",
        "service",
        "clusterip",
        "fake",
        "--tcp=80:80",
        "-n",
        namespace,
        "--dry-run=client",
        "-o",
        "yaml",
        check=False,
    ).stdout
    body = yaml.safe_load(fake)
    body["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "modelguard"}
    assert "denied the request" in user.apply(body, namespace=namespace, check=False).stderr
    user.run("create", "configmap", "mine", "-n", namespace, "--from-literal=a=b")
    user.run("create", "service", "clusterip", "mine", "--tcp=80:80", "-n", namespace)
    deployment = kubectl.get("deployment", model, namespace=namespace)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1
    assert len(_children(kubectl, namespace, model)) >= 4


def test_what_the_model_deployment_spawns_is_guarded_too(
    kubectl: harness.Kubectl,
    namespace: str,
    model: str,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # The model's pods exist (its ReplicaSet and pods were made through the webhook by their
    # controllers); an ordinary user may not inject through them what the Deployment refuses.
    user = _editor(kubectl, namespace, as_service_account)
    (replica_set,) = kubectl.json(
        "get", "replicasets", "-n", namespace, "-l", f"{SELECTOR}={model}"
    )["items"]
    (pod, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}={model}")["items"]
    attempts = {
        "sidecar in the ReplicaSet": (
            "set",
            "image",
            f"replicaset/{replica_set['metadata']['name']}",
            "model-server=registry.example/evil:latest",
        ),
        "image swapped in a pod": (
            "set",
            "image",
            f"pod/{pod['metadata']['name']}",
            "model-server=registry.example/evil:latest",
        ),
        "relabelled pod": ("label", "pod", pod["metadata"]["name"], "extra=1"),
    }
    for what, args in attempts.items():
        result = user.run(*args, "-n", namespace, check=False)
        assert result.returncode != 0, f"{what}: allowed"
        # The webhook refuses, or first (for the ReplicaSet, owned by the model's Deployment)
        # the API server's own policy on objects owned by a model's children.
        assert "denied the request" in result.stderr or (
            "ValidatingAdmissionPolicy 'modelguard-owned-objects-by-uid'" in result.stderr
            and f"edit the ModelDeployment {namespace}/{model} instead" in result.stderr
        ), f"{what}: {result.stderr}"
    # The built-in edit role may not debug; a role that may shows the webhook's own refusal.
    kubectl.run(
        "create",
        "role",
        "debugger",
        "-n",
        namespace,
        "--verb=get,patch,update",
        "--resource=pods/ephemeralcontainers",
    )
    kubectl.run(
        "create",
        "rolebinding",
        "debugger",
        "-n",
        namespace,
        "--role=debugger",
        f"--serviceaccount={namespace}:editor",
    )
    debug = user.run(
        "debug",
        pod["metadata"]["name"],
        "-n",
        namespace,
        "--image=registry.example/debug@sha256:" + "5" * 64,
        "--profile=restricted",
        check=False,
    )
    assert debug.returncode != 0, "debug container: allowed"
    assert "denied the request" in debug.stderr, debug.stderr
    posing = {**pod, "metadata": {"name": "posing", "labels": pod["metadata"]["labels"]}}
    posing["spec"] = {k: v for k, v in pod["spec"].items() if k != "nodeName"}
    posing.pop("status", None)
    result = user.apply(posing, namespace=namespace, check=False)
    assert "denied the request" in result.stderr, result.stderr


def test_break_glass_group_may_change_managed_children(
    kubectl: harness.Kubectl, namespace: str, model: str
) -> None:
    kubectl.run(
        "annotate",
        "service",
        model,
        "-n",
        namespace,
        "incident=INC-1",
        "--as=oncall@example.com",
        "--as-group=modelguard:break-glass",
        "--as-group=system:masters",
    )


def test_operator_still_reconciles_its_children(
    kubectl: harness.Kubectl, namespace: str, model: str
) -> None:
    kubectl.run(
        "patch",
        "modeldeployment",
        model,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"serving":{"replicas":3}}}',
    )

    def scaled() -> None:
        deployment = kubectl.get("deployment", model, namespace=namespace)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 3

    harness.eventually(scaled, timeout=60)


def test_unknown_trust_policy_is_refused_at_admission(
    kubectl: harness.Kubectl, namespace: str, trust_policy: str, webhook: Webhook
) -> None:
    del trust_policy, webhook
    body = _model_deployment("no-policy", source="s3://models/x/", trustPolicy="no-such-policy")

    def refused() -> None:
        result = kubectl.apply(body, namespace=namespace, check=False)
        assert result.returncode != 0, "created"
        assert "TrustPolicy 'no-such-policy' does not exist" in result.stderr, result.stderr

    # The webhook's policy cache follows a watch; give it its first events.
    harness.eventually(refused, timeout=30)


def test_webhook_answers_are_counted_and_timed_by_webhook_and_decision(
    kubectl: harness.Kubectl, namespace: str, trust_policy: str, webhook: Webhook
) -> None:
    """The process serving the webhooks, scraped as Prometheus scrapes it."""
    del trust_policy
    before = operator_metrics.scrape_url(webhook.metrics)
    denied = {"webhook": serving.MODEL_DEPLOYMENT_PATH, "decision": "denied"}
    allowed = {"webhook": serving.MODEL_DEPLOYMENT_PATH, "decision": "allowed"}
    unknown = _model_deployment("counted", source="s3://models/x/", trustPolicy="no-such-policy")

    def refused() -> None:
        assert kubectl.apply(unknown, namespace=namespace, check=False).returncode != 0

    harness.eventually(refused, timeout=30)
    kubectl.apply(_model_deployment("counted", source="s3://models/x/"), namespace=namespace)
    after = operator_metrics.scrape_url(webhook.metrics)
    for labels in (denied, allowed):
        for sample in (
            "modelguard_webhook_requests_total",
            "modelguard_webhook_request_duration_seconds_count",
        ):
            assert operator_metrics.value(after, sample, **labels) >= 1 + operator_metrics.value(
                before, sample, **labels
            ), (sample, labels)
    # An answer from the caches takes well under the API server's timeout: its bucket says so.
    assert (
        operator_metrics.value(
            after, "modelguard_webhook_request_duration_seconds_bucket", le="1.0", **denied
        )
        >= 1
    )
    # The caches it answers from are filled.
    assert (
        operator_metrics.value(
            after, "modelguard_admission_cache_entries", index=webhooks.TRUST_POLICIES
        )
        >= 1
    )


def test_a_policy_not_bound_to_the_namespace_is_refused_at_admission(
    kubectl: harness.Kubectl,
    namespace: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    webhook: Webhook,
) -> None:
    # A permissive sandbox policy (no approvals) that its security owner bound to the namespaces
    # labelled for it: a model owner elsewhere cannot opt into it by naming it.
    del webhook
    name = f"sandbox-{os.getpid()}"
    policy = signedmodel.trust_policy(name=name, public_key=signing_key[1], sources=model_sources)
    policy["spec"]["namespaceSelector"] = {"matchLabels": {"sandbox.example/tier": name}}  # type: ignore[index]
    kubectl.apply(policy)
    body = _model_deployment("escapes", source="s3://models/x/", trustPolicy=name)
    try:

        def refused() -> None:
            result = kubectl.apply(body, namespace=namespace, check=False)
            assert result.returncode != 0, "created"
            assert f'TrustPolicy "{name}" does not bind namespace {namespace}' in result.stderr, (
                result.stderr
            )
            # The denial names the policy asked for and no other.
            assert '"default"' not in result.stderr, result.stderr

        harness.eventually(refused, timeout=30)
        assert kubectl.get("modeldeployment", "escapes", namespace=namespace) is None
        # Once the namespace carries the label the policy selects, the same model is admitted.
        kubectl.run("label", "namespace", namespace, f"sandbox.example/tier={name}")

        def admitted() -> None:
            result = kubectl.apply(body, namespace=namespace, check=False)
            assert result.returncode == 0, result.stderr

        harness.eventually(admitted, timeout=30)
    finally:
        kubectl.run("delete", "modeldeployment", "escapes", "-n", namespace, check=False)
        kubectl.run("delete", "trustpolicy", name, "--wait=false", check=False)


def test_broad_access_is_refused_at_admission_naming_the_policy_field(
    kubectl: harness.Kubectl, namespace: str, trust_policy: str, webhook: Webhook
) -> None:
    del trust_policy, webhook
    body = _model_deployment(
        "open-to-all", source="s3://models/x/", access={"ingress": [{"namespaceSelector": {}}]}
    )

    def refused() -> None:
        result = kubectl.apply(body, namespace=namespace, check=False)
        assert result.returncode != 0, "created"
        assert (
            'spec.access.ingress[0].namespaceSelector: {} selects every namespace; TrustPolicy "'
            'default" must set spec.network.allowAllNamespaces: true' in result.stderr
        ), result.stderr

    harness.eventually(refused, timeout=30)
    assert kubectl.get("modeldeployment", "open-to-all", namespace=namespace) is None


def _network_policy(name: str, **spec: typing.Any) -> dict[str, typing.Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_network_policy_that_opens_a_model_beyond_its_trust_policy_is_refused(
    kubectl: harness.Kubectl, trust_policy: str, webhook: Webhook
) -> None:
    # NetworkPolicies add up: one that someone else makes, selecting the model's pods, widens what
    # the model's own policies allow. In the namespace the webhook process watches, so that its
    # cache has the model.
    del trust_policy, webhook
    where = IDLE_NAMESPACE
    kubectl.apply(_model_deployment("isolated", source="s3://models/isolated/"), namespace=where)
    widening = {
        "from anywhere, by address": _network_policy(
            "from-anywhere",
            podSelector={},
            policyTypes=["Ingress"],
            ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        ),
        "to everything, by an empty rule": _network_policy(
            "to-everything",
            podSelector={"matchLabels": {SELECTOR: "isolated"}},
            policyTypes=["Egress"],
            egress=[{"ports": [{"port": 443}]}],
        ),
    }
    says = {
        "from anywhere, by address": (
            # Neither the TrustPolicy nor its ranges: the writer may read neither.
            f"NetworkPolicy {where}/from-anywhere: spec.ingress[0].from[0].ipBlock.cidr: "
            "0.0.0.0/0 is not inside the ranges the model's TrustPolicy allows in "
            "spec.network.ingressCIDRs; add it there or narrow the range"
        ),
        "to everything, by an empty rule": (
            f"NetworkPolicy {where}/to-everything: spec.egress[0].to is empty"
        ),
    }
    admitted = {
        "selecting other pods": _network_policy(
            "other-pods",
            podSelector={"matchLabels": {"app": "frontend"}},
            ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        ),
        # To the audit proxy's port: the only one open to callers of a model recording its
        # inputs (decision 0026), whoever they are.
        "callers of the model's own namespace": _network_policy(
            "same-namespace",
            podSelector={},
            ingress=[{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        ),
    }
    try:
        for what, body in widening.items():

            def refused(body: dict[str, typing.Any] = body, what: str = what) -> None:
                result = kubectl.apply(body, namespace=where, check=False)
                assert result.returncode != 0, f"{what}: created"
                assert says[what] in result.stderr, f"{what}: {result.stderr}"
                assert f"ModelDeployment {where}/isolated" in result.stderr, result.stderr

            # The webhook's caches of models and policies follow a watch.
            harness.eventually(refused, timeout=30)
        for what, body in admitted.items():
            result = kubectl.apply(body, namespace=where, check=False)
            assert result.returncode == 0, f"{what}: {result.stderr}"
    finally:
        kubectl.run("delete", "modeldeployment", "isolated", "-n", where, check=False)
        kubectl.run(
            "delete",
            "networkpolicy",
            *(body["metadata"]["name"] for body in (*widening.values(), *admitted.values())),
            "-n",
            where,
            "--ignore-not-found",
            check=False,
        )


def test_reject_mode_refuses_an_unapproved_version_at_apply_time(
    kubectl: harness.Kubectl,
    trust_policy: str,
    approver_key: tuple[Path, str],
    webhook: Webhook,
) -> None:
    del trust_policy, webhook
    # In the namespace the webhook process watches: its approval cache follows that watch (an
    # operator in a cluster watches every namespace it serves).
    namespace = IDLE_NAMESPACE
    body = _model_deployment(
        "strict", source="s3://models/strict/", rollout={"onUnapproved": "Reject"}
    )
    body["spec"]["model"]["version"] = "2.0.0"

    def refused() -> None:
        result = kubectl.apply(body, namespace=namespace, check=False)
        assert result.returncode != 0, "created"
        assert "spec.rollout.onUnapproved is Reject" in result.stderr, result.stderr
        assert "ApprovalMissing" in result.stderr, result.stderr

    harness.eventually(refused, timeout=30)
    assert kubectl.get("modeldeployment", "strict", namespace=namespace) is None

    # A signed approval of that version: the same apply now goes through (its digest is checked
    # by the rollout gate once the version is verified).
    kubectl.apply(
        signedmodel.approval(
            private_key=approver_key[0],
            namespace=namespace,
            model="sentiment-bert",
            version="2.0.0",
            digest="sha256:" + "ab" * 32,
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
            name="strict-2-0-0",
        ),
        namespace=namespace,
    )
    try:

        def admitted() -> None:
            result = kubectl.apply(body, namespace=namespace, check=False)
            assert result.returncode == 0, result.stderr

        harness.eventually(admitted, timeout=30)
    finally:
        kubectl.run("delete", "modeldeployment", "strict", "-n", namespace, check=False)
        kubectl.run("delete", "modelapproval", "strict-2-0-0", "-n", namespace, check=False)


def test_deleting_the_model_still_garbage_collects_its_children(
    kubectl: harness.Kubectl, namespace: str, model: str
) -> None:
    kubectl.run("delete", "modeldeployment", model, "-n", namespace)

    def collected() -> None:
        assert _children(kubectl, namespace, model) == []

    harness.eventually(collected, timeout=60)


def test_with_the_webhook_down_only_managed_objects_fail_closed(
    kubectl: harness.Kubectl, namespace: str, model: str, webhook: Webhook
) -> None:
    webhook.stop()
    try:
        # Everything else keeps working: pods, configmaps, unmanaged objects...
        kubectl.run("create", "configmap", "still-works", "-n", namespace, "--from-literal=a=b")
        # A NetworkPolicy of someone else's is sent to the webhook too (no label selects it), with
        # failurePolicy Ignore: no namespace's NetworkPolicies depend on ModelGuard being up; the
        # reconcile reports one that opens a model.
        kubectl.apply(
            _network_policy(
                "still-works",
                podSelector={},
                ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
            ),
            namespace=namespace,
        )
        kubectl.apply(_restricted_pod("still-works"), namespace=namespace)
        kubectl.run("delete", "pod", "still-works", "-n", namespace, "--wait=false")
        # ...and kube-system is never sent, even for objects labelled as ours.
        kubectl.run("create", "configmap", "admission-probe", "-n", "kube-system")
        kubectl.run("delete", "configmap", "admission-probe", "-n", "kube-system")
        kubectl.run(
            "create", "service", "clusterip", "admission-probe", "--tcp=80:80", "-n", "kube-system"
        )
        kubectl.run(
            "label",
            "service",
            "admission-probe",
            "-n",
            "kube-system",
            "app.kubernetes.io/managed-by=modelguard",
        )
        kubectl.run("delete", "service", "admission-probe", "-n", "kube-system")
        # Managed children and ModelDeployments fail closed, even for a break-glass identity.
        result = kubectl.run(
            "annotate",
            "deployment",
            model,
            "-n",
            namespace,
            "incident=INC-2",
            "--as=oncall@example.com",
            "--as-group=modelguard:break-glass",
            "--as-group=system:masters",
            check=False,
        )
        assert result.returncode != 0
        assert "failed calling webhook" in result.stderr, result.stderr
        created = kubectl.apply(
            _model_deployment("while-down", source="s3://models/x/"),
            namespace=namespace,
            check=False,
        )
        assert created.returncode != 0
        assert "failed calling webhook" in created.stderr, created.stderr
        # Scale is sent for every Deployment (no labels to select on), with failurePolicy Ignore:
        # other workloads still scale while the webhook is down.
        kubectl.apply(_plain_deployment("scales-while-down"), namespace=namespace)
        kubectl.run("scale", "deployment", "scales-while-down", "--replicas=0", "-n", namespace)
    finally:
        webhook.start()


def _restricted_pod(name: str) -> dict[str, typing.Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example/app@{DIGEST}",
                    "securityContext": {
                        "runAsUser": 1000,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _render_with_cluster_state(
    helm: harness.Helm, namespace: str, *values: str
) -> dict[str, dict[str, typing.Any]]:
    """The chart's webhook Secret and configuration as an install would render them now
    (`--dry-run=server` runs the chart's lookup of the existing Secret). A release name of its
    own: the dry run must not collide with the installed chart's cluster-scoped objects."""
    manifest = helm.run(
        "install",
        "certcheck",
        str(harness.CHART),
        "--namespace",
        namespace,
        "--dry-run=server",
        *harness.PINNED_IMAGE,
        "--set",
        "crds.enabled=false",
        *values,
    ).stdout
    return {
        doc["kind"]: doc
        for doc in yaml.safe_load_all(manifest.split("\n---\n", 1)[1].split("\nNOTES:")[0])
        if doc and doc["kind"] in {"Secret", "ValidatingWebhookConfiguration"}
    }


def test_chart_keeps_its_webhook_certificate_and_rotates_trusting_both_cas(
    kubectl: harness.Kubectl, helm: harness.Helm, namespace: str
) -> None:
    first = _render_with_cluster_state(helm, namespace)
    secret = first["Secret"]
    ca = base64.b64decode(secret["data"]["ca.crt"])
    for webhook in first["ValidatingWebhookConfiguration"]["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca
        assert webhook["timeoutSeconds"] <= 5
        # Fail for our kinds and managed children; a dead webhook must not stop the scaling of
        # every other Deployment, nor anyone's NetworkPolicies, so the webhooks sent every
        # object of a kind (no label selects ours) are Ignore. Except exec, attach and
        # port-forward (CONNECT, never labelled): failing open would let anyone into a model's
        # pods whenever no operator pod answers, so they fail closed by default (its own value).
        ours = (
            webhook["rules"][0]["apiGroups"] == ["modelguard.dev"]
            or (webhook.get("objectSelector") or {}).get("matchLabels")
            == {"app.kubernetes.io/managed-by": "modelguard"}
            or webhook["rules"][0]["operations"] == ["CONNECT"]
        )
        assert webhook["failurePolicy"] == ("Fail" if ours else "Ignore"), webhook["name"]
        if webhook["rules"][0]["scope"] == "Cluster":
            continue  # a namespaceSelector does not apply to cluster-scoped TrustPolicies
        (excluded,) = webhook["namespaceSelector"]["matchExpressions"]
        assert set(excluded["values"]) == {"kube-system", "kube-node-lease", namespace}
    # As the first install left it: owned by the release.
    secret["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": "certcheck",
        "meta.helm.sh/release-namespace": namespace,
    }
    kubectl.apply(secret, namespace=namespace)

    # An upgrade reuses what is installed: the pods keep serving, the bundle keeps matching.
    again = _render_with_cluster_state(helm, namespace)
    assert again["Secret"]["data"] == secret["data"]

    # Rotation: a new pair, and a bundle that trusts the new CA and the old one while the pods
    # reload the new files.
    rotated = _render_with_cluster_state(
        helm, namespace, "--set", "webhook.certificate.rotate=true"
    )
    data = rotated["Secret"]["data"]
    assert data["tls.crt"] != secret["data"]["tls.crt"]
    assert data["previous-ca.crt"] == secret["data"]["ca.crt"]
    bundle = base64.b64decode(
        rotated["ValidatingWebhookConfiguration"]["webhooks"][0]["clientConfig"]["caBundle"]
    )
    assert bundle == base64.b64decode(data["ca.crt"]) + ca


def _plain_deployment(name: str, *, labels: dict[str, str] | None = None) -> dict[str, typing.Any]:
    selector = {"app": name}
    pod = _restricted_pod(name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**selector, **(labels or {})}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": pod["spec"]},
        },
    }


BREAK_GLASS = ("--as=oncall@example.com", "--as-group=modelguard:break-glass")


def test_kubectl_scale_of_a_managed_deployment_is_refused(
    kubectl: harness.Kubectl,
    namespace: str,
    as_service_account: typing.Callable[[str], harness.Kubectl],
    webhook: Webhook,
) -> None:
    del webhook
    # In the namespace the webhook process watches, so that its cache of managed Deployments has
    # this one; created by break-glass, as only the operator may create a managed object.
    where = IDLE_NAMESPACE
    managed = _plain_deployment(
        "scale-guarded",
        labels={"app.kubernetes.io/managed-by": "modelguard", SELECTOR: "scale-owner"},
    )
    breakglass = (*BREAK_GLASS, "--as-group=system:masters")
    kubectl.apply(managed, namespace=where, extra=breakglass)
    kubectl.apply(_plain_deployment("scale-free"), namespace=where)
    user = as_service_account("scaler")
    kubectl.run(
        "create",
        "rolebinding",
        f"scaler-{namespace}",
        "-n",
        where,
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:scaler",
    )
    try:

        def refused() -> None:
            result = user.run(
                "scale", "deployment", "scale-guarded", "--replicas=3", "-n", where, check=False
            )
            assert result.returncode != 0, "scaled"
            assert (
                f"set spec.serving.replicas of the ModelDeployment {where}/scale-owner"
                in result.stderr
            ), result.stderr

        # The webhook's cache of managed Deployments follows a watch.
        harness.eventually(refused, timeout=30)
        user.run("scale", "deployment", "scale-free", "--replicas=1", "-n", where)
        kubectl.run(
            "scale", "deployment", "scale-guarded", "--replicas=2", "-n", where, *breakglass
        )
        scaled = kubectl.get("deployment", "scale-guarded", namespace=where)
        assert scaled is not None
        assert scaled["spec"]["replicas"] == 2
    finally:
        kubectl.run("delete", "deployment", "scale-guarded", "-n", where, *breakglass, check=False)
        kubectl.run("delete", "deployment", "scale-free", "-n", where, check=False)
        kubectl.run("delete", "rolebinding", f"scaler-{namespace}", "-n", where, check=False)


def test_trust_policy_that_could_never_be_met_is_refused(
    kubectl: harness.Kubectl, signing_key: tuple[Path, str], webhook: Webhook
) -> None:
    del webhook
    name = f"unusable-{os.getpid()}"
    signer = {"name": "release", "publicKey": signing_key[1]}
    cases = {
        "key that does not parse": (
            {"signers": [{**signer, "publicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n"}]},
            "spec.signers[0].publicKey: must be a PEM public key",
        ),
        "k of n with n < k": (
            {"signers": [signer], "minSigners": 2},
            "minSigners is 2 but only 1 signer(s) are listed",
        ),
    }
    for what, (spec, message) in cases.items():
        body = {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "TrustPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }
        result = kubectl.apply(body, check=False)
        assert result.returncode != 0, f"{what}: created"
        assert "denied the request" in result.stderr, f"{what}: {result.stderr}"
        assert message in result.stderr, f"{what}: {result.stderr}"
    assert kubectl.get("trustpolicy", name, namespace="default") is None


def test_a_certificate_root_signer_names_who_may_sign(
    kubectl: harness.Kubectl, signing_key: tuple[Path, str], webhook: Webhook
) -> None:
    # The CEL rules of the CRD as the real API server compiles and runs them, then the webhook.
    del webhook
    name = f"pki-{os.getpid()}"
    ca = certs.generate(dns_names=["unused.example"]).ca.decode()
    refused = {
        "a CA root without identity": (
            {"name": "pki", "certificateRoot": ca},
            "identity is required with a certificateRoot that holds a CA certificate",
        ),
        "identity on a public key": (
            {"name": "pki", "publicKey": signing_key[1], "identity": {"san": "a@example.com"}},
            "identity applies only to a certificateRoot signer",
        ),
        "both names and any": (
            {"name": "pki", "certificateRoot": ca, "identity": {"any": True, "san": "a@b.c"}},
            "needs subject and/or san, or any: true (not both)",
        ),
    }
    for what, (signer, message) in refused.items():
        body = {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "TrustPolicy",
            "metadata": {"name": name},
            "spec": {"signers": [signer]},
        }
        result = kubectl.apply(body, check=False)
        assert result.returncode != 0, f"{what}: created"
        assert message in result.stderr, f"{what}: {result.stderr}"
    assert kubectl.get("trustpolicy", name, namespace="default") is None
    pinned = {"name": "pki", "certificateRoot": ca, "identity": {"san": "release@example.com"}}
    anyone = {"name": "pki", "certificateRoot": ca, "identity": {"any": True}}
    try:
        for signer, warning in ((pinned, None), (anyone, "trusts every code-signing certificate")):
            body = {
                "apiVersion": "modelguard.dev/v1alpha1",
                "kind": "TrustPolicy",
                "metadata": {"name": name},
                "spec": {"signers": [signer], "minApprovals": 0},
            }
            result = kubectl.apply(body)
            if warning is None:
                assert "Warning" not in result.stderr, result.stderr
            else:
                assert warning in result.stderr, result.stderr
    finally:
        kubectl.run("delete", "trustpolicy", name, check=False)


def test_model_approval_that_would_count_for_nothing_is_refused(
    kubectl: harness.Kubectl,
    trust_policy: str,
    approver_key: tuple[Path, str],
    tmp_path: Path,
    webhook: Webhook,
) -> None:
    del trust_policy, webhook
    where = IDLE_NAMESPACE
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)

    def signed(key: Path, name: str) -> dict[str, typing.Any]:
        return signedmodel.approval(
            private_key=key,
            namespace=where,
            model="sentiment-bert",
            version="3.0.0",
            digest="sha256:" + "cd" * 32,
            expires=expires,
            name=name,
        )

    edited = signed(approver_key[0], "edited")
    edited["spec"]["version"] = "3.0.1"
    result = kubectl.apply(edited, namespace=where, check=False)
    assert result.returncode != 0, "an approval edited after signing was stored"
    assert "spec.version '3.0.1' differs from the signed '3.0.0'" in result.stderr, result.stderr

    # Signed with a key that is not the approver's: refused once a model in the namespace names
    # the policy that says whose key it must be.
    impostor, _ = signedmodel.generate_key(tmp_path, name="security")
    kubectl.apply(_model_deployment("approved-later", source="s3://models/later/"), namespace=where)
    try:

        def refused() -> None:
            result = kubectl.apply(signed(impostor, "impostor"), namespace=where, check=False)
            assert result.returncode != 0, "stored"
            assert "under TrustPolicy default (ApprovalUnknownApprover)" in result.stderr, (
                result.stderr
            )

        harness.eventually(refused, timeout=30)
        kubectl.apply(signed(approver_key[0], "genuine"), namespace=where)
    finally:
        kubectl.run("delete", "modeldeployment", "approved-later", "-n", where, check=False)
        kubectl.run("delete", "modelapproval", "genuine", "-n", where, check=False)


def _answer_without_a_certificate(port: int) -> bytes:
    """What the webhook sends back to a TLS client that presents no certificate: b"" or an
    exception when it refuses, the start of an HTTP answer when it does not."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = b"POST /managed-child HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            # TLS 1.3 reports a missing client certificate on the first read, not the handshake.
            tls.sendall(request)
            return tls.recv(1024)
    except (ssl.SSLError, ConnectionError):
        return b""


def test_the_webhook_answers_the_api_server_and_no_other_client(webhook: Webhook) -> None:
    # Every admission test in this file is the API server being answered; a pod that reaches
    # the port without the API server's client certificate is not.
    assert _answer_without_a_certificate(webhook.port) == b""
