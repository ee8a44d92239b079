"""The builders: a ModelDeployment in, the manifests of its children out, secure in every case."""

from __future__ import annotations

import copy
import dataclasses
import typing

import pytest

from modelguard.agent import auditproxy
from modelguard.api import errors, inputaudit, placement, quantity, v1alpha1
from modelguard.builders import children, deployment, intent, labels, names, networkpolicy
from modelguard.sources import pvc

Manifest = dict[str, typing.Any]

IMAGE = "registry.example/model-server@sha256:" + "0123456789abcdef" * 4
UID = "6f1c1c52-3f0e-4d7e-9a57-0d1b8c2d4e11"
FRONTEND = {"namespaceSelector": {"matchLabels": {"team": "frontend"}}}
GATEWAY = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}},
    "podSelector": {"matchLabels": {"app": "gateway"}},
}
OFFICE = {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
FEATURE_STORE = {
    "to": [{"namespaceSelector": {"matchLabels": {"team": "features"}}}],
    "ports": [{"port": 6379}],
}
OBJECT_STORE = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}


ARTIFACT = deployment.VerifiedArtifact(
    root_digest="sha256:" + "ab" * 32,
    signature_digest="sha256:" + "ef" * 32,
    agent_image="registry.example/modelguard@sha256:" + "cd" * 32,
)


NO_SOURCE = {"policyTypes": ["Egress"], "egress": []}
S3 = {"to": [{"ipBlock": {"cidr": "10.0.5.10/32"}}], "ports": [{"port": 9000}]}
SOURCE_MODEL: dict[str, typing.Any] = {
    "name": "sentiment-bert",
    "version": "1.4.0",
    "source": {"uri": "s3://models/sentiment-bert/1.4.0/"},
}


def _md(version: str = "1.4.0", **spec: typing.Any) -> v1alpha1.ModelDeployment:
    return v1alpha1.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "sentiment", "namespace": "team-nlp", "uid": UID},
            "spec": {
                "model": {
                    "name": "sentiment-bert",
                    "version": version,
                    "source": {"uri": f"s3://models/sentiment-bert/{version}/"},
                },
                "serving": {"image": IMAGE},
                **spec,
            },
        }
    )


def _by_name(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def _deployment(md: v1alpha1.ModelDeployment) -> Manifest:
    return _by_name(children.build_children(md, artifact=ARTIFACT))["Deployment/sentiment"]


def _pod(md: v1alpha1.ModelDeployment) -> Manifest:
    pod: Manifest = _deployment(md)["spec"]["template"]
    return pod


# Specs that together reach every branch of the builders; the invariants below hold for each.
SPECS = [
    pytest.param({}, id="default"),
    pytest.param({"quarantine": True}, id="quarantine"),
    pytest.param({"access": {"ingress": [FRONTEND, GATEWAY, OFFICE]}}, id="ingress-callers"),
    pytest.param({"access": {"egress": [FEATURE_STORE, OBJECT_STORE]}}, id="egress-destinations"),
    pytest.param(
        {"access": {"ingress": [FRONTEND], "egress": [OBJECT_STORE]}, "quarantine": True},
        id="quarantine-with-access",
    ),
    pytest.param(
        {
            "serving": {
                "image": IMAGE,
                "port": 9000,
                "replicas": 3,
                "resources": {
                    "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                    "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
                },
            }
        },
        id="custom-resources",
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {},
            [
                "ServiceAccount/sentiment",
                "NetworkPolicy/sentiment-default-deny",
                "NetworkPolicy/sentiment-allow-ingress",
                "NetworkPolicy/sentiment-allow-egress",
                "NetworkPolicy/sentiment-allow-source",
                "Service/sentiment",
                "Deployment/sentiment",
            ],
            id="default",
        ),
        pytest.param(
            {"access": {"ingress": [FRONTEND]}},
            [
                "ServiceAccount/sentiment",
                "NetworkPolicy/sentiment-default-deny",
                "NetworkPolicy/sentiment-allow-ingress",
                "NetworkPolicy/sentiment-allow-egress",
                "NetworkPolicy/sentiment-allow-source",
                "Service/sentiment",
                "Deployment/sentiment",
            ],
            id="ingress-callers",
        ),
        pytest.param(
            {"access": {"ingress": [FRONTEND], "egress": [OBJECT_STORE]}, "quarantine": True},
            [
                "ServiceAccount/sentiment",
                "NetworkPolicy/sentiment-default-deny",
                "NetworkPolicy/sentiment-allow-ingress",
                "NetworkPolicy/sentiment-allow-egress",
                "NetworkPolicy/sentiment-allow-source",
                "Service/sentiment",
                "Deployment/sentiment",
            ],
            id="quarantine-keeps-the-same-children",
        ),
    ],
)
def test_children_in_apply_order(spec: dict[str, typing.Any], expected: list[str]) -> None:
    built = children.build_children(_md(**spec), artifact=ARTIFACT)
    assert [f"{m['kind']}/{m['metadata']['name']}" for m in built] == expected


