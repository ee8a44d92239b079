"""The operator's Prometheus metrics: what it decided, how long that took, and how full its caches
and queues are, served in the text format on a port of its own (`modelguard run --metrics-port`).

Every label has a bounded set of values, so that no metric grows with the cluster: no namespace
or model names (the ModelDeployments' status and Events say which model; the metrics say how
many and how fast). Reasons are the operator's vocabulary: a value outside `reasons`, the set the
operator can decide, counts as "Other" (an agent's termination message is read from a pod, and a
pod's words must not mint series). State that describes models now (held, quarantined, stalled,
approvals about to expire) is kept per model in one dictionary, the size of the set of models
the operator watches, and summed when Prometheus scrapes.

Recording never raises and never blocks: counters and histograms are prometheus_client's
(thread-safe); the per-model state is replaced under a lock. The HTTP server is
prometheus_client's, in a thread of its own, so that a scrape is answered while the event loop
is busy, and a busy scrape never delays a reconcile.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import typing

import prometheus_client
from prometheus_client import core, registry

logger = logging.getLogger(__name__)

OTHER: typing.Final = "Other"
"""The label value of a reason outside the operator's vocabulary."""

RECONCILE_BUCKETS: typing.Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
WEBHOOK_BUCKETS: typing.Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)
AGENT_BUCKETS: typing.Final = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# How far ahead an approval's expiry counts as soon, by label value (`within`).
EXPIRY_WINDOWS: typing.Final = (("1h", 3600.0), ("1d", 86400.0), ("7d", 7 * 86400.0))
# Agent reports already counted, by pod, container run and end: a pod's report is read by every
# pass over its model until the pod goes. Oldest forgotten first.
MAX_AGENT_REPORTS: typing.Final = 4096

Sample = typing.Mapping[tuple[str, ...], float]
"""A live metric's values by label values."""


@dataclasses.dataclass(frozen=True)
class ModelState:
    """What one ModelDeployment's last pass decided, as the metrics count it."""

    ready: str
    """Ready's status: True, False or Unknown."""
    reason: str
    """Ready's reason."""
    held: bool = False
    """The spec's version may not roll out (the outcome is a hold)."""
    stalled: str | None = None
    """Stalled's reason when Stalled is True."""
    quarantine: tuple[str, str] | None = None
    """(trigger, reason) while quarantined: spec or automatic, and why."""
    approval_expires: float | None = None
    """When the approval the active version runs under expires (Unix time)."""


class AgentReport(typing.Protocol):
    """One run of a model pod's fetch-verify agent, from its termination state
    (reconcile.pods.AgentRun)."""

    @property
    def key(self) -> tuple[str, ...]:
        """Names the run: the pod's uid, the container's id, when it finished."""
        ...

    @property
    def verified(self) -> bool: ...

    @property
    def reason(self) -> str:
        """The refusal's reason ("" when verified)."""
        ...

    @property
    def bytes(self) -> int: ...

    @property
    def seconds(self) -> float | None: ...


@dataclasses.dataclass(frozen=True)
class _Live:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: typing.Callable[[], Sample]
    counter: bool


