"""The data plane for real: the operator is the chart's pod (its own image, on the real node), model
pods run on the real node, their verifying init container fetches the model from MinIO in the
cluster and hashes every byte, the model server serves what it loaded, and kube-router enforces the
NetworkPolicies the operator writes. Nobody plays the kubelet here: every status, exit code and
termination message comes from a real kubelet, containerd and runc.

Probes are pods too (busybox, on the real node): traffic from the node itself is always allowed by
kube-router, so "X cannot reach the model" means something only when X is a pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import typing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import harness
import pytest

import dataplane
import localnode
import signedmodel
from modelguard.builders import deployment, names

Manifest = dict[str, typing.Any]
BUCKET = "models"
SECRET = "models-readonly"  # noqa: S105 - the name of a Secret
MODEL = "sentiment-bert"
VERSION = "1.4.0"
# Real pods on a loaded two-core machine: starting, fetching and verifying take their time.
SERVED_TIMEOUT = 420
REFUSED_TIMEOUT = 90


@dataclasses.dataclass(frozen=True)
class Trust:
    signing_key: Path
    approver_key: Path


@pytest.fixture(scope="module")
def plane(data_plane: dataplane.DataPlane) -> dataplane.DataPlane:
    return data_plane


@pytest.fixture(scope="module")
def cluster(plane: dataplane.DataPlane) -> dataplane.Cluster:
    return plane.cluster


@pytest.fixture(scope="module")
def trust(
    plane: dataplane.DataPlane,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
) -> Trust:
    """The data-plane cluster's `default` TrustPolicy: the test signer, models only from the
    in-cluster store (its Service name, a private address admitted explicitly), one approval."""
    plane.store.ensure_bucket(BUCKET)
    plane.cluster.apply(
        signedmodel.trust_policy(
            name="default",
            public_key=signing_key[1],
            sources=[plane.store.source(BUCKET)],
            approver_key=approver_key[1],
        )
    )
    return Trust(signing_key=signing_key[0], approver_key=approver_key[0])


@dataclasses.dataclass(frozen=True)
class Scene:
    """A model's namespace (its store Secret, the operator's grant to read it) and two caller
    namespaces, one admitted by the model's spec.access.ingress and one not."""

    namespace: str
    callers: str
    others: str


@contextlib.contextmanager
def _scene(cluster: dataplane.Cluster, plane: dataplane.DataPlane) -> Iterator[Scene]:
    suffix = uuid.uuid4().hex[:6]
    scene = Scene(f"dp-{suffix}", f"dp-{suffix}-callers", f"dp-{suffix}-others")
    for name in (scene.namespace, scene.callers, scene.others):
        cluster.apply(dataplane.namespace_manifest(name))
    secret = signedmodel.credentials_secret(plane.store.in_cluster, name=SECRET)
    secret["metadata"]["namespace"] = scene.namespace  # type: ignore[index]
    cluster.apply(
        secret,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "modelguard-source-credentials", "namespace": scene.namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{dataplane.RELEASE}-source-credentials",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": dataplane.RELEASE,
                    "namespace": dataplane.OPERATOR_NAMESPACE,
                }
            ],
        },
    )
    for name in (scene.callers, scene.others):
        cluster.apply(dataplane.caller_pod("caller", namespace=name, image=plane.images.probe))
    try:
        yield scene
    finally:
        for name in (scene.namespace, scene.callers, scene.others):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _publish(
    plane: dataplane.DataPlane,
    trust: Trust,
    scene: Scene,
    tmp_path: Path,
    *,
    tamper: Callable[[dict[str, bytes]], dict[str, bytes]] | None = None,
) -> tuple[str, str]:
    """Signs the demo model, approves its digest in the scene's namespace, uploads the files
    (changed by `tamper` after signing) and the signature; returns (source URI, signed root)."""
    files = signedmodel.demo_files(VERSION)
    model_dir = signedmodel.write_model(tmp_path / "model", files)
    signature = signedmodel.sign(
        model_dir, private_key=trust.signing_key, signature=tmp_path / "model.sig"
    )
    root = signedmodel.root_digest(signature)
    plane.cluster.apply(
        signedmodel.approval(
            private_key=trust.approver_key,
            namespace=scene.namespace,
            model=MODEL,
            version=VERSION,
            digest=root,
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            name=f"{MODEL}-{uuid.uuid4().hex[:6]}",
        )
    )
    uri = signedmodel.publish(
        plane.store.client,
        bucket=BUCKET,
        prefix=f"{scene.namespace}/{MODEL}/{VERSION}",
        files=tamper(dict(files)) if tamper else files,
        signature=signature,
    )
    return uri, root


