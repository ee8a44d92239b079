"""Ways around the refusal of exec, attach, port-forward and proxy into a model's pods (decision
0025), in the webhook's lookup of the pod a CONNECT request names. Each test fails while the hole
is open.

The API server's pod proxy is addressed as `pods/[scheme:]name[:port]/proxy`, and the name it puts
in the admission request is that whole segment (the REST handler's name; the proxy splits scheme,
name and port only later, when it resolves the location). The webhook looks the pod up by the
request's name alone, so `m-7d4b9c-x2x9z:8080` is no model's pod and the request is allowed."""

from __future__ import annotations

import types
import typing

import kopf
import pytest

from modelguard.admission import decisions, webhooks

NAMESPACE = "team-a"
POD = "m-7d4b9c6f5-x2x9z"


def _connect(name: str, subresource: str) -> None:
    memo = types.SimpleNamespace(
        webhook=types.SimpleNamespace(
            identity=decisions.Identity(operator_username="system:serviceaccount:mg:modelguard")
        ),
        admission_caches=types.SimpleNamespace(filled=True),
    )
    kwargs: dict[str, typing.Any] = {
        "body": kopf.Body(
            {
                "apiVersion": "v1",
                "kind": "PodProxyOptions",
                "metadata": {"name": name, "namespace": NAMESPACE},
            }
        ),
        "operation": "CONNECT",
        "subresource": subresource,
        "userinfo": {
            "username": f"system:serviceaccount:{NAMESPACE}:editor",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        },
        webhooks.MODEL_PODS: {(NAMESPACE, POD): ["m"]},
    }
    webhooks.model_pod_connect(memo, kwargs)  # type: ignore[arg-type]


def test_the_plain_pod_name_is_refused() -> None:
    """The case the webhook covers today (a control for the tests below)."""
    with pytest.raises(kopf.AdmissionError):
        _connect(POD, "exec")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(f"{POD}:8080", id="name-port"),
        pytest.param(f"http:{POD}:8080", id="scheme-name-port"),
        pytest.param(f"https:{POD}:8443", id="https-name-port"),
        pytest.param(f"{POD}:", id="name-empty-port"),
    ],
)
def test_the_pod_proxy_addressed_with_a_port_is_refused(name: str) -> None:
    """Attack (a namespace editor: `edit` grants pods/proxy): `kubectl get --raw
    /api/v1/namespaces/team-a/pods/<model-pod>:8080/proxy/v1/predict`. The admission request
    names `<model-pod>:8080`, the webhook finds no model pod of that name and allows it, and the
    API server proxies straight to the model server's own port: past the audit proxy (no record
    of the inference), past the model's NetworkPolicies (which admit callers to the proxy's port
    only). Expected: refused like exec, as the pod the API server will reach is a model's."""
    with pytest.raises(kopf.AdmissionError):
        _connect(name, "proxy")
