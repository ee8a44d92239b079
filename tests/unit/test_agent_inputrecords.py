"""The audit proxy's pure parts: redaction, record building, limits, request framing."""

from __future__ import annotations

import hashlib
import hmac
import json
import typing

import pytest

from modelguard.agent import auditproxy, inputrecords, proxymetrics, recordwriter
from modelguard.api import trustpolicy, v1alpha1
from modelguard.trust import inputaudit, reasons

KEY = b"k" * 32


def _mac(raw: bytes) -> dict[str, typing.Any]:
    digest = hmac.new(KEY, raw, hashlib.sha256).hexdigest()
    return {"redacted": {"length": len(raw), "hmac": f"hmac-sha256:{digest}"}}


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "body", "expected"),
    [
        pytest.param(
            ["$.user.email"],
            {"user": {"email": "a@b.example", "id": 7}, "n": 1},
            {"user": {"email": _mac(b"a@b.example"), "id": 7}, "n": 1},
            id="one-field",
        ),
        pytest.param(
            ["$.messages[*].content"],
            {"messages": [{"role": "user", "content": "hi"}, {"role": "x", "content": "héllo"}]},
            {
                "messages": [
                    {"role": "user", "content": _mac(b"hi")},
                    {"role": "x", "content": _mac("héllo".encode())},
                ]
            },
            id="every-item-of-a-list-utf8-length-in-bytes",
        ),
        pytest.param(
            ["$.inputs[1]"],
            {"inputs": ["a", "bb", "ccc"]},
            {"inputs": ["a", _mac(b"bb"), "ccc"]},
            id="one-index",
        ),
        pytest.param(
            ["$.*.secret"],
            {"a": {"secret": 1, "x": 2}, "b": {"secret": [1, 2]}},
            {"a": {"secret": _mac(b"1"), "x": 2}, "b": {"secret": _mac(b"[1,2]")}},
            id="wildcard-key-non-strings-as-compact-json",
        ),
        pytest.param(
            ["$.user", "$.user.email"],
            {"user": {"email": "e", "name": "n"}},
            {"user": _mac(b'{"email":"e","name":"n"}')},
            id="the-wider-rule-wins-whole-object",
        ),
        pytest.param(
            ["$.absent"],
            {"present": "kept"},
            {"present": "kept"},
            id="a-path-that-matches-nothing",
        ),
    ],
)
def test_json_redaction(paths: list[str], body: typing.Any, expected: typing.Any) -> None:
    rules = inputrecords.Redaction.of(paths=paths, headers=[])
    assert inputrecords.redact_json(body, rules, key=KEY) == expected


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        pytest.param("user.email", r"does not start with \$", id="no-dollar"),
        pytest.param("$", "names the whole body", id="whole-body"),
        pytest.param("$.user..email", "from character 7", id="empty-step"),
        pytest.param("$['quoted']", "from character 2", id="quoted-keys-unsupported"),
    ],
)
def test_bad_redaction_paths_are_refused_not_ignored(rule: str, problem: str) -> None:
    with pytest.raises(inputrecords.InvalidRule, match=problem):
        inputrecords.Redaction.of(paths=[rule], headers=[])


def test_api_path_pattern_accepts_what_the_proxy_parses() -> None:
    import re  # noqa: PLC0415

    for good in ("$.a", "$.messages[*].content", "$.inputs[0]", "$.*.x-y_z"):
        assert re.match(v1alpha1.JSON_PATH_PATTERN, good)
        inputrecords.parse_path(good)
    for bad in ("$", "a.b", "$..a", "$['a']"):
        assert not re.match(v1alpha1.JSON_PATH_PATTERN, bad)


def test_headers_credentials_are_always_redacted_and_rules_add() -> None:
    rules = inputrecords.Redaction.of(paths=[], headers=["X-User"])
    headers = [
        ("Authorization", "Bearer abc"),
        ("Cookie", "s=1"),
        ("X-User", "alice"),
        ("Content-Type", "application/json"),
    ]
    assert inputrecords.redact_headers(headers, rules, key=KEY) == [
        ["authorization", _mac(b"Bearer abc")],
        ["cookie", _mac(b"s=1")],
        ["x-user", _mac(b"alice")],
        ["content-type", "application/json"],
    ]


