"""The data plane of a local cluster with the real node: ModelGuard's operator running from its own
image through the chart, model pods on the real node, and an in-cluster S3 store (MinIO) holding
the models. What `make run` (NODE=real) and the data-plane integration tests set up.

Steps, each safe to repeat on a cluster where it already ran:
1. images: the modelguard and model-server images (hack/images.py) and a MinIO image (the binary
   of the binary cache, alone, as a non-root user) built without an engine and imported into the
   real node's containerd under their `repo@sha256:` names;
2. store: namespace `storage` (Pod Security restricted), a Secret with random root credentials,
   MinIO as a Deployment on the real node with its data on an emptyDir, the Service
   `minio.storage.svc:9000`, and a NetworkPolicy that opens its S3 port and nothing else (no
   egress at all); ready once S3 answers through the Service address from this machine, which
   routes the node's Service range to it;
3. operator: the chart installed with helm from the image's digest, the operator pod on the real
   node, its admission webhooks registered and called by the API server through the Service (the
   API server presents its webhook client certificate, which the chart is told to require), its
   NetworkPolicy narrowed to the API server's real address and port and to the store; model pods
   placed on the real node (chart values modelPods.*); ready once the operator pod is Ready and
   its webhook Service has an endpoint.

Usage:
    python hack/dataplane.py up [--dir .cluster]           # all of it; prints figures
    python hack/dataplane.py example [--dir .cluster]      # the example, rendered for this cluster
    python hack/dataplane.py show [--dir .cluster]         # the example called from two namespaces
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

import images
import localcluster
import localnode
import oci
import s3server

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent
CHART = REPO_ROOT / "charts" / "modelguard"
EXAMPLE = REPO_ROOT / "manifests" / "examples" / "sentiment.yaml"

OPERATOR_NAMESPACE: typing.Final = "modelguard-system"
RELEASE: typing.Final = "modelguard"
OPERATOR_SELECTOR: typing.Final = f"app.kubernetes.io/instance={RELEASE}"

STORE_NAMESPACE: typing.Final = "storage"
STORE_NAME: typing.Final = "minio"
STORE_PORT: typing.Final = 9000
STORE_LABELS: typing.Final = {"app": "minio"}
STORE_SECRET: typing.Final = "minio-root"  # noqa: S105 - the name of a Secret
STORE_IMAGE_REPOSITORY: typing.Final = "localhost/modelguard/minio"
# How model pods and the operator name the store: its Service, resolved by the cluster's DNS.
STORE_ENDPOINT: typing.Final = f"http://{STORE_NAME}.{STORE_NAMESPACE}.svc:{STORE_PORT}"
PROBE_IMAGE_NAME: typing.Final = "localhost/modelguard/probe:dataplane"
PROBE_TOOLS: typing.Final = ("sh", "nc", "wget", "timeout", "sleep", "id", "cat")
RESTRICTED: typing.Final = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
# The callers `show` runs: the example admits namespaces labelled team=frontend.
ALLOWED_CALLERS: typing.Final = "frontend"
OTHER_CALLERS: typing.Final = "elsewhere"
CALLER_LABELS: typing.Final = {"app.kubernetes.io/name": "caller"}

Manifest = dict[str, typing.Any]
Log = Callable[[str], None]


class DataPlaneError(localcluster.ClusterError):
    """A step of the data plane's set-up failed; the message says which and why."""


def _print(message: str) -> None:
    print(f"dataplane: {message}", flush=True)