def test_child_names_cover_every_child() -> None:
    everything = _md(access={"ingress": [FRONTEND]})
    built = {m["metadata"]["name"] for m in children.build_children(everything, artifact=ARTIFACT)}
    assert built == set(vars(names.child_names("sentiment")).values())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {"policyTypes": ["Ingress"], "ingress": []},
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": [DNS_RULE]},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="default-deny-and-dns-only",
        ),
        pytest.param(
            {"access": {"ingress": [FRONTEND, GATEWAY, OFFICE]}},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [FRONTEND, GATEWAY, OFFICE],
                            # The audit proxy's port: the model server's own is not reachable.
                            "ports": [{"protocol": "TCP", "port": 8480}],
                        }
                    ],
                },
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": [DNS_RULE]},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="ingress-callers-to-the-audit-proxy-port-only",
        ),
        pytest.param(
            {"access": {"ingress": [FRONTEND]}, "audit": {"inputs": "None"}},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [FRONTEND], "ports": [{"protocol": "TCP", "port": 8080}]}],
                },
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": [DNS_RULE]},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="no-input-audit-callers-to-the-serving-port-only",
        ),
        pytest.param(
            {
                "access": {"ingress": [FRONTEND]},
                "serving": {"image": IMAGE, "port": 9000},
                "audit": {"inputs": "None"},
            },
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": [FRONTEND], "ports": [{"protocol": "TCP", "port": 9000}]}],
                },
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": [DNS_RULE]},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="ingress-follows-serving-port",
        ),
        pytest.param(
            {"access": {"egress": [FEATURE_STORE, OBJECT_STORE]}},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {"policyTypes": ["Ingress"], "ingress": []},
                "sentiment-allow-egress": {
                    "policyTypes": ["Egress"],
                    "egress": [
                        DNS_RULE,
                        {
                            "to": FEATURE_STORE["to"],
                            "ports": [{"protocol": "TCP", "port": 6379}],
                        },
                        # No ports in the spec: every port to that destination, as written.
                        OBJECT_STORE,
                    ],
                },
                "sentiment-allow-source": NO_SOURCE,
            },
            id="egress-destinations",
        ),
        pytest.param(
            {"access": {"ingress": [FRONTEND], "egress": [OBJECT_STORE]}, "quarantine": True},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {"policyTypes": ["Ingress"], "ingress": []},
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": []},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="quarantine-denies-everything",
        ),
        pytest.param(
            {"model": {**SOURCE_MODEL, "source": {**SOURCE_MODEL["source"], "egress": [S3]}}},
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {"policyTypes": ["Ingress"], "ingress": []},
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": [DNS_RULE]},
                "sentiment-allow-source": {
                    "policyTypes": ["Egress"],
                    "egress": [{"to": S3["to"], "ports": [{"protocol": "TCP", "port": 9000}]}],
                },
            },
            id="source-endpoint-in-a-policy-of-its-own",
        ),
        pytest.param(
            {
                "model": {**SOURCE_MODEL, "source": {**SOURCE_MODEL["source"], "egress": [S3]}},
                "quarantine": True,
            },
            {
                "sentiment-default-deny": {"policyTypes": ["Ingress", "Egress"]},
                "sentiment-allow-ingress": {"policyTypes": ["Ingress"], "ingress": []},
                "sentiment-allow-egress": {"policyTypes": ["Egress"], "egress": []},
                "sentiment-allow-source": NO_SOURCE,
            },
            id="quarantine-cuts-the-source-too",
        ),
    ],
)
def test_network_policies(spec: dict[str, typing.Any], expected: dict[str, Manifest]) -> None:
    policies = networkpolicy.build(_md(**spec))
    selector = {"matchLabels": {"modelguard.dev/model-deployment": "sentiment"}}
    assert {p["metadata"]["name"]: p["spec"] for p in policies} == {
        name: {"podSelector": selector, **body} for name, body in expected.items()
    }
    assert all(p["apiVersion"] == "networking.k8s.io/v1" for p in policies)