def test_joined_rules_keep_every_rule_of_both() -> None:
    policy = inputrecords.Redaction.of(paths=["$.a"], headers=["x-a"])
    model = inputrecords.Redaction.of(paths=["$.b"], headers=["x-b"])
    joined = policy.joined(model)
    assert set(joined.paths) == {("a",), ("b",)}
    assert {"x-a", "x-b", "authorization"} <= joined.headers


@pytest.mark.parametrize(
    ("body", "content_type", "complete", "expected"),
    [
        pytest.param(
            b'{"q": "secret", "k": 1}',
            "application/json",
            True,
            {"recorded": True, "json": {"q": _mac(b"secret"), "k": 1}},
            id="json-redacted",
        ),
        pytest.param(
            b"\x00\x01binary",
            "application/octet-stream",
            True,
            {"recorded": True, **_mac(b"\x00\x01binary")},
            id="not-json-kept-by-length-and-hmac-only",
        ),
        pytest.param(
            b"{not json",
            "application/json",
            True,
            {"recorded": True, **_mac(b"{not json")},
            id="json-that-does-not-parse-kept-by-length-and-hmac-only",
        ),
        pytest.param(
            None,
            "application/json",
            False,
            {"recorded": False, "why": "larger than the payload bound; its digest is recorded"},
            id="over-the-payload-bound",
        ),
    ],
)
def test_payload_forms(
    body: bytes | None, content_type: str, complete: bool, expected: dict[str, typing.Any]
) -> None:
    rules = inputrecords.Redaction.of(paths=["$.q"], headers=[])
    assert (
        inputrecords.payload_of(
            body, content_type=content_type, rules=rules, key=KEY, complete=complete
        )
        == expected
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _exchange(**fields: typing.Any) -> inputrecords.Exchange:
    base: dict[str, typing.Any] = {
        "caller": "10.0.0.7:51234",
        "method": "POST",
        "target": "/v1/models/m:predict",
        "started": 100.0,
        "finished": 100.0042,
        "status": 200,
        "request_bytes": 12,
        "request_sha256": hashlib.sha256(b'{"q":"text"}').hexdigest(),
        "response_bytes": 30,
        "headers": [("Content-Type", "application/json"), ("Authorization", "Bearer t")],
        "payload": b'{"q":"text"}',
        "content_type": "application/json",
    }
    base.update(fields)
    return inputrecords.Exchange(**base)


@pytest.mark.parametrize(
    ("exchange", "mode", "reason", "expected"),
    [
        pytest.param(
            _exchange(),
            inputrecords.METADATA,
            "Answered",
            {
                "caller": {"address": "10.0.0.7:51234"},
                "method": "POST",
                "path": "/v1/models/m:predict",
                "status": 200,
                "requestBytes": 12,
                "responseBytes": 30,
                "requestSha256": hashlib.sha256(b'{"q":"text"}').hexdigest(),
                "latencyMs": 4.2,
            },
            id="metadata-no-headers-no-payload",
        ),
        pytest.param(
            _exchange(status=503, identity="spiffe://cluster/ns/a/sa/b"),
            inputrecords.METADATA,
            "Answered",
            {
                "caller": {"address": "10.0.0.7:51234", "identity": "spiffe://cluster/ns/a/sa/b"},
                "method": "POST",
                "path": "/v1/models/m:predict",
                "status": 503,
                "requestBytes": 12,
                "responseBytes": 30,
                "requestSha256": hashlib.sha256(b'{"q":"text"}').hexdigest(),
                "latencyMs": 4.2,
            },
            id="non-2xx-recorded-with-the-trusted-identity",
        ),
        pytest.param(
            _exchange(
                status=413,
                request_bytes=0,
                request_sha256=None,
                declared_bytes=10**9,
                response_bytes=0,
                refusal=inputrecords.Refusal(413, "RequestTooLarge", "too large"),
            ),
            inputrecords.METADATA,
            "RequestTooLarge",
            {
                "caller": {"address": "10.0.0.7:51234"},
                "method": "POST",
                "path": "/v1/models/m:predict",
                "status": 413,
                "requestBytes": 0,
                "responseBytes": 0,
                "declaredBytes": 10**9,
                "latencyMs": 4.2,
            },
            id="refused-unread-no-digest-declared-size",
        ),
        pytest.param(
            _exchange(status=0, error="the caller closed the connection", response_bytes=0),
            inputrecords.METADATA,
            "Aborted",
            {
                "caller": {"address": "10.0.0.7:51234"},
                "method": "POST",
                "path": "/v1/models/m:predict",
                "status": 0,
                "requestBytes": 12,
                "responseBytes": 0,
                "requestSha256": hashlib.sha256(b'{"q":"text"}').hexdigest(),
                "latencyMs": 4.2,
                "error": "the caller closed the connection",
            },
            id="aborted-by-the-caller",
        ),
    ],
)
def test_record_details(
    exchange: inputrecords.Exchange, mode: str, reason: str, expected: dict[str, typing.Any]
) -> None:
    rules = inputrecords.Redaction.of(paths=["$.q"], headers=[])
    assert inputrecords.details_of(exchange, mode=mode, rules=rules, key=KEY) == expected
    assert inputrecords.reason_of(exchange) == reason


def test_payload_record_has_redacted_headers_and_body() -> None:
    rules = inputrecords.Redaction.of(paths=["$.q"], headers=[])
    details = inputrecords.details_of(_exchange(), mode=inputrecords.PAYLOAD, rules=rules, key=KEY)
    assert details["headers"] == [
        ["content-type", "application/json"],
        ["authorization", _mac(b"Bearer t")],
    ]
    assert details["payload"] == {"recorded": True, "json": {"q": _mac(b"text")}}
    assert "text" not in json.dumps(details)


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "seen", "limit", "status"),
    [
        pytest.param(100, 0, 100, None, id="declared-at-the-limit"),
        pytest.param(101, 0, 100, 413, id="declared-over-the-limit-refused-before-reading"),
        pytest.param(None, 100, 100, None, id="streamed-at-the-limit"),
        pytest.param(None, 101, 100, 413, id="streamed-past-the-limit"),
        pytest.param(None, 0, 1, None, id="no-body"),
    ],
)
def test_size_limit(declared: int | None, seen: int, limit: int, status: int | None) -> None:
    refusal = inputrecords.size_refusal(declared=declared, seen=seen, limit=limit)
    assert (refusal.status if refusal else None) == status
    if refusal is not None:
        assert refusal.reason == "RequestTooLarge"
        assert "spec.audit.maxRequestBytes" in refusal.message


