"""The v1alpha1 API: secure defaults, refusals that name the field, camelCase on the wire."""

from __future__ import annotations

import copy
import decimal
import typing

import pytest

from modelguard.api import errors, quantity, uripaths, v1alpha1

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"registry.example/model-server@{DIGEST}"


def _body(**spec: typing.Any) -> dict[str, typing.Any]:
    """A minimal valid ModelDeployment body, with `spec` keys replaced or added."""
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "sentiment", "namespace": "team-nlp", "uid": "uid-1"},
        "spec": {
            "model": {
                "name": "sentiment-bert",
                "version": "1.4.0",
                "source": {"uri": "s3://models/sentiment-bert/1.4.0/"},
            },
            "serving": {"image": IMAGE},
            **spec,
        },
    }


def _messages(body: dict[str, typing.Any]) -> list[str]:
    with pytest.raises(errors.InvalidObjectError) as raised:
        v1alpha1.parse(body)
    assert str(raised.value) == "; ".join(raised.value.messages)
    return raised.value.messages


def _get(value: typing.Any, path: str) -> typing.Any:
    for key in path.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("trustPolicy", "default", id="trust-policy-default"),
        pytest.param("serving.port", 8080, id="port-8080"),
        pytest.param("serving.replicas", 1, id="one-replica"),
        pytest.param(
            "serving.resources",
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            id="bounded-resources",
        ),
        pytest.param("access", {"ingress": [], "egress": []}, id="nobody-in-dns-only-out"),
        pytest.param("audit.inputs", "Metadata", id="audit-metadata"),
        pytest.param("audit.maxConnections", 256, id="audit-connections-bounded"),
        pytest.param("rollout.onUnapproved", "Hold", id="hold-unapproved"),
        pytest.param("quarantine", False, id="not-quarantined"),
        pytest.param("model.signature", {}, id="signature-beside-source"),
    ],
)
def test_defaults_are_the_secure_ones(path: str, expected: object) -> None:
    md = v1alpha1.parse(_body())
    spec = md.spec.model_dump(mode="json", exclude_none=True)
    assert _get(spec, path) == expected
    assert md.spec.backup is None


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        pytest.param(1, True, id="one"),
        pytest.param(16384, True, id="most"),
        pytest.param(0, False, id="zero"),
        pytest.param(16385, False, id="too-many"),
        pytest.param("many", False, id="not-a-number"),
    ],
)
def test_audit_max_connections_is_bounded(value: object, accepted: bool) -> None:
    body = _body(audit={"maxConnections": value})
    if accepted:
        assert v1alpha1.parse(body).spec.audit.max_connections == value
    else:
        (message,) = _messages(body)
        assert message.startswith("spec.audit.maxConnections: "), message


def test_default_signature_is_beside_the_source() -> None:
    md = v1alpha1.parse(_body())
    assert md.spec.model.signature_uri() == "s3://models/sentiment-bert/1.4.0/model.sig"
    body = _body()
    body["spec"]["model"]["signature"] = {"uri": "https://sigs.example/sentiment.sig"}
    assert v1alpha1.parse(body).spec.model.signature_uri() == "https://sigs.example/sentiment.sig"


def test_defaults_are_not_shared_between_objects() -> None:
    first = v1alpha1.parse(_body())
    first.spec.serving.resources.requests["cpu"] = "4"
    first.spec.access.ingress.append(v1alpha1.NetworkPeer(pod_selector=v1alpha1.LabelSelector()))
    second = v1alpha1.parse(_body())
    assert second.spec.serving.resources.requests["cpu"] == "100m"
    assert second.spec.access.ingress == []


