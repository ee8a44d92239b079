"""Single objects of one S3 bucket, written once and read by version: what a backup store needs.

The same client as the sources (sigv4 signing, transport's bound addresses, refused redirects,
typed errors), with the requests a reader never makes: a PUT that may only create
(`If-None-Match: *`, refused with ObjectExists when the key is taken), carries an object lock
retention, and, when the payload's SHA-256 is known before it is sent, signs it
(`x-amz-content-sha256`) so that the server itself refuses any other bytes; a GET or HEAD of one
version; a retention that may only be lengthened; and the bucket's versioning and object lock
configuration.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from xml.etree import ElementTree

from modelguard.sources import base, errors, locations, s3, sigv4, transport

_XMLNS: typing.Final = "http://s3.amazonaws.com/doc/2006-03-01/"
# Configuration documents are a few hundred bytes.
_MAX_CONFIGURATION: typing.Final = 64 << 10
LockMode = typing.Literal["COMPLIANCE", "GOVERNANCE"]


@dataclasses.dataclass(frozen=True)
class Retention:
    """An object lock retention: nobody deletes or overwrites the version until `until`
    (COMPLIANCE: not even the root user; GOVERNANCE: only with s3:BypassGovernanceRetention)."""

    mode: LockMode
    until: datetime.datetime

    def header_until(self) -> str:
        return self.until.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Head:
    """What the server says of one object version without sending it."""

    size: int
    version_id: str | None
    retention: Retention | None


@dataclasses.dataclass(frozen=True)
class LockConfiguration:
    """A bucket's object lock configuration (GetObjectLockConfiguration)."""

    enabled: bool
    default_mode: str | None = None
    default_days: int | None = None


