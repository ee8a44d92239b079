"""The operator's permissions are exactly the checked-in list: any grant added to the chart must be
added to tests/integration/expected/operator-permissions.txt too, where a reviewer sees it. The
rest of the suite runs the operator under this very identity, so the list is also sufficient."""

from __future__ import annotations

import copy
import json
import subprocess
import typing
import uuid
from pathlib import Path

import harness
import pytest
import yaml

from modelguard.api import placement, v1alpha1
from modelguard.builders import deployment, serviceaccount

Manifest = dict[str, typing.Any]

EXPECTED = harness.REPO_ROOT / "tests" / "integration" / "expected" / "operator-permissions.txt"
# Granted to every authenticated identity by Kubernetes itself (system:basic-user).
SELF_REVIEWS = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def resource_permissions(kubectl: harness.Kubectl, *, identity: str, namespace: str) -> list[str]:
    """`kubectl auth can-i --list` as "resource: verbs" lines, non-resource URLs left out."""
    table = kubectl.run("auth", "can-i", "--list", f"--as={identity}", "-n", namespace).stdout
    lines = []
    for row in table.splitlines()[1:]:
        resource = row[: row.index("[")].strip() if "[" in row else row.strip()
        if not resource or resource in SELF_REVIEWS:
            continue
        verbs = row[row.rindex("[") + 1 : row.rindex("]")].split()
        names = row.split("]")[1].strip()
        lines.append(f"{resource}{' ' + names if names != '[' else ''}: {' '.join(sorted(verbs))}")
    return sorted(lines)