@pytest.mark.parametrize(
    ("image", "accepted"),
    [
        pytest.param(IMAGE, True, id="digest"),
        pytest.param(f"registry.example/model-server:1.2@{DIGEST}", True, id="tag-and-digest"),
        pytest.param("nginx:1.25", False, id="tag"),
        pytest.param("nginx", False, id="bare-name"),
        pytest.param("nginx@sha256:abc", False, id="short-digest"),
        pytest.param(f"nginx@{DIGEST.upper()}", False, id="uppercase-digest"),
        pytest.param(f"nginx @{DIGEST}", False, id="whitespace"),
    ],
)
def test_image_must_be_pinned_by_digest(image: str, accepted: bool) -> None:
    body = _body(serving={"image": image})
    if accepted:
        assert v1alpha1.parse(body).spec.serving.image == image
    else:
        assert _messages(body) == [
            f'spec.serving.image: must be pinned by digest (image@sha256:<64 hex>), got "{image}"'
        ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda spec: spec.update(replica=2),
            "spec.replica: unknown field (accepted: model, trustPolicy, serving, access, audit,"
            " backup, rollout, quarantine)",
            id="spec",
        ),
        pytest.param(
            lambda spec: spec["serving"].update(tag="latest"),
            "spec.serving.tag: unknown field (accepted: image, port, replicas, resources)",
            id="serving",
        ),
        pytest.param(
            lambda spec: spec["model"]["source"].update(region="eu"),
            "spec.model.source.region: unknown field (accepted: uri, credentialsSecret, egress)",
            id="model-source",
        ),
        pytest.param(
            lambda spec: spec.update(access={"ingress": [{"podSelector": {}, "ports": [80]}]}),
            "spec.access.ingress[0].ports: unknown field (accepted: namespaceSelector,"
            " podSelector, ipBlock)",
            id="ingress-peer",
        ),
        pytest.param(
            lambda spec: spec.update(trust_policy="strict"),
            "spec.trust_policy: unknown field (accepted: model, trustPolicy, serving, access,"
            " audit, backup, rollout, quarantine)",
            id="snake-case-is-not-the-wire-name",
        ),
    ],
)
def test_unknown_fields_are_refused(
    mutate: typing.Callable[[dict[str, typing.Any]], None], expected: str
) -> None:
    body = _body()
    mutate(body["spec"])
    assert _messages(body) == [expected]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"model": {"name": "Sentiment", "version": "1", "source": {"uri": "s3://m/"}}},
            "spec.model.name: must be a DNS-1123 label: at most 63 lowercase letters, digits and"
            " '-', got \"Sentiment\"",
            id="model-name-not-a-label",
        ),
        pytest.param(
            {"model": {"name": "m", "version": "1.0+build", "source": {"uri": "s3://m/"}}},
            "spec.model.version: must be 1 to 63 letters, digits, '-', '_' or '.', starting and"
            ' ending with a letter or digit (it is used as a label value), got "1.0+build"',
            id="version-not-a-label-value",
        ),
        pytest.param(
            {"model": {"name": "m", "version": "1", "source": {"uri": "ftp://m/"}}},
            "spec.model.source.uri: must be an s3://, https:// or pvc:// URI with "
            f'{uripaths.ACCEPTED}, got "ftp://m/"',
            id="source-scheme",
        ),
        pytest.param(
            {"model": {"name": "m", "version": "1"}},
            "spec.model.source: required",
            id="source-required",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "port": 70000}},
            "spec.serving.port: must be less than or equal to 65535, got 70000",
            id="port-range",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "replicas": -1}},
            "spec.serving.replicas: must be greater than or equal to 0, got -1",
            id="negative-replicas",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "resources": {"limits": {"memory": "lots"}}}},
            'spec.serving.resources.limits[memory]: must be a Kubernetes quantity such as "500m",'
            ' "2" or "1Gi", got "lots"',
            id="quantity",
        ),
        pytest.param(
            {"serving": {"image": IMAGE, "resources": {"requests": {"memory": "2Gi"}}}},
            "spec.serving.resources: requests[memory] 2Gi exceeds limits[memory] 1Gi; raise the"
            " limit or lower the request",
            id="request-above-default-limit",
        ),
        pytest.param(
            {"access": {"ingress": [{}]}},
            "spec.access.ingress[0]: a peer needs namespaceSelector, podSelector or ipBlock",
            id="empty-peer",
        ),
        pytest.param(
            {"access": {"ingress": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]}},
            "spec.access.ingress[0]: ipBlock cannot be combined with namespaceSelector or"
            " podSelector; use separate peers",
            id="peer-mixes-block-and-selector",
        ),
        pytest.param(
            {"access": {"ingress": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}},
            "spec.access.ingress[0].ipBlock.cidr: must be a CIDR such as 10.0.0.0/8 or"
            ' 2001:db8::/32, got "10.0.0.0/33"',
            id="bad-cidr",
        ),
        pytest.param(
            {
                "access": {
                    "egress": [
                        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}
                    ]
                }
            },
            "spec.access.egress[0].to[0].ipBlock: except entry 11.0.0.0/16 is not inside cidr"
            " 10.0.0.0/8",
            id="except-outside-cidr",
        ),
        pytest.param(
            {"access": {"egress": [{"to": []}]}},
            "spec.access.egress[0].to: must have at least 1 item(s), has 0",
            id="egress-to-anywhere-must-be-explicit",
        ),
        pytest.param(
            {
                "access": {
                    "ingress": [
                        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
                    ]
                }
            },
            "spec.access.ingress[0].podSelector.matchExpressions[0]: operator In needs at least"
            " one value",
            id="selector-in-without-values",
        ),
        pytest.param(
            {"audit": {"inputs": "Everything"}},
            "spec.audit.inputs: must be 'None', 'Metadata' or 'Payload', got \"Everything\"",
            id="audit-enum",
        ),
        pytest.param(
            {"rollout": {"onUnapproved": "Ignore"}},
            "spec.rollout.onUnapproved: must be 'Hold' or 'Reject', got \"Ignore\"",
            id="rollout-enum",
        ),
        pytest.param(
            {"backup": {"schedule": "@daily"}},
            "spec.backup.store: required",
            id="backup-needs-store",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, typing.Any], expected: str) -> None:
    assert _messages(_body(**spec)) == [expected]