@pytest.mark.parametrize(
    ("rate", "burst", "times", "allowed"),
    [
        pytest.param(10.0, 3, [0, 0, 0, 0], [True, True, True, False], id="burst-then-refused"),
        pytest.param(
            10.0, 1, [0, 0.05, 0.1, 0.1], [True, False, True, False], id="refills-at-the-rate"
        ),
        pytest.param(
            1.0, 2, [0, 0, 100, 100, 100], [True, True, True, True, False], id="never-past-burst"
        ),
        pytest.param(5.0, 1, [10, 9, 10.2], [True, False, True], id="clock-going-back-gives-none"),
    ],
)
def test_rate_limit(rate: float, burst: int, times: list[float], allowed: list[bool]) -> None:
    bucket = inputrecords.TokenBucket(rate=rate, burst=burst, now=times[0])
    got = [inputrecords.rate_refusal(bucket, now=t) is None for t in times]
    assert got == allowed


def test_no_rate_limit_without_a_bucket() -> None:
    assert inputrecords.rate_refusal(None, now=0.0) is None


# --------------------------------------------------------------------------------------------
# Request framing: what the proxy refuses so that it and the server agree where a request ends
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
            400,
            id="length-and-chunked",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", 400, id="two-lengths"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: -1", 400, id="negative-length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked",
            501,
            id="coding-other-than-chunked",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nX-A: 1\r\n folded", 400, id="obsolete-folding"),
        pytest.param(b"POST / HTTP/1.1\r\nX-A : 1", 400, id="space-before-colon"),
        pytest.param(b"POST / HTTP/2.0", 400, id="not-http-1"),
        pytest.param(b"POST /", 400, id="no-version"),
    ],
)
def test_ambiguous_framing_is_refused(head: bytes, status: int) -> None:
    with pytest.raises(auditproxy._Malformed) as refused:
        auditproxy.parse_request_head(head + b"\r\n\r\n")
    assert refused.value.status == status


@pytest.mark.parametrize(
    ("head", "length", "chunked", "keep_alive"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a", None, False, True, id="no-body-keep-alive"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5", 5, False, True, id="repeated-equal-length"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked", None, True, True, id="chunked"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nConnection: close", None, False, False, id="close"),
        pytest.param(b"GET / HTTP/1.0", None, False, False, id="http-1.0-closes"),
    ],
)
def test_framing_read(head: bytes, length: int | None, chunked: bool, keep_alive: bool) -> None:
    parsed = auditproxy.parse_request_head(head + b"\r\n\r\n")
    assert (parsed.length, parsed.chunked, parsed.keep_alive) == (length, chunked, keep_alive)


