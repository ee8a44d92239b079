"""Fixtures for the real control plane: a session-wide cluster (the local one, or an existing one),
a fresh namespace per test, the chart installed once, and the operator running under the chart's own
ServiceAccount identity, so that the RBAC it ships is what the tests exercise."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

import dataplane
import localcluster
import localnode
import localoperator
import oci
import s3server
import signedmodel

OPERATOR_NAMESPACE = "modelguard-system"
RELEASE = "modelguard"
# One directory per test session, so that two sessions on one machine never share state.
SESSION_DIR = harness.REPO_ROOT / ".cluster-test" / f"session-{os.getpid()}"
# kwok runs no containers, so any image pinned by digest serves as the agent's.
AGENT_IMAGE = f"{harness.IMAGE_REPOSITORY}@{harness.IMAGE_DIGEST}"
MODEL_BUCKET = "models"
CREDENTIALS_SECRET = "models-readonly"  # noqa: S105 - the name of a Secret
BUNDLE_REREAD_SECONDS = 15
# BackupStore credentials the chart lets the operator read (backup.credentialsSecrets).
BACKUP_CREDENTIALS = ("backup-writer", "backup-root")
# The operator under test checkpoints its audit log this often (the chart's default is 300).
AUDIT_CHECKPOINT_SECONDS = 2
# Where the session's operator process serves its metrics (a free loopback port).
OPERATOR_METRICS_PORT = localcluster.free_port()
# The session operator's log (kopf's and the operator's lines).
OPERATOR_LOG = SESSION_DIR / "cluster" / "logs" / "operator.log"
# The Secret the session operator's tokens are bound to, in the operator's namespace.
OPERATOR_TOKEN_BINDING = f"{RELEASE}-test-operator-token"
PROBE_TOOLS = ("sh", "nc", "nslookup", "httpd", "sleep", "id")
PROBE_IMAGE_NAME = "localhost/modelguard/probe:test"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _existing_kubeconfig(config: pytest.Config) -> str | None:
    existing: str | None = config.getoption("--kubeconfig") or os.environ.get(
        "MODELGUARD_TEST_KUBECONFIG"
    )
    return existing


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[localcluster.LocalCluster | None]:
    """The session's local cluster (None when the tests run against an existing one): a real node
    next to the kwok nodes, unless MODELGUARD_TEST_NODE=kwok (`make test NODE=kwok`)."""
    if _existing_kubeconfig(request.config):
        yield None
        return
    state_dir = SESSION_DIR / "cluster"
    cluster = localcluster.LocalCluster(
        state_dir, node=os.environ.get("MODELGUARD_TEST_NODE", "real")
    )
    started = time.monotonic()
    cluster.start()
    print(
        f"\nlocal cluster ({cluster.node} node) up in {time.monotonic() - started:.1f}s"
        f" ({state_dir})",
        file=sys.stderr,
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        if request.session.testsfailed:
            print(f"\ncomponent logs kept in {cluster.logs_dir}", file=sys.stderr)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubeconfig(
    request: pytest.FixtureRequest, local_cluster: localcluster.LocalCluster | None
) -> Path:
    """An admin kubeconfig: the given cluster's, or that of the session's local cluster."""
    existing = _existing_kubeconfig(request.config)
    if existing:
        return Path(existing)
    assert local_cluster is not None
    return local_cluster.kubeconfig


@pytest.fixture(scope="session")
def real_node(local_cluster: localcluster.LocalCluster | None) -> localnode.RealNode:
    """The local cluster's real node: `.net` (its addresses), `.run()` (a command inside it),
    `.import_image()`; pods reach it with `localnode.placement()`."""
    if local_cluster is None or not local_cluster.with_real_node:
        pytest.skip("needs the local cluster's real node (this run uses an existing or kwok one)")
    return local_cluster.real_node


@pytest.fixture(scope="session")
def data_plane(request: pytest.FixtureRequest) -> Iterator[dataplane.DataPlane]:
    """A second local cluster whose data plane is real (hack/dataplane.py): the operator is the
    chart's pod, from the image built from this tree, on the cluster's real node, with its
    webhooks called through its Service; model pods run on that node; models come from MinIO in
    the cluster. A cluster of its own: the session's main cluster has an operator process
    reconciling every namespace, and two operators must never reconcile the same objects."""
    if _existing_kubeconfig(request.config) or os.environ.get("MODELGUARD_TEST_NODE", "real") != (
        "real"
    ):
        pytest.skip(
            "needs a local cluster with the real node (this run uses an existing or kwok one)"
        )
    state_dir = SESSION_DIR / "data-plane"
    cluster = localcluster.LocalCluster(state_dir, nodes=1)
    started = time.monotonic()
    cluster.start()
    up = time.monotonic() - started
    try:
        plane = dataplane.set_up(
            dataplane.Cluster(state_dir),
            log=lambda line: print(f"\ndataplane: {line}", file=sys.stderr),
        )
        figures = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in plane.figures.items())
        print(f"\ndata plane: cluster up in {up:.1f}s, {figures} ({state_dir})", file=sys.stderr)
        yield plane
    finally:
        with contextlib.suppress(localcluster.ClusterError, subprocess.SubprocessError):
            (state_dir / "logs" / "operator-pod.log").write_text(
                dataplane.operator_log(dataplane.Cluster(state_dir))
            )
        cluster.stop()
        if request.session.testsfailed:
            print(f"\ndata plane logs kept in {cluster.logs_dir}", file=sys.stderr)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def probe_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image for probes on the real node (Debian's static busybox: sh, nc, nslookup,
    httpd), as an OCI archive."""
    busybox = Path("/bin/busybox")
    layer = [oci.file("bin/busybox", source=busybox, mode=0o755)]
    layer += [oci.symlink(f"bin/{tool}", "busybox") for tool in PROBE_TOOLS]
    image = oci.build(
        layers=[layer],
        config=oci.Config(user="65532:65532", entrypoint=("/bin/sh",)),
        name=PROBE_IMAGE_NAME,
        out=tmp_path_factory.mktemp("images") / "probe.oci.tar",
    )
    return image.archive