def test_every_problem_gets_its_own_message() -> None:
    body = _body(serving={"image": "nginx:1.25", "port": 0}, quarantine="maybe")
    assert _messages(body) == [
        'spec.serving.image: must be pinned by digest (image@sha256:<64 hex>), got "nginx:1.25"',
        "spec.serving.port: must be greater than or equal to 1, got 0",
        'spec.quarantine: must be a valid boolean, unable to interpret input, got "maybe"',
    ]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("sentiment", True, id="plain"),
        pytest.param("a" * 63, True, id="63-chars"),
        pytest.param("a" * 64, False, id="64-chars"),
        pytest.param("1sentiment", False, id="starts-with-digit"),
        pytest.param("sentiment.v1", False, id="dotted"),
    ],
)
def test_object_name_must_fit_a_service_name(name: str, valid: bool) -> None:
    body = _body()
    body["metadata"]["name"] = name
    if valid:
        assert v1alpha1.parse(body).name == name
    else:
        assert _messages(body) == [f'metadata: name "{name}" {v1alpha1.OBJECT_NAME_RULE}']


def test_camel_case_round_trip() -> None:
    body = _body(
        trustPolicy="strict",
        access={
            "ingress": [
                {
                    "namespaceSelector": {"matchLabels": {"team": "frontend"}},
                    "podSelector": {
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]
                    },
                },
                {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
            ],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"team": "features"}}}],
                    "ports": [{"port": 6379, "protocol": "TCP"}],
                }
            ],
        },
        audit={
            "inputs": "Payload",
            "maxRequestBytes": "1Mi",
            "rateLimit": {"requestsPerSecond": 50, "burst": 100},
            "maxConnections": 256,
            "redact": {"jsonPaths": ["$.messages[*].content"], "headers": ["x-user"]},
        },
        backup={"store": "offline-vault", "schedule": "0 3 * * *"},
        rollout={"onUnapproved": "Reject"},
        quarantine=True,
    )
    body["spec"]["model"]["source"]["credentialsSecret"] = "models-readonly"
    body["spec"]["model"]["source"]["egress"] = [
        {
            "to": [{"ipBlock": {"cidr": "10.0.5.10/32"}}],
            "ports": [{"port": 9000, "protocol": "TCP"}],
        }
    ]
    body["spec"]["model"]["signature"] = {"uri": "s3://models/sentiment-bert/1.4.0/model.sig"}
    body["spec"]["model"]["maxBytes"] = "40Gi"
    body["spec"]["serving"].update(
        port=9000,
        replicas=3,
        resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    )
    body["status"] = {
        "observedGeneration": 4,
        "activeVersion": "1.3.0",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Held",
                "message": "1.4.0 is not approved",
                "lastTransitionTime": "2026-01-01T12:00:00Z",
                "observedGeneration": 4,
            }
        ],
        "verification": {"rootDigest": "sha256:abc", "signer": "ml-team", "files": 3},
        "approval": {"approvers": ["alice"], "expiresAt": "2026-02-01T00:00:00Z"},
        "lastBackup": {"location": "vault/sentiment/1.3.0", "completedAt": "2026-01-01T03:00:00Z"},
    }
    dumped = v1alpha1.parse(copy.deepcopy(body)).model_dump(mode="json", exclude_none=True)
    assert dumped == body