class Metrics:
    """The metrics of one operator process, in a registry of their own (with the process's CPU,
    memory and file descriptors, and Python's garbage collector)."""

    def __init__(
        self,
        *,
        reasons: typing.AbstractSet[str] = frozenset(),
        clock: typing.Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry.CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.registry)
        prometheus_client.PlatformCollector(registry=self.registry)
        prometheus_client.GCCollector(registry=self.registry)
        self._reasons = frozenset(reasons)
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ModelState] = {}
        self._agent_reports: collections.OrderedDict[tuple[str, ...], None] = (
            collections.OrderedDict()
        )
        self._live: list[_Live] = []
        self._in_flight = 0

        self.reconcile_duration: prometheus_client.Histogram = prometheus_client.Histogram(
            "modelguard_reconcile_duration_seconds",
            "Time of one reconcile pass over a ModelDeployment (observe, decide, write), by its "
            "outcome: RollOut, Hold, Quarantine, Refuse, Gone (the object was deleted) or Error "
            "(retried: the API server or a source failed).",
            ["outcome"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.verifications: prometheus_client.Counter = prometheus_client.Counter(
            "modelguard_verifications",
            "Verified conditions decided anew (as the audit log records them), by result "
            "(verified, refused) and reason (SignatureVerified, UntrustedSigner, ...).",
            ["result", "reason"],
            registry=self.registry,
        )
        self.quarantines: prometheus_client.Counter = prometheus_client.Counter(
            "modelguard_quarantines",
            "Models quarantined, by trigger (spec, automatic) and reason.",
            ["trigger", "reason"],
            registry=self.registry,
        )
        self.webhook_requests: prometheus_client.Counter = prometheus_client.Counter(
            "modelguard_webhook_requests",
            "Admission requests answered, by webhook and decision (allowed, denied, error).",
            ["webhook", "decision"],
            registry=self.registry,
        )
        self.webhook_duration: prometheus_client.Histogram = prometheus_client.Histogram(
            "modelguard_webhook_request_duration_seconds",
            "Time the operator took to decide an admission request (from kopf's call to its "
            "answer; the API server's own timing adds TLS and transport), by webhook and "
            "decision.",
            ["webhook", "decision"],
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )
        self.agent_runs: prometheus_client.Counter = prometheus_client.Counter(
            "modelguard_agent_fetch_verify",
            "Runs of model pods' fetch-verify init container, read from their termination "
            "state, by result (verified, refused) and reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.agent_bytes: prometheus_client.Counter = prometheus_client.Counter(
            "modelguard_agent_fetched_bytes",
            "Bytes model pods' fetch-verify agents fetched and verified.",
            registry=self.registry,
        )
        self.agent_duration: prometheus_client.Histogram = prometheus_client.Histogram(
            "modelguard_agent_fetch_verify_duration_seconds",
            "Time of a model pod's fetch-verify run, by result.",
            ["result"],
            buckets=AGENT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    # --- recording ---------------------------------------------------------------------------

    def reason(self, reason: str) -> str:
        """`reason` when it is one of the operator's, else OTHER."""
        return reason if reason in self._reasons else OTHER

    def reconciled(self, outcome: str, seconds: float) -> None:
        self.reconcile_duration.labels(outcome).observe(seconds)

    def in_flight(self) -> typing.ContextManager[None]:
        """Counts a reconcile pass as running while the context lasts."""
        return _InFlight(self)

    def verification(self, *, verified: bool, reason: str) -> None:
        self.verifications.labels("verified" if verified else "refused", self.reason(reason)).inc()

    def quarantine(self, *, trigger: str, reason: str) -> None:
        self.quarantines.labels(trigger, self.reason(reason)).inc()

    def webhook(self, webhook: str, *, decision: str, seconds: float) -> None:
        self.webhook_requests.labels(webhook, decision).inc()
        self.webhook_duration.labels(webhook, decision).observe(seconds)

    def model(self, namespace: str, name: str, state: ModelState) -> None:
        """The state a pass decided for the model (namespace, name)."""
        with self._lock:
            self._models[namespace, name] = state

    def forget(self, namespace: str, name: str) -> None:
        """The model is gone."""
        with self._lock:
            self._models.pop((namespace, name), None)

    def forget_models(self) -> None:
        """This replica stopped leading: the models' gauges are the leader's to report (summed
        over replicas, a former leader's would count every model twice)."""
        with self._lock:
            self._models.clear()

    def agent_reports(self, reports: typing.Iterable[AgentReport]) -> None:
        """Counts each run not counted before."""
        for report in reports:
            with self._lock:
                if report.key in self._agent_reports:
                    continue
                self._agent_reports[report.key] = None
                while len(self._agent_reports) > MAX_AGENT_REPORTS:
                    self._agent_reports.popitem(last=False)
            result = "verified" if report.verified else "refused"
            reason = "SignatureVerified" if report.verified else self.reason(report.reason)
            self.agent_runs.labels(result, reason).inc()
            if report.bytes:
                self.agent_bytes.inc(report.bytes)
            if report.seconds is not None:
                self.agent_duration.labels(result).observe(report.seconds)

    def live(
        self,
        name: str,
        documentation: str,
        read: typing.Callable[[], Sample],
        *,
        labels: typing.Sequence[str] = (),
        counter: bool = False,
    ) -> None:
        """A metric read from the process's state when scraped: `read()` gives its values by
        label values (counter: a count that only grows, named without `_total`)."""
        self._live.append(_Live(name, documentation, tuple(labels), read, counter))

    # --- serving -----------------------------------------------------------------------------

    def serve(self, *, port: int, addr: str) -> Server:
        """Serves the metrics over HTTP at `addr`:`port` (any path; Prometheus asks /metrics)
        from a thread of its own; OSError when the port cannot be had."""
        server, thread = prometheus_client.start_http_server(
            port, addr=addr, registry=self.registry
        )
        return Server(server, thread)

    def exposition(self) -> bytes:
        """The metrics in the text format, as a scrape gets them."""
        return prometheus_client.generate_latest(self.registry)

    # --- what the collector reads --------------------------------------------------------------

    def _snapshot(self) -> tuple[list[ModelState], int]:
        with self._lock:
            return list(self._models.values()), self._in_flight


@dataclasses.dataclass
class Server:
    """The metrics' HTTP server, running in its own thread."""

    server: typing.Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _InFlight:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def __enter__(self) -> None:
        with self._metrics._lock:
            self._metrics._in_flight += 1

    def __exit__(self, *_: object) -> None:
        with self._metrics._lock:
            self._metrics._in_flight -= 1


class _Collector(registry.Collector):
    """The metrics computed when scraped: the models' state now, and the live ones."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> typing.Iterator[core.Metric]:
        models, in_flight = self._metrics._snapshot()
        now = self._metrics._clock()
        yield _gauge(
            "modelguard_model_deployments",
            "ModelDeployments by their Ready condition's status and reason.",
            ("ready", "reason"),
            collections.Counter((m.ready, m.reason) for m in models),
        )
        yield _gauge(
            "modelguard_rollouts_held",
            "ModelDeployments whose spec's version is held (not verified, not approved, broader "
            "access than allowed, policy not bound, a child name taken), by Ready's reason; "
            "what served before keeps serving.",
            ("reason",),
            collections.Counter((m.reason,) for m in models if m.held),
        )
        yield _gauge(
            "modelguard_quarantined_model_deployments",
            "ModelDeployments quarantined now, by trigger (spec, automatic) and reason.",
            ("trigger", "reason"),
            collections.Counter(m.quarantine for m in models if m.quarantine is not None),
        )
        yield _gauge(
            "modelguard_stalled_model_deployments",
            "ModelDeployments whose Stalled condition is True (they wait for someone to change "
            "something), by its reason.",
            ("reason",),
            collections.Counter((m.stalled,) for m in models if m.stalled is not None),
        )
        expiries = [m.approval_expires for m in models if m.approval_expires is not None]
        expiring: dict[tuple[str, ...], float] = {
            ("expired",): sum(1 for at in expiries if at <= now)
        }
        for label, window in EXPIRY_WINDOWS:
            expiring[label,] = sum(1 for at in expiries if now < at <= now + window)
        yield _gauge(
            "modelguard_approvals_expiring",
            "ModelDeployments whose active version's approval expires within the window "
            "(1h, 1d, 7d from now; each includes the shorter ones) or has expired.",
            ("within",),
            expiring,
        )
        soonest = core.GaugeMetricFamily(
            "modelguard_approval_next_expiry_timestamp_seconds",
            "When the first of the active versions' approvals expires (Unix time); absent when "
            "none runs under an approval.",
        )
        upcoming = [at for at in expiries if at > now]
        if upcoming:
            soonest.add_metric([], min(upcoming))
        yield soonest
        yield _gauge(
            "modelguard_reconciles_in_flight",
            "Reconcile passes running now (those waiting for their model's lock included).",
            (),
            {(): in_flight},
        )
        for live in self._metrics._live:
            try:
                values = live.read()
            except Exception:
                # A scrape must not fail for one reading; the log says which.
                logger.exception("metrics: %s could not be read", live.name)
                continue
            family: core.Metric
            if live.counter:
                family = core.CounterMetricFamily(live.name, live.documentation, labels=live.labels)
            else:
                family = core.GaugeMetricFamily(live.name, live.documentation, labels=live.labels)
            for label_values, value in sorted(values.items()):
                family.add_metric(list(label_values), value)
            yield family


def _gauge(
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    values: typing.Mapping[typing.Any, float],
) -> core.GaugeMetricFamily:
    family = core.GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family