def test_operator_permissions_are_exactly_the_expected_ones(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    identity = f"system:serviceaccount:{chart_installed}:modelguard"
    actual = resource_permissions(kubectl, identity=identity, namespace=namespace)
    expected = [
        line for line in EXPECTED.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert actual == expected


def test_operator_cannot_read_secrets_or_escalate(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    identity = f"system:serviceaccount:{chart_installed}:modelguard"
    for verb, resource, *extra in [
        ("get", "secrets"),
        ("list", "secrets"),
        # kubectl would read "serviceaccounts/token" as a ServiceAccount named "token".
        ("create", "serviceaccounts", "--subresource=token"),
        ("bind", "clusterroles"),
        ("escalate", "roles"),
        ("impersonate", "users"),
        ("patch", "validatingwebhookconfigurations"),
        ("delete", "deployments"),
        ("create", "pods"),
    ]:
        result = kubectl.run(
            "auth",
            "can-i",
            verb,
            resource,
            *extra,
            f"--as={identity}",
            "-n",
            namespace,
            check=False,
        )
        assert result.stdout.strip() == "no", f"{verb} {resource} {extra}"


# --- What the operator's identity may write, bounded by the API server itself ------------------
# RBAC lets the operator create and update Deployments and ServiceAccounts in every namespace; the
# chart's ValidatingAdmissionPolicy admits only the shapes the operator builds. Each case asks the
# API server (server-side dry run, so nothing is stored) as the operator's ServiceAccount.


def _model(namespace: str, *, credentials: str | None = "models-readonly") -> Manifest:
    body: Manifest = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {
            "name": "m",
            "namespace": namespace,
            "uid": "1" * 8 + "-1111-1111-1111-" + "1" * 12,
        },
        "spec": {
            "model": {
                "name": "m",
                "version": "1.0.0",
                "source": {"uri": "s3://models/m/1.0.0/"},
            },
            "serving": {"image": f"registry.example/model-server@sha256:{'2' * 64}"},
        },
    }
    if credentials:
        body["spec"]["model"]["source"]["credentialsSecret"] = credentials
    return body


def _built(namespace: str) -> Manifest:
    """The Deployment exactly as the operator builds it, with the chart's agent image."""
    return deployment.build(
        v1alpha1.parse(_model(namespace)),
        artifact=deployment.VerifiedArtifact(
            root_digest=f"sha256:{'3' * 64}",
            signature_digest=f"sha256:{'4' * 64}",
            agent_image=f"{harness.IMAGE_REPOSITORY}@{harness.IMAGE_DIGEST}",
        ),
    )


def _as_operator(
    kubectl: harness.Kubectl, chart_installed: str, manifest: Manifest, *, verb: str = "create"
) -> subprocess.CompletedProcess[str]:
    for _ in range(5):
        result = kubectl.run(
            verb,
            "--dry-run=server",
            f"--as=system:serviceaccount:{chart_installed}:modelguard",
            "-f",
            "-",
            "-o",
            "name",
            input=json.dumps(manifest),
            check=False,
        )
        # A replace races the deployment controller's own writes of the object: try again, as
        # the operator does, rather than read a lost race as the policy's answer.
        if "Conflict" not in result.stderr:
            break
    return result


def _pod(manifest: Manifest) -> Manifest:
    spec: Manifest = manifest["spec"]["template"]["spec"]
    return spec


def _server(manifest: Manifest) -> Manifest:
    container: Manifest = _pod(manifest)["containers"][0]
    return container


def _agent(manifest: Manifest) -> Manifest:
    container: Manifest = _pod(manifest)["initContainers"][0]
    return container


def _mount_secret_in_the_server(manifest: Manifest) -> None:
    _pod(manifest)["volumes"].append({"name": "stolen", "secret": {"secretName": "any-secret"}})
    _server(manifest)["volumeMounts"].append({"name": "stolen", "mountPath": "/stolen"})


def _credentials_in_the_server(manifest: Manifest) -> None:
    _server(manifest)["volumeMounts"].append(
        {"name": deployment.CREDENTIALS_VOLUME, "mountPath": "/creds", "readOnly": True}
    )


def _another_service_account(manifest: Manifest) -> None:
    _pod(manifest)["serviceAccountName"] = "ci-deployer"


def _token_mounted(manifest: Manifest) -> None:
    _pod(manifest)["automountServiceAccountToken"] = True


def _projected_token(manifest: Manifest) -> None:
    _pod(manifest)["volumes"].append(
        {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
    )


def _env_from_secret(manifest: Manifest) -> None:
    _server(manifest)["envFrom"] = [{"secretRef": {"name": "any-secret"}}]


def _env_value_from_secret(manifest: Manifest) -> None:
    _server(manifest)["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "any-secret", "key": "k"}}}
    ]


def _host_path(manifest: Manifest) -> None:
    _pod(manifest)["volumes"].append({"name": "root", "hostPath": {"path": "/"}})


def _agent_with_another_image(manifest: Manifest) -> None:
    _agent(manifest)["image"] = f"registry.example/attacker@sha256:{'5' * 64}"


def _agent_with_another_command(manifest: Manifest) -> None:
    _agent(manifest)["command"] = ["sh", "-c", "cat /var/run/modelguard/credentials/*"]


def _privileged(manifest: Manifest) -> None:
    _server(manifest)["securityContext"]["privileged"] = True
    _server(manifest)["securityContext"]["allowPrivilegeEscalation"] = True


def _host_network(manifest: Manifest) -> None:
    _pod(manifest)["hostNetwork"] = True


def _node_selector(manifest: Manifest) -> None:
    _pod(manifest)["nodeSelector"] = {"node-role.kubernetes.io/control-plane": ""}


def _control_plane_toleration(manifest: Manifest) -> None:
    _pod(manifest)["tolerations"] = [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    ]


def _node_name(manifest: Manifest) -> None:
    # Straight onto a node, past the scheduler and every taint.
    _pod(manifest)["nodeName"] = "control-plane-0"


def _affinity(manifest: Manifest) -> None:
    _pod(manifest)["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                ]
            }
        }
    }


PLACED_ONLY = "placed only as the chart's modelPods says"

POD_TEMPLATE_CHANGES: typing.Final = [
    pytest.param(_mount_secret_in_the_server, "only emptyDir volumes", id="any-secret-volume"),
    pytest.param(
        _credentials_in_the_server,
        "only the verifying init container",
        id="credentials-in-the-model-server",
    ),
    pytest.param(_another_service_account, "model's own ServiceAccount", id="another-sa"),
    pytest.param(_token_mounted, "automountServiceAccountToken", id="token-mounted"),
    pytest.param(_projected_token, "only emptyDir volumes", id="projected-token"),
    pytest.param(_env_from_secret, "no envFrom", id="env-from-secret"),
    pytest.param(_env_value_from_secret, "no envFrom, no valueFrom", id="env-value-from-secret"),
    pytest.param(_host_path, "only emptyDir volumes", id="host-path"),
    pytest.param(_agent_with_another_image, "only the verifying init container", id="agent-image"),
    pytest.param(
        _agent_with_another_command, "only the verifying init container", id="agent-command"
    ),
    pytest.param(_privileged, "unprivileged", id="privileged"),
    pytest.param(_host_network, "no host namespace", id="host-network"),
    # The chart under test sets no modelPods: no placement at all.
    pytest.param(_node_selector, PLACED_ONLY, id="node-selector"),
    pytest.param(_control_plane_toleration, PLACED_ONLY, id="toleration"),
    pytest.param(_node_name, PLACED_ONLY, id="node-name"),
    pytest.param(_affinity, PLACED_ONLY, id="affinity"),
]


@pytest.mark.parametrize(("change", "says"), POD_TEMPLATE_CHANGES)
def test_the_operator_cannot_create_a_pod_template_beyond_what_it_builds(
    kubectl: harness.Kubectl,
    chart_installed: str,
    namespace: str,
    change: typing.Callable[[Manifest], None],
    says: str,
) -> None:
    manifest = copy.deepcopy(_built(namespace))
    change(manifest)
    result = _as_operator(kubectl, chart_installed, manifest)
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    assert says in result.stderr, result.stderr


@pytest.mark.parametrize(("change", "says"), POD_TEMPLATE_CHANGES)
def test_the_operator_cannot_replace_a_deployment_with_a_pod_template_beyond_what_it_builds(
    kubectl: harness.Kubectl,
    chart_installed: str,
    namespace: str,
    change: typing.Callable[[Manifest], None],
    says: str,
) -> None:
    # The operator writes changed children by replacing them whole (PUT, an UPDATE): an update
    # is bounded like a creation, and what it builds passes as an update too.
    built = _built(namespace)
    # Owned by no ModelDeployment that exists, the garbage collector would delete it mid-test.
    del built["metadata"]["ownerReferences"]
    kubectl.run("create", "-f", "-", input=json.dumps(built))
    unchanged = _as_operator(kubectl, chart_installed, built, verb="replace")
    assert unchanged.returncode == 0, unchanged.stderr
    manifest = copy.deepcopy(built)
    change(manifest)
    result = _as_operator(kubectl, chart_installed, manifest, verb="replace")
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    assert says in result.stderr, result.stderr


def test_the_operator_cannot_replace_a_service_account_with_a_token(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    built = serviceaccount.build(v1alpha1.parse(_model(namespace)))
    # Owned by no ModelDeployment that exists, the garbage collector would delete it mid-test.
    del built["metadata"]["ownerReferences"]
    kubectl.run("create", "-f", "-", input=json.dumps(built))
    unchanged = _as_operator(kubectl, chart_installed, built, verb="replace")
    assert unchanged.returncode == 0, unchanged.stderr
    result = _as_operator(
        kubectl, chart_installed, {**built, "automountServiceAccountToken": True}, verb="replace"
    )
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "mounts no token and lists no Secrets" in result.stderr, result.stderr


def test_what_the_operator_builds_is_admitted(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    for manifest in (
        _built(namespace),
        serviceaccount.build(v1alpha1.parse(_model(namespace))),
    ):
        result = _as_operator(kubectl, chart_installed, manifest)
        assert result.returncode == 0, result.stderr


def test_the_same_pod_template_from_anyone_else_is_not_this_policys_business(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    # The policy bounds the operator's identity only: a user's own Deployments are theirs (as
    # long as they claim no ModelDeployment as their owner, which only the operator may write).
    manifest = _built(namespace)
    del manifest["metadata"]["ownerReferences"]
    _mount_secret_in_the_server(manifest)
    result = kubectl.run(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"automountServiceAccountToken": True}, id="token"),
        pytest.param({"automountServiceAccountToken": None}, id="token-unset"),
        pytest.param({"secrets": [{"name": "any-secret"}]}, id="secrets"),
        pytest.param({"imagePullSecrets": [{"name": "any-secret"}]}, id="image-pull-secrets"),
    ],
)
def test_the_operator_cannot_create_a_service_account_with_a_token_or_secrets(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str, change: Manifest
) -> None:
    manifest = serviceaccount.build(v1alpha1.parse(_model(namespace)))
    manifest.update(change)
    manifest = {key: value for key, value in manifest.items() if value is not None}
    result = _as_operator(kubectl, chart_installed, manifest)
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "mounts no token and lists no Secrets" in result.stderr, result.stderr


# --- Placement: the operator's pods go where modelPods says, and nowhere else ------------------

PLACEMENT = placement.parse(
    node_selector=json.dumps({"modelguard.dev/node": "real", "pool": "gpu"}),
    tolerations=json.dumps(
        [
            {"key": "modelguard.dev/node", "value": "real", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists"},
            {"key": "draining", "effect": "NoExecute", "tolerationSeconds": 300},
        ]
    ),
)


@pytest.fixture
def placed_operator(
    kubectl: harness.Kubectl, helm: harness.Helm, namespace: str, tmp_path: Path
) -> typing.Iterator[str]:
    """The admission policy of a release whose modelPods place model pods (rendered by helm from
    the chart, applied by itself), bound to an operator identity of its own in the test's
    namespace, which may write Deployments there; its user name."""
    release = f"p{uuid.uuid4().hex[:8]}"
    account = f"{release}-operator"
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "modelPods": {
                    "nodeSelector": dict(PLACEMENT.node_selector),
                    "tolerations": [t.manifest() for t in PLACEMENT.tolerations],
                },
                "serviceAccount": {"create": False, "name": account},
            }
        )
    )
    rendered = helm.run(
        "template",
        release,
        str(harness.CHART),
        "--namespace",
        namespace,
        *harness.PINNED_IMAGE,
        "-f",
        str(values),
        "--show-only",
        "templates/admissionpolicy.yaml",
    ).stdout
    kubectl.run("create", "serviceaccount", account, "-n", namespace)
    kubectl.run(
        "create",
        "rolebinding",
        account,
        "-n",
        namespace,
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:{account}",
    )
    kubectl.run("apply", "-f", "-", input=rendered)
    try:
        yield f"system:serviceaccount:{namespace}:{account}"
    finally:
        kubectl.run("delete", "-f", "-", "--ignore-not-found", input=rendered, check=False)


