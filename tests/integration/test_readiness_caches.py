"""A replica whose caches are not filled is not Ready, and its webhooks refuse rather than judge
from a partial view, against a real API server.

The caches are kept from filling for good: the replica runs as a ServiceAccount granted the
chart's permissions except listing pods, so kopf's first listing never completes (one index is
of model pods). Its ModelDeployment webhook is registered for one namespace only, so that the
session's other tests never meet it."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest

import localcluster
import localoperator
import webhookconfig
from modelguard.admission import certs

AGENT_IMAGE = "registry.example/modelguard@sha256:" + "0" * 64
DIGEST = "sha256:" + "4f" * 32
BLIND = "modelguard-no-pods"


def _readiness(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _without_pods(rules: list[dict[str, typing.Any]]) -> list[dict[str, typing.Any]]:
    kept = []
    for granted in rules:
        rule = copy.deepcopy(granted)
        if "" in rule.get("apiGroups", []) and "pods" in rule.get("resources", []):
            rule["resources"] = [r for r in rule["resources"] if r != "pods"]
            if not rule["resources"]:
                continue
        kept.append(rule)
    return kept


@pytest.fixture
def blind_operator(
    kubectl: harness.Kubectl, chart_installed: str, namespace: str, tmp_path: Path
) -> Iterator[str]:
    """`modelguard run` that cannot list pods, serving the ModelDeployment webhook for
    `namespace`; yields its readiness URL once its webhook listens."""
    rules = kubectl.json("get", "clusterrole", "modelguard")["rules"]
    name = f"{BLIND}-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "serviceaccount", name, "-n", chart_installed)
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": _without_pods(rules),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": chart_installed}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": chart_installed},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "modelguard-audit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": chart_installed}],
        },
    )
    identity = harness.token_kubeconfig(
        kubectl, namespace=chart_installed, service_account=name, path=tmp_path / "kubeconfig"
    )
    certs.write(bundle := certs.generate(ip_addresses=["127.0.0.1"]), tmp_path / "tls")
    audit_key = tmp_path / "audit.pem"
    audit_key.write_bytes(localoperator.audit_key_pem())
    port, ready_port = localcluster.free_port(), localcluster.free_port()
    readiness = f"http://127.0.0.1:{ready_port}/readyz"
    log = tmp_path / "operator.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "modelguard.cli", "run", "--verbose"),
                f"--namespace={namespace}",
                f"--webhook-port={port}",
                "--webhook-addr=127.0.0.1",
                f"--webhook-cert-dir={tmp_path / 'tls'}",
                f"--operator-username=system:serviceaccount:{chart_installed}:{name}",
                f"--readiness={readiness}",
                f"--audit-log={tmp_path / 'audit.jsonl'}",
                f"--audit-key-file={audit_key}",
                # A log of its own, checkpointed where the chart's Role lets it.
                f"--audit-log-name={chart_installed}/{name}",
                f"--audit-checkpoints-namespace={chart_installed}",
                "--audit-checkpoints-prefix=modelguard-audit",
            ],
            env={
                **os.environ,
                "KUBECONFIG": str(identity.kubeconfig),
                "POD_NAME": name,
                "MODELGUARD_AGENT_IMAGE": AGENT_IMAGE,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    config = webhookconfig.loopback(name=name, port=port, ca=bundle.ca, namespace=chart_installed)
    config["webhooks"] = [
        {
            **webhook,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        }
        for webhook in config["webhooks"]
        if webhook["clientConfig"]["url"].endswith("/model-deployment")
    ]
    try:
        deadline = time.monotonic() + 60
        while _readiness(readiness) == 0:
            assert process.poll() is None, f"the operator exited; see {log}"
            assert time.monotonic() < deadline, f"no readiness endpoint; see {log}"
            time.sleep(0.25)
        kubectl.apply(config)
        yield readiness
    finally:
        kubectl.run("delete", "validatingwebhookconfiguration", name, check=False)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        kubectl.run("delete", "clusterrolebinding,clusterrole", name, check=False)
        kubectl.run(
            "delete", "rolebinding,serviceaccount", name, "-n", chart_installed, check=False
        )
        print(f"\noperator log: {log}", file=sys.stderr)


def test_a_replica_whose_caches_are_not_filled_is_not_ready_and_refuses(
    kubectl: harness.Kubectl, namespace: str, blind_operator: str
) -> None:
    # Named a TrustPolicy that does not exist: what a replica with a full cache refuses, and
    # one with an empty cache used to admit.
    model = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "early"},
        "spec": {
            "model": {
                "name": "early",
                "version": "1",
                "source": {"uri": "s3://models/early/", "credentialsSecret": "store"},
            },
            "serving": {"image": f"registry.example/model-server@{DIGEST}", "replicas": 1},
            "trustPolicy": f"missing-{uuid.uuid4().hex[:6]}",
        },
    }

    def refused() -> None:
        result = kubectl.apply(model, namespace=namespace, check=False)
        assert result.returncode != 0, "admitted"
        assert "caches not yet filled" in result.stderr, result.stderr

    harness.eventually(refused, timeout=30)
    # Not Ready all along: the listing never completes.
    for _ in range(3):
        assert _readiness(blind_operator) == 503
        time.sleep(1)
