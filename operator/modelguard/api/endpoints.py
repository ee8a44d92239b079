"""S3 endpoints as a client connects to them, so that a Secret's and a TrustPolicy's compare
equal exactly when they name the same server. No pydantic: the agent loads it at start-up."""

import ipaddress
import urllib.parse


def normal(text: str) -> str:
    """`scheme://host[:port]` of an S3 endpoint, compared as a client connects: scheme and host
    lowercased, the scheme's default port left out, no trailing slash. ValueError otherwise."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError("is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("is not an http(s)://host[:port] URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("holds user information (credentials belong in the Secret)")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError("has a path, query or fragment (only scheme, host and port)")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{ipaddress.IPv6Address(host).compressed}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"
