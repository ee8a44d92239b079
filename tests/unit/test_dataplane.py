"""The data plane's set-up (hack/dataplane.py), without a cluster: the chart's values it installs
with, as `helm template` renders them against the chart's schema; the store's objects; the example
rendered for the cluster."""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

import dataplane
import localcluster
import localnode

Manifest = dict[str, typing.Any]
IMAGE = "ghcr.io/modelguard-dev/modelguard@sha256:" + "ab" * 32
CA = "-----BEGIN CERTIFICATE-----\nMIIBdGVzdA==\n-----END CERTIFICATE-----\n"


@pytest.fixture
def node(tmp_path: Path) -> localnode.RealNode:
    return localnode.RealNode(tmp_path, network=localnode.Network(5), api_port=41234)


def _rendered(values: Manifest, tmp_path: Path) -> dict[tuple[str, str], Manifest]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(localcluster.binary("helm")), "template", dataplane.RELEASE, str(dataplane.CHART),
         "--namespace", dataplane.OPERATOR_NAMESPACE, "--values", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc
    }


def test_the_operator_runs_its_imported_image_on_the_real_node_behind_a_narrow_policy(
    node: localnode.RealNode, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA)
    objects = _rendered(dataplane.operator_values(image=IMAGE, node=node, client_ca=ca), tmp_path)
    pod = objects[("Deployment", dataplane.RELEASE)]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "Never"  # imported, never pulled
    assert pod["nodeSelector"] == localnode.placement()["nodeSelector"]
    assert pod["tolerations"] == localnode.placement()["tolerations"]
    # Model pods go to the real node too, by the operator-wide placement the chart passes on.
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    assert json.loads(env["MODELGUARD_MODEL_POD_NODE_SELECTOR"]) == pod["nodeSelector"]
    assert json.loads(env["MODELGUARD_MODEL_POD_TOLERATIONS"]) == pod["tolerations"]
    assert f"--webhook-client-name={localcluster.WEBHOOK_CLIENT_NAME}" in container["args"]
    assert objects[("ConfigMap", f"{dataplane.RELEASE}-webhook-client-ca")]["data"]["ca.crt"] == CA

    egress = objects[("NetworkPolicy", dataplane.RELEASE)]["spec"]["egress"]
    # The API server as packets leave the pod: after kube-proxy, its own address and port.
    assert {
        "to": [{"ipBlock": {"cidr": f"{node.net.host_ip}/32"}}],
        "ports": [{"protocol": "TCP", "port": 41234}],
    } in egress
    assert dataplane.store_egress() in egress
    assert not any(
        peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for rule in egress for peer in rule["to"]
    )


def test_extra_values_are_merged_into_the_set_up_ones(
    node: localnode.RealNode, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA)
    values = dataplane.operator_values(
        image=IMAGE, node=node, client_ca=ca, extra={"networkPolicy": {"backupEgress": []}}
    )
    assert values["networkPolicy"]["apiServerPorts"] == [41234]
    assert values["networkPolicy"]["backupEgress"] == []


def test_the_store_runs_restricted_and_opens_its_s3_port_only() -> None:
    objects = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in dataplane.store_manifests(
            image="localhost/m@sha256:" + "0" * 64, host_ip="10.1.0.1"
        )
    }
    namespace = objects[("Namespace", dataplane.STORE_NAMESPACE)]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = objects[("Deployment", dataplane.STORE_NAME)]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all("valueFrom" in e for e in container["env"] if e["name"].startswith("MINIO_ROOT"))
    policy = objects[("NetworkPolicy", dataplane.STORE_NAME)]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in policy  # no egress at all
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": dataplane.STORE_PORT}]


def test_the_example_is_rendered_with_the_model_server_of_the_node_and_nothing_else() -> None:
    server = "localhost/modelguard/model-server@sha256:" + "1" * 64
    original = [d for d in yaml.safe_load_all(dataplane.EXAMPLE.read_text()) if d]
    rendered = dataplane.render_example(model_server=server)
    assert dataplane.example_model(rendered)["spec"]["serving"]["image"] == server
    dataplane.example_model(rendered)["spec"]["serving"]["image"] = dataplane.example_model(
        original
    )["spec"]["serving"]["image"]
    assert rendered == original
    # The example reaches the in-cluster store by selector, on its port only.
    (egress,) = dataplane.example_model(original)["spec"]["model"]["source"]["egress"]
    assert egress["ports"] == [{"port": dataplane.STORE_PORT}]
    (peer,) = egress["to"]
    assert peer["podSelector"] == {"matchLabels": dataplane.STORE_LABELS}
