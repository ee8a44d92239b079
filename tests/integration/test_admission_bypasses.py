"""Ways around the admission of decision 0025 that still work against the real API server, each
as a test that fails while the hole is open: the pod proxy addressed with a port reaches a
model's pod past the CONNECT webhook; an Event whose reporter starts with an invisible character
reads as the operator's."""

from __future__ import annotations

import typing
from pathlib import Path

import harness
import pytest
from test_admission import IDLE_NAMESPACE, _editor, webhook  # noqa: F401 - the fixture, used by name
from test_control_plane_bypasses import _model_where_the_webhook_watches
from test_modeldeployment import SELECTOR

import s3server

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]


def test_the_pod_proxy_addressed_with_a_port_is_refused_for_a_model_pod(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
    s3: s3server.S3Server,
    as_service_account: typing.Callable[[str], harness.Kubectl],
    webhook: typing.Any,  # noqa: F811 - the fixture imported above
) -> None:
    """Attack (a namespace editor; `edit` grants pods/proxy): `kubectl get --raw
    /api/v1/namespaces/<ns>/pods/<model-pod>:8080/proxy/...`. The API server names the CONNECT
    request `<model-pod>:8080` (the URL's segment; it splits off the port only when it resolves
    the location), the webhook finds no model pod by that name and allows it, and the API server
    connects to the model server's own port: past the audit proxy (an inference nobody records)
    and past the model's NetworkPolicies. The plain name (`pods/<model-pod>/proxy`) is refused,
    which shows the webhook is up and sees the pod. Expected: both refused by the webhook."""
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
        pod_name = pod["metadata"]["name"]
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

            def plain_refused() -> None:
                result = editor.run(
                    "get",
                    "--raw",
                    f"/api/v1/namespaces/{where}/pods/{pod_name}/proxy/",
                    check=False,
                    timeout=30,
                )
                assert "denied the request" in result.stderr, result.stderr.strip()

            harness.eventually(plain_refused, timeout=30)
            for target in (f"{pod_name}:8080", f"http:{pod_name}:8080"):
                result = editor.run(
                    "get",
                    "--raw",
                    f"/api/v1/namespaces/{where}/pods/{target}/proxy/v1/predict",
                    check=False,
                    timeout=30,
                )
                assert "denied the request" in result.stderr, (
                    f"pods/{target}/proxy was not refused by admission: "
                    f"{(result.stdout + result.stderr).strip()[:400]}"
                )
        finally:
            kubectl.run("delete", "rolebinding", binding, "-n", where, check=False)


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("\u200b", id="zero-width-space"),
        pytest.param("\ufeff", id="byte-order-mark"),
        pytest.param("\u2060", id="word-joiner"),
    ],
)
def test_an_event_whose_reporter_starts_with_an_invisible_character_is_refused(
    kubectl: harness.Kubectl,
    namespace: str,
    as_service_account: typing.Callable[[str], harness.Kubectl],
    prefix: str,
) -> None:
    """Attack (a namespace editor; `edit` may create Events): a core/v1 Event without eventTime
    (the API server then validates neither reportingComponent nor source.component) whose
    source.component is `<invisible>modelguard.dev/operator`. The policy trims with CEL's
    trim(), which removes Unicode white space only; a zero-width space, a byte-order mark or a
    word joiner is not white space, so `startsWith('modelguard')` is false and the Event is
    admitted. `kubectl describe` and `kubectl events` print the invisible character as nothing:
    "From: modelguard.dev/operator", a forged QuarantineLifted that reads as the operator's.
    Expected: refused, as any reporter that reads as ModelGuard is (strip format and other
    invisible characters, or admit only a visible ASCII reporter name, before comparing)."""
    editor = _editor(kubectl, namespace, as_service_account)
    reporter = prefix + "modelguard.dev/operator"
    forged = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "m.forged-invisible"},
        "involvedObject": {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "namespace": namespace,
            "name": "m",
        },
        "reason": "QuarantineLifted",
        "type": "Normal",
        "message": "quarantine lifted by the security team; version 1.4.0 serves again",
        "source": {"component": reporter},
        "reportingComponent": reporter,
        "firstTimestamp": "2026-01-01T00:00:00Z",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    }
    # The control: without the invisible prefix the same Event is refused by the policy.
    plain = {**forged, "source": {"component": "modelguard.dev/operator"}}
    plain["reportingComponent"] = "modelguard.dev/operator"
    plain["metadata"] = {"name": "m.forged-plain"}
    refused = editor.apply(plain, namespace=namespace, check=False)
    assert refused.returncode != 0, "control: the events policy is not in force"
    assert "ModelGuard" in refused.stderr, refused.stderr
    result = editor.apply(forged, namespace=namespace, check=False)
    assert result.returncode != 0, (
        f"an Event reported by {reporter!r} was admitted: {result.stdout.strip()}"
    )
