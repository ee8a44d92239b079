"""The running operator's metrics, scraped over HTTP as Prometheus scrapes them and read with
prometheus_client's own text-format parser: the series exist, and they move as the operator
decides (a signer refused, a model rolled out, a version held for approval, a quarantine, a
model deleted)."""

from __future__ import annotations

import json
import re
import typing
import urllib.request
from pathlib import Path

import harness
import pytest
from prometheus_client import parser
from test_modeldeployment import SELECTOR, model_deployment, wait_ready

import signedmodel
from modelguard.admission import webhooks
from modelguard.agent import fetchverify

pytestmark = pytest.mark.usefixtures("operator", "trust_policy", "source_credentials")


TRUST_POLICIES_INDEX = webhooks.TRUST_POLICIES
DASHBOARD = harness.REPO_ROOT / "charts" / "modelguard" / "dashboards" / "modelguard.json"
Families = dict[str, typing.Any]
Scrape = typing.Callable[[], Families]


@pytest.fixture
def scrape(operator_metrics: str) -> Scrape:
    """Scrapes the session's operator, as Prometheus does, and parses what it says."""

    return lambda: scrape_url(operator_metrics)


def scrape_url(url: str) -> Families:
    """The metric families served at `url`, read by prometheus_client's text-format parser."""
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
        text = answer.read().decode()
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def value(families: Families, sample: str, **labels: str) -> float:
    """The sum of `sample`'s values whose labels include `labels` (0 when there is none)."""
    family = re.sub(r"_(total|count|sum|bucket)$", "", sample)
    found = families.get(family) or families.get(sample)
    if found is None:
        return 0.0
    return sum(
        s.value for s in found.samples if s.name == sample and labels.items() <= s.labels.items()
    )


def _grows(scrape: Scrape, sample: str, before: Families, *, by: float = 1, **labels: str) -> None:
    def grown() -> None:
        now = value(scrape(), sample, **labels)
        assert now >= value(before, sample, **labels) + by, (sample, labels, now)

    harness.eventually(grown, timeout=60, interval=0.5)


def _at_least(scrape: Scrape, sample: str, minimum: float, **labels: str) -> None:
    def reached() -> None:
        now = value(scrape(), sample, **labels)
        assert now >= minimum, (sample, labels, now)

    harness.eventually(reached, timeout=60, interval=0.5)


def test_the_series_exist_with_their_types(scrape: Scrape) -> None:
    families = scrape()
    expected = {
        "modelguard_reconcile_duration_seconds": "histogram",
        "modelguard_verifications": "counter",
        "modelguard_model_deployments": "gauge",
        "modelguard_rollouts_held": "gauge",
        "modelguard_quarantined_model_deployments": "gauge",
        "modelguard_stalled_model_deployments": "gauge",
        "modelguard_approvals_expiring": "gauge",
        "modelguard_reconciles_in_flight": "gauge",
        "modelguard_reconcile_queue_depth": "gauge",
        "modelguard_verification_slots": "gauge",
        "modelguard_verification_cache_entries": "gauge",
        "modelguard_admission_cache_entries": "gauge",
        "modelguard_audit_records": "counter",
        "modelguard_audit_checkpoints": "counter",
        "modelguard_audit_checkpoints_pending": "gauge",
        "process_resident_memory_bytes": "gauge",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    # The operator started a segment of its audit log and published its first checkpoint.
    assert value(families, "modelguard_audit_records_total", decision="AuditChainStarted") == 1
    _at_least(scrape, "modelguard_audit_checkpoints_total", 1, result="published")


def test_series_move_as_the_operator_decides(
    scrape: Scrape,
    kubectl: harness.Kubectl,
    namespace: str,
    publish_model: typing.Callable[..., str],
    tmp_path: Path,
) -> None:
    before = scrape()

    # A signer the policy does not trust: refused, recorded, stalled.
    untrusted = publish_model("1.4.0", key=signedmodel.generate_key(tmp_path)[0])
    kubectl.apply(model_deployment("untrusted", source=untrusted), namespace=namespace)
    _grows(
        scrape, "modelguard_verifications_total", before, result="refused", reason="UntrustedSigner"
    )
    _grows(scrape, "modelguard_audit_records_total", before, decision="VerificationRefused")
    _at_least(scrape, "modelguard_stalled_model_deployments", 1, reason="UntrustedSigner")
    _grows(scrape, "modelguard_reconcile_duration_seconds_count", before, outcome="Hold")

    # A signed, approved version: verified and rolled out.
    trusted = publish_model("1.5.0")
    kubectl.apply(model_deployment("served", source=trusted, version="1.5.0"), namespace=namespace)
    wait_ready(kubectl, namespace, "served")
    _grows(
        scrape,
        "modelguard_verifications_total",
        before,
        result="verified",
        reason="SignatureVerified",
    )
    _grows(scrape, "modelguard_audit_records_total", before, decision="RolledOut")
    _at_least(scrape, "modelguard_model_deployments", 1, ready="True", reason="Available")
    _grows(scrape, "modelguard_reconcile_duration_seconds_count", before, outcome="RollOut")
    # Its approval expires in a day: within the 7-day window, and a recheck waits for it.
    _at_least(scrape, "modelguard_approvals_expiring", 1, within="7d")
    _at_least(scrape, "modelguard_reconcile_queue_depth", 1, queue="rechecks")
    # Caches hold what was verified, and what the webhooks answer from.
    _at_least(scrape, "modelguard_verification_cache_entries", 1, table="bundles")
    _at_least(scrape, "modelguard_admission_cache_entries", 1, index=TRUST_POLICIES_INDEX)

    # A second model of the same version, whose pod's agent reports its runs.
    kubectl.apply(
        model_deployment("tampered", source=trusted, version="1.5.0"), namespace=namespace
    )
    wait_ready(kubectl, namespace, "tampered")
    _agent_runs_are_counted(scrape, kubectl, namespace, "tampered", before)

    # A version nobody approved: held, what serves keeps serving.
    held = publish_model("1.6.0", approve=False)
    kubectl.apply(model_deployment("held", source=held, version="1.6.0"), namespace=namespace)
    _at_least(scrape, "modelguard_rollouts_held", 1, reason="NotApproved")

    # A quarantine through the spec.
    during = scrape()
    kubectl.run(
        "patch", "modeldeployment", "served", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"quarantine": true}}',
    )  # fmt: skip
    _grows(scrape, "modelguard_quarantines_total", during, trigger="spec", reason="SpecQuarantine")
    _at_least(scrape, "modelguard_quarantined_model_deployments", 1, trigger="spec")

    # A deleted model takes its state along.
    stalled = value(scrape(), "modelguard_stalled_model_deployments", reason="UntrustedSigner")
    kubectl.run("delete", "modeldeployment", "untrusted", "-n", namespace)

    def forgotten() -> None:
        now = value(scrape(), "modelguard_stalled_model_deployments", reason="UntrustedSigner")
        assert now <= stalled - 1, now

    harness.eventually(forgotten, timeout=60, interval=0.5)
    # No series names a model or a namespace.
    for family in scrape().values():
        for sample in family.samples:
            assert namespace not in json.dumps(sample.labels), sample
    _dashboard_finds_every_series(scrape())


