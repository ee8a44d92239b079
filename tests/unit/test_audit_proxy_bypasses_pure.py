"""Ways around the audit proxy's framing checks and records (decision 0026), in its pure parts.
Each test fails while the hole is open.

The proxy writes the caller's request head to the model server unchanged. Whatever the proxy
reads one way and a model server reads another (a field value holding a bare LF, a chunk line
holding one, HTTP/1.0 with Transfer-Encoding) lets a network caller put a second request inside
the first: the model server answers it, and no record names it."""

from __future__ import annotations

import pytest

from modelguard.agent import auditproxy, inputrecords

KEY = b"k" * 32


def _head(*fields: bytes, version: bytes = b"HTTP/1.1", target: bytes = b"/v1/predict") -> bytes:
    return (
        b"POST "
        + target
        + b" "
        + version
        + b"\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + (b"\r\n")
    )


@pytest.mark.parametrize(
    "field",
    [
        # A bare LF: Python's http.server, h11 (uvicorn) and others take it as the end of a
        # line; the proxy takes it as part of X-Pad's value and frames the body by the 28.
        pytest.param(b"X-Pad: a\nContent-Length: 0", id="bare-lf-content-length"),
        pytest.param(b"X-Pad: a\nTransfer-Encoding: chunked", id="bare-lf-transfer-encoding"),
        # RFC 9112 section 2.2: a bare CR must be refused or replaced by SP before forwarding.
        pytest.param(b"X-Pad: a\rTransfer-Encoding: chunked", id="bare-cr"),
        # RFC 9110 section 5.5: CR, LF and NUL in a field value are "invalid and dangerous";
        # a recipient must refuse the message or replace them with SP before forwarding it.
        pytest.param(b"X-Pad: a\x00b", id="nul"),
    ],
)
def test_a_field_value_holding_cr_lf_or_nul_is_refused(field: bytes) -> None:
    """Attack: a caller sends `Content-Length: 28` plus a field whose value holds a bare LF and a
    second framing header. The proxy frames the request by the one it sees and writes the head
    unchanged to the model server, which (like most HTTP/1.1 servers that accept a bare LF as a
    line end) sees the other one: the body the proxy recorded as data is a second request to the
    server, answered and never recorded. Expected: the proxy refuses the head (400) instead of
    passing it on."""
    head = _head(b"Host: model", field, b"Content-Length: 28")
    with pytest.raises(auditproxy._Malformed):
        auditproxy.parse_request_head(head)


def test_a_request_target_holding_a_bare_lf_is_refused() -> None:
    """Attack: the request line `POST /v1/predict\\nTransfer-Encoding:chunked HTTP/1.1` has three
    parts split on spaces, so the proxy accepts it; a server taking LF as a line end reads a
    request line and a framing header the proxy never judged. Expected: refused (400)."""
    head = _head(b"Host: model", b"Content-Length: 5", target=b"/v1/predict\nTransfer-Encoding:x")
    with pytest.raises(auditproxy._Malformed):
        auditproxy.parse_request_head(head)


def test_an_http10_request_with_transfer_encoding_is_not_kept_alive() -> None:
    """Attack: an HTTP/1.0 request with `Connection: keep-alive` and `Transfer-Encoding:
    chunked`. The proxy streams it as chunked and keeps both connections; a server that (like
    many) ignores Transfer-Encoding in HTTP/1.0 reads the body as the next request on the same
    connection, unrecorded. RFC 9112 section 6.1: a server receiving HTTP/1.0 with
    Transfer-Encoding MUST treat the framing as faulty and close the connection after it.
    Expected: refused, or at least not kept alive."""
    head = _head(
        b"Host: model",
        b"Connection: keep-alive",
        b"Transfer-Encoding: chunked",
        version=b"HTTP/1.0",
    )
    try:
        parsed = auditproxy.parse_request_head(head)
    except auditproxy._Malformed:
        return
    assert not parsed.keep_alive, "HTTP/1.0 with Transfer-Encoding is kept alive"


def test_a_chunk_line_holding_a_bare_lf_is_refused() -> None:
    """Attack: a chunk-size line `5;\\nGET /smuggled HTTP/1.1` ended by CRLF. The proxy reads the
    whole line up to its CRLF, takes 5 from before the `;` and counts the next 5 bytes as data; a
    server taking the LF as the line's end reads a different chunk size (and data) from there,
    so the two disagree on where the body ends. Expected: a chunk line with a control character
    in it is not a chunk line (None)."""
    assert auditproxy._chunk_size(b"5;\nGET /smuggled HTTP/1.1\r\n") is None
    assert auditproxy._chunk_size(b"5;ext\rx\r\n") is None


def test_a_credential_in_the_query_string_is_not_recorded_in_clear() -> None:
    """Attack (on the callers' secrets, by whoever reads the pod's log): many inference APIs take
    their key as a query parameter (`?key=`, `?api_key=`, `?access_token=`). The proxy redacts
    X-Api-Key and Authorization headers always, even in Payload mode, but records the request
    target verbatim in every mode, Metadata included: the same credential sent in the query is
    kept in clear in a log that log collectors copy everywhere. Expected: the value of
    credential-like query parameters is recorded redacted (length and HMAC), as the header is."""
    exchange = inputrecords.Exchange(
        caller="10.0.0.1:5555",
        method="POST",
        target="/v1/predict?api_key=sk-live-0123456789abcdef&access_token=ya29.secret",
        started=0.0,
        status=200,
    )
    for mode in (inputrecords.METADATA, inputrecords.PAYLOAD):
        details = inputrecords.details_of(
            exchange, mode=mode, rules=inputrecords.Redaction(), key=KEY
        )
        recorded = repr(details)
        assert "sk-live-0123456789abcdef" not in recorded, mode
        assert "ya29.secret" not in recorded, mode


@pytest.mark.parametrize(
    "header",
    [
        # Azure OpenAI and Azure AI endpoints take their key here.
        pytest.param("api-key", id="api-key"),
        # Google's APIs (Gemini, Vertex AI through API keys).
        pytest.param("x-goog-api-key", id="x-goog-api-key"),
        pytest.param("x-auth-token", id="x-auth-token"),
    ],
)
def test_credential_headers_of_common_inference_apis_are_always_redacted(header: str) -> None:
    """Attack (on callers' credentials, by whoever reads the pod's log): with `inputs: Payload`
    every request header is recorded, and only Authorization, Proxy-Authorization, Cookie,
    Set-Cookie and X-Api-Key are redacted whatever the rules say. Model servers that speak the
    Azure OpenAI or Google API take the caller's key in `api-key` or `x-goog-api-key`: those are
    kept in clear unless every policy author remembers to list them. Expected: the credential
    headers of the common inference APIs are redacted by default, like X-Api-Key."""
    exchange = inputrecords.Exchange(
        caller="10.0.0.1:5555",
        method="POST",
        target="/openai/deployments/m/chat/completions",
        started=0.0,
        status=200,
        headers=[("Content-Type", "application/json"), (header, "sk-live-0123456789abcdef")],
    )
    details = inputrecords.details_of(
        exchange, mode=inputrecords.PAYLOAD, rules=inputrecords.Redaction(), key=KEY
    )
    assert "sk-live-0123456789abcdef" not in repr(details["headers"])