def _model(
    name: str,
    scene: Scene,
    *,
    uri: str,
    server_image: str,
    quarantine: bool = False,
    source_egress: bool = True,
) -> Manifest:
    spec: Manifest = {
        "model": {
            "name": MODEL,
            "version": VERSION,
            "source": {
                "uri": uri,
                "credentialsSecret": SECRET,
                "egress": [dataplane.store_egress()] if source_egress else [],
            },
        },
        "serving": {
            "image": server_image,
            "port": 8080,
            "replicas": 1,
            "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
        },
        "access": {
            "ingress": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": scene.callers}
                    }
                }
            ]
        },
    }
    if quarantine:
        spec["quarantine"] = True
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": scene.namespace},
        "spec": spec,
    }


def _wait_callers(cluster: dataplane.Cluster, scene: Scene) -> None:
    for name in (scene.callers, scene.others):
        cluster.kubectl(
            *("wait", "--for=condition=Ready", "pod/caller", "-n", name, "--timeout=300s"),
            timeout=360,
        )


def _wait_ready(cluster: dataplane.Cluster, scene: Scene, name: str) -> Manifest:
    result = cluster.kubectl(
        *("wait", "--for=condition=Ready", f"modeldeployment/{name}", "-n", scene.namespace),
        f"--timeout={SERVED_TIMEOUT}s",
        check=False,
        timeout=SERVED_TIMEOUT + 60,
    )
    body = cluster.json("get", "modeldeployment", name, "-n", scene.namespace)
    assert result.returncode == 0, json.dumps(body.get("status"), indent=1)
    return body


def _url(cluster: dataplane.Cluster, scene: Scene, name: str) -> str:
    service = cluster.json("get", "service", name, "-n", scene.namespace)
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == names.PORT_NAME]
    return f"http://{name}.{scene.namespace}.svc:{port}/"


def _answer(cluster: dataplane.Cluster, namespace: str, url: str) -> Manifest:
    called = dataplane.call(cluster, namespace=namespace, pod="caller", url=url)
    assert called.returncode == 0, called.stderr
    answer: Manifest = json.loads(called.stdout)
    return answer


