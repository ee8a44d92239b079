"""Reading a folder of an S3 bucket (AWS or any S3-compatible server such as MinIO).

Requests are signed with SigV4 (sigv4.py) and sent over aiohttp with path-style addressing
(`<endpoint>/<bucket>/<key>`), which every S3-compatible server understands and which keeps TLS
valid for bucket names with dots. Listing uses ListObjectsV2 with URL-encoded keys.
"""

from __future__ import annotations

import dataclasses
import datetime
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from xml.etree import ElementTree

from modelguard.sources import base, errors, locations, sigv4, transport

# A listing page holds at most 1000 keys of at most 1 KiB each.
_MAX_LISTING_PAGE = 16 << 20
DEFAULT_MAX_FILES = 100_000


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """How to reach and authenticate to the server; the operator fills it from a Secret."""

    # None: anonymous requests (public buckets).
    credentials: sigv4.Credentials | None = None
    region: str = "us-east-1"
    # An S3-compatible server, e.g. "https://minio.storage:9000"; plain http only when written so.
    # None: AWS's regional endpoint.
    endpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    base: str  # scheme://host[:port], no trailing slash
    host: str  # the Host header: host[:port], the port only when not the scheme's default


def resolve_endpoint(settings: S3Settings) -> Endpoint:
    """The server a client of `settings` connects to: AWS S3's regional endpoint by default."""
    raw = settings.endpoint or f"https://s3.{settings.region}.amazonaws.com"
    try:
        parts = urllib.parse.urlsplit(raw)
        port = parts.port
    except ValueError:
        raise errors.InvalidSource(f"S3 endpoint {errors.quoted(raw)}: not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise errors.InvalidSource(f"S3 endpoint {errors.quoted(raw)}: want https://host[:port]")
    if parts.username is not None or parts.path.strip("/") or parts.query or parts.fragment:
        raise errors.InvalidSource(
            f"S3 endpoint {errors.quoted(raw)}: only scheme, host and port (credentials come from "
            "a Secret)"
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = 443 if scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    return Endpoint(base=f"{scheme}://{netloc}", host=netloc)


class S3Source:
    """A folder (`s3://bucket/prefix/`) of an S3 bucket."""

    can_list = True

    def __init__(
        self,
        location: locations.S3Location,
        *,
        settings: S3Settings,
        transport_settings: base.Transport,
        max_files: int = DEFAULT_MAX_FILES,
        page_size: int = 1000,
    ) -> None:
        self.location = location
        self._page_size = page_size
        self.uri = str(location)
        self._settings = settings
        self._endpoint = resolve_endpoint(settings)
        self._max_files = max_files
        self._client = transport.HttpClient(transport=transport_settings)

    async def __aenter__(self) -> S3Source:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _request(
        self, key: str, query: dict[str, str]
    ) -> tuple[str, Callable[[str], dict[str, str]]]:
        path = sigv4.encode_path(f"/{self.location.bucket}/{key}")
        query_string = sigv4.encode_query(query)
        url = self._endpoint.base + path + (f"?{query_string}" if query_string else "")
        credentials = self._settings.credentials

        def headers(_: str) -> dict[str, str]:
            if credentials is None:
                return {}
            return sigv4.sign(
                method="GET",
                host=self._endpoint.host,
                path=path,
                query=query_string,
                headers={},
                credentials=credentials,
                region=self._settings.region,
                now=datetime.datetime.now(datetime.UTC),
            )

        return url, headers

    def _error_for(self, status: int, body: bytes, what: str) -> errors.SourceError:
        code, message = error_code(body)
        # The server's words, bounded and quoted: whoever runs it chooses them.
        detail = f"HTTP {status}"
        if code:
            detail += f", {errors.answered(f'{code}: {message}')}"
        if status == 404 and code == "NoSuchBucket":
            return errors.SourceNotFound(f"bucket {self.location.bucket!r} does not exist")
        if status == 404:
            return errors.MissingFile(f"{what}: not found")
        if status in (401, 403):
            return errors.SourceDenied(f"{what}: {detail}")
        if status in (301, 307) or code == "AuthorizationHeaderMalformed":
            return errors.InvalidSource(
                f"{what}: {detail} (the bucket is served elsewhere: check the endpoint and region)"
            )
        if status >= 500:
            return errors.SourceUnreachable(f"{what}: {detail}")
        return errors.BadResponse(f"{what}: {detail}")

    async def read_small(self, name: str, *, max_bytes: int) -> bytes:
        key = locations.s3_key(self.location, name)
        url, headers = self._request(key, {})
        what = f"s3://{self.location.bucket}/{key}"
        async with self._client.get(
            url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            return await transport.read_bounded(response, max_bytes=max_bytes, what=what)

    def stream(
        self, name: str, *, chunk_size: int = base.DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        # Checked here, not in the generator, so that an unsafe name fails at the call.
        key = locations.s3_key(self.location, name)
        return self._stream(key, chunk_size=chunk_size)

    async def _stream(self, key: str, *, chunk_size: int) -> AsyncGenerator[bytes, None]:
        url, headers = self._request(key, {})
        what = f"s3://{self.location.bucket}/{key}"
        async with self._client.get(
            url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            async for chunk in transport.iter_body(response, chunk_size=chunk_size, what=what):
                yield chunk

    async def list_files(self) -> list[base.ObjectInfo]:
        found: list[base.ObjectInfo] = []
        token: str | None = None
        prefix = self.location.prefix
        while True:
            query = {
                "list-type": "2",
                "prefix": prefix,
                "encoding-type": "url",
                "max-keys": str(self._page_size),
            }
            if token:
                query["continuation-token"] = token
            url, headers = self._request("", query)
            async with self._client.get(
                url, what=self.uri, headers=headers, error_for=self._error_for
            ) as response:
                body = await transport.read_bounded(
                    response, max_bytes=_MAX_LISTING_PAGE, what=self.uri
                )
            page, token = _parse_listing(body, prefix=prefix, what=self.uri)
            found.extend(page)
            if len(found) > self._max_files:
                raise errors.TooLarge(f"{self.uri}: more than {self._max_files} files")
            if token is None:
                return sorted(found, key=lambda info: info.name)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_xml(body: bytes) -> ElementTree.Element | None:
    try:
        # Python's expat refuses external entities and limits entity expansion (billion laughs);
        # the body is bounded before it gets here.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError:
        return None


def error_code(body: bytes) -> tuple[str, str]:
    """The Code and Message of an S3 error document (empty when the body is none)."""
    root = _parse_xml(body) if body else None
    if root is None:
        return "", ""
    fields = {_local(child.tag): (child.text or "") for child in root}
    return fields.get("Code", ""), fields.get("Message", "")


def _parse_listing(
    body: bytes, *, prefix: str, what: str
) -> tuple[list[base.ObjectInfo], str | None]:
    root = _parse_xml(body)
    if root is None or _local(root.tag) != "ListBucketResult":
        raise errors.BadResponse(f"{what}: the listing is not a ListBucketResult document")
    url_encoded = False
    truncated = False
    token: str | None = None
    found: list[base.ObjectInfo] = []
    for child in root:
        tag = _local(child.tag)
        if tag == "EncodingType":
            url_encoded = (child.text or "") == "url"
        elif tag == "IsTruncated":
            truncated = (child.text or "") == "true"
        elif tag == "NextContinuationToken":
            token = child.text or None
    for child in root:
        if _local(child.tag) != "Contents":
            continue
        fields = {_local(field.tag): (field.text or "") for field in child}
        key = fields.get("Key", "")
        if url_encoded:
            key = urllib.parse.unquote_plus(key)
        try:
            size = int(fields.get("Size", ""))
        except ValueError:
            raise errors.BadResponse(f"{what}: a listed object has no valid size") from None
        if not key.startswith(prefix):
            raise errors.BadResponse(f"{what}: listed {errors.quoted(key)} outside the prefix")
        name = key[len(prefix) :]
        # Folder markers (empty "dir/" objects) that consoles create are not files.
        if name == "" or (name.endswith("/") and size == 0):
            continue
        found.append(base.ObjectInfo(name=locations.check_name(name), size=size))
    if truncated and token is None:
        raise errors.BadResponse(f"{what}: a truncated listing without a continuation token")
    return found, token if truncated else None