@pytest.mark.parametrize(
    ("spec", "replicas", "resources", "port"),
    [
        pytest.param(
            {},
            1,
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            8080,
            id="default",
        ),
        pytest.param(
            {"quarantine": True, "serving": {"image": IMAGE, "replicas": 4}},
            0,
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            8080,
            id="quarantine-scales-to-zero",
        ),
        pytest.param(
            {
                "serving": {
                    "image": IMAGE,
                    "port": 9000,
                    "replicas": 3,
                    "resources": {
                        "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                        "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
                    },
                }
            },
            3,
            {
                "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
            },
            9000,
            id="custom-resources",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "resources": {"limits": {}}}},
            1,
            {"requests": {"cpu": "100m", "memory": "256Mi"}},
            8080,
            id="limits-removed-explicitly",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "replicas": 0}},
            0,
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            8080,
            id="zero-replicas",
        ),
    ],
)
def test_deployment(
    spec: dict[str, typing.Any], replicas: int, resources: Manifest, port: int
) -> None:
    md = _md(**spec)
    deployment = _deployment(md)
    container, proxy = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == replicas
    assert container["image"] == IMAGE
    assert container["resources"] == resources
    # Behind the audit proxy, whose port is the one named http.
    assert container["ports"] == [{"name": "model", "containerPort": port, "protocol": "TCP"}]
    assert proxy["name"] == "audit-proxy"
    assert proxy["ports"][0] == {"name": "http", "containerPort": 8480, "protocol": "TCP"}
    service = _by_name(children.build_children(md, artifact=ARTIFACT))["Service/sentiment"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": port, "targetPort": "http"}
    ]