def _placed(namespace: str) -> Manifest:
    """The Deployment the operator of that release builds: placed as its modelPods say, owned by
    no ModelDeployment (only the session's operator may write such objects)."""
    built = deployment.build(
        v1alpha1.parse(_model(namespace)),
        artifact=deployment.VerifiedArtifact(
            root_digest=f"sha256:{'3' * 64}",
            signature_digest=f"sha256:{'4' * 64}",
            agent_image=f"{harness.IMAGE_REPOSITORY}@{harness.IMAGE_DIGEST}",
        ),
        placement=PLACEMENT,
    )
    del built["metadata"]["ownerReferences"]
    return built


def _as(
    kubectl: harness.Kubectl, user: str, manifest: Manifest
) -> subprocess.CompletedProcess[str]:
    return kubectl.run(
        "create",
        "--dry-run=server",
        f"--as={user}",
        "-f",
        "-",
        "-o",
        "name",
        input=json.dumps(manifest),
        check=False,
    )


def _unplaced(manifest: Manifest) -> None:
    del _pod(manifest)["nodeSelector"], _pod(manifest)["tolerations"]


def _another_pool(manifest: Manifest) -> None:
    _pod(manifest)["nodeSelector"]["pool"] = "ops"


def _one_more_selector(manifest: Manifest) -> None:
    _pod(manifest)["nodeSelector"]["node-role.kubernetes.io/control-plane"] = ""