def _agent_runs_are_counted(
    scrape: Scrape, kubectl: harness.Kubectl, namespace: str, model: str, before: Families
) -> None:
    """The model's pod reports its agent's runs: a verified one, then a refusal after a
    restart, which quarantines the model."""
    # Its pod's agent fetched and verified the files: the kubelet reports the run with the
    # summary line the agent leaves as its termination message.
    (pod, *_) = kubectl.json("get", "pods", "-n", namespace, "-l", f"{SELECTOR}={model}")["items"]
    summary = fetchverify.Summary(root_digest=bytes(32), files=3, bytes=4096, seconds=1.25)
    verified_run = _agent_ended(exit_code=0, message=summary.line(), container="containerd://a1")
    _report_agent(kubectl, namespace, pod, state=verified_run)
    verified = {"result": "verified", "reason": "SignatureVerified"}
    _grows(scrape, "modelguard_agent_fetch_verify_total", before, **verified)
    _grows(scrape, "modelguard_agent_fetched_bytes_total", before, by=4096)
    _grows(
        scrape, "modelguard_agent_fetch_verify_duration_seconds_count", before, result="verified"
    )
    counted = scrape()
    # Read again by every pass over the model, the same run is counted once.
    passes = value(counted, "modelguard_reconcile_duration_seconds_count")
    kubectl.run("annotate", "pod", pod["metadata"]["name"], "-n", namespace, "touched=1")
    _at_least(scrape, "modelguard_reconcile_duration_seconds_count", passes + 1)
    assert value(scrape(), "modelguard_agent_fetch_verify_total", **verified) == value(
        counted, "modelguard_agent_fetch_verify_total", **verified
    )
    # The agent restarted and refused changed files: counted, and the model quarantined.
    refused_run = _agent_ended(
        exit_code=1,
        message="DigestMismatch: model.bin: sha256 differs",
        container="containerd://a2",
    )
    _report_agent(kubectl, namespace, pod, state=refused_run, last_state=verified_run)
    _grows(
        scrape, "modelguard_agent_fetch_verify_total", counted, result="refused",
        reason="DigestMismatch",
    )  # fmt: skip
    _grows(scrape, "modelguard_quarantines_total", before, trigger="automatic")
    _at_least(scrape, "modelguard_quarantined_model_deployments", 1, trigger="automatic")


def _agent_ended(*, exit_code: int, message: str, container: str) -> dict[str, typing.Any]:
    """The init container's end as the kubelet reports it."""
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Error" if exit_code else "Completed",
            "message": message,
            "containerID": container,
            "startedAt": "2030-01-01T00:00:00Z",
            "finishedAt": "2030-01-01T00:00:02Z",
        }
    }


def _report_agent(
    kubectl: harness.Kubectl,
    namespace: str,
    pod: dict[str, typing.Any],
    *,
    state: dict[str, typing.Any],
    last_state: dict[str, typing.Any] | None = None,
) -> None:
    """Plays the kubelet (kwok runs no containers): the agent's run through the pod's status."""
    (agent,) = pod["spec"]["initContainers"]
    status = {
        "name": agent["name"],
        "image": agent["image"],
        "imageID": "",
        "ready": exit_ok(state),
        "restartCount": 0 if last_state is None else 1,
        "state": state,
        "lastState": last_state or {},
    }
    kubectl.run(
        "patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"initContainerStatuses": [status]}}),
    )  # fmt: skip


def exit_ok(state: dict[str, typing.Any]) -> bool:
    return bool(state["terminated"]["exitCode"] == 0)


def _dashboard_finds_every_series(families: Families) -> None:
    names = {sample.name for family in families.values() for sample in family.samples}
    names |= set(families)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(
            r"\b((?:modelguard|process)_[a-z0-9_]+)", re.sub(r"\{[^}]*\}", "", target["expr"])
        )
    }
    # Admission answers appear only where webhooks are served, which the session's operator
    # does not do (test_admission scrapes the process that serves them); every other series
    # the dashboard asks for must be in the scrape.
    pending = {
        "modelguard_webhook_requests_total",
        "modelguard_webhook_request_duration_seconds_bucket",
    }
    assert queried - names - pending == set()
