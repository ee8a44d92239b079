"""The chart's metrics endpoint as `helm template` renders it: the port, its Service, the
NetworkPolicy rule that admits only the scrapers the values name, the opt-in ServiceMonitor and
Grafana dashboard, and the dashboard's queries, which must name metrics the operator serves."""

from __future__ import annotations

import io
import json
import re
import types
import typing
from pathlib import Path

import kopf
import pytest
from prometheus_client import parser
from test_chart_render import CHART, helm, kinds, render, template

from modelguard import handlers, metrics
from modelguard.admission import webhooks
from modelguard.audit import keys, sink
from modelguard.reconcile import checkpoints, election, schedule, verification, vocabulary

__all__ = ["helm"]  # the fixture

Manifest = dict[str, typing.Any]
PROMETHEUS = [
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
]


def _values(tmp_path: Path, values: Manifest) -> tuple[str, str]:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    return "-f", str(path)


def _operator(docs: list[Manifest]) -> Manifest:
    (container,) = kinds(docs)["Deployment", "t-modelguard"]["spec"]["template"]["spec"][
        "containers"
    ]
    return typing.cast(Manifest, container)


def _ingress(docs: list[Manifest]) -> list[Manifest]:
    return typing.cast(
        list[Manifest], kinds(docs)["NetworkPolicy", "t-modelguard"]["spec"]["ingress"]
    )


def test_metrics_are_served_on_their_port_and_nobody_is_admitted_by_default(helm: Path) -> None:
    docs = render(helm)
    container = _operator(docs)
    assert "--metrics-port=8081" in container["args"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    service = kinds(docs)["Service", "t-modelguard-metrics"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    # The NetworkPolicies add up: none of them may open the metrics port.
    for (kind, _), doc in kinds(docs).items():
        if kind == "NetworkPolicy":
            for rule in doc["spec"].get("ingress") or []:
                assert {"protocol": "TCP", "port": 8081} not in rule.get("ports", []), doc
    assert not any(kind == "ServiceMonitor" for kind, _ in kinds(docs))


def test_scrapes_are_admitted_from_the_peers_named_and_only_to_the_metrics_port(
    helm: Path, tmp_path: Path
) -> None:
    docs = render(helm, *_values(tmp_path, {"metrics": {"allowFrom": PROMETHEUS}}))
    health, scrapers = _ingress(docs)
    assert health == {
        "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8082}]
    }
    assert scrapers == {"from": PROMETHEUS, "ports": [{"protocol": "TCP", "port": 8081}]}


def test_an_empty_peer_which_would_admit_everyone_is_refused(helm: Path, tmp_path: Path) -> None:
    result = template(
        helm,
        "--set",
        "image.digest=sha256:" + "ab" * 32,
        *_values(tmp_path, {"metrics": {"allowFrom": [{}]}}),
    )
    assert result.returncode != 0
    assert "/metrics/allowFrom/0" in result.stderr


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        pytest.param(
            {"metrics": {"serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.allowFrom",
            id="scrapers-not-admitted",
        ),
        pytest.param(
            {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.enabled",
            id="nothing-to-scrape",
        ),
    ],
)
def test_a_service_monitor_that_could_not_scrape_is_refused(
    helm: Path, tmp_path: Path, values: Manifest, refusal: str
) -> None:
    result = template(helm, "--set", "image.digest=sha256:" + "ab" * 32, *_values(tmp_path, values))
    assert result.returncode != 0
    assert refusal in result.stderr


def test_the_service_monitor_scrapes_the_metrics_service(helm: Path, tmp_path: Path) -> None:
    values = {
        "metrics": {
            "allowFrom": PROMETHEUS,
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}},
        }
    }
    docs = render(helm, *_values(tmp_path, values))
    monitor = kinds(docs)["ServiceMonitor", "t-modelguard"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "15s",
    )
    service = kinds(docs)["Service", "t-modelguard-metrics"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    # ...and not the webhook's Service, which selects the same pods.
    webhook = kinds(docs)["Service", "t-modelguard-webhook"]
    assert not selected.items() <= webhook["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mg"]}


def test_without_the_networkpolicy_a_service_monitor_needs_no_peers(
    helm: Path, tmp_path: Path
) -> None:
    values = {"networkPolicy": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": True}}}
    docs = render(helm, *_values(tmp_path, values))
    assert ("ServiceMonitor", "t-modelguard") in kinds(docs)


def test_metrics_off_serves_nothing(helm: Path, tmp_path: Path) -> None:
    docs = render(
        helm, *_values(tmp_path, {"metrics": {"enabled": False, "allowFrom": PROMETHEUS}})
    )
    container = _operator(docs)
    assert not any(arg.startswith("--metrics-port") for arg in container["args"])
    assert all(port["name"] != "metrics" for port in container["ports"])
    assert ("Service", "t-modelguard-metrics") not in kinds(docs)
    assert len(_ingress(docs)) == 1


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar(helm: Path, tmp_path: Path) -> None:
    values = {"metrics": {"dashboard": {"enabled": True, "namespace": "grafana"}}}
    docs = render(helm, *_values(tmp_path, values))
    config_map = kinds(docs)["ConfigMap", "t-modelguard-dashboard"]
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "modelguard.json").read_text())
    assert json.loads(config_map["data"]["modelguard.json"]) == shipped


# --- the dashboard's queries name what the operator serves --------------------------------------


def _served_names() -> set[str]:
    """Every sample name the operator serves: its own metrics, the ones handlers read from the
    process's state when scraped (wired to real objects, no cluster needed), the process's."""
    recorder = metrics.Metrics(reasons=vocabulary.reasons())
    audit = sink.Sink(io.StringIO(), signer=keys.generate("test/log"), origin="test/log/s")
    memo = kopf.Memo()
    memo.context = types.SimpleNamespace(
        verification_cache=verification.Cache(),
        verification_slots=verification.Slots(),
        audit=audit,
    )

    async def run(namespace: str, name: str) -> None:
        del namespace, name

    memo.scheduler = schedule.Scheduler(run)
    memo.publisher = checkpoints.Publisher(audit, [])
    memo.admission_caches = webhooks.Caches(indexes={webhooks.TRUST_POLICIES: {}})
    memo.leadership = election.Always()
    handlers._measure(recorder, memo)
    names = set()
    for family in parser.text_string_to_metric_families(recorder.exposition().decode()):
        names.add(family.name)
        names |= {sample.name for sample in family.samples}
    # Labelled counters and histograms with no sample yet are still their family's.
    for family in recorder.registry.collect():
        names |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    return names


def test_every_query_of_the_dashboard_names_a_metric_the_operator_serves() -> None:
    dashboard = json.loads((CHART / "dashboards" / "modelguard.json").read_text())
    served = _served_names()
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expression = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", target["expr"])
            queried |= {
                name
                for name in re.findall(r"[a-z_][a-z0-9_]*", expression)
                if name.startswith(("modelguard_", "process_"))
            }
    assert queried, "no metric found in the dashboard"
    assert queried - served == set()
    # Every family of ours is on the dashboard somewhere.
    ours = {name for name in served if name.startswith("modelguard_")}
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in ours}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in queried}
    assert families - shown == set()