def test_fields_can_be_set_by_python_name() -> None:
    spec = v1alpha1.ModelDeploymentSpec(
        model=v1alpha1.ModelSpec(
            name="m", version="1", source=v1alpha1.ModelSource(uri="pvc://models/m/")
        ),
        serving=v1alpha1.ServingSpec(image=IMAGE),
        trust_policy="strict",
        rollout=v1alpha1.RolloutSpec(on_unapproved=v1alpha1.OnUnapproved.REJECT),
    )
    dumped = spec.model_dump(mode="json")
    assert dumped["trustPolicy"] == "strict"
    assert dumped["rollout"] == {"onUnapproved": "Reject"}


def test_status_reads_what_a_newer_operator_wrote() -> None:
    body = _body()
    body["status"] = {
        "observedGeneration": 2,
        "somethingNew": {"a": 1},
        "conditions": [
            {
                "type": v1alpha1.CONDITION_READY,
                "status": "True",
                "reason": "Available",
                "message": "",
                "lastTransitionTime": "2026-01-01T12:00:00Z",
                "severity": "Info",
            }
        ],
    }
    status = v1alpha1.parse(body).status
    assert status is not None
    assert status.observed_generation == 2
    assert status.conditions[0].status is v1alpha1.ConditionStatus.TRUE


def test_metadata_accessors() -> None:
    md = v1alpha1.parse(_body())
    assert (md.name, md.namespace, md.uid) == ("sentiment", "team-nlp", "uid-1")
    del md.metadata["uid"]
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        _ = md.uid


def test_condition_types() -> None:
    assert v1alpha1.CONDITION_TYPES == (
        "Verified",
        "Approved",
        "Isolated",
        "BackedUp",
        "Ready",
        "Reconciling",
        "Stalled",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("100m", decimal.Decimal("0.1"), id="milli"),
        pytest.param("1.5", decimal.Decimal("1.5"), id="plain-decimal"),
        pytest.param("1Gi", decimal.Decimal(1024**3), id="binary"),
        pytest.param("1G", decimal.Decimal(10**9), id="decimal-si"),
        pytest.param("2e3", decimal.Decimal(2000), id="exponent"),
        pytest.param(".5Ki", decimal.Decimal(512), id="leading-dot"),
    ],
)
def test_quantities(text: str, value: decimal.Decimal) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1Gb", "1 Gi", "Gi"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity.parse(text)
