"""Objects whose ownerReferences name a ModelDeployment are written by the operator alone: the
API server itself refuses everyone else (the chart's ValidatingAdmissionPolicy), while the
operator keeps writing its children and the garbage collector keeps collecting and orphaning
them."""

from __future__ import annotations

import copy
import typing

import harness
import pytest
from test_admission import _editor, _plain_deployment
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

PublishModel = typing.Callable[..., str]
Manifest = dict[str, typing.Any]
REFUSAL = "as its owner, and only the ModelGuard operator writes such objects"


def _owner(kubectl: harness.Kubectl, namespace: str, name: str, **extra: typing.Any) -> Manifest:
    uid = kubectl.json("get", "modeldeployment", name, "-n", namespace)["metadata"]["uid"]
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": name,
        "uid": uid,
        **extra,
    }


def _owned(manifest: Manifest, *owners: Manifest) -> Manifest:
    owned = copy.deepcopy(manifest)
    owned["metadata"]["ownerReferences"] = list(owners)
    return owned


def _config_map(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}}


def _service(name: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {SELECTOR: "m"}, "ports": [{"port": 80}]},
    }


def _refused(result: typing.Any, what: str) -> None:
    assert result.returncode != 0, f"{what}: admitted"
    assert "ValidatingAdmissionPolicy" in result.stderr, f"{what}: {result.stderr}"
    assert REFUSAL in result.stderr, f"{what}: {result.stderr}"


def test_a_namespace_editor_cannot_write_objects_owned_by_a_model_deployment(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    editor = _editor(kubectl, namespace, as_service_account)
    owner = _owner(kubectl, namespace, "m")
    # Any kind, not only the kinds the operator makes (no label says "managed" here, so no
    # webhook selects these), any flag, among other owners, in any version of the group.
    another = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": owner["uid"]}
    attempts = {
        "Deployment claiming the model as controller": _owned(
            _plain_deployment("m-serving"), {**owner, "controller": True}
        ),
        "ConfigMap": _owned(_config_map("m-config"), owner),
        "Service": _owned(_service("m-endpoint"), {**owner, "blockOwnerDeletion": False}),
        "second of two owners": _owned(_config_map("m-second"), another, owner),
        "another version of the group": _owned(
            _config_map("m-v1"), {**owner, "apiVersion": "modelguard.dev/v1"}
        ),
    }
    for what, manifest in attempts.items():
        _refused(editor.apply(manifest, namespace=namespace, check=False), what)
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        assert kubectl.get(kind, name, namespace=namespace) is None, what

    # Adding the reference to an object of one's own is a write of such an object too.
    editor.apply(_config_map("mine"), namespace=namespace)
    _refused(
        editor.apply(_owned(_config_map("mine"), owner), namespace=namespace, check=False),
        "ownerReference added later",
    )
    # Owned by anything else, objects stay the editor's business.
    uid = kubectl.json("get", "configmap", "mine", "-n", namespace)["metadata"]["uid"]
    editor.apply(
        _owned(
            _config_map("dependent"),
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "mine", "uid": uid},
        ),
        namespace=namespace,
    )


def test_break_glass_may_write_an_object_owned_by_a_model_deployment(
    kubectl: harness.Kubectl, namespace: str, publish_model: PublishModel
) -> None:
    # As for the managed children's webhook: an incident's responders, and only they.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    owner = _owner(kubectl, namespace, "m")
    manifest = _owned(_config_map("m-incident"), owner)
    _refused(kubectl.apply(manifest, namespace=namespace, check=False), "cluster admin")
    kubectl.apply(
        manifest,
        namespace=namespace,
        extra=harness.BREAK_GLASS,
    )


def test_the_operator_writes_its_children_and_the_garbage_collector_collects_or_orphans_them(
    kubectl: harness.Kubectl, namespace: str, publish_model: PublishModel
) -> None:
    uri = publish_model("1.4.0")
    for name in ("collected", "orphaned"):
        kubectl.apply(model_deployment(name, source=uri), namespace=namespace)
    for name in ("collected", "orphaned"):
        wait_ready(kubectl, namespace, name)
    # The operator replaces a child whole (an UPDATE of an object it owns).
    kubectl.run(
        "patch",
        "modeldeployment",
        "collected",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"serving":{"replicas":3}}}',
    )

    def scaled() -> None:
        live = kubectl.get("deployment", "collected", namespace=namespace)
        assert live is not None
        assert live["spec"]["replicas"] == 3

    harness.eventually(scaled, timeout=60)

    def children(name: str) -> list[Manifest]:
        items: list[Manifest] = kubectl.json(
            "get",
            "serviceaccounts,deployments,services,networkpolicies",
            "-n",
            namespace,
            "-l",
            f"{SELECTOR}={name}",
        )["items"]
        return items

    assert len(children("orphaned")) >= 4
    # Orphaning: the garbage collector removes the ownerReference from each child (an UPDATE).
    kubectl.run("delete", "modeldeployment", "orphaned", "-n", namespace, "--cascade=orphan")

    def orphaned() -> None:
        left = children("orphaned")
        assert len(left) >= 4
        assert all(not child["metadata"].get("ownerReferences") for child in left), left

    harness.eventually(orphaned, timeout=60)
    # Collecting: deleting the model deletes its children.
    kubectl.run("delete", "modeldeployment", "collected", "-n", namespace)

    def collected() -> None:
        assert children("collected") == []

    harness.eventually(collected, timeout=60)


def test_references_too_many_to_judge_are_refused_where_models_live(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: PublishModel,
    as_service_account: typing.Callable[[str], harness.Kubectl],
) -> None:
    # The policy matching references by uid fails open on an evaluation error (a paramKind not
    # yet served must not stop the cluster's writes): a list of references long enough to
    # exhaust its CEL cost budget must be refused, not let through.
    kubectl.apply(model_deployment("m", source=publish_model("1.4.0")), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    editor = _editor(kubectl, namespace, as_service_account)
    many = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": f"o{i}", "uid": f"u-{i}"}
        for i in range(65)
    ]
    result = editor.apply(_owned(_config_map("many"), *many), namespace=namespace, check=False)
    assert result.returncode != 0, "65 ownerReferences were admitted beside a model"
    assert "lists more than 64 references" in result.stderr, result.stderr
    editor.apply(_owned(_config_map("enough"), *many[:64]), namespace=namespace)
