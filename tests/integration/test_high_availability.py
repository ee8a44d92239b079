"""Several operator replicas on a real control plane: one holds the Lease and reconciles, every one
serves the admission webhooks from caches kept warm; when the holder goes (stopped, or killed
outright), another takes over and models keep converging.

Three `modelguard run` processes, each as the chart's ServiceAccount and with the chart's
`--leader-election-lease`, on a cluster of their own (kwok nodes), so that the session's
operator, which reconciles every namespace of the session's cluster, is not disturbed. Failover
times are printed (measured, not asserted beyond a generous functional deadline)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import typing
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

import localcluster
import localoperator
import s3server
import signedmodel
import webhookconfig
from modelguard.admission import certs

OPERATOR_NAMESPACE = "modelguard-system"
RELEASE = "modelguard"
LEASE = RELEASE  # what the chart passes: --leader-election-lease=<fullname>
MODELS = "ha-models"
REPLICAS = 3
AGENT_IMAGE = f"{harness.IMAGE_REPOSITORY}@{harness.IMAGE_DIGEST}"
DIGEST = "sha256:" + "4f" * 32
# Far above the expected figures (a stopped holder: about 2 s; a killed one: 15 to 20 s): only a
# failover that does not happen fails the test.
FAILOVER_DEADLINE = 120

Manifest = dict[str, typing.Any]


@dataclasses.dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    audit_log: Path
    metrics: str
    webhook_port: int

    def leader_metric(self) -> float | None:
        try:
            with urllib.request.urlopen(self.metrics, timeout=5) as answer:  # noqa: S310
                text = answer.read().decode()
        except OSError:
            return None
        found = re.search(r"^modelguard_leader (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else None

    def webhook_requests(self, decision: str) -> float:
        with urllib.request.urlopen(self.metrics, timeout=5) as answer:  # noqa: S310
            text = answer.read().decode()
        pattern = (
            r'^modelguard_webhook_requests_total\{decision="'
            + decision
            + r'",webhook="model-deployment"\} (\S+)$'
        )
        return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclasses.dataclass
class Fleet:
    kubectl: harness.Kubectl
    replicas: dict[str, Replica]
    tls_ca: bytes

    def lease(self) -> Manifest:
        found: Manifest = self.kubectl.json("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE)
        return found

    def holder(self) -> str | None:
        """The pod name of the replica holding the Lease (identities are `<pod>_<random>`)."""
        try:
            identity = str(self.lease()["spec"].get("holderIdentity") or "")
        except subprocess.CalledProcessError:
            return None
        return identity.rsplit("_", 1)[0] or None

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.process.poll() is None]


def _free_port() -> int:
    return localcluster.free_port()


def _start_replica(
    *, name: str, directory: Path, kubeconfig: Path, tls: Path, client_ca: Path
) -> Replica:
    audit_key = directory / "audit.pem"
    if not audit_key.exists():
        audit_key.write_bytes(localoperator.audit_key_pem())
    metrics_port, webhook_port = _free_port(), _free_port()
    log = directory / f"{name}.log"
    audit_log = directory / f"{name}.audit.jsonl"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "POD_NAME": name,
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelguard.cli",
                "run",
                "--verbose",
                f"--leader-election-lease={LEASE}",
                *("--audit-log", str(audit_log)),
                *("--audit-key-file", str(audit_key)),
                *("--audit-log-name", f"{OPERATOR_NAMESPACE}/{RELEASE}"),
                *("--audit-checkpoints-namespace", OPERATOR_NAMESPACE),
                *("--audit-checkpoints-prefix", f"{RELEASE}-audit"),
                *("--metrics-addr", "127.0.0.1", "--metrics-port", str(metrics_port)),
                f"--webhook-port={webhook_port}",
                "--webhook-addr=127.0.0.1",
                f"--webhook-cert-dir={tls}",
                f"--operator-username=system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}",
                f"--webhook-client-ca={client_ca}",
                f"--webhook-client-name={localcluster.WEBHOOK_CLIENT_NAME}",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Replica(
        name=name,
        process=process,
        log=log,
        audit_log=audit_log,
        metrics=f"http://127.0.0.1:{metrics_port}/metrics",
        webhook_port=webhook_port,
    )


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    s3: s3server.S3Server,
    model_bucket: str,
    signing_key: tuple[Path, str],
    model_sources: list[dict[str, str]],
) -> Iterator[Fleet]:
    cluster = localcluster.LocalCluster(tmp_path_factory.mktemp("ha-cluster"), node="kwok")
    started = time.monotonic()
    cluster.start()
    print(f"\nHA cluster up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    directory = tmp_path_factory.mktemp("ha")
    replicas: dict[str, Replica] = {}
    try:
        kubectl = harness.Kubectl(cluster.kubeconfig)
        helm = harness.Helm(cluster.kubeconfig)
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": OPERATOR_NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        )
        # As the session installs it (no webhook Service: kwok pods answer nothing), with the
        # chart's defaults otherwise: two replicas, the Lease's Role.
        helm.run(
            *("upgrade", "--install", RELEASE, str(harness.CHART)),
            *("--namespace", OPERATOR_NAMESPACE, *harness.PINNED_IMAGE),
            *("--set", "webhook.enabled=false", "--wait", "--timeout=180s"),
        )
        kubectl.apply(
            signedmodel.trust_policy(
                name="default", public_key=signing_key[1], sources=model_sources
            )
        )
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MODELS}})
        kubectl.apply(signedmodel.credentials_secret(s3, name="models-readonly"), namespace=MODELS)
        kubectl.run(
            *("create", "rolebinding", "modelguard-source-credentials", "-n", MODELS),
            f"--clusterrole={RELEASE}-source-credentials",
            f"--serviceaccount={OPERATOR_NAMESPACE}:{RELEASE}",
        )
        identity = localoperator.service_account_kubeconfig(
            admin_kubeconfig=cluster.kubeconfig,
            namespace=OPERATOR_NAMESPACE,
            service_account=RELEASE,
            path=directory / "operator.kubeconfig",
        )
        bundle = certs.generate(ip_addresses=["127.0.0.1"])
        certs.write(bundle, directory / "tls")
        client_ca = localcluster.webhook_client_ca(cluster.kubeconfig)
        for index in range(REPLICAS):
            name = f"modelguard-ha-{index}"
            replicas[name] = _start_replica(
                name=name,
                directory=directory,
                kubeconfig=identity,
                tls=directory / "tls",
                client_ca=client_ca,
            )
        yield Fleet(kubectl=kubectl, replicas=replicas, tls_ca=bundle.ca)
    finally:
        for replica in replicas.values():
            replica.stop()
        cluster.stop()
        print(f"\nHA replicas' logs: {directory}", file=sys.stderr)


def _model(name: str, *, source: str, **spec: typing.Any) -> Manifest:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": MODELS},
        "spec": {
            "model": {
                "name": "sentiment-bert",
                "version": "1.4.0",
                "source": {"uri": source, "credentialsSecret": "models-readonly"},
            },
            "serving": {"image": f"registry.example/model-server@{DIGEST}", "replicas": 1},
            **spec,
        },
    }


@pytest.fixture(scope="module")
def source(
    s3: s3server.S3Server,
    model_bucket: str,
    signing_key: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    directory = tmp_path_factory.mktemp("ha-model")
    files = signedmodel.demo_files("1.4.0")
    signedmodel.write_model(directory / "m", files)
    signature = signedmodel.sign(
        directory / "m", private_key=signing_key[0], signature=directory / "model.sig"
    )
    return signedmodel.publish(
        s3,
        bucket=model_bucket,
        prefix=f"ha-{uuid.uuid4().hex[:8]}/sentiment-bert/1.4.0",
        files=files,
        signature=signature,
    )


def _ready(kubectl: harness.Kubectl, name: str) -> bool:
    body = kubectl.json("get", "modeldeployment", name, "-n", MODELS)
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _reporters(kubectl: harness.Kubectl, model: str) -> set[str]:
    """The replicas that posted Events about `model` (each names itself: reportingInstance)."""
    events = kubectl.json("get", "events.events.k8s.io", "-n", MODELS)["items"]
    return {
        str(e.get("reportingInstance"))
        for e in events
        if e.get("regarding", {}).get("name") == model
        and e.get("reportingController") == "modelguard.dev/operator"
    }


def _audited(replica: Replica, model: str) -> bool:
    """Whether the replica's audit log holds a decision about `model`."""
    if not replica.audit_log.exists():
        return False
    for line in replica.audit_log.read_text().splitlines():
        subject = json.loads(line).get("object") or {}
        if (subject.get("namespace"), subject.get("name")) == (MODELS, model):
            return True
    return False


