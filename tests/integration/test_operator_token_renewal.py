"""The operator's credentials are renewed the way the kubelet renews a pod's projected token: a
token file rewritten with a new token, which both of its clients (kopf's watches and patches, and
ModelGuard's own) read again when the API server refuses the one they hold. The session's
operator runs so: its kubeconfig's user has `tokenFile:`, each token bound to a Secret."""

from __future__ import annotations

import subprocess
import typing
from pathlib import Path

import harness

import localoperator
from conftest import OPERATOR_LOG

DIGEST = "sha256:" + "4f" * 32


def _model(source: str, *, replicas: int) -> dict[str, typing.Any]:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": {
            "model": {
                "name": "sentiment-bert",
                "version": "1.4.0",
                "source": {"uri": source, "credentialsSecret": "models-readonly"},
            },
            "serving": {"image": f"registry.example/model-server@{DIGEST}", "replicas": replicas},
        },
    }


def test_a_revoked_token_is_replaced_by_the_renewed_one_and_the_operator_keeps_reconciling(
    kubectl: harness.Kubectl,
    namespace: str,
    chart_installed: str,
    operator: subprocess.Popen[bytes],
    operator_token: localoperator.RenewedToken,
    publish_model: typing.Callable[..., str],
    source_credentials: str,
    trust_policy: str,
    tmp_path: Path,
) -> None:
    del source_credentials, trust_policy
    source = publish_model("1.4.0")
    kubectl.apply(_model(source, replicas=1), namespace=namespace)
    kubectl.run(
        "wait", "--for=condition=Ready", "modeldeployment/m", "-n", namespace, "--timeout=90s"
    )

    # The token the operator holds is revoked: the object it is bound to is deleted, as a pod's
    # token dies with the pod. The API server refuses it from now on.
    held = tmp_path / "held-token"
    held.write_text(operator_token.path.read_text())
    as_held = harness.token_kubeconfig(
        kubectl,
        namespace=chart_installed,
        service_account="modelguard",
        path=tmp_path / "held.kubeconfig",
        token_file=held,
    )
    assert "modelguard" in as_held.run("auth", "whoami").stdout
    kubectl.run("delete", "secret", operator_token.binding, "-n", chart_installed)
    harness.eventually(lambda: _refused(as_held.run("auth", "whoami", check=False)), timeout=30)

    # The renewer writes a new token into the file; nobody tells the operator.
    renewals = operator_token.renewals
    operator_token.renew()
    assert operator_token.renewals == renewals + 1
    assert operator_token.path.read_text() != held.read_text()
    log_before = OPERATOR_LOG.stat().st_size

    # A change made after the revocation is acted upon: kopf's patch and ModelGuard's reads and
    # writes are each refused once with the revoked token, read the file again and go on.
    kubectl.apply(_model(source, replicas=3), namespace=namespace)

    def scaled(replicas: int) -> typing.Callable[[], None]:
        def check() -> None:
            live = kubectl.json("get", "deployment", "m", "-n", namespace)
            assert live["spec"]["replicas"] == replicas
            body = kubectl.json("get", "modeldeployment", "m", "-n", namespace)
            assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
            assert harness.condition(body, "Ready").get("status") == "True"

        return check

    harness.eventually(scaled(3), timeout=90)
    # And the next one: kopf's watches still deliver (with the old token they would have ended).
    kubectl.apply(_model(source, replicas=2), namespace=namespace)
    harness.eventually(scaled(2), timeout=90)
    assert operator.poll() is None, f"the operator exited; see {OPERATOR_LOG}"
    with OPERATOR_LOG.open("rb") as log:
        log.seek(log_before)
        since = log.read().decode(errors="replace")
    # kopf logged in again (and did not run out of credentials) rather than kept the old token.
    assert "Re-authentication has been initiated" in since, since[-4000:]
    assert "Ran out of valid credentials" not in since
    assert "LoginError" not in since


def _refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result.stdout
    assert "Unauthorized" in result.stderr or "401" in result.stderr, result.stderr
