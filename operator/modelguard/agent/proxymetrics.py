"""The audit proxy's Prometheus metrics, in the text exposition format (version 0.0.4).

A handful of counters and one histogram, written by the event loop only and read by the scrape:
a dependency with its own locks would cost more per request than the proxy's whole bookkeeping.
"""

from __future__ import annotations

import bisect
import typing

PREFIX: typing.Final = "modelguard_audit_proxy_"
# Seconds: from well under the proxy's own cost to a slow model's answer.
DURATION_BUCKETS: typing.Final = (
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
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
CONTENT_TYPE: typing.Final = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[int, int] = {}
        """Requests answered, by status code (0: no answer reached the caller)."""
        self.refused: dict[str, int] = {}
        """Requests the proxy answered itself, by reason (RateLimited, RequestTooLarge, ...)."""
        self.request_bytes = 0
        self.response_bytes = 0
        self.upstream_errors = 0
        self.in_flight = 0
        self._buckets = [0] * len(DURATION_BUCKETS)
        self._duration_sum = 0.0
        self._duration_count = 0
        self.records_dropped = 0
        self.queue_depth: typing.Callable[[], int] = lambda: 0
        """Bytes of records waiting for the record writer."""

    def observe(
        self, *, status: int, seconds: float, request_bytes: int, response_bytes: int
    ) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        self.request_bytes += request_bytes
        self.response_bytes += response_bytes
        at = bisect.bisect_left(DURATION_BUCKETS, seconds)
        if at < len(self._buckets):
            self._buckets[at] += 1
        self._duration_sum += seconds
        self._duration_count += 1

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def exposition(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {PREFIX}{name} {text}")
            out.append(f"# TYPE {PREFIX}{name} {kind}")

        family("requests_total", "counter", "Requests passed on or refused, by status code.")
        for code, count in sorted(dict(self.requests).items()):
            out.append(f'{PREFIX}requests_total{{code="{code}"}} {count}')
        family("refused_total", "counter", "Requests the proxy answered itself, by reason.")
        for reason, count in sorted(dict(self.refused).items()):
            out.append(f'{PREFIX}refused_total{{reason="{reason}"}} {count}')
        family("request_bytes_total", "counter", "Request body bytes received.")
        out.append(f"{PREFIX}request_bytes_total {self.request_bytes}")
        family("response_bytes_total", "counter", "Response body bytes sent.")
        out.append(f"{PREFIX}response_bytes_total {self.response_bytes}")
        family("upstream_errors_total", "counter", "Exchanges the model server broke off.")
        out.append(f"{PREFIX}upstream_errors_total {self.upstream_errors}")
        family("in_flight", "gauge", "Requests being served.")
        out.append(f"{PREFIX}in_flight {self.in_flight}")
        family(
            "request_duration_seconds",
            "histogram",
            "From a request's head read to its answer's last byte sent.",
        )
        cumulative = 0
        for bound, count in zip(DURATION_BUCKETS, list(self._buckets), strict=True):
            cumulative += count
            out.append(f'{PREFIX}request_duration_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        out.append(f'{PREFIX}request_duration_seconds_bucket{{le="+Inf"}} {self._duration_count}')
        out.append(f"{PREFIX}request_duration_seconds_sum {self._duration_sum:.6f}")
        out.append(f"{PREFIX}request_duration_seconds_count {self._duration_count}")
        family(
            "records_dropped_total",
            "counter",
            "Requests served unrecorded because the record queue was full (each loss is "
            "itself recorded in the chain).",
        )
        out.append(f"{PREFIX}records_dropped_total {self.records_dropped}")
        family("queue_bytes", "gauge", "Bytes of records waiting for the record writer.")
        out.append(f"{PREFIX}queue_bytes {self.queue_depth()}")
        return "\n".join(out) + "\n"