def _wait_for_one_holder(fleet: Fleet) -> str:
    holder: list[str] = []

    def held() -> None:
        name = fleet.holder()
        assert name in fleet.replicas, f"the Lease names {name!r}"
        assert fleet.replicas[name].process.poll() is None
        holder[:] = [name]

    harness.eventually(held, timeout=90, interval=0.5)
    return holder[0]


def test_one_replica_holds_the_lease_and_it_alone_reconciles(fleet: Fleet, source: str) -> None:
    leader = _wait_for_one_holder(fleet)
    lease = fleet.lease()["spec"]
    assert lease["leaseDurationSeconds"] == 15

    def metrics_agree() -> None:
        figures = {r.name: r.leader_metric() for r in fleet.alive()}
        assert figures == {name: (1.0 if name == leader else 0.0) for name in figures}

    harness.eventually(metrics_agree, timeout=30)
    fleet.kubectl.apply(_model("first", source=source))
    harness.eventually(lambda: _assert(_ready(fleet.kubectl, "first")), timeout=120)
    # Every Event about it comes from the leader, and only its audit log records it.
    assert _reporters(fleet.kubectl, "first") == {leader}
    audited = {r.name for r in fleet.replicas.values() if _audited(r, "first")}
    assert audited == {leader}

    # The standbys watched it all the same: their caches know the model (the webhooks' index),
    # once each has listed (a replica started late on a loaded machine lists later).
    def warm() -> None:
        for replica in fleet.alive():
            assert _cache_entries(replica, "policies_by_model") >= 1, replica.name

    harness.eventually(warm, timeout=60)