class S3Bucket:
    """The objects of one bucket; `key`s are whole keys, checked like file names."""

    def __init__(
        self,
        bucket: str,
        *,
        settings: s3.S3Settings,
        transport_settings: base.Transport,
    ) -> None:
        # Parsed as a source URI would be: the same bucket-name rules.
        self._location = locations.parse(f"s3://{bucket}/")
        assert isinstance(self._location, locations.S3Location)
        self.bucket = bucket
        self._settings = settings
        self._transport_settings = transport_settings
        self._endpoint = s3.resolve_endpoint(settings)
        self._client = transport.HttpClient(transport=transport_settings)

    @property
    def endpoint(self) -> str:
        return self._endpoint.base

    async def __aenter__(self) -> S3Bucket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the bucket ----------------------------------------------------------------------------

    async def versioning(self) -> str:
        """ "Enabled", "Suspended", or "" for a bucket that never had versioning."""
        root = await self._configuration("versioning")
        if root is None:
            return ""
        return next((node.text or "" for node in root if _local(node.tag) == "Status"), "")

    async def object_lock(self) -> LockConfiguration:
        """The bucket's object lock configuration; `enabled` False when it has none."""
        try:
            root = await self._configuration("object-lock")
        except errors.MissingFile:
            # ObjectLockConfigurationNotFoundError: a bucket made without object lock.
            return LockConfiguration(enabled=False)
        if root is None:
            return LockConfiguration(enabled=False)
        fields = {_local(node.tag): (node.text or "") for node in root.iter()}
        days = fields.get("Days") or None
        years = fields.get("Years") or None
        default_days = int(days) if days and days.isdigit() else None
        if default_days is None and years and years.isdigit():
            default_days = int(years) * 365
        return LockConfiguration(
            enabled=fields.get("ObjectLockEnabled") == "Enabled",
            default_mode=fields.get("Mode") or None,
            default_days=default_days,
        )

    async def _configuration(self, name: str) -> ElementTree.Element | None:
        url, headers = self._signed("GET", "", {name: ""})
        what = f"s3://{self.bucket} ({name} configuration)"
        async with self._client.request(
            "GET", url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            body = await transport.read_bounded(response, max_bytes=_MAX_CONFIGURATION, what=what)
        if not body.strip():
            return None
        root = _parse_xml(body)
        if root is None:
            raise errors.BadResponse(f"{what}: not an XML document")
        return root

    async def list_keys(self, prefix: str) -> list[base.ObjectInfo]:
        """Every key below `prefix` (a folder, ending in "/"), relative to it, sorted."""
        lister = s3.S3Source(
            locations.S3Location(bucket=self.bucket, prefix=prefix),
            settings=self._settings,
            transport_settings=self._transport_settings,
        )
        async with lister:
            return await lister.list_files()

    async def versions(self, key: str) -> list[str]:
        """The ids of every version of `key`, newest first (delete markers left out)."""
        url, headers = self._signed("GET", "", {"versions": "", "prefix": key})
        what = f"{self._what(key)} (versions)"
        async with self._client.request(
            "GET", url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            body = await transport.read_bounded(response, max_bytes=16 << 20, what=what)
        root = _parse_xml(body)
        if root is None or _local(root.tag) != "ListVersionsResult":
            raise errors.BadResponse(f"{what}: not a ListVersionsResult document")
        found = []
        for node in root:
            if _local(node.tag) != "Version":
                continue
            fields = {_local(child.tag): (child.text or "") for child in node}
            if fields.get("Key") == key and fields.get("VersionId"):
                found.append(fields["VersionId"])
        return found

    # -- objects -------------------------------------------------------------------------------

    async def head(self, key: str, *, version_id: str | None = None) -> Head | None:
        """The object's size, version and retention; None when there is no such object (or its
        latest version is a delete marker)."""
        url, headers = self._signed("HEAD", key, _version(version_id))
        try:
            async with self._client.request(
                "HEAD", url, what=self._what(key), headers=headers, error_for=self._error_for
            ) as response:
                found = response.headers
                size = int(found.get("Content-Length", "-1"))
                mode = found.get("x-amz-object-lock-mode", "").upper()
                until = found.get("x-amz-object-lock-retain-until-date")
                retention = None
                if mode in ("COMPLIANCE", "GOVERNANCE") and until:
                    retention = Retention(
                        mode=typing.cast(LockMode, mode),
                        until=datetime.datetime.fromisoformat(until.replace("Z", "+00:00")),
                    )
                return Head(
                    size=size, version_id=found.get("x-amz-version-id"), retention=retention
                )
        except errors.MissingFile:
            return None

    async def read(self, key: str, *, version_id: str | None = None, max_bytes: int) -> bytes:
        """The whole object (one version of it); TooLarge past `max_bytes`."""
        url, headers = self._signed("GET", key, _version(version_id))
        what = self._what(key)
        async with self._client.request(
            "GET", url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            return await transport.read_bounded(response, max_bytes=max_bytes, what=what)

    def stream(
        self,
        key: str,
        *,
        version_id: str | None = None,
        chunk_size: int = base.DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of one version of the object, in chunks of at most `chunk_size`."""
        locations.check_name(key)
        return self._stream(key, version_id=version_id, chunk_size=chunk_size)

    async def _stream(
        self, key: str, *, version_id: str | None, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        url, headers = self._signed("GET", key, _version(version_id))
        what = self._what(key)
        async with self._client.request(
            "GET", url, what=what, headers=headers, error_for=self._error_for
        ) as response:
            async for chunk in transport.iter_body(response, chunk_size=chunk_size, what=what):
                yield chunk

    async def put(
        self,
        key: str,
        body: bytes | Callable[[], AsyncIterator[bytes]],
        *,
        size: int,
        sha256: str | None,
        retention: Retention | None,
        create_only: bool = True,
    ) -> str | None:
        """Creates the object, never overwriting: ObjectExists when the key is taken
        (`create_only` False: a plain PUT, for restoring into a model's own source). `body` is
        the bytes, or a factory of a stream of exactly `size` bytes (the stream may raise to
        abandon the upload: the server then stores nothing). `sha256` (hex), when known, is
        signed, and the server refuses the object unless the bytes hash to it. Returns the
        new version's id (None for a bucket without versioning)."""
        headers: dict[str, str] = {"content-length": str(size)}
        if create_only:
            headers["if-none-match"] = "*"
        if retention is not None:
            headers["x-amz-object-lock-mode"] = retention.mode
            headers["x-amz-object-lock-retain-until-date"] = retention.header_until()
        url, signer = self._signed(
            "PUT", key, {}, headers=headers, payload=sha256 or sigv4.UNSIGNED_PAYLOAD
        )
        async with self._client.request(
            "PUT", url, what=self._what(key), headers=signer, error_for=self._error_for, body=body
        ) as response:
            return response.headers.get("x-amz-version-id")

    async def extend_retention(
        self, key: str, *, version_id: str | None, retention: Retention
    ) -> None:
        """Sets the version's retention to `retention`, which the server accepts only when it
        does not shorten the one in place (a writer without s3:BypassGovernanceRetention)."""
        document = (
            f'<Retention xmlns="{_XMLNS}"><Mode>{retention.mode}</Mode>'
            f"<RetainUntilDate>{retention.header_until()}</RetainUntilDate></Retention>"
        ).encode()
        # S3 requires an integrity header on this request; MD5 is what every server takes.
        md5 = base64.b64encode(hashlib.md5(document, usedforsecurity=False).digest()).decode()
        headers = {"content-md5": md5, "content-length": str(len(document))}
        url, signer = self._signed(
            "PUT",
            key,
            {"retention": "", **_version(version_id)},
            headers=headers,
            payload=hashlib.sha256(document).hexdigest(),
        )
        async with self._client.request(
            "PUT",
            url,
            what=f"{self._what(key)} (retention)",
            headers=signer,
            error_for=self._error_for,
            body=document,
        ):
            return

    # -- signing and errors --------------------------------------------------------------------

    def _what(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _signed(
        self,
        method: str,
        key: str,
        query: dict[str, str],
        *,
        headers: dict[str, str] | None = None,
        payload: str = sigv4.EMPTY_SHA256,
    ) -> tuple[str, Callable[[str], dict[str, str]]]:
        if key:
            locations.check_name(key)
        path = sigv4.encode_path(f"/{self.bucket}/{key}")
        query_string = sigv4.encode_query(query)
        url = self._endpoint.base + path + (f"?{query_string}" if query_string else "")
        credentials = self._settings.credentials
        extra = dict(headers or {})

        def signed(_: str) -> dict[str, str]:
            if credentials is None:
                return {**extra, "x-amz-content-sha256": payload}
            return sigv4.sign(
                method=method,
                host=self._endpoint.host,
                path=path,
                query=query_string,
                headers=extra,
                credentials=credentials,
                region=self._settings.region,
                now=datetime.datetime.now(datetime.UTC),
                payload_sha256=payload,
            )

        return url, signed

    def _error_for(self, status: int, body: bytes, what: str) -> errors.SourceError:
        code, message = s3.error_code(body)
        detail = f"HTTP {status}"
        if code:
            detail += f", {errors.answered(f'{code}: {message}')}"
        if status == 412:
            return errors.ObjectExists(f"{what}: already exists; it is never overwritten")
        if status == 404 and code == "NoSuchBucket":
            return errors.SourceNotFound(f"bucket {self.bucket!r} does not exist")
        if status == 404:
            return errors.MissingFile(f"{what}: not found ({detail})")
        if status in (401, 403):
            return errors.SourceDenied(f"{what}: {detail}")
        if status in (301, 307) or code == "AuthorizationHeaderMalformed":
            return errors.InvalidSource(
                f"{what}: {detail} (the bucket is served elsewhere: check the endpoint and region)"
            )
        if status >= 500:
            return errors.SourceUnreachable(f"{what}: {detail}")
        if code in ("XAmzContentSHA256Mismatch", "BadDigest"):
            # The server hashed what it received and refused it: nothing was stored.
            return errors.BadResponse(f"{what}: the server refused the bytes ({detail})")
        return errors.BadResponse(f"{what}: {detail}")


def _version(version_id: str | None) -> dict[str, str]:
    return {"versionId": version_id} if version_id and version_id != "null" else {}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_xml(body: bytes) -> ElementTree.Element | None:
    try:
        # Python's expat refuses external entities and limits entity expansion; the body is
        # bounded before it gets here.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError:
        return None
