"""The audit proxy's vocabulary shared with the API: the headers it always redacts and the
reasons of its InferenceRequest records. One source for what the proxy does and what the CRDs
(`kubectl explain`) and docs/status.md say it does.

No pydantic here: the audit proxy loads it without the API models.
"""

from __future__ import annotations

import typing

PROXY_BASE_MEMORY_MIB: typing.Final = 96
"""The audit proxy's memory with no connection: the proxy and its record writer (some 60 MiB
measured) and the record queue (8 MiB by default)."""
PROXY_CONNECTION_MEMORY_MIB: typing.Final = 1
"""What one caller's connection may hold at most in the proxy: the caller's and the model
server's stream buffers (twice the 64 KiB head bound, plus one 256 KiB read each), a piece on its
way and the 256 KiB write high-water mark in front of a slow reader, a recorded payload: some
650 KiB measured with a model server that does not read the body, or a caller that does not read
the answer (tests/unit/test_audit_proxy_memory.py), the rest for the sockets' kernel buffers,
which count against the container's memory too."""


def proxy_memory_limit_mib(max_connections: int) -> int:
    """The audit proxy's memory limit, in MiB, for `max_connections` connections at once: the
    connection bound is what bounds its memory, so the limit grows with it. A fixed limit below
    it would let callers holding connections open get the proxy killed (and every request in
    flight with it) long before the bound refuses one."""
    return PROXY_BASE_MEMORY_MIB + max_connections * PROXY_CONNECTION_MEMORY_MIB


# Credentials are never recorded, whatever the rules say: they are redacted like any other rule's
# values (length and HMAC), so a leaked credential can still be matched against the log. Header
# names match in any case; they are written here as they are usually spelled.
ALWAYS_REDACTED_HEADERS: typing.Final = (
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Set-Cookie",
    "X-Api-Key",
    # The credential headers of the common inference APIs: Azure OpenAI and Azure AI (api-key),
    # Azure API Management (Ocp-Apim-Subscription-Key), Google (X-Goog-Api-Key), OpenStack and
    # others (X-Auth-Token), AWS session tokens.
    "Api-Key",
    "Ocp-Apim-Subscription-Key",
    "X-Goog-Api-Key",
    "X-Auth-Token",
    "X-Amz-Security-Token",
)

# Why the proxy answered a request itself (the record's reason, and the label of
# modelguard_audit_proxy_refused_total).
REASON_TOO_LARGE: typing.Final = "RequestTooLarge"
"""413: the body is larger than spec.audit.maxRequestBytes."""
REASON_RATE_LIMITED: typing.Final = "RateLimited"
"""429: past spec.audit.rateLimit."""
REASON_BAD_REQUEST: typing.Final = "BadRequest"
"""400, 431, 501: a request head, framing or chunk line refused (never guessed at)."""
REASON_TOO_MANY_CONNECTIONS: typing.Final = "TooManyConnections"
"""503: past spec.audit.maxConnections callers' connections at once."""
REASON_REQUEST_TIMEOUT: typing.Final = "RequestTimeout"
"""408: nothing of the request body (or a chunk line, or a trailer) arrived for the head
timeout; not a malformed request, and counted apart from one."""
REFUSAL_REASONS: typing.Final = (
    REASON_TOO_LARGE,
    REASON_RATE_LIMITED,
    REASON_BAD_REQUEST,
    REASON_TOO_MANY_CONNECTIONS,
    REASON_REQUEST_TIMEOUT,
)

# What became of a request the proxy passed on.
REASON_ANSWERED: typing.Final = "Answered"
REASON_UPSTREAM_FAILED: typing.Final = "UpstreamFailed"
REASON_ABORTED: typing.Final = "Aborted"
EXCHANGE_REASONS: typing.Final = (REASON_ANSWERED, REASON_UPSTREAM_FAILED, REASON_ABORTED)


def always_redacted_text() -> str:
    """The always-redacted headers as a sentence's list: `A, B and C`."""
    *most, last = ALWAYS_REDACTED_HEADERS
    return f"{', '.join(most)} and {last}"