def _toleration_dropped(manifest: Manifest) -> None:
    _pod(manifest)["tolerations"].pop()


def _control_plane_tolerated(manifest: Manifest) -> None:
    _pod(manifest)["tolerations"].append(
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    )


def _toleration_widened(manifest: Manifest) -> None:
    # Exists with no key tolerates every taint.
    _pod(manifest)["tolerations"][1] = {"operator": "Exists"}


def _tolerated_longer(manifest: Manifest) -> None:
    _pod(manifest)["tolerations"][2]["tolerationSeconds"] = 86400


def _tolerated_forever(manifest: Manifest) -> None:
    del _pod(manifest)["tolerations"][2]["tolerationSeconds"]


def _reordered(manifest: Manifest) -> None:
    _pod(manifest)["tolerations"].reverse()


# The pod template fields, besides nodeSelector and tolerations, that decide where a pod runs or
# whom it displaces there; the operator sets none of them.


def _runtime_class(manifest: Manifest) -> None:
    # The RuntimeClass admission plugin adds the class's scheduling.tolerations and nodeSelector
    # to each pod when the ReplicaSet creates it, after this policy saw the Deployment.
    _pod(manifest)["runtimeClassName"] = "gpu-pool"


def _another_scheduler(manifest: Manifest) -> None:
    _pod(manifest)["schedulerName"] = "lenient-scheduler"