# --------------------------------------------------------------------------------------------
# kubectl and helm
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A running local cluster with the real node, as this module drives it."""

    state_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def node(self) -> localnode.RealNode:
        node = localnode.RealNode.load(self.state_dir)
        if node is None or node.network is None:
            raise DataPlaneError(
                f"the cluster in {self.state_dir} has no real node: the data plane needs one "
                "(NODE=real)"
            )
        return node

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        result = localcluster.tool("kubectl", self.kubeconfig, *args, input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise DataPlaneError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> Manifest:
        loaded: Manifest = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return loaded

    def apply(self, *manifests: Manifest) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=modelguard-dataplane",
            "-f",
            "-",
            input=yaml.safe_dump_all(manifests),
        )

    def helm(self, *args: str, timeout: float = 600) -> str:
        result = localcluster.tool("helm", self.kubeconfig, *args, timeout=timeout)
        if result.returncode != 0:
            raise DataPlaneError(f"helm {' '.join(args[:2])}: {result.stderr.strip()}")
        return result.stdout


def namespace_manifest(name: str, labels: dict[str, str] | None = None) -> Manifest:
    """A namespace enforcing Pod Security restricted, with `labels` besides."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**RESTRICTED, **(labels or {})}},
    }


def _restricted_container() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _restricted_pod(user: int = 65532) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Images:
    """The images the data plane runs, by their `repo@sha256:` names."""

    modelguard: str
    model_server: str
    store: str
    probe: str


def minio_image() -> tuple[Path, str]:
    """MinIO's image (the binary alone, run as a non-root user): its archive, built once per
    MinIO version next to the binary in the cache, and the `repo@sha256:` name pods use."""
    binary = localcluster.binary("minio")
    version = binary.parent.name.removeprefix("minio-")
    archive = binary.parent / "minio.oci.tar"
    if not archive.exists():
        partial = archive.with_name(f"{archive.name}.partial.{os.getpid()}")
        oci.build(
            layers=[[oci.file("minio", source=binary, mode=0o755)]],
            config=oci.Config(
                user="65532:65532", entrypoint=("/minio",), env=("HOME=/tmp", "MINIO_BROWSER=off")
            ),
            name=f"{STORE_IMAGE_REPOSITORY}:{version.removeprefix('v0.0.0-')}",
            out=partial,
            history=[f"MinIO {version}, built from hack/tools/minio"],
        )
        partial.rename(archive)
    return archive, f"{STORE_IMAGE_REPOSITORY}@{oci.manifest_digest(archive)}"


