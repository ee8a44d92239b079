"""What GitOps tools make of the objects the operator really writes, read back from the API
server: kstatus (Flux, kpt) and Argo CD's health checks (manifests/gitops/argocd, run in
gopher-lua as Argo CD runs them), by their own code (tests/gitopshealth). And every change of a
condition is told by an Event with its reason."""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path

import harness
import pytest
from test_modeldeployment import model_deployment, wait_ready

import gotest
import signedmodel

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")

SOURCE = harness.REPO_ROOT / "tests" / "gitopshealth"
CHECKS = harness.REPO_ROOT / "manifests" / "gitops" / "argocd"
Manifest = dict[str, typing.Any]


@pytest.fixture(scope="module")
def gitopshealth() -> Path:
    return gotest.build(SOURCE)


def read(binary: Path, objects: list[Manifest]) -> list[Manifest]:
    done = subprocess.run(
        [str(binary), "objects", str(CHECKS)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: list[Manifest] = json.loads(done.stdout)
    return answer


def _settled(kubectl: harness.Kubectl, namespace: str, name: str, stalled: str | None) -> Manifest:
    """The model once the operator has decided its generation: Stalled with `stalled` as reason
    (None: not stalled)."""
    found: Manifest = {}

    def decided() -> None:
        body = kubectl.get("modeldeployment", name, namespace=namespace)
        assert body["status"].get("observedGeneration") == body["metadata"]["generation"]
        condition = harness.condition(body, "Stalled")
        assert condition, "no Stalled condition yet"
        if stalled is None:
            assert condition["status"] == "False", condition
        else:
            assert (condition["status"], condition["reason"]) == ("True", stalled), condition
        found.update(body)

    harness.eventually(decided, timeout=90, interval=0.5)
    return found


def test_kstatus_and_argo_cd_read_what_the_operator_writes(
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: typing.Callable[..., str],
    tmp_path: Path,
    gitopshealth: Path,
) -> None:
    served = publish_model("1.4.0")
    kubectl.apply(model_deployment("served", source=served), namespace=namespace)
    kubectl.apply(
        model_deployment("quarantined", source=served, quarantine=True), namespace=namespace
    )
    awaiting = publish_model("1.5.0", approve=False)
    kubectl.apply(
        model_deployment("awaiting", source=awaiting, version="1.5.0"), namespace=namespace
    )
    untrusted = publish_model("1.6.0", key=signedmodel.generate_key(tmp_path)[0])
    kubectl.apply(
        model_deployment("untrusted", source=untrusted, version="1.6.0"), namespace=namespace
    )
    kubectl.apply(
        model_deployment("broad", source=served, access={"ingress": [{"namespaceSelector": {}}]}),
        namespace=namespace,
    )
    kubectl.apply(
        model_deployment("no-policy", source=served, trustPolicy="nobody-wrote-it"),
        namespace=namespace,
    )

    wait_ready(kubectl, namespace, "served")
    objects = {
        "served": _settled(kubectl, namespace, "served", None),
        "awaiting": _settled(kubectl, namespace, "awaiting", None),
        "untrusted": _settled(kubectl, namespace, "untrusted", "UntrustedSigner"),
        "broad": _settled(kubectl, namespace, "broad", "BroadAccessRefused"),
        "no-policy": _settled(kubectl, namespace, "no-policy", "PolicyNotFound"),
        "quarantined": _settled(kubectl, namespace, "quarantined", "Quarantined"),
    }
    approvals = kubectl.json("get", "modelapprovals", "-n", namespace)["items"]
    policy = kubectl.json("get", "trustpolicy", "default")
    results = read(gitopshealth, [*objects.values(), *approvals, policy])
    seen = {
        result["name"]: (result["kstatus"]["status"], result["argocdOpenLibs"]["status"])
        for result in results
    }
    assert {name: seen[name] for name in objects} == {
        "served": ("Current", "Healthy"),
        "awaiting": ("InProgress", "Progressing"),
        "untrusted": ("Failed", "Degraded"),
        "broad": ("Failed", "Degraded"),
        "no-policy": ("Failed", "Degraded"),
        "quarantined": ("Failed", "Suspended"),
    }
    for result in results:
        # The default set-up of argocd-cm (no standard library) says the same of models.
        if result["kind"] == "ModelDeployment":
            assert result["argocd"] == result["argocdOpenLibs"], result
        # Every check runs on what the API server hands out.
        assert result["argocdOpenLibs"]["status"] != "Unknown", result
    for approval in approvals:
        assert seen[approval["metadata"]["name"]][1] == "Healthy"
    assert seen["default"] == ("Current", "Healthy")
    # kstatus says what Stalled says: the reason a person must act on.
    failed = next(r for r in results if r["name"] == "untrusted")
    stalled = harness.condition(objects["untrusted"], "Stalled")
    assert failed["kstatus"]["message"] == stalled["message"]
    assert "UntrustedSigner" in failed["argocd"]["message"]


def test_every_condition_change_posts_an_event_with_its_reason(
    kubectl: harness.Kubectl, namespace: str, publish_model: typing.Callable[..., str]
) -> None:
    """A version held for its approval, then quarantined, then lifted: each change of a
    condition's status or reason is an Event with that reason."""
    source = publish_model("1.4.0")
    kubectl.apply(model_deployment("m", source=source), namespace=namespace)
    wait_ready(kubectl, namespace, "m")
    kubectl.apply(model_deployment("m", source=source, quarantine=True), namespace=namespace)
    _settled(kubectl, namespace, "m", "Quarantined")
    kubectl.apply(model_deployment("m", source=source, quarantine=False), namespace=namespace)
    wait_ready(kubectl, namespace, "m")

    def told() -> None:
        events = harness.model_events(kubectl, namespace, "m")
        reasons = {(event["reason"], event["type"]) for event in events}
        # Ready: Progressing -> Available -> Quarantined (a change of reason while False would
        # be told too) -> Available again; Stalled's Quarantined is Ready's reason, told once.
        assert ("Available", "Normal") in reasons, reasons
        assert ("Quarantined", "Warning") in reasons, reasons
        assert ("SignatureVerified", "Normal") in reasons, reasons
        assert ("Approved", "Normal") in reasons, reasons
        quarantined = [e for e in events if e["reason"] == "Quarantined"]
        assert {e["action"] for e in quarantined} == {"Rollout"}, quarantined

    harness.eventually(told, timeout=60, interval=0.5)
