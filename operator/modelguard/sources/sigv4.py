"""AWS Signature Version 4 for S3 requests (header-based), pure.

What readers and the backup stores need: requests with an empty payload, a payload whose SHA-256
is known before it is sent (the server then refuses other bytes), or an unsigned one. The
canonical request follows the S3 rules (the path is encoded once, not twice as for other
services). Proven against AWS's published S3 examples (tests/unit/test_sources_sigv4.py) and
against MinIO (tests/integration).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# x-amz-content-sha256 of a payload whose digest is not known before it is sent.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# RFC 3986 unreserved characters are the only ones SigV4 leaves unencoded.
_UNRESERVED = "-_.~"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """An S3 access key pair; repr and str never show the secret or the session token."""

    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)


def encode_path(path: str) -> str:
    """`path` ("/bucket/key") encoded for both the request line and the canonical request."""
    return urllib.parse.quote(path, safe="/" + _UNRESERVED)


def encode_query(params: dict[str, str]) -> str:
    """The canonical query string, which is also what the request sends."""
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(params.items()))


def _encode(value: str) -> str:
    return urllib.parse.quote(value, safe=_UNRESERVED)


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: str,
    headers: dict[str, str],
    credentials: Credentials,
    region: str,
    now: datetime.datetime,
    payload_sha256: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """The headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256, the session
    token if any, and Authorization. `path` and `query` are already encoded (encode_path,
    encode_query) and are sent exactly so."""
    amz_date = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {key.lower(): " ".join(value.split()) for key, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + credentials.secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