def test_rollout_never_drops_the_serving_version() -> None:
    spec = _deployment(_md())["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["revisionHistoryLimit"] > 0


def test_model_is_mounted_read_only_and_tmp_is_the_only_writable_path() -> None:
    pod = _pod(_md())["spec"]
    container, proxy = pod["containers"]
    assert "volumeMounts" not in proxy
    assert container["volumeMounts"] == [
        {"name": "model", "mountPath": "/models", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"model", "tmp"}
    assert volumes["model"]["emptyDir"]["sizeLimit"]
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "model"}


def test_no_token_no_service_links() -> None:
    built = _by_name(children.build_children(_md(), artifact=ARTIFACT))
    assert built["ServiceAccount/sentiment"]["automountServiceAccountToken"] is False
    pod = _pod(_md())["spec"]
    assert pod["serviceAccountName"] == "sentiment"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("spec", SPECS)
def test_every_child_is_owned_by_the_model_deployment(spec: dict[str, typing.Any]) -> None:
    for manifest in children.build_children(_md(**spec), artifact=ARTIFACT):
        assert manifest["metadata"]["namespace"] == "team-nlp"
        assert manifest["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "modelguard.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "sentiment",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


@pytest.mark.parametrize("spec", SPECS)
def test_every_child_and_pod_is_labelled(spec: dict[str, typing.Any]) -> None:
    expected = {
        "app.kubernetes.io/name": "sentiment-bert",
        "app.kubernetes.io/instance": "sentiment",
        "app.kubernetes.io/version": "1.4.0",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "modelguard",
        "modelguard.dev/model-deployment": "sentiment",
    }
    md = _md(**spec)
    for manifest in children.build_children(md, artifact=ARTIFACT):
        assert manifest["metadata"]["labels"] == expected
    assert _pod(md)["metadata"]["labels"] == expected


def _selectors(md: v1alpha1.ModelDeployment) -> dict[str, typing.Any]:
    built = _by_name(children.build_children(md, artifact=ARTIFACT))
    found = {
        "deployment": built["Deployment/sentiment"]["spec"]["selector"],
        "service": built["Service/sentiment"]["spec"]["selector"],
    }
    for key, manifest in built.items():
        if manifest["kind"] == "NetworkPolicy":
            found[key] = manifest["spec"]["podSelector"]
    return found


@pytest.mark.parametrize("spec", SPECS)
def test_selectors_are_stable_across_versions(spec: dict[str, typing.Any]) -> None:
    before, after = _md("1.4.0", **spec), _md("2.0.0-rc.1", **spec)
    assert _selectors(before) == _selectors(after)
    only_the_stable_label = {"modelguard.dev/model-deployment": "sentiment"}
    assert labels.selector("sentiment") == only_the_stable_label
    for key, selector in _selectors(before).items():
        found = selector if key == "service" else selector["matchLabels"]
        assert found == only_the_stable_label, key
    # The version changes the pod template, so a new version is a rolling update.
    assert _pod(before) != _pod(after)
    assert _pod(after)["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0-rc.1"


_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip

# Container checks of Pod Security Standards "restricted" (latest), each with what it reports;
# `context` is the container's securityContext, `pod` the pod's.
_CONTAINER_CHECKS: list[tuple[str, typing.Callable[[Manifest, Manifest, Manifest], bool]]] = [
    ("privileged", lambda c, context, pod: bool(context.get("privileged"))),
    (
        "allowPrivilegeEscalation",
        lambda c, context, pod: context.get("allowPrivilegeEscalation") is not False,
    ),
    (
        "capabilities not dropped",
        lambda c, context, pod: context.get("capabilities", {}).get("drop") != ["ALL"],
    ),
    (
        "capabilities added",
        lambda c, context, pod: bool(
            set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}
        ),
    ),
    (
        "runAsNonRoot",
        lambda c, context, pod: not context.get("runAsNonRoot", pod.get("runAsNonRoot")),
    ),
    ("runAsUser 0", lambda c, context, pod: context.get("runAsUser") == 0),
    (
        "seccompProfile",
        lambda c, context, pod: (
            (context.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
            not in ("RuntimeDefault", "Localhost")
        ),
    ),
    ("hostPort", lambda c, context, pod: any(p.get("hostPort") for p in c.get("ports", []))),
    # Beyond "restricted": the image can neither write itself nor be swapped by moving a tag.
    (
        "writable root filesystem",
        lambda c, context, pod: context.get("readOnlyRootFilesystem") is not True,
    ),
    ("image not pinned", lambda c, context, pod: "@sha256:" not in c["image"]),
]


def _restricted_violations(pod: Manifest) -> list[str]:
    """What Pod Security "restricted" (and our stricter rules) would object to in `pod`."""
    pod_context = pod.get("securityContext", {})
    problems = [f"pod {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    problems += [
        f"volume {volume['name']}"
        for volume in pod.get("volumes", [])
        if not set(volume) - {"name"} <= _RESTRICTED_VOLUMES
    ]
    if pod_context.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    containers = [
        *pod.get("initContainers", []),
        *pod["containers"],
        *pod.get("ephemeralContainers", []),
    ]
    for container in containers:
        context = container.get("securityContext", {})
        problems += [
            f"{container['name']} {problem}"
            for problem, violates in _CONTAINER_CHECKS
            if violates(container, context, pod_context)
        ]
    return problems


@pytest.mark.parametrize("spec", SPECS)
def test_restricted_security_context_on_every_container(spec: dict[str, typing.Any]) -> None:
    pod = _pod(_md(**spec))["spec"]
    assert _restricted_violations(pod) == []
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_restricted_check_catches_violations() -> None:
    """The checker above is only worth something if it fails on what restricted refuses."""
    pod = copy.deepcopy(_pod(_md())["spec"])
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert _restricted_violations(pod) == ["volume host", "model-server allowPrivilegeEscalation"]


def _scribble(value: typing.Any) -> None:
    """Empties every dict and list inside `value`, as a careless caller might."""
    items = value.values() if isinstance(value, dict) else value
    for item in list(items):
        if isinstance(item, dict | list):
            _scribble(item)
    value.clear()


def test_builds_share_no_mutable_state() -> None:
    """Callers (server-side apply, intent hashing) may edit what they get."""
    md = _md(access={"ingress": [FRONTEND], "egress": [OBJECT_STORE]})
    first = children.build_children(md, artifact=ARTIFACT)
    expected = copy.deepcopy(first)
    _scribble(first)
    assert children.build_children(md, artifact=ARTIFACT) == expected
    assert (
        v1alpha1.parse(
            {"metadata": {}, "spec": md.spec.model_dump(mode="json", exclude_none=True)}
        ).spec
        == md.spec
    )


@pytest.mark.parametrize(
    ("limits", "skipped"),
    [
        pytest.param({"memory": "1Gi"}, True, id="no-cpu-limit-says-why"),
        pytest.param({"memory": "1Gi", "cpu": "2"}, False, id="cpu-limit-needs-no-excuse"),
    ],
)
def test_cpu_limit_skip_annotation_only_when_no_cpu_limit(
    limits: dict[str, str], skipped: bool
) -> None:
    md = _md(serving={"image": IMAGE, "resources": {"requests": {"cpu": "1"}, "limits": limits}})
    annotations = deployment.build(md, artifact=ARTIFACT)["metadata"].get("annotations", {})
    assert (deployment.CHECKOV_SKIP in annotations) is skipped


def test_agent_verifies_before_the_server_starts_and_pins_the_root_digest() -> None:
    pod = _pod(_md())
    (agent,) = pod["spec"]["initContainers"]
    assert agent["name"] == deployment.AGENT_CONTAINER
    assert agent["image"] == ARTIFACT.agent_image
    assert agent["command"] == ["modelguard"]
    assert agent["args"] == [
        "agent",
        "fetch-verify",
        "--source",
        "s3://models/sentiment-bert/1.4.0/",
        "--signature",
        "s3://models/sentiment-bert/1.4.0/model.sig",
        "--root-digest",
        ARTIFACT.root_digest,
        "--signature-digest",
        ARTIFACT.signature_digest,
        "--dest",
        deployment.MODEL_MOUNT_PATH,
        "--max-bytes",
        str(16 << 30),
    ]
    assert pod["metadata"]["annotations"][deployment.ROOT_DIGEST_ANNOTATION] == ARTIFACT.root_digest
    model_mounts = {
        c["name"]: next(m for m in c["volumeMounts"] if m["name"] == names.MODEL_VOLUME)
        for c in [agent, *pod["spec"]["containers"]]
        if c["name"] != deployment.AUDIT_PROXY_CONTAINER
    }
    assert model_mounts[deployment.AGENT_CONTAINER].get("readOnly") is not True
    assert model_mounts[names.CONTAINER]["readOnly"] is True


@pytest.mark.parametrize(
    ("source", "allow_formats", "extra_args", "agent_only_volumes", "audit_formats"),
    [
        pytest.param(
            {"uri": "s3://models/m/1/", "credentialsSecret": "models-ro"},
            (),
            ["--credentials-dir", deployment.CREDENTIALS_MOUNT_PATH],
            {deployment.CREDENTIALS_VOLUME},
            False,
            id="credentials-mounted-into-the-agent-only",
        ),
        pytest.param(
            {"uri": "pvc://model-store/m/1/"},
            (),
            [],
            {deployment.CLAIM_VOLUME},
            False,
            id="claim-mounted-read-only-into-the-agent-only",
        ),
        pytest.param(
            {"uri": "https://models.example/m/1/"},
            ("Pickle",),
            ["--allow-format", "Pickle"],
            set(),
            False,
            id="policy-allows-pickle",
        ),
        pytest.param(
            {"uri": "https://models.example/m/1/"},
            ("HDF5", "Keras"),
            ["--allow-format", "HDF5", "--allow-format", "Keras"],
            set(),
            False,
            id="policy-allows-keras-and-hdf5",
        ),
        pytest.param(
            {"uri": "https://models.example/m/1/"},
            (),
            ["--audit-formats"],
            set(),
            True,
            id="policy-in-audit-mode-admits-and-reports-code-capable-files",
        ),
        pytest.param(
            {"uri": "https://models.example/m/1/"},
            ("Pickle",),
            ["--allow-format", "Pickle", "--audit-formats"],
            set(),
            True,
            id="audit-still-reports-the-families-not-allowed",
        ),
    ],
)
def test_agent_source_wiring(
    source: dict[str, str],
    allow_formats: tuple[str, ...],
    extra_args: list[str],
    agent_only_volumes: set[str],
    audit_formats: bool,
) -> None:
    md = _md(model={"name": "m", "version": "1", "source": source})
    artifact = deployment.VerifiedArtifact(
        root_digest=ARTIFACT.root_digest,
        signature_digest=ARTIFACT.signature_digest,
        agent_image=ARTIFACT.agent_image,
        allow_formats=allow_formats,
        audit_formats=audit_formats,
    )
    pod = deployment.build(md, artifact=artifact)["spec"]["template"]["spec"]
    (agent,) = pod["initContainers"]
    assert agent["args"][14:] == extra_args
    agent_volumes = {m["name"] for m in agent["volumeMounts"]}
    # The audit proxy mounts nothing at all.
    server_volumes = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    assert agent_only_volumes <= agent_volumes
    assert not agent_only_volumes & server_volumes
    for mount in agent["volumeMounts"]:
        if mount["name"] in agent_only_volumes:
            assert mount["readOnly"] is True
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert all(v["persistentVolumeClaim"]["readOnly"] is True for v in claims)


def test_claims_mount_root_is_where_the_agent_looks() -> None:
    assert str(pvc.DEFAULT_MOUNT_ROOT) == deployment.CLAIMS_MOUNT_ROOT


@pytest.mark.parametrize(
    ("allow_formats", "audit_formats"),
    [((), False), (("Pickle",), False), ((), True), (("HDF5", "Keras", "Pickle"), True)],
    ids=["none-allowed", "pickle-allowed", "audited", "all-allowed-and-audited"],
)
def test_the_served_artifact_reads_back_from_the_deployment(
    allow_formats: tuple[str, ...], audit_formats: bool
) -> None:
    artifact = deployment.VerifiedArtifact(
        root_digest=ARTIFACT.root_digest,
        signature_digest=ARTIFACT.signature_digest,
        agent_image=ARTIFACT.agent_image,
        allow_formats=allow_formats,
        audit_formats=audit_formats,
    )
    assert deployment.artifact_of(deployment.build(_md(), artifact=artifact)) == artifact


GIB = 1 << 30


@pytest.mark.parametrize(
    ("max_bytes", "signed_bytes", "bound"),
    [
        pytest.param(None, None, 16 * GIB, id="files-serialization-default-16Gi"),
        pytest.param("40Gi", None, 40 * GIB, id="files-serialization-spec-maxBytes"),
        pytest.param("1", None, 1, id="one-byte"),
        pytest.param(None, 123_456_789, 123_456_789, id="shards-signed-total"),
        pytest.param("1Gi", 5 * GIB, 5 * GIB, id="shards-signed-total-not-maxBytes"),
    ],
)
def test_the_model_volume_is_bounded_by_the_signed_sizes_or_spec_max_bytes(
    max_bytes: str | None, signed_bytes: int | None, bound: int
) -> None:
    model = dict(SOURCE_MODEL) | ({} if max_bytes is None else {"maxBytes": max_bytes})
    md = _md(model=model)
    assert deployment.model_byte_bound(md, signed_bytes=signed_bytes) == bound
    artifact = dataclasses.replace(ARTIFACT, max_bytes=bound)
    pod = deployment.build(md, artifact=artifact)["spec"]["template"]["spec"]
    (agent,) = pod["initContainers"]
    # The agent stops past the bound; the kubelet evicts a pod whose volume grows past the limit.
    assert agent["args"][agent["args"].index("--max-bytes") + 1] == str(bound)
    (model_volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    limit = int(model_volume["emptyDir"]["sizeLimit"])
    # Headroom for file system blocks and directories, never unbounded nor tight.
    assert bound + (64 << 20) <= limit <= bound + max(64 << 20, bound // 32)
    assert deployment.artifact_of(deployment.build(md, artifact=artifact)) == artifact


@pytest.mark.parametrize("max_bytes", ["0", "500m", "-1Gi", "lots", "2Pi", "1e30"])
def test_max_bytes_must_be_a_byte_to_a_pebibyte(max_bytes: str) -> None:
    with pytest.raises(errors.InvalidObjectError) as refused:
        _md(model=dict(SOURCE_MODEL) | {"maxBytes": max_bytes})
    assert "spec.model.maxBytes" in "; ".join(refused.value.messages)


def test_an_artifact_of_an_earlier_version_reads_back_with_its_flags() -> None:
    # Pods of earlier versions carry --allow-pickle and --audit-pickle.
    built = deployment.build(_md(), artifact=ARTIFACT)
    agent = built["spec"]["template"]["spec"]["initContainers"][0]
    agent["args"] += ["--allow-pickle", "--audit-pickle"]
    found = deployment.artifact_of(built)
    assert found is not None
    assert (found.allow_formats, found.audit_formats) == (("Pickle",), True)


def test_a_deployment_not_built_by_us_has_no_artifact() -> None:
    assert deployment.artifact_of({"spec": {"template": {"spec": {"containers": []}}}}) is None


# --------------------------------------------------------------------------------------------
# The audit proxy (spec.audit)
# --------------------------------------------------------------------------------------------


def _proxy(
    md: v1alpha1.ModelDeployment, artifact: deployment.VerifiedArtifact = ARTIFACT
) -> Manifest:
    containers = deployment.build(md, artifact=artifact)["spec"]["template"]["spec"]["containers"]
    (proxy,) = [c for c in containers if c["name"] == deployment.AUDIT_PROXY_CONTAINER]
    return proxy


def _after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag]


def test_audit_proxy_is_in_front_of_the_model_server_by_default() -> None:
    md = _md()
    proxy = _proxy(md)
    args = proxy["args"]
    assert proxy["image"] == ARTIFACT.agent_image
    assert args[:2] == ["agent", "audit-proxy"]
    assert _after(args, "--upstream-port") == ["8080"]
    assert _after(args, "--port") == ["8480"]
    assert _after(args, "--inputs") == ["Metadata"]
    assert _after(args, "--max-request-bytes") == [str(16 << 20)]
    assert _after(args, "--rate") == ["1000"]
    assert _after(args, "--burst") == ["2000"]
    assert _after(args, "--max-connections") == ["256"]
    assert _after(args, "--log-name") == ["team-nlp/{pod}/inputs"]
    # The chart's admission policy admits no environment from fields into the operator's pods.
    assert "env" not in proxy
    assert "--identity-header" not in args
    # Callers reach the proxy: the Service targets the port named http, which is the proxy's.
    service = _by_name(children.build_children(md, artifact=ARTIFACT))["Service/sentiment"]
    assert service["spec"]["ports"][0]["targetPort"] == names.PORT_NAME
    assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {
        names.PORT_NAME: 8480,
        names.METRICS_PORT_NAME: 9480,
    }
    # It needs no volume, no token and nothing of the model.
    assert "volumeMounts" not in proxy
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("connections", [1, 64, v1alpha1.DEFAULT_MAX_CONNECTIONS, 16384])
def test_the_audit_proxys_memory_limit_holds_the_connections_it_may_serve(
    connections: int,
) -> None:
    # Callers holding connections open (a slow model server, an answer nobody reads) fill each
    # connection's buffers: a fixed limit below the bound gets the proxy killed, and every
    # request in flight with it, long before the bound refuses a connection.
    proxy = _proxy(_md(audit={"maxConnections": connections}))
    limit = quantity.parse(proxy["resources"]["limits"]["memory"])
    assert limit >= (
        inputaudit.PROXY_BASE_MEMORY_MIB + connections * inputaudit.PROXY_CONNECTION_MEMORY_MIB
    ) * (1 << 20)
    assert proxy["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}


def test_the_proxy_run_by_hand_has_the_models_default_connection_bound() -> None:
    assert v1alpha1.DEFAULT_MAX_CONNECTIONS == auditproxy.DEFAULT_MAX_CONNECTIONS


def test_no_audit_proxy_when_inputs_are_none() -> None:
    md = _md(audit={"inputs": "None"})
    (server,) = _pod(md)["spec"]["containers"]
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert server["readinessProbe"]["tcpSocket"] == {"port": "http"}


@pytest.mark.parametrize(
    ("serving_port", "proxy_port", "metrics_port"),
    [
        pytest.param(8080, 8480, 9480, id="usual-port"),
        pytest.param(8480, 8481, 9480, id="server-on-the-proxy-port-moves-the-proxy"),
        pytest.param(9480, 8480, 9481, id="server-on-the-metrics-port-moves-the-metrics"),
    ],
)
def test_audit_proxy_ports_never_collide_with_the_server(
    serving_port: int, proxy_port: int, metrics_port: int
) -> None:
    md = _md(serving={"image": IMAGE, "port": serving_port})
    proxy = _proxy(md)
    assert _after(proxy["args"], "--port") == [str(proxy_port)]
    assert _after(proxy["args"], "--metrics-port") == [str(metrics_port)]
    assert _after(proxy["args"], "--upstream-port") == [str(serving_port)]
    (allow,) = networkpolicy.allow_ingress(
        _md(serving={"image": IMAGE, "port": serving_port}, access={"ingress": [FRONTEND]})
    )["spec"]["ingress"]
    assert allow["ports"] == [{"protocol": "TCP", "port": proxy_port}]


def test_audit_proxy_joins_the_policy_and_model_redaction_rules() -> None:
    """Deny wins: the model's rules add to the policy's, and none of the policy's is lost."""
    md = _md(
        audit={
            "inputs": "Payload",
            "maxRequestBytes": "1Mi",
            "rateLimit": {"requestsPerSecond": 20, "burst": 5},
            "maxConnections": 64,
            "redact": {"jsonPaths": ["$.user.email", "$.inputs[*]"], "headers": ["X-User"]},
        }
    )
    artifact = dataclasses.replace(
        ARTIFACT,
        redact_paths=("$.inputs[*]", "$.messages[*].content"),
        redact_headers=("x-tenant",),
        caller_identity_header="x-forwarded-client-cert",
    )
    args = _proxy(md, artifact)["args"]
    assert _after(args, "--inputs") == ["Payload"]
    assert _after(args, "--max-request-bytes") == [str(1 << 20)]
    assert _after(args, "--rate") == ["20"]
    assert _after(args, "--burst") == ["5"]
    assert _after(args, "--max-connections") == ["64"]
    assert _after(args, "--redact-path") == ["$.inputs[*]", "$.messages[*].content", "$.user.email"]
    assert _after(args, "--redact-header") == ["x-tenant", "x-user"]
    assert _after(args, "--identity-header") == ["x-forwarded-client-cert"]
    # A quarantine rebuilds the pod from the live Deployment: the rules survive the round trip.
    live = deployment.build(md, artifact=artifact)
    read_back = deployment.artifact_of(live)
    assert read_back is not None
    assert deployment.build(md, artifact=read_back) == live


# --- Placement: the platform's, the same for every model pod ----------------------------------

GPU_POOL = placement.Placement.model_validate(
    {
        "nodeSelector": {"pool": "gpu", "modelguard.dev/node": "real"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "modelguard.dev/node", "value": "real", "effect": "NoSchedule"},
        ],
    }
)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param(placement.NONE, {}, id="none-adds-nothing"),
        pytest.param(
            placement.Placement.model_validate({"nodeSelector": {"pool": "gpu"}}),
            {"nodeSelector": {"pool": "gpu"}},
            id="node-selector-only",
        ),
        pytest.param(
            placement.Placement.model_validate(
                {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}
            ),
            {"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
            id="tolerations-only",
        ),
        pytest.param(
            GPU_POOL,
            {
                "nodeSelector": {"pool": "gpu", "modelguard.dev/node": "real"},
                # In the order given, unset fields left out, the default operator written.
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {
                        "key": "modelguard.dev/node",
                        "operator": "Equal",
                        "value": "real",
                        "effect": "NoSchedule",
                    },
                ],
            },
            id="both",
        ),
    ],
)
@pytest.mark.parametrize("spec", SPECS)
def test_every_model_pod_is_placed_as_the_platform_says(
    where: placement.Placement, expected: Manifest, spec: dict[str, typing.Any]
) -> None:
    md = _md(**spec)
    built = _by_name(children.build_children(md, artifact=ARTIFACT, placement=where))
    pod = built["Deployment/sentiment"]["spec"]["template"]["spec"]
    assert {
        k: pod[k] for k in ("nodeSelector", "tolerations", "affinity", "nodeName") if k in pod
    } == (expected)
    # Placement changes nothing else: the pod is the one built without it, plus those fields.
    unplaced = _deployment(md)["spec"]["template"]["spec"]
    assert {k: v for k, v in pod.items() if k not in expected} == unplaced


def test_no_placement_builds_the_deployment_it_built_before_placement_existed() -> None:
    # The intent hash of every existing Deployment stays the same, so an upgrade that sets no
    # modelPods rewrites no model's Deployment.
    md = _md()
    assert deployment.build(md, artifact=ARTIFACT, placement=placement.NONE) == deployment.build(
        md, artifact=ARTIFACT
    )


def test_a_placement_change_is_a_new_intent() -> None:
    md = _md()
    before = intent.with_intent(deployment.build(md, artifact=ARTIFACT))
    after = intent.with_intent(deployment.build(md, artifact=ARTIFACT, placement=GPU_POOL))
    assert intent.recorded(before) != intent.recorded(after)


def test_the_other_children_do_not_carry_placement() -> None:
    built = children.build_children(_md(), artifact=ARTIFACT, placement=GPU_POOL)
    assert "nodeSelector" not in str([m for m in built if m["kind"] != "Deployment"])