@pytest.fixture(scope="session")
def probe_image(real_node: localnode.RealNode, probe_archive: Path) -> str:
    """The probe image imported into the real node; its `repo@sha256:` name."""
    real_node.import_image(probe_archive)
    return f"{PROBE_IMAGE_NAME.rsplit(':', 1)[0]}@{oci.manifest_digest(probe_archive)}"


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> harness.Kubectl:
    return harness.Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def helm(kubeconfig: Path) -> harness.Helm:
    return harness.Helm(kubeconfig)


def _create_namespace(kubectl: harness.Kubectl, name: str, labels: dict[str, str]) -> None:
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )


@pytest.fixture
def namespace(kubectl: harness.Kubectl) -> Iterator[str]:
    """A fresh namespace per test, enforcing Pod Security "restricted" like a hardened cluster."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    _create_namespace(kubectl, name, RESTRICTED)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def as_service_account(
    kubectl: harness.Kubectl, namespace: str, tmp_path: Path
) -> typing.Callable[[str], harness.Kubectl]:
    """Makes a ServiceAccount in the test's namespace and returns a kubectl acting as it."""

    def make(name: str) -> harness.Kubectl:
        kubectl.run("create", "serviceaccount", name, "-n", namespace)
        return harness.token_kubeconfig(
            kubectl, namespace=namespace, service_account=name, path=tmp_path / f"{name}.kubeconfig"
        )

    return make


@pytest.fixture(scope="session")
def chart_installed(kubectl: harness.Kubectl, helm: harness.Helm) -> str:
    """The chart installed with real helm into a restricted namespace; returns the namespace."""
    _create_namespace(kubectl, OPERATOR_NAMESPACE, RESTRICTED)
    helm.run(
        "upgrade",
        "--install",
        RELEASE,
        str(harness.CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        *harness.PINNED_IMAGE,
        # kwok pods serve nothing, so the chart's webhook Service would fail every managed write
        # closed; test_admission registers its own configuration against a real operator process.
        "--set",
        "webhook.enabled=false",
        "--set",
        f"backup.credentialsSecrets={{{','.join(BACKUP_CREDENTIALS)}}}",
        "--wait",
        "--timeout=180s",
    )
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="session")
def backup_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The operator's backup key (EC P-256, as the chart makes it): its path and public PEM."""
    return signedmodel.generate_key(tmp_path_factory.mktemp("backup-key"), name="backup")


