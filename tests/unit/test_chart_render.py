"""The chart as `helm template` renders it, without a cluster: what a values change must produce,
and what it must refuse, with the message a platform team reads."""

from __future__ import annotations

import base64
import re
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

import localcluster
from modelguard import cli
from modelguard.admission import readiness
from modelguard.api import placement
from modelguard.audit import keys
from modelguard.reconcile import verification

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "modelguard"
DIGEST = "sha256:" + "ab" * 32

Manifest = dict[str, typing.Any]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return localcluster.binary("helm")
    except localcluster.ClusterError as error:
        pytest.fail(f"{error} (make tools builds it)")


def template(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "t", str(CHART), "--namespace", "mg", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def render(helm: Path, *args: str) -> list[Manifest]:
    result = template(helm, "--set", f"image.digest={DIGEST}", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kinds(docs: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def test_without_a_digest_the_chart_refuses_to_render_naming_the_key(helm: Path) -> None:
    result = template(helm)
    assert result.returncode != 0
    assert "image.digest is required" in result.stderr
    assert '"sha256:" followed by 64 lowercase hex digits' in result.stderr


@pytest.mark.parametrize("digest", ["latest", "sha256:" + "AB" * 32, "sha256:abc"])
def test_a_malformed_digest_is_refused_with_or_without_the_schema(helm: Path, digest: str) -> None:
    by_schema = template(helm, "--set", f"image.digest={digest}")
    assert by_schema.returncode != 0
    assert "/image/digest" in by_schema.stderr
    by_template = template(helm, "--set", f"image.digest={digest}", "--skip-schema-validation")
    assert by_template.returncode != 0
    assert f'image.digest "{digest}" is malformed' in by_template.stderr


def test_the_operator_and_its_agent_image_are_pinned_by_the_digest(helm: Path) -> None:
    deployment = kinds(render(helm))["Deployment", "t-modelguard"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image = f"ghcr.io/modelguard-dev/modelguard@{DIGEST}"
    assert container["image"] == image
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELGUARD_AGENT_IMAGE"] == image


def test_webhooks_are_registered_only_while_an_operator_pod_can_answer(helm: Path) -> None:
    running = kinds(render(helm))
    assert ("ValidatingWebhookConfiguration", "t-modelguard") in running
    assert ("Service", "t-modelguard-webhook") in running
    assert ("NetworkPolicy", "t-modelguard-webhook") in running

    stopped = kinds(render(helm, "--set", "replicaCount=0"))
    assert stopped["Deployment", "t-modelguard"]["spec"]["replicas"] == 0
    assert not [key for key in stopped if key[0] == "ValidatingWebhookConfiguration"]
    assert ("Service", "t-modelguard-webhook") not in stopped
    assert ("NetworkPolicy", "t-modelguard-webhook") not in stopped
    # The Deployment still mounts the certificate; a later scale-up reuses it.
    assert ("Secret", "t-modelguard-webhook-tls") in stopped


def _egress(docs: list[Manifest]) -> list[Manifest]:
    return typing.cast(
        list[Manifest], kinds(docs)["NetworkPolicy", "t-modelguard"]["spec"]["egress"]
    )


def test_the_operator_reaches_model_stores_only_when_listed(helm: Path, tmp_path: Path) -> None:
    default = _egress(render(helm))
    assert len(default) == 2  # DNS and the API server

    minio = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}},
                "podSelector": {"matchLabels": {"app": "minio"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"sourceEgress": [minio]}}))
    assert _egress(render(helm, "-f", str(values))) == [*default, minio]


@pytest.mark.parametrize("missing", ["to", "ports"])
def test_a_source_egress_rule_must_name_destinations_and_ports(
    helm: Path, tmp_path: Path, missing: str
) -> None:
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443}]}
    del rule[missing]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"sourceEgress": [rule]}}))
    result = template(helm, "--set", f"image.digest={DIGEST}", "-f", str(values))
    assert result.returncode != 0
    assert f"missing property '{missing}'" in result.stderr


def _granted(rules: list[Manifest]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _documented(scopes: set[str]) -> set[tuple[str, str, str]]:
    text = (REPO_ROOT / "docs" / "chart.md").read_text()
    section = text.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.MULTILINE)
    return {
        ("" if group.strip() == '""' else group.strip(), resource.strip(), verb.strip())
        for scope, groups, resources, verbs in rows
        if scope.strip() in scopes
        for group in groups.split(",")
        for resource in resources.split(",")
        for verb in verbs.split(",")
    }