def _priority_class(manifest: Manifest) -> None:
    # Preempts whatever else runs on the pool, and is evicted last under node pressure.
    _pod(manifest)["priorityClassName"] = "system-node-critical"


def _topology_spread(manifest: Manifest) -> None:
    _pod(manifest)["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "x"}},
        }
    ]


def _scheduling_gate(manifest: Manifest) -> None:
    _pod(manifest)["schedulingGates"] = [{"name": "example.com/hold"}]


def _resource_claim(manifest: Manifest) -> None:
    # Another workload's allocated claim: the pod goes where that claim's devices are.
    _pod(manifest)["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "someone-elses"}]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_unplaced, id="no-placement"),
        pytest.param(_another_pool, id="another-pool"),
        pytest.param(_one_more_selector, id="one-more-selector"),
        pytest.param(_toleration_dropped, id="toleration-dropped"),
        pytest.param(_control_plane_tolerated, id="control-plane-tolerated"),
        pytest.param(_toleration_widened, id="every-taint-tolerated"),
        pytest.param(_tolerated_longer, id="toleration-seconds"),
        pytest.param(_tolerated_forever, id="toleration-seconds-dropped"),
        pytest.param(_reordered, id="reordered"),
        pytest.param(_node_name, id="node-name"),
        pytest.param(_affinity, id="affinity"),
        pytest.param(_runtime_class, id="runtime-class"),
        pytest.param(_another_scheduler, id="scheduler-name"),
        pytest.param(_priority_class, id="priority-class"),
        pytest.param(_topology_spread, id="topology-spread"),
        pytest.param(_scheduling_gate, id="scheduling-gate"),
        pytest.param(_resource_claim, id="resource-claim"),
    ],
)
def test_the_operator_places_model_pods_exactly_as_model_pods_says(
    kubectl: harness.Kubectl,
    namespace: str,
    placed_operator: str,
    change: typing.Callable[[Manifest], None],
) -> None:
    built = _placed(namespace)

    # What the operator builds with that placement is admitted (once the API server has loaded
    # the new policy: it refuses the unplaced Deployment then)...
    def loaded() -> None:
        unplaced = copy.deepcopy(built)
        _unplaced(unplaced)
        refused = _as(kubectl, placed_operator, unplaced)
        assert refused.returncode != 0, refused.stdout
        assert PLACED_ONLY in refused.stderr, refused.stderr

    harness.eventually(loaded, timeout=30)
    admitted = _as(kubectl, placed_operator, built)
    assert admitted.returncode == 0, admitted.stderr
    # ...and nothing else.
    manifest = copy.deepcopy(built)
    change(manifest)
    result = _as(kubectl, placed_operator, manifest)
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    assert PLACED_ONLY in result.stderr, result.stderr