@pytest.fixture(scope="session")
def backup_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the operator finds volume stores' claims (the chart mounts them so)."""
    return tmp_path_factory.mktemp("backup-volumes")


@pytest.fixture(scope="session")
def operator_token(
    kubectl: harness.Kubectl, chart_installed: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[localoperator.RenewedToken]:
    """The token of the session's operator: the chart's ServiceAccount's, in a file renewed as the
    kubelet renews a pod's projected token, each bound to the Secret `.binding` (deleting it
    revokes them at once; `.renew()` makes it again and writes a token bound to it)."""
    with localoperator.RenewedToken(
        admin_kubeconfig=kubectl.kubeconfig,
        namespace=chart_installed,
        service_account=RELEASE,
        path=tmp_path_factory.mktemp("operator-token") / "token",
        binding=OPERATOR_TOKEN_BINDING,
    ) as token:
        yield token


@pytest.fixture(scope="session")
def operator(
    kubectl: harness.Kubectl,
    chart_installed: str,
    operator_token: localoperator.RenewedToken,
    tmp_path_factory: pytest.TempPathFactory,
    backup_key: tuple[Path, str],
    backup_volumes: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    """`modelguard run` as a process, authenticated as the chart's ServiceAccount (not as admin),
    its kubeconfig's user reading the renewed token from its file (`tokenFile`)."""
    directory = tmp_path_factory.mktemp("operator")
    identity = harness.token_kubeconfig(
        kubectl,
        namespace=chart_installed,
        service_account=RELEASE,
        path=directory / "operator.kubeconfig",
        token_file=operator_token.path,
    )
    audit_key = directory / "audit.pem"
    audit_key.write_bytes(localoperator.audit_key_pem())
    log_path = OPERATOR_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KUBECONFIG": str(identity.kubeconfig),
        "POD_NAME": "modelguard-test",
        "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
        # Not the chart's default name: the message must carry what it is given.
        "MODELGUARD_SOURCE_CREDENTIALS_ROLE": "modelguard-test-source-credentials",
        # Verified bundles are read again this often (default 300): a replaced one is seen in tests.
        "MODELGUARD_BUNDLE_REREAD_SECONDS": str(BUNDLE_REREAD_SECONDS),
        # As the chart sets them: where store credentials live, and the backup key.
        "POD_NAMESPACE": chart_installed,
        "MODELGUARD_BACKUP_KEY_FILE": str(backup_key[0]),
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelguard.cli",
                "run",
                "--verbose",
                # Standard output would mix into the log below; tests read the records here.
                "--audit-log",
                str(log_path.with_name("audit.jsonl")),
                "--audit-key-file",
                str(audit_key),
                # As the chart names the log and stores its checkpoints, checkpointed every
                # AUDIT_CHECKPOINT_SECONDS so that tests see them come.
                *("--audit-log-name", localoperator.AUDIT_LOG_NAME),
                *("--audit-checkpoints-namespace", OPERATOR_NAMESPACE),
                *("--audit-checkpoints-prefix", f"{RELEASE}-audit"),
                *("--audit-checkpoint-seconds", str(AUDIT_CHECKPOINT_SECONDS)),
                # Scraped by test_operator_metrics.
                *("--metrics-addr", "127.0.0.1", "--metrics-port", str(OPERATOR_METRICS_PORT)),
                "--backup-volume-root",
                str(backup_volumes),
                "--drill-scratch-dir",
                str(directory / "drill-scratch"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        time.sleep(1)
        assert process.poll() is None, f"the operator exited at once; see {log_path}"
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def operator_metrics(operator: subprocess.Popen[bytes]) -> str:
    """The URL the session's operator serves its Prometheus metrics at."""
    del operator
    return f"http://127.0.0.1:{OPERATOR_METRICS_PORT}/metrics"


@pytest.fixture(scope="session")
def s3(request: pytest.FixtureRequest) -> Iterator[s3server.S3Server]:
    """A real S3-compatible server (MinIO) on loopback for the session, with random root
    credentials: `.endpoint`, `.credentials`, `.region`, `.create_bucket()`, `.put_object()`."""
    state_dir = SESSION_DIR / "s3"
    shutil.rmtree(state_dir, ignore_errors=True)
    server = s3server.S3Server(state_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\nminio log kept in {server.log}", file=sys.stderr)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3: s3server.S3Server) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The model signer the default TrustPolicy trusts: a key path and its public PEM."""
    return signedmodel.generate_key(tmp_path_factory.mktemp("keys"), name="ml-release")


@pytest.fixture(scope="session")
def approver_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The approver ("security") the default TrustPolicy trusts."""
    return signedmodel.generate_key(tmp_path_factory.mktemp("approver"), name="security")


@pytest.fixture(scope="session")
def model_sources(s3: s3server.S3Server) -> list[dict[str, str]]:
    """TrustPolicy sources admitting s3://models/ on the test's S3 server, which the policy names
    by its loopback address: the explicit opt-in that loopback needs."""
    return [signedmodel.s3_source(s3, MODEL_BUCKET)]


@pytest.fixture(scope="session")
def trust_policy(
    kubectl: harness.Kubectl,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> Iterator[str]:
    """The cluster's `default` TrustPolicy: the test signer, models only from s3://models/ on the
    test's S3 server, one approval by the test approver per version (the secure default,
    minApprovals 1)."""
    policy = signedmodel.trust_policy(
        name="default",
        public_key=signing_key[1],
        sources=model_sources,
        approver_key=approver_key[1],
    )
    kubectl.apply(policy)
    yield "default"
    kubectl.run("delete", "trustpolicy", "default", "--wait=false", check=False)


@pytest.fixture(scope="session")
def model_bucket(s3: s3server.S3Server) -> str:
    s3.create_bucket(MODEL_BUCKET)
    return MODEL_BUCKET


PublishModel = typing.Callable[..., str]


@pytest.fixture
def publish_model(
    s3: s3server.S3Server,
    model_bucket: str,
    signing_key: tuple[Path, str],
    approver_key: tuple[Path, str],
    kubectl: harness.Kubectl,
    tmp_path: Path,
    namespace: str,
) -> PublishModel:
    """Signs a model with the trusted key (or `key`), optionally tampers with the files after
    signing, uploads both to the test's own prefix, approves the version in the test's namespace
    (unless `approve=False`), and returns the source URI."""

    def publish(
        version: str = "1.4.0",
        *,
        files: dict[str, bytes] | None = None,
        tamper: typing.Callable[[dict[str, bytes]], dict[str, bytes]] | None = None,
        key: Path | None = None,
        approve: bool = True,
    ) -> str:
        content = files if files is not None else signedmodel.demo_files(version)
        directory = tmp_path / f"model-{uuid.uuid4().hex[:8]}"
        signedmodel.write_model(directory / "m", content)
        signature = signedmodel.sign(
            directory / "m", private_key=key or signing_key[0], signature=directory / "model.sig"
        )
        if approve:
            kubectl.apply(
                signedmodel.approval(
                    private_key=approver_key[0],
                    namespace=namespace,
                    model="sentiment-bert",
                    version=version,
                    digest=signedmodel.root_digest(signature),
                    expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
                    name=f"sentiment-bert-{version.replace('.', '-')}-{uuid.uuid4().hex[:6]}",
                ),
                namespace=namespace,
            )
        return signedmodel.publish(
            s3,
            bucket=model_bucket,
            prefix=f"{namespace}/sentiment-bert/{version}",
            files=tamper(dict(content)) if tamper else content,
            signature=signature,
        )

    return publish


@pytest.fixture
def source_credentials(
    kubectl: harness.Kubectl, namespace: str, s3: s3server.S3Server, chart_installed: str
) -> str:
    """The storage Secret in the test's namespace, and the RoleBinding that lets the operator
    (and only it) read it: the per-namespace grant the chart documents."""
    kubectl.apply(signedmodel.credentials_secret(s3, name=CREDENTIALS_SECRET), namespace=namespace)
    kubectl.run(
        "create",
        "rolebinding",
        "modelguard-source-credentials",
        "-n",
        namespace,
        f"--clusterrole={RELEASE}-source-credentials",
        f"--serviceaccount={chart_installed}:{RELEASE}",
    )
    return CREDENTIALS_SECRET