def test_docs_rbac_table_is_what_the_chart_grants(helm: Path) -> None:
    objects = kinds(render(helm))
    assert _granted(objects["ClusterRole", "t-modelguard"]["rules"]) == _documented(
        {"cluster", "watched"}
    )
    assert _granted(objects["ClusterRole", "t-modelguard-source-credentials"]["rules"]) == (
        _documented({"bound per namespace"})
    )
    per_namespace = kinds(render(helm, "--set", "watchNamespaces={team-a}"))
    assert _granted(per_namespace["ClusterRole", "t-modelguard"]["rules"]) == _documented(
        {"cluster"}
    )
    role = per_namespace["Role", "t-modelguard"]
    assert role["metadata"]["namespace"] == "team-a"
    assert _granted(role["rules"]) == _documented({"watched"})


def test_the_operator_names_the_credentials_role_of_its_own_release(helm: Path) -> None:
    # A namespace is told which ClusterRole to bind to share its storage credentials: the one
    # this release made, whatever the release is called.
    docs = render(helm)
    roles = [
        doc["metadata"]["name"]
        for doc in docs
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("-source-credentials")
    ]
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in operator["env"]}
    assert [env["MODELGUARD_SOURCE_CREDENTIALS_ROLE"]] == roles


def _operator_container(docs: list[Manifest]) -> Manifest:
    deployment = kinds(docs)["Deployment", "t-modelguard"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return typing.cast(Manifest, container)


@pytest.mark.parametrize(
    ("args", "username"),
    [
        pytest.param((), "system:serviceaccount:mg:t-modelguard", id="chart-service-account"),
        pytest.param(
            ("--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops-sa"),
            "system:serviceaccount:mg:ops-sa",
            id="existing-service-account",
        ),
    ],
)
def test_the_operators_writes_are_bounded_by_admission_policies_bound_to_its_identity(
    helm: Path, args: tuple[str, ...], username: str
) -> None:
    docs = render(helm, *args)
    found = kinds(docs)
    env = {item["name"]: item.get("value") for item in _operator_container(docs)["env"]}
    for resource in ("deployments", "serviceaccounts"):
        name = f"t-modelguard-operator-{resource}"
        policy = found["ValidatingAdmissionPolicy", name]["spec"]
        assert policy["failurePolicy"] == "Fail"
        assert [rule["resources"] for rule in policy["matchConstraints"]["resourceRules"]] == [
            [resource]
        ]
        assert policy["matchConditions"] == [
            {
                "name": "the-operator-itself",
                "expression": f"request.userInfo.username == '{username}'",
            }
        ]
        binding = found["ValidatingAdmissionPolicyBinding", name]["spec"]
        assert binding == {"policyName": name, "validationActions": ["Deny"]}
    deployments = found["ValidatingAdmissionPolicy", "t-modelguard-operator-deployments"]
    expressions = " ".join(v["expression"] for v in deployments["spec"]["validations"])
    # The one image that may read the storage credentials is the agent the operator runs.
    assert f"c.image == '{env['MODELGUARD_AGENT_IMAGE']}'" in expressions


def test_the_admission_policies_can_be_left_out(helm: Path) -> None:
    found = kinds(render(helm, "--set", "admissionPolicy.enabled=false"))
    assert sorted(key for key in found if key[0].startswith("ValidatingAdmissionPolicy")) == [
        (kind, f"t-modelguard-{name}")
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        for name in ("operator-events", "operator-status", "owned-objects", "owned-objects-by-uid")
    ]
    each = {
        "statusPolicy": ["operator-status"],
        "eventsPolicy": ["operator-events"],
        "ownedObjectsPolicy": ["owned-objects", "owned-objects-by-uid"],
    }
    every = len([key for key in kinds(render(helm)) if key[0] == "ValidatingAdmissionPolicy"])
    for value, names in each.items():
        off = kinds(render(helm, "--set", f"{value}.enabled=false"))
        for name in names:
            assert ("ValidatingAdmissionPolicy", f"t-modelguard-{name}") not in off
            assert ("ValidatingAdmissionPolicyBinding", f"t-modelguard-{name}") not in off
        policies = [key for key in off if key[0] == "ValidatingAdmissionPolicy"]
        assert len(policies) == every - len(names)


def test_the_status_of_modelguards_objects_is_written_by_the_operator_alone(helm: Path) -> None:
    found = kinds(render(helm, "--set", "webhook.breakGlassGroup=sre:incident"))
    name = "t-modelguard-operator-status"
    policy = found["ValidatingAdmissionPolicy", name]["spec"]
    assert policy["failurePolicy"] == "Fail"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"]) == (["modelguard.dev"], ["*/status"])
    # The operator alone: break-glass is no exception (a status by hand would be taken for the
    # operator's own record).
    assert policy["matchConditions"] == [
        {
            "name": "not-the-operator",
            "expression": "request.userInfo.username != 'system:serviceaccount:mg:t-modelguard'",
        }
    ]
    assert [v["expression"] for v in policy["validations"]] == ["false"]
    binding = found["ValidatingAdmissionPolicyBinding", name]["spec"]
    assert binding == {"policyName": name, "validationActions": ["Deny"]}


def test_events_as_modelguard_are_posted_by_the_operator_alone(helm: Path) -> None:
    found = kinds(render(helm))
    name = "t-modelguard-operator-events"
    policy = found["ValidatingAdmissionPolicy", name]["spec"]
    assert policy["failurePolicy"] == "Fail"
    assert {
        (group, resource)
        for rule in policy["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    } == {("", "events"), ("events.k8s.io", "events")}
    (excluded,) = policy["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    assert excluded == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "kube-node-lease"],
    }
    conditions = [c["expression"] for c in policy["matchConditions"]]
    assert conditions == ["request.userInfo.username != 'system:serviceaccount:mg:t-modelguard'"]
    variables = " ".join(v["expression"] for v in policy["variables"])
    for field in ("reportingComponent", "source.component", "reportingController"):
        assert f"object.{field}" in variables
        assert f"oldObject.{field}" in variables
    assert "deprecatedSource.component" in variables


def test_objects_owned_by_a_model_or_its_children_by_uid_are_the_operators(helm: Path) -> None:
    found = kinds(render(helm, "--set", "webhook.breakGlassGroup=sre:incident"))
    name = "t-modelguard-owned-objects-by-uid"
    policy = found["ValidatingAdmissionPolicy", name]["spec"]
    # A paramKind the API server cannot resolve (the CRD not served yet) fails every request the
    # policy matches: with Fail, every namespaced write in the cluster. The length of the
    # references is bounded first, so that no evaluation error can be provoked to get through.
    assert policy["failurePolicy"] == "Ignore"
    assert "size(object.metadata.ownerReferences) <= 64" in policy["validations"][0]["expression"]
    # Each ModelDeployment of the object's namespace is a parameter: its uid and its children's.
    assert policy["paramKind"] == {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
    }
    same = found["ValidatingAdmissionPolicy", "t-modelguard-owned-objects"]["spec"]
    assert policy["matchConstraints"] == same["matchConstraints"]
    conditions = " ".join(c["expression"] for c in policy["matchConditions"])
    assert "request.userInfo.username != 'system:serviceaccount:mg:t-modelguard'" in conditions
    assert "'sre:incident' in request.userInfo.groups" in conditions
    assert "startsWith('system:serviceaccount:kube-system:')" in conditions
    expressions = " ".join(v["expression"] for v in policy["variables"])
    assert "params.metadata.uid" in expressions
    assert "params.status.children" in expressions
    binding = found["ValidatingAdmissionPolicyBinding", name]["spec"]
    assert binding == {
        "policyName": name,
        "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        "validationActions": ["Deny"],
    }


def _webhook(docs: list[Manifest], name: str) -> Manifest | None:
    config = kinds(docs)["ValidatingWebhookConfiguration", "t-modelguard"]
    found = [w for w in config["webhooks"] if w["name"] == name]
    return found[0] if found else None


def test_exec_into_model_pods_is_sent_to_the_webhook_failing_closed_by_default(
    helm: Path,
) -> None:
    webhook = _webhook(render(helm), "model-pod-connect.modelguard.dev")
    assert webhook is not None
    assert webhook["failurePolicy"] == "Fail"
    (rule,) = webhook["rules"]
    assert rule["operations"] == ["CONNECT"]
    assert rule["resources"] == ["pods/exec", "pods/attach", "pods/portforward", "pods/proxy"]
    assert webhook["clientConfig"]["service"]["path"] == "/model-pod-connect"
    assert "objectSelector" not in webhook  # a CONNECT request has no labels to select by
    (excluded,) = webhook["namespaceSelector"]["matchExpressions"]
    assert set(excluded["values"]) == {"kube-system", "kube-node-lease", "mg"}
    ignoring = render(helm, "--set", "webhook.modelPodConnect.failurePolicy=Ignore")
    assert (_webhook(ignoring, "model-pod-connect.modelguard.dev") or {})["failurePolicy"] == (
        "Ignore"
    )
    off = render(helm, "--set", "webhook.modelPodConnect.enabled=false")
    assert _webhook(off, "model-pod-connect.modelguard.dev") is None
    assert _webhook(off, "networkpolicies.modelguard.dev") is not None


def test_objects_owned_by_a_model_deployment_are_written_by_the_operator_alone(
    helm: Path,
) -> None:
    found = kinds(render(helm, "--set", "webhook.breakGlassGroup=sre:incident"))
    name = "t-modelguard-owned-objects"
    policy = found["ValidatingAdmissionPolicy", name]["spec"]
    assert policy["failurePolicy"] == "Fail"
    # Every namespaced resource of every group and its status, on create and update, but the
    # most frequent writes, which no ownerReference makes a model's.
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule == {
        "apiGroups": ["*"],
        "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["*", "*/status"],
        "scope": "Namespaced",
    }
    excluded = {
        (group, resource)
        for rule in policy["matchConstraints"]["excludeResourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert excluded == {
        ("", "pods/status"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("coordination.k8s.io", "leases"),
    }
    conditions = " ".join(c["expression"] for c in policy["matchConditions"])
    assert "request.userInfo.username != 'system:serviceaccount:mg:t-modelguard'" in conditions
    assert "'sre:incident' in request.userInfo.groups" in conditions
    binding = found["ValidatingAdmissionPolicyBinding", name]["spec"]
    assert binding == {"policyName": name, "validationActions": ["Deny"]}
    off = kinds(render(helm, "--set", "ownedObjectsPolicy.enabled=false"))
    assert ("ValidatingAdmissionPolicy", name) not in off
    assert ("ValidatingAdmissionPolicy", f"{name}-by-uid") not in off
    # The operator's own bounds are another setting.
    assert ("ValidatingAdmissionPolicy", "t-modelguard-operator-deployments") in off


def test_the_audit_key_is_an_ed25519_key_generated_kept_and_mounted(
    helm: Path, tmp_path: Path
) -> None:
    docs = render(helm)
    secret = kinds(docs)["Secret", "t-modelguard-audit-key"]
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert set(secret["data"]) == {"key.pem"}
    pem = tmp_path / "key.pem"
    pem.write_bytes(base64.b64decode(secret["data"]["key.pem"]))
    # The operator loads what Helm's genPrivateKey "ed25519" wrote.
    signer = keys.load_signer(pem, name="mg/t-modelguard")
    assert render(helm) != docs  # a fresh key per render without a cluster to look up
    deployment = kinds(docs)["Deployment", "t-modelguard"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["audit-key"]["secret"]["secretName"] == "t-modelguard-audit-key"
    assert volumes["audit-key"]["secret"]["items"] == [{"key": "key.pem", "path": "key.pem"}]
    container = _operator_container(docs)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELGUARD_AUDIT_KEY_FILE"] == mounts["audit-key"]["mountPath"] + "/key.pem"
    assert mounts["audit-key"]["readOnly"] is True
    # The log is named by default after the release; its key name is that name.
    assert env["MODELGUARD_AUDIT_LOG_NAME"] == "mg/t-modelguard"
    assert signer.verifier.vkey.startswith("mg/t-modelguard+")
    args = cli.build_parser().parse_args(container["args"])
    assert (args.audit_checkpoint_records, args.audit_checkpoint_seconds) == (1000, 300)
    assert args.audit_checkpoints_prefix == "t-modelguard-audit"


def test_the_audit_log_name_and_cadence_are_settings(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "audit.logName=prod-eu1.example.com/modelguard",
        "--set",
        "audit.checkpoints.records=50",
        "--set",
        "audit.checkpoints.seconds=60",
    )
    container = _operator_container(docs)
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELGUARD_AUDIT_LOG_NAME"] == "prod-eu1.example.com/modelguard"
    args = cli.build_parser().parse_args(container["args"])
    assert (args.audit_checkpoint_records, args.audit_checkpoint_seconds) == (50, 60)
    refused = template(helm, "--set", f"image.digest={DIGEST}", "--set", "audit.logName=a b")
    assert refused.returncode != 0
    assert "/audit/logName" in refused.stderr


def test_a_long_release_name_still_gives_a_checkpoint_prefix_a_label_can_hold(helm: Path) -> None:
    docs = render(helm, "--set", f"fullnameOverride={'m' * 63}")
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    prefix = cli.build_parser().parse_args(container["args"]).audit_checkpoints_prefix
    assert prefix == "m" * 57 + "-audit"
    role = kinds(docs)["Role", f"{'m' * 63}-audit"]
    assert role["rules"][1]["resourceNames"] == [f"{prefix}-head"]


def test_an_existing_audit_key_secret_replaces_the_generated_one(helm: Path) -> None:
    docs = render(helm, "--set", "audit.keySecret=my-audit-key")
    assert ("Secret", "t-modelguard-audit-key") not in kinds(docs)
    deployment = kinds(docs)["Deployment", "t-modelguard"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["audit-key"]["secret"]["secretName"] == "my-audit-key"


def test_checkpoints_are_written_once_into_the_release_namespace(helm: Path) -> None:
    found = kinds(render(helm, "--set", "watchNamespaces={team-a}"))
    role = found["Role", "t-modelguard-audit"]
    assert role["metadata"]["namespace"] == "mg"
    # Create, never update or delete: a checkpoint, once written, is not the operator's to
    # change. Only the head may be read and moved on.
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["t-modelguard-audit-head"],
            "verbs": ["get", "update"],
        },
    ]
    binding = found["RoleBinding", "t-modelguard-audit"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-modelguard", "namespace": "mg"}
    ]
    policy = found["ValidatingAdmissionPolicy", "t-modelguard-operator-configmaps"]
    assert policy["spec"]["matchConditions"] == [
        {
            "name": "the-operator-itself",
            "expression": "request.userInfo.username == 'system:serviceaccount:mg:t-modelguard'",
        }
    ]
    documented = (REPO_ROOT / "docs" / "chart.md").read_text()
    assert '| release namespace | "" | configmaps | create |' in documented
    assert (
        '| release namespace | "" | configmaps (`<fullname>-audit-head` only) | get, update |'
        in documented
    )


def test_the_webhook_answers_only_the_api_servers_client_certificate_when_given_its_ca(
    helm: Path,
) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    docs = render(
        helm,
        "--set-string",
        f"webhook.clientAuth.caBundle={pem}",
        "--set",
        "webhook.clientAuth.names={kube-apiserver}",
    )
    found = kinds(docs)
    assert found["ConfigMap", "t-modelguard-webhook-client-ca"]["data"]["ca.crt"].strip() == pem
    container = _operator_container(docs)
    assert "--webhook-client-ca=/etc/modelguard/webhook-client/ca.crt" in container["args"]
    assert "--webhook-client-name=kube-apiserver" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["webhook-client-ca"] == "/etc/modelguard/webhook-client"
    default = _operator_container(render(helm))
    assert not [arg for arg in default["args"] if arg.startswith("--webhook-client")]


def _operator_args(docs: list[Manifest]) -> list[str]:
    (operator,) = kinds(docs)["Deployment", "t-modelguard"]["spec"]["template"]["spec"][
        "containers"
    ]
    return typing.cast(list[str], operator["args"])


def test_verifications_at_once_are_bounded_as_the_values_say(helm: Path) -> None:
    # Each may take some 170Mi whatever the bundle holds: the bound is what keeps a burst of
    # hostile bundles inside the memory limit.
    default = cli.build_parser().parse_args(_operator_args(render(helm)))
    assert default.verify_concurrency == verification.DEFAULT_CONCURRENCY
    raised = render(helm, "--set", "verification.concurrency=4")
    assert cli.build_parser().parse_args(_operator_args(raised)).verify_concurrency == 4
    refused = template(
        helm, "--set", f"image.digest={DIGEST}", "--set", "verification.concurrency=0"
    )
    assert refused.returncode != 0
    assert "/verification/concurrency" in refused.stderr


def test_the_backup_key_is_generated_kept_mounted_and_loads(helm: Path, tmp_path: Path) -> None:
    from modelguard.backup import manifest  # noqa: PLC0415

    docs = render(helm)
    secret = kinds(docs)["Secret", "t-modelguard-backup-key"]
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    pem = base64.b64decode(secret["data"]["key.pem"])
    # What the operator loads at start: an EC key the manifests are signed with.
    assert manifest.parse_key(pem).private.curve.name == "secp256r1"
    container = _operator_container(docs)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELGUARD_BACKUP_KEY_FILE"] == mounts["backup-key"]["mountPath"] + "/key.pem"
    assert mounts["backup-key"]["readOnly"] is True
    mine = kinds(render(helm, "--set", "backup.signingKey.existingSecret=mine"))
    assert ("Secret", "t-modelguard-backup-key") not in mine
    volumes = mine["Deployment", "t-modelguard"]["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v for v in volumes}["backup-key"]["secret"]["secretName"] == "mine"


def test_the_operator_reads_only_the_store_credentials_listed(helm: Path) -> None:
    assert not [
        doc for doc in render(helm) if doc["kind"] == "Role" and "backup" in doc["metadata"]["name"]
    ]
    docs = kinds(render(helm, "--set", "backup.credentialsSecrets={vault-writer}"))
    role = docs["Role", "t-modelguard-backup-credentials"]
    assert role["metadata"]["namespace"] == "mg"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["vault-writer"],
            "verbs": ["get"],
        }
    ]
    binding = docs["RoleBinding", "t-modelguard-backup-credentials"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-modelguard", "namespace": "mg"}
    ]


def test_volume_stores_and_the_drill_scratch_are_mounted(helm: Path) -> None:
    docs = render(
        helm,
        "--set",
        "backup.volumes={vault}",
        "--set",
        "backup.drill.scratchSizeLimit=40Gi",
        "--set",
        "backup.concurrency=2",
    )
    deployment = kinds(docs)["Deployment", "t-modelguard"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["backup-volume-vault"]["persistentVolumeClaim"] == {"claimName": "vault"}
    assert volumes["drill-scratch"]["emptyDir"] == {"sizeLimit": "40Gi"}
    container = _operator_container(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = cli.build_parser().parse_args(container["args"])
    assert args.backup_volume_root / "vault" == Path(mounts["backup-volume-vault"])
    assert args.drill_scratch_dir == Path(mounts["drill-scratch"])
    assert args.backup_concurrency == 2


def test_the_rendered_install_manifest_carries_no_private_key() -> None:
    text = (REPO_ROOT / "manifests" / "install.yaml").read_text()
    for marker in ("PRIVATE KEY", base64.b64encode(b"-----BEGIN EC PRIVATE").decode()[:20]):
        assert marker not in text
    assert "secretName: modelguard-backup-key" in text


# --- modelPods: where every model pod runs ----------------------------------------------------

PLACEMENT_VALUES = """
modelPods:
  nodeSelector: {modelguard.dev/node: real, pool: gpu}
  tolerations:
    - {key: modelguard.dev/node, operator: Equal, value: real, effect: NoSchedule}
    - {key: nvidia.com/gpu, operator: Exists}
    - {key: draining, effect: NoExecute, tolerationSeconds: 300}
"""


def _placement_rule(docs: list[Manifest]) -> str:
    policy = kinds(docs)["ValidatingAdmissionPolicy", "t-modelguard-operator-deployments"]
    (rule,) = [v for v in policy["spec"]["validations"] if "placed only as" in v.get("message", "")]
    assert rule["reason"] == "Forbidden"
    return typing.cast(str, rule["expression"])


# Every pod field besides nodeSelector and tolerations that decides where a pod runs, or whom it
# displaces there: a runtime class adds its own scheduling tolerations to each pod after the
# policy saw the Deployment, another scheduler need not honour taints, a priority class preempts
# the pool's other pods, a resource claim pins the pod to its devices' node.
NOTHING_ELSE_PLACES = (
    " && !has(variables.pod.nodeName) && !has(variables.pod.affinity)"
    " && !has(variables.pod.runtimeClassName)"
    " && (!has(variables.pod.schedulerName) || variables.pod.schedulerName == 'default-scheduler')"
    " && !has(variables.pod.priorityClassName) && !has(variables.pod.priority)"
    " && !has(variables.pod.preemptionPolicy)"
    " && !has(variables.pod.topologySpreadConstraints) && !has(variables.pod.schedulingGates)"
    " && !has(variables.pod.resourceClaims) && !has(variables.pod.overhead)"
)


def test_model_pods_are_placed_nowhere_in_particular_by_default(helm: Path) -> None:
    docs = render(helm)
    env = {item["name"] for item in _operator_container(docs)["env"]}
    assert not {cli.NODE_SELECTOR_ENV, cli.TOLERATIONS_ENV} & env
    args = cli.build_parser().parse_args(_operator_args(docs))
    assert (
        placement.parse(
            node_selector=args.model_pod_node_selector, tolerations=args.model_pod_tolerations
        )
        == placement.NONE
    )
    # ...and the operator may not place them anywhere either.
    assert _placement_rule(docs) == (
        "(!has(variables.pod.nodeSelector) || size(variables.pod.nodeSelector) == 0)"
        " && size(variables.tolerations) == 0" + NOTHING_ELSE_PLACES
    )


def test_model_pods_placement_reaches_the_operator_and_bounds_what_it_may_write(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(PLACEMENT_VALUES)
    docs = render(helm, "-f", str(values))
    env = {item["name"]: item.get("value") for item in _operator_container(docs)["env"]}
    # The operator reads the values as the chart passes them, and builds exactly them.
    for name in (cli.NODE_SELECTOR_ENV, cli.TOLERATIONS_ENV):
        monkeypatch.setenv(name, env[name])
    args = cli.build_parser().parse_args(_operator_args(docs))
    read = placement.parse(
        node_selector=args.model_pod_node_selector, tolerations=args.model_pod_tolerations
    )
    given = yaml.safe_load(PLACEMENT_VALUES)["modelPods"]
    assert read.manifest()["nodeSelector"] == given["nodeSelector"]
    assert read.manifest()["tolerations"] == [
        {"operator": "Equal", **t} for t in given["tolerations"]
    ]
    rule = _placement_rule(docs)
    assert rule.startswith(
        "has(variables.pod.nodeSelector) && variables.pod.nodeSelector =="
        " {'modelguard.dev/node': 'real', 'pool': 'gpu'} && size(variables.tolerations) == 3"
    )
    # Each toleration, field by field and in order, as the operator builds it.
    for index, toleration in enumerate(read.manifest()["tolerations"]):
        at = f"variables.tolerations[{index}]"
        for field, default in (("key", ""), ("value", ""), ("operator", "Equal"), ("effect", "")):
            expected = toleration.get(field, default)
            assert f"(has({at}.{field}) ? {at}.{field} : '{default}') == '{expected}'" in rule
        if "tolerationSeconds" in toleration:
            assert f"{at}.tolerationSeconds == {toleration['tolerationSeconds']}" in rule
        else:
            assert f"!has({at}.tolerationSeconds)" in rule
    assert rule.endswith(NOTHING_ELSE_PLACES)


@pytest.mark.parametrize(
    ("values", "schema_says", "template_says"),
    [
        pytest.param(
            "modelPods: {nodeSelector: {'a b': x}}",
            # Helm names the wrong place for a key; it names the key.
            "invalid propertyName 'a b'",
            'modelPods.nodeSelector: "a b" is not a label key',
            id="key",
        ),
        pytest.param(
            "modelPods: {nodeSelector: {pool: \"g' || true || '\"}}",
            "/modelPods/nodeSelector/pool",
            "modelPods.nodeSelector[pool]:",
            id="value-that-would-be-cel",
        ),
        pytest.param(
            "modelPods: {tolerations: [{key: k, effect: NoSchedul}]}",
            "/modelPods/tolerations/0/effect",
            'modelPods.tolerations[0].effect: "NoSchedul"',
            id="effect",
        ),
        pytest.param(
            'modelPods: {tolerations: [{key: k, value: "x\'"}]}',
            "/modelPods/tolerations/0/value",
            "modelPods.tolerations[0].value:",
            id="toleration-value",
        ),
        pytest.param(
            # Past float64's exact integers: int64() of it wrote -9223372036854775808 into the
            # expression while the operator was given 1e20.
            "modelPods: {tolerations: [{key: k, effect: NoExecute, tolerationSeconds: 1e20}]}",
            "/modelPods/tolerations/0/tolerationSeconds",
            "modelPods.tolerations[0].tolerationSeconds: 1e+20 is not a whole number",
            id="toleration-seconds-huge",
        ),
        pytest.param(
            "modelPods: {tolerations: [{key: k, effect: NoExecute, tolerationSeconds: 1.5}]}",
            "/modelPods/tolerations/0/tolerationSeconds",
            "modelPods.tolerations[0].tolerationSeconds: 1.5 is not a whole number",
            id="toleration-seconds-fraction",
        ),
    ],
)
def test_a_model_pods_value_that_is_no_label_is_refused_with_or_without_the_schema(
    helm: Path, tmp_path: Path, values: str, schema_says: str, template_says: str
) -> None:
    # The values are written into the admission policy's expression: only label keys and values
    # may get there.
    path = tmp_path / "values.yaml"
    path.write_text(values)
    by_schema = template(helm, "--set", f"image.digest={DIGEST}", "-f", str(path))
    assert by_schema.returncode != 0
    assert schema_says in by_schema.stderr
    by_template = template(
        helm, "--set", f"image.digest={DIGEST}", "-f", str(path), "--skip-schema-validation"
    )
    assert by_template.returncode != 0
    assert template_says in by_template.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            # No key with Exists: every taint, as the API server and the operator allow it.
            "modelPods: {tolerations: [{operator: Exists}]}",
            {"operator": "Exists"},
            id="every-taint",
        ),
        pytest.param(
            # A values file gives helm a float64: written as the whole number it is.
            "modelPods: {tolerations: [{key: k, effect: NoExecute, tolerationSeconds: 1000000}]}",
            {"key": "k", "operator": "Equal", "effect": "NoExecute", "tolerationSeconds": 1000000},
            id="seconds-from-a-values-file",
        ),
    ],
)
def test_a_toleration_the_operator_accepts_renders_into_the_policy(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: str, expected: Manifest
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    docs = render(helm, "-f", str(path))
    env = {item["name"]: item.get("value") for item in _operator_container(docs)["env"]}
    read = placement.parse(node_selector=None, tolerations=env[cli.TOLERATIONS_ENV])
    assert read.manifest()["tolerations"] == [expected]
    rule = _placement_rule(docs)
    at = "variables.tolerations[0]"
    for field, default in (("key", ""), ("value", ""), ("operator", "Equal"), ("effect", "")):
        assert (
            f"(has({at}.{field}) ? {at}.{field} : '{default}') == '{expected.get(field, default)}'"
            in rule
        )
    if "tolerationSeconds" in expected:
        assert f"{at}.tolerationSeconds == {expected['tolerationSeconds']} " in rule
    else:
        assert f"!has({at}.tolerationSeconds)" in rule


def test_an_unknown_model_pods_key_is_refused(helm: Path) -> None:
    # Per-model placement is not a setting: a misspelt or invented key fails the install.
    result = template(helm, "--set", f"image.digest={DIGEST}", "--set", "modelPods.affinity.x=y")
    assert result.returncode != 0
    assert "modelPods" in result.stderr


# --- High availability: replicas, the Lease, the disruption budget, spreading ---------------------


def test_two_replicas_by_default_elect_a_leader_by_a_lease_and_spread_over_nodes(
    helm: Path,
) -> None:
    found = kinds(render(helm))
    deployment = found["Deployment", "t-modelguard"]
    assert deployment["spec"]["replicas"] == 2
    # The new pod beside the old one: the webhooks always have a Ready replica to answer.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    container = _operator_container(render(helm))
    assert "--leader-election-lease=t-modelguard" in container["args"]
    # The Lease's namespace is the pod's own ($POD_NAMESPACE).
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    budget = found["PodDisruptionBudget", "t-modelguard"]["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"] == deployment["spec"]["selector"]


def test_the_lease_is_the_only_thing_the_operator_may_update_in_coordination(
    helm: Path,
) -> None:
    found = kinds(render(helm))
    role = found["Role", "t-modelguard-leader-election"]
    assert role["metadata"]["namespace"] == "mg"
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # create cannot be narrowed by name; get and update are, to the one Lease; no delete, no list
    # or watch (the operator reads it by name), nothing outside the release namespace.
    assert granted == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", ("t-modelguard",)),
        ("coordination.k8s.io", "leases", "update", ("t-modelguard",)),
    }
    binding = found["RoleBinding", "t-modelguard-leader-election"]
    assert binding["roleRef"]["name"] == "t-modelguard-leader-election"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-modelguard", "namespace": "mg"}
    ]
    cluster_rules = found["ClusterRole", "t-modelguard"]["rules"]
    assert not [r for r in cluster_rules if "coordination.k8s.io" in r.get("apiGroups", [])]


def test_one_replica_stays_a_valid_install_without_a_disruption_budget(helm: Path) -> None:
    found = kinds(render(helm, "--set", "replicaCount=1"))
    deployment = found["Deployment", "t-modelguard"]
    assert deployment["spec"]["replicas"] == 1
    # A budget of 1 out of 1 would block every drain.
    assert ("PodDisruptionBudget", "t-modelguard") not in found
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert ("Role", "t-modelguard-leader-election") in found


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            ("--set", "podAntiAffinity=required"),
            {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {
                                    "app.kubernetes.io/name": "modelguard",
                                    "app.kubernetes.io/instance": "t",
                                }
                            },
                        }
                    ]
                }
            },
            id="required",
        ),
        pytest.param(("--set", "podAntiAffinity=none"), None, id="none"),
        pytest.param(
            ("--set", "affinity.nodeAffinity.x=y"), {"nodeAffinity": {"x": "y"}}, id="own-affinity"
        ),
    ],
)
def test_the_spreading_of_replicas_is_a_setting(
    helm: Path, values: tuple[str, ...], expected: Manifest | None
) -> None:
    deployment = kinds(render(helm, *values))["Deployment", "t-modelguard"]
    assert deployment["spec"]["template"]["spec"].get("affinity") == expected


def test_an_unknown_spreading_is_refused_naming_the_key(helm: Path) -> None:
    result = template(helm, "--set", f"image.digest={DIGEST}", "--set", "podAntiAffinity=soft")
    assert result.returncode != 0
    assert "/podAntiAffinity" in result.stderr


def test_a_replica_is_ready_once_its_caches_are_filled_and_alive_while_its_loop_runs(
    helm: Path,
) -> None:
    container = _operator_container(render(helm, "--set", "health.readinessPort=9099"))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    args = cli.build_parser().parse_args(container["args"])
    # Readiness: the operator's endpoint that waits for the admission caches, on the port the
    # value names; liveness stays kopf's, which answers as soon as the event loop runs.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ready"}
    assert ports["ready"] == 9099
    assert readiness.parse(args.readiness) == readiness.Endpoint("0.0.0.0", 9099, "/readyz")  # noqa: S104
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert args.liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    # The operator's own NetworkPolicy lets the probes in.
    policy = kinds(render(helm, "--set", "health.readinessPort=9099"))[
        "NetworkPolicy", "t-modelguard"
    ]
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert {9099, ports["health"]} <= opened
