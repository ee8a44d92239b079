"""The audit proxy's vocabulary shared with the API: the headers it always redacts and the
reasons of its InferenceRequest records. One source for what the proxy does and what the CRDs
(`kubectl explain`) and docs/status.md say it does.

No pydantic here: the audit proxy loads it without the API models.
"""

from __future__ import annotations

import typing

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
