"""The local cluster: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
(fake nodes) and one real node (hack/localnode.py: kubelet, containerd, kube-proxy, kube-router,
CoreDNS), started as plain processes from binaries that hack/build-tools.sh builds.

It is what envtest does for controller-runtime, made complete: with the controller-manager the
garbage collector and the deployment/replicaset controllers run, with the scheduler and kwok pods
get scheduled and become Ready. RBAC, Pod Security admission, service-account tokens and server-side
apply are the real thing.

With `--node kwok` (`NODE=kwok` in make) every node is simulated, as before the real node existed,
and the control plane listens on loopback only. With the real node (the default) the API server
listens on the host end of the node's link instead, which the node and its pods can reach.

Usage:
    python hack/localcluster.py up   [--dir .cluster] [--node real|kwok]  # starts it
    python hack/localcluster.py down [--dir .cluster]
    python hack/localcluster.py env  [--dir .cluster]   # prints PATH/KUBECONFIG exports
    python hack/localcluster.py which kubectl           # the pinned binary's path

The admin kubeconfig is written to <dir>/kubeconfig; component logs to <dir>/logs/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    import localnode

HACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = HACK_DIR.parent

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "modelguard:cluster-admin"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STATE_FILE = "processes.json"


class ClusterError(RuntimeError):
    """The local cluster could not be started; the message says which component and why."""


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    if explicit := os.environ.get("MODELGUARD_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelguard"


def pinned_version(component: str, module: str) -> str:
    """The version of `module` pinned in hack/tools/<component>/go.mod (the one place it lives)."""
    go_mod = (HACK_DIR / "tools" / component / "go.mod").read_text()
    match = re.search(rf"^require {re.escape(module)} (\S+)$", go_mod, re.MULTILINE)
    if not match:
        raise ClusterError(f"hack/tools/{component}/go.mod does not require {module}")
    return match.group(1)


# binary name -> (component directory under hack/tools, Go module that pins its version)
_COMPONENTS = {
    "kube-apiserver": ("kubernetes", "k8s.io/kubernetes"),
    "kube-controller-manager": ("kubernetes", "k8s.io/kubernetes"),
    "kube-scheduler": ("kubernetes", "k8s.io/kubernetes"),
    "kubectl": ("kubernetes", "k8s.io/kubernetes"),
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3"),
    "kwok": ("kwok", "sigs.k8s.io/kwok"),
    "helm": ("helm", "helm.sh/helm/v3"),
    "minio": ("minio", "github.com/minio/minio"),
    "kubelet": ("kubernetes", "k8s.io/kubernetes"),
    "kube-proxy": ("kubernetes", "k8s.io/kubernetes"),
    "containerd": ("containerd", "github.com/containerd/containerd/v2"),
    "containerd-shim-runc-v2": ("containerd", "github.com/containerd/containerd/v2"),
    "ctr": ("containerd", "github.com/containerd/containerd/v2"),
    "kube-router": ("kube-router", "github.com/cloudnativelabs/kube-router/v2"),
    "coredns": ("coredns", "github.com/coredns/coredns"),
    # Not part of the cluster: the misconfiguration scanner the tests judge manifests with.
    "trivy": ("trivy", "github.com/aquasecurity/trivy"),
    # Not part of it either: `make e2e-kind` runs a kind cluster in Docker.
    "kind": ("kind", "sigs.k8s.io/kind"),
}
NODE_KINDS = ("real", "kwok")
# The real node's daemons (hack/localnode.py), stopped before the control plane.
NODE_DAEMONS = ("kube-router", "kube-proxy", "kubelet", "containerd")
CLIENT_COMPONENTS = ("kwok", "kube-scheduler", "kube-controller-manager")


def component_dir(binary: str) -> Path:
    component, module = _COMPONENTS[binary]
    return cache_root() / f"{component}-{pinned_version(component, module)}"


def binary(name: str) -> Path:
    """Where `name` is: KUBEBUILDER_ASSETS first (envtest users reuse theirs), else our cache.

    envtest's assets hold etcd, kube-apiserver and kubectl only; the rest comes from the cache.
    """
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidate = Path(assets) / name
        if candidate.is_file():
            return candidate
    candidate = component_dir(name) / name
    if not candidate.is_file():
        raise ClusterError(
            f"{name} is not built yet (looked in {candidate.parent}); run hack/build-tools.sh"
        )
    return candidate


def tool_path_dirs() -> list[Path]:
    """Directories to put on PATH so that kubectl and helm are the pinned ones."""
    return [binary("kubectl").parent, binary("helm").parent]


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A client certificate and key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    """A throwaway certificate authority for one cluster, with the certificates it needs."""

    def __init__(self) -> None:
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelguard-local-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> Identity:
        """A leaf certificate: a client certificate, or a server one when names or IPs are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        server = bool(server_names or server_ips)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