def _assert(condition: bool) -> None:
    assert condition


def _cache_entries(replica: Replica, index: str) -> float:
    with urllib.request.urlopen(replica.metrics, timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    found = re.search(
        r'^modelguard_admission_cache_entries\{index="' + index + r'"\} (\S+)$', text, re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


def test_a_standby_answers_admission_from_warm_caches(fleet: Fleet, source: str) -> None:
    leader = _wait_for_one_holder(fleet)
    standby = next(r for r in fleet.alive() if r.name != leader)
    name = f"modelguard-ha-admission-{os.getpid()}"
    fleet.kubectl.apply(
        webhookconfig.loopback(
            name=name, port=standby.webhook_port, ca=fleet.tls_ca, namespace=OPERATOR_NAMESPACE
        )
    )
    try:
        denied_before = standby.webhook_requests("denied")
        allowed_before = standby.webhook_requests("allowed")

        def answered() -> None:
            # A policy that does not exist is refused only from a cache that holds every policy.
            refused = fleet.kubectl.apply(
                _model("nowhere", source=source, trustPolicy="does-not-exist"), check=False
            )
            assert refused.returncode != 0
            assert "does-not-exist" in refused.stderr, refused.stderr
            assert "denied the request" in refused.stderr

        harness.eventually(answered, timeout=30)
        fleet.kubectl.apply(_model("second", source=source))
        assert standby.webhook_requests("denied") > denied_before
        assert standby.webhook_requests("allowed") > allowed_before
        harness.eventually(lambda: _assert(_ready(fleet.kubectl, "second")), timeout=120)
        assert _reporters(fleet.kubectl, "second") == {leader}
    finally:
        fleet.kubectl.run("delete", "validatingwebhookconfiguration", name, check=False)


def _take_over(
    fleet: Fleet, *, stop: int, model: str, source: str
) -> tuple[str, str, float, float]:
    """Stops the holder with `stop`, creates `model` at once; returns (old, new holder, seconds
    until the Lease changed hands, seconds until `model` was Ready)."""
    old = _wait_for_one_holder(fleet)
    transitions = int(fleet.lease()["spec"].get("leaseTransitions") or 0)
    stopped_at = time.monotonic()
    fleet.replicas[old].stop(stop)
    fleet.kubectl.apply(_model(model, source=source))
    new: list[str] = []
    handed_over: list[float] = []
    deadline = stopped_at + FAILOVER_DEADLINE
    while time.monotonic() < deadline and not (handed_over and _ready(fleet.kubectl, model)):
        if not handed_over:
            holder = fleet.holder()
            if holder is not None and holder != old:
                handed_over.append(time.monotonic() - stopped_at)
                new.append(holder)
        time.sleep(0.25)
    assert handed_over, f"no replica took the Lease over within {FAILOVER_DEADLINE}s"
    assert _ready(fleet.kubectl, model), f"{model} not Ready within {FAILOVER_DEADLINE}s"
    ready_after = time.monotonic() - stopped_at
    assert new[0] in fleet.replicas
    assert fleet.replicas[new[0]].process.poll() is None
    assert int(fleet.lease()["spec"]["leaseTransitions"]) == transitions + 1
    # Made by the new holder alone.
    assert _reporters(fleet.kubectl, model) == {new[0]}
    return old, new[0], handed_over[0], ready_after


def test_a_stopped_holder_hands_the_lease_over_and_a_killed_one_is_taken_over(
    fleet: Fleet, source: str
) -> None:
    old, new, handed, ready = _take_over(fleet, stop=signal.SIGTERM, model="third", source=source)
    print(
        f"\nfailover, holder stopped (SIGTERM, Lease released): {old} -> {new}: Lease taken after"
        f" {handed:.1f}s, a model created at the stop Ready after {ready:.1f}s",
        file=sys.stderr,
    )
    old, new, handed, ready = _take_over(fleet, stop=signal.SIGKILL, model="fourth", source=source)
    print(
        f"failover, holder killed (SIGKILL, Lease left to expire, 15 s): {old} -> {new}: Lease"
        f" taken after {handed:.1f}s, a model created at the kill Ready after {ready:.1f}s",
        file=sys.stderr,
    )
    # The one replica left reconciles what the others made too: every model is still Ready.
    for model in ("first", "second", "third", "fourth"):
        assert _ready(fleet.kubectl, model), model
    (survivor,) = fleet.alive()
    assert survivor.name == new
    assert survivor.leader_metric() == 1.0