def _model_pods(cluster: dataplane.Cluster, scene: Scene, name: str) -> list[Manifest]:
    pods: list[Manifest] = cluster.json(
        "get", "pods", "-n", scene.namespace, "-l", f"modelguard.dev/model-deployment={name}"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


# --------------------------------------------------------------------------------------------
# A signed model, served
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Served:
    scene: Scene
    name: str
    body: Manifest
    signed_root: str
    url: str


@pytest.fixture(scope="module")
def served(
    plane: dataplane.DataPlane,
    cluster: dataplane.Cluster,
    trust: Trust,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One signed model, applied and Ready: its pod fetched and verified it on the real node."""
    with _scene(cluster, plane) as scene:
        uri, root = _publish(plane, trust, scene, tmp_path_factory.mktemp("served"))
        cluster.apply(_model("m", scene, uri=uri, server_image=plane.images.model_server))
        body = _wait_ready(cluster, scene, "m")
        _wait_callers(cluster, scene)
        yield Served(scene, "m", body, root, _url(cluster, scene, "m"))


def test_a_signed_model_is_verified_in_its_pod_and_served_to_admitted_callers_only(
    cluster: dataplane.Cluster, served: Served
) -> None:
    scene = served.scene
    verified = served.body["status"]["verification"]["rootDigest"]
    assert verified == served.signed_root
    (pod,) = _model_pods(cluster, scene, served.name)
    assert pod["spec"]["nodeName"] == localnode.NODE_NAME
    # fetch-verify ran in the pod and exited 0 with its summary, from the real kubelet.
    (agent,) = pod["status"]["initContainerStatuses"]
    terminated = agent["state"]["terminated"]
    assert agent["name"] == deployment.AGENT_CONTAINER
    assert terminated["exitCode"] == 0
    assert f"fetched and verified root {verified}" in terminated["message"]

    # The admitted caller is answered by the model server, through the audit proxy, with the
    # root digest of the bytes the server hashed itself: those the operator verified.
    answer = _answer(cluster, scene.callers, served.url)
    assert answer["rootDigest"] == verified
    assert sorted(f["path"] for f in answer["files"]) == sorted(signedmodel.demo_files(VERSION))

    # A pod of another namespace is refused by the model's NetworkPolicy.
    def refused() -> None:
        other = dataplane.call(cluster, namespace=scene.others, pod="caller", url=served.url)
        assert other.returncode != 0, other.stdout

    harness.eventually(refused, timeout=REFUSED_TIMEOUT)

    # Even the admitted caller reaches the proxy's port only, never the server's own.
    address = pod["status"]["podIP"]
    ports = {
        port["name"]: port["containerPort"]
        for container in pod["spec"]["containers"]
        for port in container.get("ports") or []
    }

    def reaches(port: int) -> bool:
        return dataplane.connects(
            cluster, namespace=scene.callers, pod="caller", host=address, port=port
        )

    assert reaches(ports[names.PORT_NAME])
    assert not reaches(ports[names.SERVER_PORT_NAME])


def test_model_pods_are_restricted_for_real(cluster: dataplane.Cluster, served: Served) -> None:
    """What the kernel says of the model server's process, read by the server itself from
    /proc/self/status and returned through the proxy; and what it could write or read."""
    answer = _answer(cluster, served.scene.callers, served.url)
    runtime = answer["runtime"]
    process = runtime["process"]
    assert process["Uid"].split() == [str(deployment.RUN_AS)] * 4
    assert process["Gid"].split() == [str(deployment.RUN_AS)] * 4
    assert process["Seccomp"] == "2"  # a seccomp filter (RuntimeDefault) is applied
    assert process["NoNewPrivs"] == "1"
    assert int(process["CapEff"], 16) == 0
    assert runtime["rootWrite"]["failed"] is True
    assert "Read-only file system" in runtime["rootWrite"]["error"]
    assert answer["volumeWrite"]["failed"] is True
    assert "Read-only file system" in answer["volumeWrite"]["error"]
    assert runtime["serviceAccountToken"] is False


def test_the_operator_is_the_charts_pod_and_its_webhook_is_called_through_its_service(
    plane: dataplane.DataPlane, cluster: dataplane.Cluster, served: Served
) -> None:
    pod = cluster.json(
        "get", "pod", dataplane.operator_pod(cluster), "-n", dataplane.OPERATOR_NAMESPACE
    )
    assert pod["spec"]["nodeName"] == localnode.NODE_NAME
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["imageID"].endswith(plane.images.modelguard.split("@", 1)[1])
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # The API server calls the webhook at its Service (the only registration there is), whose
    # address the host routes to the node; the webhook answers that caller alone.
    (registration,) = [
        w
        for w in cluster.json("get", "validatingwebhookconfigurations")["items"]
        if w["metadata"]["name"].startswith(dataplane.RELEASE)
    ]
    services = {hook["clientConfig"]["service"]["name"] for hook in registration["webhooks"]}
    assert services == {f"{dataplane.RELEASE}-webhook"}
    scaled = cluster.kubectl(
        "scale", "deployment", served.name, "-n", served.scene.namespace, "--replicas=3",
        check=False,
    )  # fmt: skip
    assert scaled.returncode != 0
    assert 'admission webhook "managed-scale.modelguard.dev" denied the request' in scaled.stderr
    assert "spec.serving.replicas" in scaled.stderr


# --------------------------------------------------------------------------------------------
# A model changed in the store after signing
# --------------------------------------------------------------------------------------------


def _flip_a_byte(files: dict[str, bytes]) -> dict[str, bytes]:
    data = bytearray(files["model.safetensors"])
    data[-1] ^= 0x01
    return {**files, "model.safetensors": bytes(data)}


def _add_a_file(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**files, "extra/hook.py": b"import os\n"}


def _swap_two_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {
        **files,
        "config.json": files["tokenizer/vocab.json"],
        "tokenizer/vocab.json": files["config.json"],
    }


@dataclasses.dataclass(frozen=True)
class Tampering:
    change: Callable[[dict[str, bytes]], dict[str, bytes]]
    reason: str
    files: tuple[str, ...]
    """The file the pod's words name: one of these."""


TAMPERING = {
    "one byte": Tampering(_flip_a_byte, "DigestMismatch", ("model.safetensors",)),
    "an added file": Tampering(_add_a_file, "UnexpectedFile", ("extra/hook.py",)),
    "two files swapped": Tampering(
        _swap_two_files, "DigestMismatch", ("config.json", "tokenizer/vocab.json")
    ),
}


def _audit_records(cluster: dataplane.Cluster) -> list[Manifest]:
    records = []
    for line in dataplane.operator_log(cluster).splitlines():
        if line.startswith("{") and '"decision"' in line:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


@pytest.mark.parametrize("case", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_model_changed_in_the_store_stops_its_pod_before_the_server_and_is_quarantined(
    case: Tampering,
    plane: dataplane.DataPlane,
    cluster: dataplane.Cluster,
    trust: Trust,
    tmp_path: Path,
) -> None:
    with _scene(cluster, plane) as scene:
        # The signature is intact (the operator checks it and passes); the files are not, and only
        # fetch-verify in the pod, hashing every byte it downloads, can tell.
        uri, _ = _publish(plane, trust, scene, tmp_path, tamper=case.change)
        cluster.apply(_model("m", scene, uri=uri, server_image=plane.images.model_server))

        def quarantined() -> Manifest:
            body = cluster.json("get", "modeldeployment", "m", "-n", scene.namespace)
            ready = harness.condition(body, "Ready")
            assert (ready.get("status"), ready.get("reason")) == ("False", "Quarantined"), body.get(
                "status"
            )
            return body

        harness.eventually(quarantined, timeout=SERVED_TIMEOUT, interval=2)
        body = quarantined()
        verified = harness.condition(body, "Verified")
        assert (verified["status"], verified["reason"]) == ("False", case.reason)
        assert any(name in verified["message"] for name in case.files), verified["message"]
        assert body["status"]["quarantine"]["reason"] == case.reason
        assert (
            cluster.json("get", "deployment", "m", "-n", scene.namespace)["spec"]["replicas"] == 0
        )

        # The kubelet started the verifying init container and never the server: the pod's
        # Events (they outlive the pod the quarantine scales away) say so.
        pod_events = cluster.json(
            "get", "events", "-n", scene.namespace, "--field-selector=involvedObject.kind=Pod"
        )["items"]
        # Which container an Event is about: its fieldPath, e.g. spec.initContainers{fetch-verify}.
        started = [
            e["involvedObject"].get("fieldPath", "") for e in pod_events if e["reason"] == "Started"
        ]
        assert any(deployment.AGENT_CONTAINER in m for m in started), started
        assert not any(names.CONTAINER in m for m in started), started

        events = harness.model_events(harness.Kubectl(cluster.kubeconfig), scene.namespace, "m")
        quarantine_events = [e for e in events if e["reason"] == "Quarantined"]
        assert quarantine_events, [e["reason"] for e in events]
        assert any(name in quarantine_events[0]["note"] for name in case.files)

        uid = body["metadata"]["uid"]

        def audited() -> None:
            found = [
                r
                for r in _audit_records(cluster)
                if (r.get("object") or {}).get("uid") == uid and r["decision"] == "Quarantined"
            ]
            assert len(found) == 1, found
            assert found[0]["reason"] == case.reason
            assert found[0]["details"]["trigger"] == "automatic"
            assert any(name in found[0]["message"] for name in case.files), found[0]

        harness.eventually(audited, timeout=60, interval=2)


# --------------------------------------------------------------------------------------------
# The source's egress policy
# --------------------------------------------------------------------------------------------


def test_a_pod_reaches_the_store_only_through_its_source_egress_policy(
    plane: dataplane.DataPlane,
    cluster: dataplane.Cluster,
    trust: Trust,
    tmp_path: Path,
) -> None:
    """The operator's own policy lets it read the signature; the model's pods get no way to the
    store unless spec.model.source.egress declares one, and then that one."""
    with _scene(cluster, plane) as scene:
        uri, root = _publish(plane, trust, scene, tmp_path)
        image = plane.images.model_server
        cluster.apply(_model("s", scene, uri=uri, server_image=image, source_egress=False))

        def unreachable() -> None:
            body = cluster.json("get", "modeldeployment", "s", "-n", scene.namespace)
            verified = harness.condition(body, "Verified")
            assert verified.get("reason") == "SourceUnreachable", body.get("status")
            assert "pod s-" in verified["message"], verified["message"]
            assert harness.condition(body, "Ready").get("reason") != "Quarantined"

        harness.eventually(unreachable, timeout=SERVED_TIMEOUT, interval=2)
        closed = cluster.json("get", "networkpolicy", "s-allow-source", "-n", scene.namespace)
        assert closed["spec"].get("egress", []) == []

        cluster.apply(_model("s", scene, uri=uri, server_image=image))
        body = _wait_ready(cluster, scene, "s")
        assert body["status"]["verification"]["rootDigest"] == root
        assert cluster.json("get", "networkpolicy", "s-allow-source", "-n", scene.namespace)[
            "spec"
        ]["egress"] == [dataplane.store_egress()]


# --------------------------------------------------------------------------------------------
# Quarantine cuts a connection that worked
# --------------------------------------------------------------------------------------------


def test_quarantine_cuts_a_caller_that_was_answered(
    plane: dataplane.DataPlane,
    cluster: dataplane.Cluster,
    trust: Trust,
    tmp_path: Path,
) -> None:
    with _scene(cluster, plane) as scene:
        uri, root = _publish(plane, trust, scene, tmp_path)
        model = _model("q", scene, uri=uri, server_image=plane.images.model_server)
        cluster.apply(model)
        _wait_ready(cluster, scene, "q")
        _wait_callers(cluster, scene)
        url = _url(cluster, scene, "q")
        assert _answer(cluster, scene.callers, url)["rootDigest"] == root

        cluster.apply(_model("q", scene, uri=uri, server_image=plane.images.model_server,
                             quarantine=True))  # fmt: skip

        def cut() -> None:
            called = dataplane.call(cluster, namespace=scene.callers, pod="caller", url=url)
            assert called.returncode != 0, called.stdout
            body = cluster.json("get", "modeldeployment", "q", "-n", scene.namespace)
            ready = harness.condition(body, "Ready")
            assert (ready.get("status"), ready.get("reason")) == ("False", "Quarantined")

        harness.eventually(cut, timeout=REFUSED_TIMEOUT * 2, interval=2)