WEBHOOK_CLIENT_CA = "webhook-client-ca.crt"
WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"


def webhook_client_ca(kubeconfig: Path) -> Path:
    """The webhook client CA of the cluster whose admin kubeconfig is `kubeconfig`."""
    return kubeconfig.parent / "pki" / WEBHOOK_CLIENT_CA


def kubeconfig_text(*, server: str, ca_pem: bytes, identity: Identity, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "modelguard-local",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(identity.cert_pem),
                    "client-key-data": b64(identity.key_pem),
                },
            }
        ],
        "contexts": [
            {"name": "modelguard-local", "context": {"cluster": "modelguard-local", "user": user}}
        ],
        "current-context": "modelguard-local",
    }
    return json.dumps(config, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def tool(
    name: str, kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """kubectl or helm from the binary cache against one kubeconfig, its output captured; the
    caller judges the exit code (each raises the error type of its own layer)."""
    return subprocess.run(
        [str(binary(name)), f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str, check: Callable[[], bool], *, timeout: float, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    hint = f"; its log is {log}" if log else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


def _write_private(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


@dataclass
class LocalCluster:
    """One local cluster whose files live under `state_dir`."""

    state_dir: Path
    nodes: int = 2
    """How many kwok nodes."""
    node: str = "real"
    """`real`: a real node next to the kwok nodes; `kwok`: kwok nodes only (pods simulated)."""
    api_server_only: bool = False
    """Stop after etcd and kube-apiserver, as envtest does (the benchmarks' reference)."""
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node not in NODE_KINDS:
            raise ClusterError(f"node: {self.node!r} is not one of {', '.join(NODE_KINDS)}")

    @property
    def with_real_node(self) -> bool:
        return self.node == "real" and not self.api_server_only

    @property
    def real_node(self) -> localnode.RealNode:
        """The real node of a running cluster (its network, `enter()`, `import_image()`)."""
        import localnode  # noqa: PLC0415 - it imports this module

        node = localnode.RealNode.load(self.state_dir)
        if node is None:
            raise ClusterError(f"the cluster in {self.state_dir} has no real node")
        return node

    def import_image(self, archive: Path) -> None:
        """Imports an OCI image archive (hack/oci.py) into the real node's containerd."""
        self.real_node.import_image(archive)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate the API server presents to admission webhooks."""
        return webhook_client_ca(self.kubeconfig)

    # -- lifecycle ---------------------------------------------------------------------------

    def _webhook_client_identity(self, pki_dir: Path) -> Path:
        """An AdmissionConfiguration that has the API server present a client certificate,
        from a CA of its own (not the cluster's, which signs every user), to every webhook."""
        webhook_pki = Pki()
        _write_private(pki_dir / WEBHOOK_CLIENT_CA, webhook_pki.ca_pem)
        identity = webhook_pki.issue(common_name=WEBHOOK_CLIENT_NAME)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            # "*": whatever the webhook's host; kube-apiserver looks up this name last.
            "users": [
                {
                    "name": "*",
                    "user": {
                        "client-certificate-data": base64.b64encode(identity.cert_pem).decode(),
                        "client-key-data": base64.b64encode(identity.key_pem).decode(),
                    },
                }
            ],
        }
        kubeconfig = _write_private(pki_dir / "webhook-client.kubeconfig", json.dumps(config))
        webhook_plugin = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        admission = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": "ValidatingAdmissionWebhook", "configuration": webhook_plugin},
                {"name": "MutatingAdmissionWebhook", "configuration": webhook_plugin},
            ],
        }
        return _write_private(pki_dir / "admission.json", json.dumps(admission, indent=2))

    def start(self, *, timeout: float = 120) -> None:
        """Starts every component and returns once the cluster can run a Deployment."""
        if self.is_running():
            raise ClusterError(f"a cluster is already running from {self.state_dir}")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.logs_dir.mkdir(parents=True)
        self.pids = {}
        try:
            self._start(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, *, timeout: float) -> None:
        import localnode  # noqa: PLC0415 - it imports this module

        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        node: localnode.RealNode | None = None
        api_ip, service_cidr, kwok_cidr = "127.0.0.1", SERVICE_CIDR, POD_CIDR
        if self.with_real_node:
            # The node's link comes first: the API server listens on its host end.
            node = localnode.RealNode(self.state_dir)
            node.create(self._spawn, api_port=api_port, timeout=timeout)
            api_ip, service_cidr, kwok_cidr = (
                node.net.host_ip,
                node.net.service_cidr,
                node.net.kwok_pod_cidr,
            )
        pki_dir = self.state_dir / "pki"
        pki = Pki()
        ca = _write_private(pki_dir / "ca.crt", pki.ca_pem)
        service_ip = str(next(ipaddress.ip_network(service_cidr).hosts()))
        serving = pki.issue(
            common_name="kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=tuple(dict.fromkeys(("127.0.0.1", api_ip, service_ip))),
        )
        serving_crt = _write_private(pki_dir / "apiserver.crt", serving.cert_pem)
        serving_key = _write_private(pki_dir / "apiserver.key", serving.key_pem)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_private = _write_private(pki_dir / "sa.key", _key_pem(sa_key))
        sa_public = _write_private(
            pki_dir / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

        admission_config = self._webhook_client_identity(pki_dir)
        server = f"https://{api_ip}:{api_port}"

        def kubeconfig_for(
            name: str, *, common_name: str, organizations: tuple[str, ...] = ()
        ) -> Path:
            identity = pki.issue(common_name=common_name, organizations=organizations)
            text = kubeconfig_text(
                server=server, ca_pem=pki.ca_pem, identity=identity, user=common_name
            )
            return _write_private(self.state_dir / name, text)

        admin = kubeconfig_for(
            "kubeconfig", common_name=ADMIN_USER, organizations=("system:masters",)
        )
        admin_identity = json.loads(admin.read_text())["users"][0]["user"]
        controller_manager = kubeconfig_for(
            "controller-manager.kubeconfig", common_name="system:kube-controller-manager"
        )
        scheduler = kubeconfig_for("scheduler.kubeconfig", common_name="system:kube-scheduler")
        # kwok stands in for every kubelet at once, across nodes; the Node authorizer scopes a real
        # kubelet to its own node, which one process for all nodes cannot satisfy.
        kwok = kubeconfig_for(
            "kwok.kubeconfig", common_name="kwok", organizations=("system:masters",)
        )

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                "--name=modelguard-local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=modelguard-local=http://127.0.0.1:{etcd_peer_port}",
                # Throwaway test data: durability is not worth the fsync latency.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
            ],
        )
        wait_for(
            "etcd", lambda: http_ok(f"{etcd_url}/health"), timeout=timeout, log=self._log("etcd")
        )

        node_flags = self._api_server_node_flags(node, pki=pki, api_ip=api_ip)
        self._spawn(
            "kube-apiserver",
            [
                str(binary("kube-apiserver")),
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                *node_flags,
                f"--tls-cert-file={serving_crt}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={ca}",
                "--authorization-mode=Node,RBAC",
                # As kubeadm and kind set it: privileged pods are possible, so Pod Security
                # admission, not this flag, is what keeps them out, exactly as on users' clusters.
                "--allow-privileged=true",
                # The default admission plugins (PodSecurity, ServiceAccount, webhooks...) stay on;
                # NodeRestriction is added as every real cluster does.
                "--enable-admission-plugins=NodeRestriction",
                # The API server presents a client certificate to every admission webhook, as
                # a cluster can be configured to, so a webhook can answer it alone.
                f"--admission-control-config-file={admission_config}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa_public}",
                f"--service-account-signing-key-file={sa_private}",
                f"--service-cluster-ip-range={service_cidr}",
                "--profiling=false",
                "--v=1",
            ],
        )
        api_context = _client_context(ca_pem=pki.ca_pem, identity=admin_identity)
        wait_for(
            "kube-apiserver /readyz",
            lambda: http_ok(f"{server}/readyz", context=api_context),
            timeout=timeout,
            log=self._log("kube-apiserver"),
        )

        if self.api_server_only:
            return
        controller_manager_port, scheduler_port = free_port(), free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={controller_manager}",
                f"--authentication-kubeconfig={controller_manager}",
                f"--authorization-kubeconfig={controller_manager}",
                f"--service-account-private-key-file={sa_private}",
                f"--root-ca-file={ca}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={controller_manager_port}",
                f"--service-cluster-ip-range={service_cidr}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(binary("kube-scheduler")),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                "--profiling=false",
                "--v=1",
            ],
        )
        stages = sorted((binary("kwok").parent / "stages").glob("*.yaml"))
        if not stages:
            raise ClusterError("kwok's stage files are missing; run hack/build-tools.sh kwok")
        self._spawn(
            "kwok",
            [
                str(binary("kwok")),
                f"--kubeconfig={kwok}",
                *(f"--config={stage}" for stage in stages),
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={kwok_cidr}",
                "--node-ip=127.0.0.1",
                # Heartbeats through node leases, as kubelets do (the heartbeat stage needs it).
                "--node-lease-duration-seconds=40",
            ],
        )
        for name, port in (
            ("kube-controller-manager", controller_manager_port),
            ("kube-scheduler", scheduler_port),
        ):
            wait_for(
                f"{name} /healthz",
                functools.partial(
                    http_ok, f"https://127.0.0.1:{port}/healthz", context=_insecure()
                ),
                timeout=timeout,
                log=self._log(name),
            )

        kubectl = self.kubectl
        for index in range(self.nodes):
            kubectl("apply", "-f", "-", input=json.dumps(_node(f"kwok-node-{index}")))
        kubectl(
            "wait", "--for=condition=Ready", "node", "-l", "type=kwok", f"--timeout={int(timeout)}s"
        )
        # The service-account controller creates `default` in every namespace; pods need it.
        wait_for(
            "the default ServiceAccount",
            lambda: (
                kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode
                == 0
            ),
            timeout=timeout,
            log=self._log("kube-controller-manager"),
        )
        if node is not None:
            node.start(self, pki, timeout=timeout)

    def _api_server_node_flags(
        self, node: localnode.RealNode | None, *, pki: Pki, api_ip: str
    ) -> list[str]:
        """Where the API server listens, and how it reaches the real node's kubelet."""
        if node is None:
            return [
                "--bind-address=127.0.0.1",
                # Loopback has no route out; the endpoint reconciler refuses loopback addresses.
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        import localnode  # noqa: PLC0415 - it imports this module

        pki_dir = self.state_dir / "pki"
        client = pki.issue(common_name=localnode.KUBELET_CLIENT_USER)
        cert = _write_private(pki_dir / "kubelet-client.crt", client.cert_pem)
        key = _write_private(pki_dir / "kubelet-client.key", client.key_pem)
        return [
            # One address: the node's link, which this machine reaches too. The `kubernetes`
            # Service's endpoint is this address, so pods reach the API server through it.
            f"--bind-address={api_ip}",
            f"--advertise-address={api_ip}",
            # Logs, exec and port-forward: the API server authenticates to the kubelet with a
            # client certificate, and checks the kubelet's serving one against the cluster CA.
            f"--kubelet-client-certificate={cert}",
            f"--kubelet-client-key={key}",
            f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def stop(self, *, timeout: float = 10) -> None:
        """Stops every component; escalates to SIGKILL after `timeout`. The real node's daemons
        first, then its pods (their watches would hold up the API server's shutdown), the API
        server's clients, the API server, then etcd and the node's process 1 (the link where the
        API server listened goes with it), then what the node left on the host."""
        import localnode  # noqa: PLC0415 - it imports this module

        pids = self.pids or self._load_pids()
        node = localnode.RealNode.load(self.state_dir)
        rest = dict(pids)

        def take(names: tuple[str, ...]) -> dict[str, int]:
            return {name: rest.pop(name) for name in names if name in rest}

        terminate_all(take(NODE_DAEMONS), timeout=timeout)
        if node is not None:
            node.stop_pods()
        # The API server's clients together, then the API server, then etcd and the node.
        terminate_all(take(CLIENT_COMPONENTS), timeout=timeout)
        terminate_all(take(("kube-apiserver",)), timeout=timeout)
        terminate_all(rest, timeout=timeout)
        self.pids = {}
        if node is not None:
            node.remove()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    def is_running(self) -> bool:
        return any(alive(pid) for pid in self._load_pids().values())

    # -- helpers -----------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = tool("kubectl", self.kubeconfig, *args, input=input)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> int:
        with self._log(name).open("ab") as log:
            # A session of its own: a Ctrl-C meant for `make run` must not kill the cluster,
            # and stop() can signal the whole group.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids[name] = process.pid
        _write_private(self.state_dir / STATE_FILE, json.dumps(self.pids))
        time.sleep(0.05)
        if process.poll() is not None:
            raise ClusterError(
                f"{name} exited at once with code {process.returncode}; see {self._log(name)}"
            )
        return process.pid

    def _load_pids(self) -> dict[str, int]:
        try:
            loaded: dict[str, int] = json.loads((self.state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return loaded


def _node(name: str) -> dict[str, object]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie child of ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


def terminate(pid: int, *, name: str, timeout: float = 10) -> None:
    """SIGTERM to the process group `pid` leads (every component runs in a session of its own),
    then SIGKILL if it is still there after `timeout`."""
    terminate_all({name: pid}, timeout=timeout)


def terminate_all(processes: dict[str, int], *, timeout: float = 10) -> None:
    """`terminate` for several components at once: they shut down side by side."""
    for pid in processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in processes.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name, pid in processes.items():
        if alive(pid):
            print(f"{name} ignored SIGTERM; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _client_context(*, ca_pem: bytes, identity: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    # ssl wants files for the client certificate; a private temporary pair serves.
    with tempfile.TemporaryDirectory() as tmp:
        cert = _write_private(
            Path(tmp) / "c.pem", base64.b64decode(identity["client-certificate-data"])
        )
        key = _write_private(Path(tmp) / "k.pem", base64.b64decode(identity["client-key-data"]))
        context.load_cert_chain(cert, key)
    return context


def _insecure() -> ssl.SSLContext:
    # Health endpoints of the controller-manager and scheduler use self-signed serving certificates.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, *, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


@contextlib.contextmanager
def running(state_dir: Path, *, nodes: int = 2, node: str = "real") -> Iterator[LocalCluster]:
    cluster = LocalCluster(state_dir, nodes=nodes, node=node)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "env", "which"])
    parser.add_argument("binary", nargs="?", help="with `which`: the binary to locate")
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    parser.add_argument("--nodes", type=int, default=2, help="how many kwok nodes")
    parser.add_argument(
        "--node",
        choices=NODE_KINDS,
        default="real",
        help="real (default): a real node next to the kwok nodes; kwok: kwok nodes only",
    )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir.resolve(), nodes=args.nodes, node=args.node)
    try:
        if args.command == "up":
            if cluster.is_running():
                print(f"localcluster: already running; KUBECONFIG={cluster.kubeconfig}")
                return 0
            started = time.monotonic()
            cluster.start()
            print(
                f"localcluster: up in {time.monotonic() - started:.1f}s; "
                f"KUBECONFIG={cluster.kubeconfig}; logs in {cluster.logs_dir}"
            )
        elif args.command == "down":
            cluster.stop()
            print("localcluster: down")
        elif args.command == "which":
            if args.binary not in _COMPONENTS:
                parser.error(f"which: one of {', '.join(sorted(_COMPONENTS))}")
            print(binary(args.binary))
        else:
            path = os.pathsep.join(str(d) for d in tool_path_dirs())
            print(f"export PATH={path}{os.pathsep}$PATH")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
    except ClusterError as error:
        print(f"localcluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the module proper: hack/localnode.py and hack/images.py import it by name, and one copy
    # of its classes (ClusterError) must serve them all.
    import localcluster

    sys.exit(localcluster.main())
