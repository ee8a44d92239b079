"""The operator's metrics as Prometheus reads them: parsed by prometheus_client's own text-format
parser, with conventional names and units, bounded labels (a reason outside the vocabulary is
Other, a model's name is never a label), per-model state that goes with the model, agent runs
counted once, and an HTTP endpoint that serves them."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import typing
import urllib.request

import kopf
import pytest
from prometheus_client import parser

from modelguard import metrics
from modelguard.admission import decisions, serving, webhooks
from modelguard.agent import proxymetrics
from modelguard.reconcile import vocabulary

NOW = 1_900_000_000.0


def _families(recorder: metrics.Metrics) -> dict[str, typing.Any]:
    text = recorder.exposition().decode()
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def _value(
    families: dict[str, typing.Any], name: str, sample: str | None = None, **labels: str
) -> float | None:
    """The value of the one sample of `name` (family) named `sample` with exactly `labels`."""
    for found in families[name].samples:
        if found.name == (sample or name) and found.labels == labels:
            return float(found.value)
    return None


def _recorder() -> metrics.Metrics:
    return metrics.Metrics(reasons=vocabulary.reasons(), clock=lambda: NOW)


def test_every_family_is_named_by_convention_and_parses() -> None:
    recorder = _recorder()
    recorder.reconciled("RollOut", 0.2)
    recorder.verification(verified=True, reason="SignatureVerified")
    recorder.webhook("managed-child", decision="allowed", seconds=0.001)
    families = _families(recorder)
    ours = {name: family for name, family in families.items() if name.startswith("modelguard_")}
    assert {name: family.type for name, family in ours.items()}.items() >= {
        "modelguard_reconcile_duration_seconds": "histogram",
        "modelguard_verifications": "counter",
        "modelguard_quarantines": "counter",
        "modelguard_webhook_requests": "counter",
        "modelguard_webhook_request_duration_seconds": "histogram",
        "modelguard_agent_fetch_verify": "counter",
        "modelguard_agent_fetched_bytes": "counter",
        "modelguard_agent_fetch_verify_duration_seconds": "histogram",
        "modelguard_model_deployments": "gauge",
        "modelguard_rollouts_held": "gauge",
        "modelguard_quarantined_model_deployments": "gauge",
        "modelguard_stalled_model_deployments": "gauge",
        "modelguard_approvals_expiring": "gauge",
        "modelguard_approval_next_expiry_timestamp_seconds": "gauge",
        "modelguard_reconciles_in_flight": "gauge",
    }.items()
    for family in ours.values():
        assert family.documentation, family.name
        if family.type == "counter":
            # The text format names a counter's sample <name>_total.
            assert {s.name for s in family.samples} <= {
                family.name + "_total",
                family.name + "_created",
            }
    # The process's own, as every Prometheus client exposes them.
    assert "process_resident_memory_bytes" in families
    assert (
        _value(
            families,
            "modelguard_reconcile_duration_seconds",
            "modelguard_reconcile_duration_seconds_count",
            outcome="RollOut",
        )
        == 1
    )
    assert (
        _value(
            families,
            "modelguard_verifications",
            "modelguard_verifications_total",
            result="verified",
            reason="SignatureVerified",
        )
        == 1
    )


def test_a_reason_outside_the_vocabulary_is_other() -> None:
    recorder = _recorder()
    recorder.verification(verified=False, reason="UntrustedSigner")
    recorder.verification(verified=False, reason="MadeUpByAPod")
    recorder.verification(verified=False, reason="AlsoMadeUp")
    families = _families(recorder)
    name = "modelguard_verifications"
    assert _value(families, name, name + "_total", result="refused", reason="UntrustedSigner") == 1
    assert _value(families, name, name + "_total", result="refused", reason="Other") == 2
    assert {s.labels["reason"] for s in families[name].samples} == {"UntrustedSigner", "Other"}


def test_the_vocabulary_holds_the_operators_reasons() -> None:
    known = vocabulary.reasons()
    assert {"UntrustedSigner", "SourceUnreachable", "DigestMismatch", "Quarantined"} <= known
    assert {"InvalidArgument", "ApprovalMissing", "SpecQuarantine", "SignerRevoked"} <= known


def _state(**fields: typing.Any) -> metrics.ModelState:
    return metrics.ModelState(**{"ready": "False", "reason": "Progressing", **fields})


def test_model_state_is_summed_without_model_labels_and_goes_with_the_model() -> None:
    recorder = _recorder()
    recorder.model("a", "one", _state(ready="True", reason="Available", approval_expires=NOW + 60))
    recorder.model("a", "two", _state(reason="NotApproved", held=True, approval_expires=NOW + 7200))
    recorder.model(
        "b",
        "one",
        _state(
            reason="NotVerified", held=True, stalled="UntrustedSigner", approval_expires=NOW - 1
        ),
    )
    recorder.model(
        "b",
        "two",
        _state(
            reason="Quarantined", stalled="Quarantined", quarantine=("automatic", "DigestMismatch")
        ),
    )
    families = _families(recorder)
    assert _value(families, "modelguard_model_deployments", ready="True", reason="Available") == 1
    assert _value(families, "modelguard_rollouts_held", reason="NotApproved") == 1
    assert _value(families, "modelguard_rollouts_held", reason="NotVerified") == 1
    assert (
        _value(
            families,
            "modelguard_quarantined_model_deployments",
            trigger="automatic",
            reason="DigestMismatch",
        )
        == 1
    )
    assert _value(families, "modelguard_stalled_model_deployments", reason="UntrustedSigner") == 1
    expiring = "modelguard_approvals_expiring"
    assert [_value(families, expiring, within=w) for w in ("expired", "1h", "1d", "7d")] == [
        1,
        1,
        2,
        2,
    ]
    assert _value(families, "modelguard_approval_next_expiry_timestamp_seconds") == NOW + 60
    for family in families.values():
        for sample in family.samples:
            assert not {"namespace", "name", "model"} & set(sample.labels), sample
    # A model decided again replaces its state; a model gone takes it along.
    recorder.model("b", "two", _state(ready="True", reason="Available"))
    recorder.forget("b", "one")
    recorder.forget("b", "one")
    families = _families(recorder)
    assert (
        _value(
            families,
            "modelguard_quarantined_model_deployments",
            trigger="automatic",
            reason="DigestMismatch",
        )
        is None
    )
    assert (
        _value(families, "modelguard_stalled_model_deployments", reason="UntrustedSigner") is None
    )
    assert _value(families, "modelguard_model_deployments", ready="True", reason="Available") == 2
    assert _value(families, "modelguard_approvals_expiring", within="expired") == 0


def test_series_do_not_grow_with_the_number_of_models() -> None:
    recorder = _recorder()

    def series() -> int:
        return sum(
            len(family.samples)
            for family in _families(recorder).values()
            if family.name.startswith("modelguard_")
        )

    recorder.model("ns-0", "m-0", _state(held=True, reason="NotApproved"))
    few = series()
    for index in range(2000):
        recorder.model(f"ns-{index % 50}", f"m-{index}", _state(held=True, reason="NotApproved"))
    assert series() == few
    assert _value(_families(recorder), "modelguard_rollouts_held", reason="NotApproved") == 2000


@dataclasses.dataclass(frozen=True)
class Run:
    key: tuple[str, ...]
    verified: bool
    reason: str = ""
    bytes: int = 0
    seconds: float | None = None


def test_an_agent_run_is_counted_once_however_often_it_is_read() -> None:
    recorder = _recorder()
    runs = [
        Run(("pod-1", "c-1", "t1"), verified=True, bytes=1000, seconds=2.0),
        Run(("pod-2", "c-2", "t2"), verified=False, reason="DigestMismatch", seconds=1.0),
        Run(("pod-3", "c-3", "t3"), verified=False, reason="SomethingAPodSaid"),
    ]
    for _ in range(3):
        recorder.agent_reports(runs)
    families = _families(recorder)
    runs_total = "modelguard_agent_fetch_verify_total"
    family = "modelguard_agent_fetch_verify"
    assert _value(families, family, runs_total, result="verified", reason="SignatureVerified") == 1
    assert _value(families, family, runs_total, result="refused", reason="DigestMismatch") == 1
    assert _value(families, family, runs_total, result="refused", reason="Other") == 1
    assert (
        _value(families, "modelguard_agent_fetched_bytes", "modelguard_agent_fetched_bytes_total")
        == 1000
    )
    duration = "modelguard_agent_fetch_verify_duration_seconds"
    assert _value(families, duration, duration + "_sum", result="verified") == 2.0
    assert _value(families, duration, duration + "_count", result="refused") == 1


def test_remembered_agent_runs_are_bounded() -> None:
    recorder = _recorder()
    recorder.agent_reports(
        Run((str(i),), verified=True) for i in range(metrics.MAX_AGENT_REPORTS + 10)
    )
    assert len(recorder._agent_reports) == metrics.MAX_AGENT_REPORTS


def test_a_live_reading_that_fails_leaves_the_rest_of_the_scrape() -> None:
    recorder = _recorder()

    def broken() -> metrics.Sample:
        raise RuntimeError("boom")

    recorder.live("modelguard_broken", "never read", broken)
    recorder.live("modelguard_queue_depth", "a gauge", lambda: {("x",): 3}, labels=("queue",))
    recorder.live("modelguard_things", "a counter", lambda: {(): 5}, counter=True)
    families = _families(recorder)
    assert "modelguard_broken" not in families
    assert _value(families, "modelguard_queue_depth", queue="x") == 3
    assert _value(families, "modelguard_things", "modelguard_things_total") == 5


def test_in_flight_counts_passes_running() -> None:
    recorder = _recorder()
    with recorder.in_flight(), recorder.in_flight():
        assert _value(_families(recorder), "modelguard_reconciles_in_flight") == 2
    assert _value(_families(recorder), "modelguard_reconciles_in_flight") == 0


def test_served_over_http_on_the_port_asked_for() -> None:
    recorder = _recorder()
    recorder.reconciled("Hold", 0.01)
    server = recorder.serve(port=0, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=10
        ) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = answer.read().decode()
    finally:
        server.close()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert (
        _value(
            families,
            "modelguard_reconcile_duration_seconds",
            "modelguard_reconcile_duration_seconds_count",
            outcome="Hold",
        )
        == 1
    )


def _memo(recorder: metrics.Metrics) -> kopf.Memo:
    memo = kopf.Memo()
    memo.webhook = serving.Options(
        port=None, cert_dir=None, addr="", identity=decisions.Identity(operator_username="op")
    )
    memo.admission_caches = webhooks.Caches(filled=True)
    memo.metrics = recorder
    return memo


def _scale(username: str) -> dict[str, typing.Any]:
    body = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "m", "namespace": "ml"},
    }
    return {
        "body": kopf.Body(body),
        "new": kopf.Body(body),
        "old": kopf.Body(body),
        "operation": "UPDATE",
        "subresource": "scale",
        "userinfo": {"username": username},
        webhooks.MANAGED_DEPLOYMENTS: {("ml", "m"): ["bert"]},
    }


def test_webhook_answers_are_counted_and_timed_by_webhook_and_decision() -> None:
    recorder = _recorder()
    memo = _memo(recorder)
    webhooks.managed_scale(memo, _scale("op"))
    with pytest.raises(kopf.AdmissionError):
        webhooks.managed_scale(memo, _scale("alice"))
    broken = _scale("alice")
    del broken[webhooks.MANAGED_DEPLOYMENTS]
    with pytest.raises(KeyError):
        webhooks.managed_scale(memo, broken)
    families = _families(recorder)
    requests = "modelguard_webhook_requests"
    for decision in ("allowed", "denied", "error"):
        assert (
            _value(
                families, requests, requests + "_total", webhook="managed-scale", decision=decision
            )
            == 1
        )
    duration = "modelguard_webhook_request_duration_seconds"
    assert (
        _value(families, duration, duration + "_count", webhook="managed-scale", decision="denied")
        == 1
    )


def test_docs_name_every_series_the_operator_serves() -> None:
    """docs/metrics.md is the reference a platform team writes alerts from: every metric the
    operator defines is there, counters by the name Prometheus stores (`_total`)."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    source = "\n".join(p.read_text() for p in (repo / "operator" / "modelguard").rglob("*.py"))
    # A name ending in "_" is a prefix (the audit proxy's); its series are read from what the
    # proxy exposes.
    defined = {name for name in re.findall(r'"(modelguard_[a-z_]+)"', source) if name[-1] != "_"}
    assert len(defined) >= 20
    proxy = proxymetrics.Metrics().exposition()
    defined |= set(re.findall(r"^# TYPE (modelguard_audit_proxy_[a-z_]+) ", proxy, re.MULTILINE))
    documented = set(
        re.findall(r"`(modelguard_[a-z_]+)`", (repo / "docs" / "metrics.md").read_text())
    )
    exposed = metrics.Metrics().exposition().decode()
    # The text format names a counter's family with its `_total`.
    counters = set(re.findall(r"^# TYPE (modelguard_[a-z_]+) counter$", exposed, re.MULTILINE))
    assert counters
    missing = {
        name for name in defined if name not in documented and f"{name}_total" not in documented
    }
    assert not missing
    for name in counters:
        assert name.endswith("_total")
        assert name in documented, name