def probe_image(out: Path) -> tuple[Path, str]:
    """A small image for callers on the real node: Debian's static busybox (sh, nc, wget)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise DataPlaneError("/bin/busybox is missing: run hack/install-packages.sh")
    layer = [oci.file("bin/busybox", source=busybox, mode=0o755)]
    layer += [oci.symlink(f"bin/{tool}", "busybox") for tool in PROBE_TOOLS]
    out.parent.mkdir(parents=True, exist_ok=True)
    image = oci.build(
        layers=[layer],
        config=oci.Config(user="65532:65532", entrypoint=("/bin/sh",)),
        name=PROBE_IMAGE_NAME,
        out=out,
    )
    return image.archive, image.reference


def build_images(cluster: Cluster, *, log: Log = _print) -> Images:
    """Builds the images (the slow layers come from the binary cache) and imports them into the
    real node."""
    node = cluster.node
    started = time.monotonic()
    modelguard = images.modelguard_image()
    server = images.model_server_image()
    store_archive, store = minio_image()
    probe_archive, probe = probe_image(images.BUILD_DIR / "probe.oci.tar")
    built = time.monotonic()
    for archive in (modelguard.archive, server.archive, store_archive, probe_archive):
        node.import_image(archive)
    log(
        f"images built in {built - started:.1f}s and imported in {time.monotonic() - built:.1f}s: "
        f"{modelguard.reference}, {server.reference}"
    )
    return Images(
        modelguard=modelguard.reference, model_server=server.reference, store=store, probe=probe
    )


# --------------------------------------------------------------------------------------------
# The in-cluster store
# --------------------------------------------------------------------------------------------


def store_manifests(*, image: str, host_ip: str) -> list[Manifest]:
    """MinIO on the real node: restricted, data on an emptyDir (throwaway, as the local cluster
    is), its S3 port open to pods and to this machine's end of the node's link (where set-up and
    tests upload), no egress at all."""
    metadata = {"namespace": STORE_NAMESPACE, "labels": dict(STORE_LABELS)}
    secret_env = [
        {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": STORE_SECRET, "key": variable}},
        }
        for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
    ]
    container = {
        "name": "minio",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["server", f"--address=:{STORE_PORT}", "--config-dir=/tmp/config", "/data"],
        "env": [
            *secret_env,
            {"name": "MINIO_REGION", "value": s3server.REGION},
            {"name": "MINIO_UPDATE", "value": "off"},
        ],
        "ports": [{"name": "s3", "containerPort": STORE_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/minio/health/ready", "port": STORE_PORT},
            "periodSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/minio/health/live", "port": STORE_PORT},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _restricted_container(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        ],
    }
    return [
        namespace_manifest(STORE_NAMESPACE),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": STORE_NAME, **metadata},
            "spec": {
                "replicas": 1,
                # One data directory: never two servers on it.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": dict(STORE_LABELS)},
                "template": {
                    "metadata": {"labels": dict(STORE_LABELS)},
                    "spec": {
                        **localnode.placement(),
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": {**_restricted_pod(), "fsGroup": 65532},
                        "containers": [container],
                        "volumes": [
                            {"name": "data", "emptyDir": {"sizeLimit": "10Gi"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": STORE_NAME, **metadata},
            "spec": {
                "selector": dict(STORE_LABELS),
                "ports": [{"name": "s3", "port": STORE_PORT, "targetPort": STORE_PORT}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": STORE_NAME, **metadata},
            "spec": {
                "podSelector": {"matchLabels": dict(STORE_LABELS)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {}},
                            {"ipBlock": {"cidr": f"{host_ip}/32"}},
                        ],
                        "ports": [{"protocol": "TCP", "port": STORE_PORT}],
                    }
                ],
            },
        },
    ]


@dataclasses.dataclass(frozen=True)
class Store:
    """The in-cluster MinIO: `client` signs requests to its Service address from this machine;
    `in_cluster` is the same server as pods name it (for Secrets and TrustPolicy sources)."""

    client: s3server.S3Server
    in_cluster: s3server.S3Server

    def source(self, bucket: str) -> dict[str, object]:
        """The TrustPolicy source for `bucket`: the Service's name, a private address, admitted
        explicitly."""
        return {
            "uri": f"s3://{bucket}/",
            "endpoint": self.in_cluster.endpoint,
            "allowPrivateAddresses": True,
        }

    def ensure_bucket(self, name: str, *, object_lock: bool = False) -> None:
        try:
            self.client.create_bucket(name, object_lock=object_lock)
        except s3server.S3ServerError as error:
            if "BucketAlreadyOwnedByYou" not in str(error):
                raise


def store_egress() -> Manifest:
    """A NetworkPolicy egress rule to the store's pods and port (post-DNAT, where policies
    apply), for the operator's policy and a model's spec.model.source.egress."""
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": STORE_NAMESPACE}
                },
                "podSelector": {"matchLabels": dict(STORE_LABELS)},
            }
        ],
        "ports": [{"protocol": "TCP", "port": STORE_PORT}],
    }


def start_store(cluster: Cluster, *, image: str, timeout: float = 300, log: Log = _print) -> Store:
    """MinIO in the cluster (kept, with its credentials, when it already runs)."""
    started = time.monotonic()
    node = cluster.node
    cluster.apply(namespace_manifest(STORE_NAMESPACE))
    existing = cluster.kubectl(
        "get", "secret", STORE_SECRET, "-n", STORE_NAMESPACE, "-o", "json", check=False
    )
    if existing.returncode != 0:
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": STORE_SECRET, "namespace": STORE_NAMESPACE},
                "type": "Opaque",
                "stringData": {
                    "MINIO_ROOT_USER": "mg-" + secrets.token_hex(8),
                    "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(30),
                },
            }
        )
    cluster.apply(*store_manifests(image=image, host_ip=node.net.host_ip))
    cluster.kubectl(
        *("rollout", "status", f"deployment/{STORE_NAME}", "-n", STORE_NAMESPACE),
        f"--timeout={int(timeout)}s",
        timeout=timeout + 30,
    )
    store = attach_store(cluster)
    deadline = time.monotonic() + timeout
    # Ready means the S3 API answers through the Service from here (kube-proxy's rules for a new
    # Service and kube-router's for the policy may come a moment after the pod is Ready).
    while True:
        try:
            store.client.request("GET", "/")
            break
        except (s3server.S3ServerError, OSError) as error:
            if time.monotonic() > deadline:
                raise DataPlaneError(
                    f"the store does not answer at {store.client.endpoint}: {error}"
                ) from None
            time.sleep(0.5)
    log(f"store ready in {time.monotonic() - started:.1f}s: {STORE_ENDPOINT}")
    return store


def attach_store(cluster: Cluster) -> Store:
    """The running store, its credentials read back from its Secret."""
    secret = cluster.json("get", "secret", STORE_SECRET, "-n", STORE_NAMESPACE)["data"]
    service = cluster.json("get", "service", STORE_NAME, "-n", STORE_NAMESPACE)
    access, secret_key = (
        base64.b64decode(secret[key]).decode() for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
    )
    client = s3server.S3Server(
        cluster.state_dir / "store",
        endpoint=f"http://{service['spec']['clusterIP']}:{STORE_PORT}",
        access_key=access,
        secret_key=secret_key,
    )
    return Store(client=client, in_cluster=dataclasses.replace(client, endpoint=STORE_ENDPOINT))


# --------------------------------------------------------------------------------------------
# The operator, through the chart
# --------------------------------------------------------------------------------------------


def operator_values(
    *, image: str, node: localnode.RealNode, client_ca: Path, extra: Manifest | None = None
) -> Manifest:
    """The chart's values for this cluster: its image by digest (imported, never pulled), the
    operator and model pods on the real node, the webhook answering the API server's client
    certificate alone, and the operator's NetworkPolicy narrowed to the API server's address and
    port as packets leave the pod (after kube-proxy) and to the store."""
    repository, digest = image.split("@", 1)
    placement = localnode.placement()
    values: Manifest = {
        "image": {"repository": repository, "digest": digest},
        "imagePullPolicy": "Never",
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "logLevel": "verbose",
        "networkPolicy": {
            "apiServerCIDRs": [f"{node.net.host_ip}/32"],
            "apiServerPorts": [node.api_port],
            "sourceEgress": [store_egress()],
        },
        "webhook": {
            "clientAuth": {
                "caBundle": client_ca.read_text(),
                "names": [localcluster.WEBHOOK_CLIENT_NAME],
            }
        },
        # Model pods go where the platform says: here, the real node.
        "modelPods": {
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        },
    }
    return _merged(values, extra or {})


def _merged(base: Manifest, override: Manifest) -> Manifest:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def install_operator(
    cluster: Cluster,
    *,
    image: str,
    extra_values: Manifest | None = None,
    timeout: float = 600,
    log: Log = _print,
) -> float:
    """`helm upgrade --install` of the chart, the operator on the real node; returns once its pod
    is Ready and its webhook Service has an endpoint. Returns the seconds it took."""
    started = time.monotonic()
    node = cluster.node
    values = operator_values(
        image=image,
        node=node,
        client_ca=localcluster.webhook_client_ca(cluster.kubeconfig),
        extra=extra_values,
    )
    cluster.apply(namespace_manifest(OPERATOR_NAMESPACE))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as values_file:
        yaml.safe_dump(values, values_file)
        values_file.flush()
        cluster.helm(
            *("upgrade", "--install", RELEASE, str(CHART)),
            *("--namespace", OPERATOR_NAMESPACE, "--values", values_file.name),
            *("--wait", f"--timeout={int(timeout)}s"),
            timeout=timeout + 60,
        )
    cluster.kubectl(
        *("rollout", "status", f"deployment/{RELEASE}", "-n", OPERATOR_NAMESPACE),
        f"--timeout={int(timeout)}s",
        timeout=timeout + 30,
    )
    cluster.kubectl(
        *("wait", "--for=condition=Ready", "pod", "-l", OPERATOR_SELECTOR),
        *("-n", OPERATOR_NAMESPACE, f"--timeout={int(timeout)}s"),
        timeout=timeout + 30,
    )
    localcluster.wait_for(
        "the webhook Service's endpoint",
        lambda: _webhook_endpoints(cluster) > 0,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    log(f"operator Ready in {seconds:.1f}s (chart installed with helm, image {image})")
    return seconds


def _webhook_endpoints(cluster: Cluster) -> int:
    slices = cluster.json(
        "get",
        "endpointslices",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        f"kubernetes.io/service-name={RELEASE}-webhook",
    )["items"]
    return sum(
        1
        for piece in slices
        for endpoint in piece.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
    )


def operator_pods(cluster: Cluster) -> list[str]:
    pods = cluster.json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR)["items"]
    running = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
    if not running:
        raise DataPlaneError("no operator pod")
    return running


def operator_pod(cluster: Cluster) -> str:
    return operator_pods(cluster)[0]


def operator_log(cluster: Cluster) -> str:
    """What the operator's pods wrote (their audit records among it): every replica's log, since
    the one that reconciles is whichever holds the Lease (decision 0028)."""
    return "".join(
        cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod, "-c", "operator").stdout
        for pod in operator_pods(cluster)
    )


# --------------------------------------------------------------------------------------------
# All of it
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataPlane:
    cluster: Cluster
    images: Images
    store: Store
    figures: dict[str, float]


def set_up(
    cluster: Cluster, *, extra_values: Manifest | None = None, log: Log = _print
) -> DataPlane:
    """Images, store and operator on a running local cluster with the real node."""
    figures: dict[str, float] = {}
    started = time.monotonic()
    built = build_images(cluster, log=log)
    _save_images(cluster, built)
    figures["images"] = time.monotonic() - started
    at = time.monotonic()
    store = start_store(cluster, image=built.store, log=log)
    figures["store"] = time.monotonic() - at
    figures["operator"] = install_operator(
        cluster, image=built.modelguard, extra_values=extra_values, log=log
    )
    return DataPlane(cluster=cluster, images=built, store=store, figures=figures)


IMAGES_FILE: typing.Final = "dataplane-images.json"


def _save_images(cluster: Cluster, built: Images) -> None:
    localcluster._write_private(
        cluster.state_dir / IMAGES_FILE, json.dumps(dataclasses.asdict(built), indent=1)
    )


def images_of(cluster: Cluster) -> Images:
    """The images the cluster's set-up imported, by their `repo@sha256:` names."""
    try:
        return Images(**json.loads((cluster.state_dir / IMAGES_FILE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        raise DataPlaneError(
            f"no data plane in {cluster.state_dir}: run `python hack/dataplane.py up` first"
        ) from None


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


def render_example(*, model_server: str) -> list[Manifest]:
    """manifests/examples/ for this cluster: the model server image the node has, by digest."""
    documents = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for document in documents:
        if document["kind"] == "ModelDeployment":
            document["spec"]["serving"]["image"] = model_server
    return documents


def example_model(documents: list[Manifest] | None = None) -> Manifest:
    found = [
        d
        for d in documents or yaml.safe_load_all(EXAMPLE.read_text())
        if d and d["kind"] == "ModelDeployment"
    ]
    (model,) = found
    return model


def caller_pod(
    name: str, *, namespace: str, image: str, labels: dict[str, str] | None = None
) -> Manifest:
    """A restricted pod on the real node that sleeps, for `kubectl exec` calls."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**CALLER_LABELS, **(labels or {})},
        },
        "spec": {
            **localnode.placement(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": _restricted_pod(),
            "containers": [
                {
                    "name": "caller",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "86400"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "securityContext": _restricted_container(),
                }
            ],
        },
    }


def call(
    cluster: Cluster, *, namespace: str, pod: str, url: str, seconds: int = 10
) -> subprocess.CompletedProcess[str]:
    """GET `url` from `pod` (busybox wget); exit 0 and the body, or the failure on stderr."""
    # `timeout`, not wget's own -T: busybox 1.35's wget crashes (SIGSEGV) with -T.
    return cluster.kubectl(
        *("exec", "-n", namespace, pod, "--"),
        *("timeout", str(seconds), "wget", "-q", "-O", "-", url),
        check=False,
        timeout=seconds + 60,
    )


def connects(cluster: Cluster, *, namespace: str, pod: str, host: str, port: int) -> bool:
    """Whether `pod` opens a TCP connection to host:port within five seconds."""
    return (
        cluster.kubectl(
            *("exec", "-n", namespace, pod, "--"),
            *("/bin/sh", "-c", f"/bin/nc -w 5 {host} {port} </dev/null"),
            check=False,
            timeout=90,
        ).returncode
        == 0
    )


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    try:
        yield
    except subprocess.TimeoutExpired as error:
        raise DataPlaneError(f"{what}: timed out after {error.timeout:.0f}s") from None


def show(cluster: Cluster, *, image: str, log: Log = _print) -> bool:
    """The example called from an admitted namespace and from another: returns whether the first
    is answered with the verified root digest and the second refused."""
    model = example_model()
    name, model_namespace = model["metadata"]["name"], model["metadata"]["namespace"]
    body = cluster.json("get", "modeldeployment", name, "-n", model_namespace)
    verified = ((body.get("status") or {}).get("verification") or {}).get("rootDigest")
    callers = {ALLOWED_CALLERS: {"team": "frontend"}, OTHER_CALLERS: {}}
    for caller_namespace, labels in callers.items():
        cluster.apply(namespace_manifest(caller_namespace, labels))
        cluster.apply(caller_pod("caller", namespace=caller_namespace, image=image))
    for caller_namespace in callers:
        with _step("the caller pods"):
            cluster.kubectl(
                *("wait", "--for=condition=Ready", "pod/caller", "-n", caller_namespace),
                "--timeout=180s",
                timeout=240,
            )
    url = f"http://{name}.{model_namespace}.svc:{_service_port(cluster, name, model_namespace)}/"
    allowed = call(cluster, namespace=ALLOWED_CALLERS, pod="caller", url=url)
    answered = ""
    if allowed.returncode == 0:
        with contextlib.suppress(json.JSONDecodeError):
            answered = json.loads(allowed.stdout).get("rootDigest", "")
        log(
            f"a pod in namespace {ALLOWED_CALLERS} (team=frontend) called GET {url}: answered, "
            f"the model server loaded root {answered}"
        )
        log(f"status.verification.rootDigest of {model_namespace}/{name}: {verified}")
    else:
        log(f"a pod in namespace {ALLOWED_CALLERS} called GET {url}: NOT answered: "
            f"{_first_line(allowed.stderr)}")  # fmt: skip
    other = call(cluster, namespace=OTHER_CALLERS, pod="caller", url=url, seconds=5)
    if other.returncode == 0:
        log(f"a pod in namespace {OTHER_CALLERS} called GET {url}: ANSWERED (not refused)")
    else:
        log(
            f"a pod in namespace {OTHER_CALLERS} called GET {url}: refused by the model's "
            f"NetworkPolicy (enforced by kube-router): {_first_line(other.stderr) or 'no answer'}"
        )
    return bool(verified) and answered == verified and other.returncode != 0


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _service_port(cluster: Cluster, name: str, model_namespace: str) -> int:
    service = cluster.json("get", "service", name, "-n", model_namespace)
    ports = service["spec"]["ports"]
    named = [p for p in ports if p.get("name") == "http"] or ports
    port: int = named[0]["port"]
    return port


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "example", "show"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir.resolve())
    try:
        if args.command == "up":
            plane = set_up(cluster)
            figures = ", ".join(f"{k} {v:.1f}s" for k, v in plane.figures.items())
            _print(f"data plane up ({figures})")
        elif args.command == "example":
            server = images_of(cluster).model_server
            print(yaml.safe_dump_all(render_example(model_server=server)), end="")
        else:
            return 0 if show(cluster, image=images_of(cluster).probe) else 1
    except (
        localcluster.ClusterError,
        images.BuildError,
        oci.ImageError,
        s3server.S3ServerError,
    ) as error:
        print(f"dataplane: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
