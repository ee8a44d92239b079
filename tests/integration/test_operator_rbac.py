"""The operator's permissions are exactly the checked-in list: any grant added to the chart must be
added to tests/integration/expected/operator-permissions.txt too, where a reviewer sees it. The
rest of the suite runs the operator under this very identity, so the list is also sufficient."""

from __future__ import annotations

import harness

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