# --------------------------------------------------------------------------------------------
# The policy's say
# --------------------------------------------------------------------------------------------


def _spec(inputs: str) -> v1alpha1.ModelDeploymentSpec:
    return v1alpha1.ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "m", "version": "1", "source": {"uri": "s3://models/m/1/"}},
            "serving": {"image": "registry.example/server@sha256:" + "0" * 64},
            "audit": {"inputs": inputs},
        }
    )


@pytest.mark.parametrize(
    ("inputs", "allow_payload", "refused"),
    [
        pytest.param("Payload", False, True, id="payload-not-allowed"),
        pytest.param("Payload", True, False, id="payload-allowed"),
        pytest.param("Metadata", False, False, id="metadata-needs-no-permission"),
        pytest.param("None", False, False, id="none-needs-no-permission"),
    ],
)
def test_payload_needs_the_policy(inputs: str, allow_payload: bool, refused: bool) -> None:
    audit = trustpolicy.InputAudit(allow_payload=allow_payload)
    violations = inputaudit.check_inputs(_spec(inputs), audit=audit, policy_name="prod")
    assert bool(violations) == refused
    if refused:
        assert violations[0].reason == reasons.Reason.PAYLOAD_AUDIT_NOT_ALLOWED
        assert "allowPayload" in violations[0].message


# --------------------------------------------------------------------------------------------
# The pipe to the record writer, and the metrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exchange",
    [
        pytest.param(_exchange(), id="payload-with-headers"),
        pytest.param(
            _exchange(
                headers=[],
                payload=None,
                request_sha256=None,
                declared_bytes=5,
                refusal=inputrecords.Refusal(413, "RequestTooLarge", "too large"),
            ),
            id="refused-unread",
        ),
        pytest.param(
            _exchange(identity="x", error="broken", payload_complete=False, payload=None),
            id="broken-with-identity",
        ),
    ],
)
def test_what_crosses_the_pipe_gives_the_same_record(exchange: inputrecords.Exchange) -> None:
    rules = inputrecords.Redaction.of(paths=["$.q"], headers=[])
    line = recordwriter.encode(exchange)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    back = recordwriter.decode(json.loads(line))
    for mode in (inputrecords.METADATA, inputrecords.PAYLOAD):
        assert inputrecords.details_of(back, mode=mode, rules=rules, key=KEY) == (
            inputrecords.details_of(exchange, mode=mode, rules=rules, key=KEY)
        )
    assert inputrecords.reason_of(back) == inputrecords.reason_of(exchange)
    assert inputrecords.message_of(back) == inputrecords.message_of(exchange)


def test_metrics_exposition() -> None:
    metrics = proxymetrics.Metrics()
    metrics.observe(status=200, seconds=0.0007, request_bytes=10, response_bytes=20)
    metrics.observe(status=200, seconds=3.0, request_bytes=1, response_bytes=2)
    metrics.observe(status=429, seconds=0.0001, request_bytes=0, response_bytes=0)
    metrics.refuse("RateLimited")
    lines = metrics.exposition().splitlines()
    assert 'modelguard_audit_proxy_requests_total{code="200"} 2' in lines
    assert 'modelguard_audit_proxy_refused_total{reason="RateLimited"} 1' in lines
    assert "modelguard_audit_proxy_request_bytes_total 11" in lines
    # Cumulative buckets: 0.0001 and 0.0007 are within 1 ms, 3 s within 5 s, all within +Inf.
    assert 'modelguard_audit_proxy_request_duration_seconds_bucket{le="0.0005"} 1' in lines
    assert 'modelguard_audit_proxy_request_duration_seconds_bucket{le="0.001"} 2' in lines
    assert 'modelguard_audit_proxy_request_duration_seconds_bucket{le="2.5"} 2' in lines
    assert 'modelguard_audit_proxy_request_duration_seconds_bucket{le="5"} 3' in lines
    assert 'modelguard_audit_proxy_request_duration_seconds_bucket{le="+Inf"} 3' in lines
    assert "modelguard_audit_proxy_request_duration_seconds_count 3" in lines
    names = {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert all(name.startswith("modelguard_audit_proxy_") for name in names)
