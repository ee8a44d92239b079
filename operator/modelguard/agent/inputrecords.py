"""What the audit proxy records about one inference request, and what it refuses (pure).

A record's details are built here from the facts the proxy gathered while streaming (caller,
method, path, sizes, the request body's SHA-256, status, latency); with payloads recorded, the
request's headers and JSON body are added after redaction: every value a rule names is replaced by
its length and a keyed HMAC, so equal values can still be told equal within one proxy's log while
the value itself is not kept. The limits (request size, request rate) are decided here too, each
as a small function returning a decision with a reason, so that the proxy's answers (413, 429)
and their records say the same thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import typing

from modelguard.api import inputaudit

METADATA: typing.Final = "Metadata"
EMPTY_SHA256: typing.Final = hashlib.sha256().hexdigest()
PAYLOAD: typing.Final = "Payload"

# Matched lower-cased; the list and why it holds each name are in the API's vocabulary, which the
# CRDs' descriptions are written from.
ALWAYS_REDACTED_HEADERS: typing.Final = frozenset(
    name.lower() for name in inputaudit.ALWAYS_REDACTED_HEADERS
)
# Query parameters whose values are credentials in common APIs (`?key=` for Google, `?api_key=`,
# OAuth's `access_token`, pre-signed URLs' signatures): redacted in the recorded target in every
# mode, Metadata included, matched on the name lower-cased with `-` read as `_`.
CREDENTIAL_QUERY_PARAMETERS: typing.Final = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "access_token",
        "id_token",
        "refresh_token",
        "token",
        "auth",
        "password",
        "secret",
        "client_secret",
        "code",
        "sig",
        "signature",
        "x_amz_signature",
        "x_amz_security_token",
        "x_amz_credential",
        "x_goog_signature",
        "x_goog_credential",
    }
)
MAX_RULES: typing.Final = 64
# A path is $ then .name, .*, [n] or [*] steps; names are JSON object keys of word characters
# and dashes (quoted keys are not supported: a rule that cannot be parsed is refused, never
# ignored).
_STEP: typing.Final = re.compile(r"\.([A-Za-z0-9_-]+|\*)|\[(\*|[0-9]+)\]")
_HEADER_NAME: typing.Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Deeper than any inference request; what lies below is redacted whole.
_MAX_DEPTH: typing.Final = 32
WILDCARD: typing.Final = "*"


class InvalidRule(ValueError):
    """A redaction rule that cannot be applied; the message names it and what is accepted."""


def parse_path(text: str) -> tuple[str, ...]:
    """A JSON path rule as its steps: object keys, "*" (any key or index) or "[n]" indices as
    "#n"; InvalidRule naming the rule otherwise."""
    if not text.startswith("$"):
        raise InvalidRule(
            f"redaction path {text!r} does not start with $; accepted: $ followed by .name, .*, "
            "[n] or [*] steps, e.g. $.messages[*].content"
        )
    steps: list[str] = []
    at = 1
    while at < len(text):
        match = _STEP.match(text, at)
        if match is None:
            raise InvalidRule(
                f"redaction path {text!r}: cannot read it from character {at + 1}; accepted "
                "steps are .name (letters, digits, _ and -), .*, [n] and [*]"
            )
        name, index = match.group(1), match.group(2)
        if name is not None:
            steps.append(name)
        else:
            steps.append(WILDCARD if index == WILDCARD else f"#{index}")
        at = match.end()
    if not steps:
        raise InvalidRule(f"redaction path {text!r} names the whole body; use a step below $")
    return tuple(steps)


def path_text(steps: tuple[str, ...]) -> str:
    """A parsed path written back as its rule."""
    out = "$"
    for step in steps:
        if step == WILDCARD:
            out += ".*"
        elif step.startswith("#"):
            out += f"[{step[1:]}]"
        else:
            out += f".{step}"
    return out


def header_rule(text: str) -> str:
    """A header-name rule, lower-cased; InvalidRule when it is not a header name."""
    if not _HEADER_NAME.fullmatch(text):
        raise InvalidRule(f"redaction header {text!r} is not an HTTP header name")
    return text.lower()


@dataclasses.dataclass(frozen=True)
class Redaction:
    """Which values are replaced. Rules only add redactions: the policy's and the model's rules
    are joined, so a model can redact more than its policy but never less (deny wins)."""

    paths: tuple[tuple[str, ...], ...] = ()
    headers: frozenset[str] = ALWAYS_REDACTED_HEADERS

    @classmethod
    def of(cls, *, paths: typing.Iterable[str], headers: typing.Iterable[str]) -> Redaction:
        parsed = tuple(sorted({parse_path(path) for path in paths}))
        names = frozenset(header_rule(name) for name in headers) | ALWAYS_REDACTED_HEADERS
        if len(parsed) > MAX_RULES or len(names) > MAX_RULES + len(ALWAYS_REDACTED_HEADERS):
            raise InvalidRule(f"more than {MAX_RULES} redaction paths or headers")
        return cls(paths=parsed, headers=names)

    def joined(self, other: Redaction) -> Redaction:
        return Redaction(
            paths=tuple(sorted(set(self.paths) | set(other.paths))),
            headers=self.headers | other.headers,
        )


def redacted_value(raw: bytes, *, key: bytes) -> dict[str, typing.Any]:
    """What stands for a redacted value: its length in bytes and its HMAC-SHA256 under `key`."""
    mac = hmac.new(key, raw, hashlib.sha256).hexdigest()
    return {"redacted": {"length": len(raw), "hmac": f"hmac-sha256:{mac}"}}


def _value_bytes(value: typing.Any) -> bytes:
    # Strings by their UTF-8 bytes (what a reader would compare); anything else as compact JSON.
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def redact_json(value: typing.Any, rules: Redaction, *, key: bytes) -> typing.Any:
    """`value` (parsed JSON) with every value a path rule names replaced."""
    return _redact(value, [(path, 0) for path in rules.paths], key=key, depth=0)


def _redact(
    value: typing.Any, live: list[tuple[tuple[str, ...], int]], *, key: bytes, depth: int
) -> typing.Any:
    if any(at == len(path) for path, at in live) or depth >= _MAX_DEPTH:
        return redacted_value(_value_bytes(value), key=key)
    if isinstance(value, dict):
        out: dict[str, typing.Any] = {}
        for name, child in value.items():
            following = [(path, at + 1) for path, at in live if path[at] in (WILDCARD, name)]
            out[name] = _redact(child, following, key=key, depth=depth + 1)
        return out
    if isinstance(value, list):
        items = []
        for index, child in enumerate(value):
            following = [(path, at + 1) for path, at in live if path[at] in (WILDCARD, f"#{index}")]
            items.append(_redact(child, following, key=key, depth=depth + 1))
        return items
    return value


def redact_target(target: str, *, key: bytes) -> str:
    """`target` with the value of every credential-like query parameter replaced by
    `{redacted:LENGTH:hmac-sha256:HEX}` (its length in bytes and keyed HMAC, as a redacted
    header's); the rest as sent."""
    path, question, query = target.partition("?")
    if not question:
        return target
    parameters = []
    for parameter in query.split("&"):
        name, equals, value = parameter.partition("=")
        if equals and name.lower().replace("-", "_") in CREDENTIAL_QUERY_PARAMETERS:
            raw = value.encode("latin-1", "replace")
            mac = hmac.new(key, raw, hashlib.sha256).hexdigest()
            parameters.append(f"{name}={{redacted:{len(raw)}:hmac-sha256:{mac}}}")
        else:
            parameters.append(parameter)
    return path + "?" + "&".join(parameters)


def redact_headers(
    headers: typing.Iterable[tuple[str, str]], rules: Redaction, *, key: bytes
) -> list[list[typing.Any]]:
    """The headers as [name, value] pairs in order, names lower-cased, redacted values replaced."""
    out: list[list[typing.Any]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in rules.headers:
            out.append([lowered, redacted_value(value.encode("latin-1", "replace"), key=key)])
        else:
            out.append([lowered, value])
    return out


def payload_of(
    body: bytes | None, *, content_type: str, rules: Redaction, key: bytes, complete: bool
) -> dict[str, typing.Any]:
    """The recorded form of a request body kept up to the payload bound: JSON redacted by the
    rules; anything else (or JSON that does not parse) by its length and HMAC alone, since rules
    cannot say what to keep of a format they do not address."""
    if body is None or not complete:
        return {"recorded": False, "why": "larger than the payload bound; its digest is recorded"}
    if "json" in content_type.lower():
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        else:
            return {"recorded": True, "json": redact_json(parsed, rules, key=key)}
    return {"recorded": True, **redacted_value(body, key=key)}


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A request the proxy answers itself: the status, the reason recorded, and the message
    the caller reads."""

    status: int
    reason: str
    message: str


def size_refusal(*, declared: int | None, seen: int, limit: int) -> Refusal | None:
    """413 when the body's declared length, or the bytes seen so far, exceed `limit`."""
    over = declared if declared is not None and declared > limit else None
    if over is None and seen > limit:
        over = seen
    if over is None:
        return None
    return Refusal(
        status=413,
        reason=inputaudit.REASON_TOO_LARGE,
        message=f"request body of more than {limit} bytes (spec.audit.maxRequestBytes)",
    )


class TokenBucket:
    """Requests per second with a burst: `take(now)` is True while a token is left. The clock is
    the caller's (monotonic seconds), so the decision is testable without waiting."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def rate_refusal(bucket: TokenBucket | None, *, now: float) -> Refusal | None:
    """429 when the bucket is empty (no bucket: no rate limit)."""
    if bucket is None or bucket.take(now):
        return None
    return Refusal(
        status=429,
        reason=inputaudit.REASON_RATE_LIMITED,
        message=f"more than {bucket.rate:g} requests per second (burst {bucket.burst}) "
        "(spec.audit.rateLimit)",
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Exchange:
    """What the proxy saw of one request and its answer."""

    caller: str
    """The peer's address, host:port."""
    method: str
    target: str
    """The request target as sent (path and query)."""
    started: float
    """Monotonic seconds when the request's head was read."""
    identity: str | None = None
    """The caller's identity from the header the TrustPolicy names as trusted, if any."""
    request_bytes: int = 0
    """Body bytes received from the caller."""
    request_sha256: str | None = None
    """SHA-256 of the whole body; None when the body was not read to its end (refused)."""
    declared_bytes: int | None = None
    """The Content-Length of a body refused unread."""
    response_bytes: int = 0
    status: int = 0
    """0: no answer reached the caller (the connection broke)."""
    finished: float = 0.0
    refusal: Refusal | None = None
    error: str | None = None
    """Why the exchange did not complete, when it did not."""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    payload: bytes | None = None
    """The request body while it fits the payload bound (Payload only)."""
    payload_complete: bool = True
    content_type: str = ""


def reason_of(exchange: Exchange) -> str:
    if exchange.refusal is not None:
        return exchange.refusal.reason
    if exchange.error is not None:
        return (
            inputaudit.REASON_ABORTED if exchange.status == 0 else inputaudit.REASON_UPSTREAM_FAILED
        )
    return inputaudit.REASON_ANSWERED


def details_of(
    exchange: Exchange,
    *,
    mode: str,
    rules: Redaction,
    key: bytes,
) -> dict[str, typing.Any]:
    """The details of the record of `exchange`: metadata always; redacted headers and payload
    when `mode` is Payload."""
    latency_ms = max(0.0, exchange.finished - exchange.started) * 1000
    details: dict[str, typing.Any] = {
        "caller": {"address": exchange.caller},
        "method": exchange.method,
        "path": redact_target(exchange.target, key=key),
        "status": exchange.status,
        "requestBytes": exchange.request_bytes,
        "responseBytes": exchange.response_bytes,
        "latencyMs": round(latency_ms, 3),
    }
    if exchange.request_sha256 is not None:
        details["requestSha256"] = exchange.request_sha256
    if exchange.declared_bytes is not None:
        details["declaredBytes"] = exchange.declared_bytes
    if exchange.identity is not None:
        details["caller"]["identity"] = exchange.identity
    if exchange.error is not None:
        details["error"] = exchange.error
    if mode == PAYLOAD:
        details["headers"] = redact_headers(exchange.headers, rules, key=key)
        details["payload"] = payload_of(
            exchange.payload,
            content_type=exchange.content_type,
            rules=rules,
            key=key,
            complete=exchange.payload_complete,
        )
    return details


def message_of(exchange: Exchange) -> str:
    if exchange.refusal is not None:
        return (
            f"{exchange.method} refused with {exchange.refusal.status}: {exchange.refusal.message}"
        )
    if exchange.error is not None:
        return f"{exchange.method} not completed: {exchange.error}"
    return f"{exchange.method} answered {exchange.status}"
