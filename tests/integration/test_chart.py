"""The Helm chart: lints, installs with real helm, its operator pod passes Pod Security "restricted"
and becomes Ready, and its RBAC is least privilege."""

from __future__ import annotations

import harness

CHART = str(harness.REPO_ROOT / "charts" / "modelguard")


def test_helm_lint_strict_passes(helm: harness.Helm) -> None:
    result = helm.run("lint", "--strict", CHART)
    assert "0 chart(s) failed" in result.stdout


def test_bad_values_are_refused_naming_the_key(helm: harness.Helm) -> None:
    result = helm.run("template", "x", CHART, "--set", "replicaCount=-1", check=False)
    assert result.returncode != 0
    assert "replicaCount" in result.stderr


def test_operator_pod_becomes_ready_in_a_restricted_namespace(
    kubectl: harness.Kubectl, chart_installed: str
) -> None:
    namespace = kubectl.json("get", "namespace", chart_installed)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Other tests may have upgraded the release meanwhile: wait for its rollout to finish.
    kubectl.run(
        "rollout", "status", "deployment/modelguard", "-n", chart_installed, "--timeout=90s"
    )
    deployment = kubectl.json("get", "deployment", "modelguard", "-n", chart_installed)
    assert deployment["status"].get("availableReplicas") == deployment["spec"]["replicas"]
    pods = kubectl.json(
        "get", "pods", "-n", chart_installed, "-l", "app.kubernetes.io/name=modelguard"
    )["items"]
    assert pods
    for pod in pods:
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        container = pod["spec"]["containers"][0]["securityContext"]
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_rendered_chart_raises_no_pod_security_warnings(
    kubectl: harness.Kubectl, helm: harness.Helm, namespace: str
) -> None:
    # A release name of its own, so the dry run touches nothing the installed chart owns.
    rendered = helm.run(
        "template",
        "psa-check",
        CHART,
        "--namespace",
        namespace,
        "--set",
        "crds.enabled=false",
        *harness.PINNED_IMAGE,
    ).stdout
    result = kubectl.apply(rendered, extra=("--server-side", "--dry-run=server"))
    assert "Warning" not in result.stderr, result.stderr


def test_cluster_role_is_least_privilege(kubectl: harness.Kubectl, chart_installed: str) -> None:
    del chart_installed
    rules = kubectl.json("get", "clusterrole", "modelguard")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }
    assert not any("*" in entry for entry in granted), "wildcards in the ClusterRole"
    assert not any(resource == "secrets" for _, resource, _ in granted)
    assert not any(verb in {"bind", "escalate", "impersonate"} for *_, verb in granted)
    assert not any(resource == "serviceaccounts/token" for _, resource, _ in granted)
    assert not any("webhookconfigurations" in resource for _, resource, _ in granted)


def test_the_operator_may_touch_only_its_own_lease(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str
) -> None:
    """The Lease that elects the replica that reconciles: create (which RBAC cannot narrow by
    name), and get and update of that one Lease in the release namespace; nothing else."""
    identity = f"system:serviceaccount:{chart_installed}:modelguard"

    def can(verb: str, resource: str, where: str) -> bool:
        answer = kubectl.run(
            "auth", "can-i", verb, resource, f"--as={identity}", "-n", where, check=False
        ).stdout.strip()
        return answer == "yes"

    assert can("create", "leases.coordination.k8s.io", chart_installed)
    assert can("get", "leases.coordination.k8s.io/modelguard", chart_installed)
    assert can("update", "leases.coordination.k8s.io/modelguard", chart_installed)
    for verb, resource, where in [
        # Another Lease of the namespace (a controller's, another release's).
        ("get", "leases.coordination.k8s.io/other", chart_installed),
        ("update", "leases.coordination.k8s.io/other", chart_installed),
        ("delete", "leases.coordination.k8s.io/modelguard", chart_installed),
        ("patch", "leases.coordination.k8s.io/modelguard", chart_installed),
        ("list", "leases.coordination.k8s.io", chart_installed),
        ("watch", "leases.coordination.k8s.io", chart_installed),
        # Nowhere else: a model's namespace, and the nodes' heartbeats.
        ("create", "leases.coordination.k8s.io", namespace),
        ("update", "leases.coordination.k8s.io/modelguard", namespace),
        ("update", "leases.coordination.k8s.io/modelguard", "kube-node-lease"),
        ("update", "leases.coordination.k8s.io/kube-controller-manager", "kube-system"),
    ]:
        assert not can(verb, resource, where), f"{verb} {resource} in {where}"
