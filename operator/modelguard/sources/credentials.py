"""Source settings from a Kubernetes Secret: the one place that knows the Secret's keys.

The operator reads the Secret through the API (`from_secret_data`); the in-pod agent reads the same
Secret mounted as a volume (`from_directory`). The keys follow the AWS SDK conventions, so Secrets
written for other tools (KServe's among them) work as they are:

- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: both or neither (neither: anonymous requests);
- AWS_SESSION_TOKEN: optional, temporary credentials;
- AWS_REGION: optional, default us-east-1;
- AWS_ENDPOINT_URL: optional, an S3-compatible server (`https://host[:port]`); it must be the one
  the TrustPolicy's source names (`bind_endpoint`): the Secret says how to sign in, not where;
- AWS_CA_BUNDLE: optional, PEM certificates of a private CA to trust instead of the system's, kept
  in memory (nothing is written to disk).

Errors are InvalidCredentials naming the key, never its value.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import errno
import os
import re
import ssl
import stat
import typing
from pathlib import Path

from modelguard.api import endpoints
from modelguard.sources import base, errors, s3, sigv4

ACCESS_KEY_ID: typing.Final = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY: typing.Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a key name
SESSION_TOKEN: typing.Final = "AWS_SESSION_TOKEN"  # noqa: S105 - a key name
REGION: typing.Final = "AWS_REGION"
ENDPOINT_URL: typing.Final = "AWS_ENDPOINT_URL"
CA_BUNDLE: typing.Final = "AWS_CA_BUNDLE"
KEYS: typing.Final = (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    REGION,
    ENDPOINT_URL,
    CA_BUNDLE,
)
DEFAULT_REGION: typing.Final = "us-east-1"
# Kubernetes caps a whole Secret at 1 MiB; a bigger file in the mount is not a Secret's key.
MAX_VALUE_BYTES: typing.Final = 1 << 20
_REGION_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Visible ASCII only: these values go into HTTP headers, where anything else breaks or smuggles.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class InvalidCredentials(errors.SourceError):
    """The credentials Secret lacks a key or holds a value that cannot be used."""

    reason = "InvalidCredentials"


@dataclasses.dataclass(frozen=True)
class SourceSettings:
    """What open_source/open_file take: S3 settings and the transport's (its CA bundle)."""

    s3: s3.S3Settings
    transport: base.Transport


def from_secret_data(data: collections.abc.Mapping[str, bytes]) -> SourceSettings:
    """Settings from a Secret's decoded data; errors name the key, never a value."""
    values = {key: _text(key, data.get(key)) for key in KEYS}
    ca_pem = _checked_pem(data[CA_BUNDLE]) if values[CA_BUNDLE] is not None else None
    return _settings(values, ca_pem=ca_pem)


def bind_endpoint(
    settings: SourceSettings, *, endpoint: str | None, bound_by: str
) -> SourceSettings:
    """`settings` reading S3 from `endpoint` (None: AWS S3), the one the TrustPolicy binds.

    The Secret's AWS_ENDPOINT_URL may only repeat it: one naming another server is refused
    (EndpointNotAllowed naming the key and `bound_by`), never silently replaced."""
    named = settings.s3.endpoint
    if named is not None and named != endpoint:
        raise errors.EndpointNotAllowed(
            f"key {ENDPOINT_URL} names {errors.quoted(named)}, but {bound_by} binds the source to "
            f"{endpoint or 'AWS S3'}; remove the key, or have the TrustPolicy name that endpoint"
        )
    return dataclasses.replace(settings, s3=dataclasses.replace(settings.s3, endpoint=endpoint))


def with_private_addresses(settings: SourceSettings, *, allowed: bool) -> SourceSettings:
    """`settings` whose host names may resolve to private addresses when the TrustPolicy's
    source allows it (allowPrivateAddresses); the Secret has no say in it."""
    transport = dataclasses.replace(settings.transport, private_addresses=allowed)
    return dataclasses.replace(settings, transport=transport)


def from_directory(path: Path) -> SourceSettings:
    """Settings from a Secret mounted as a volume: one file per key, named after it.

    Key files may be symlinks as long as they stay inside the mount (Kubernetes' own layout:
    `KEY -> ..data/KEY`, `..data -> ..<timestamp>/`); one pointing anywhere else is refused."""
    try:
        root = path.resolve(strict=True)
    except OSError as error:
        raise InvalidCredentials(
            f"credentials directory {str(path)!r}: {error.strerror or error}"
        ) from None
    if not root.is_dir():
        raise InvalidCredentials(f"credentials directory {str(path)!r} is not a directory")
    raw: dict[str, bytes] = {}
    for key in KEYS:
        content = _read_key_file(root, key)
        if content is not None:
            raw[key] = content
    values = {key: _text(key, raw.get(key)) for key in KEYS}
    ca_pem = _checked_pem(raw[CA_BUNDLE]) if values[CA_BUNDLE] is not None else None
    return _settings(values, ca_pem=ca_pem)


def _settings(values: dict[str, str | None], *, ca_pem: bytes | None) -> SourceSettings:
    access_key, secret_key = values[ACCESS_KEY_ID], values[SECRET_ACCESS_KEY]
    if (access_key is None) != (secret_key is None):
        missing = ACCESS_KEY_ID if access_key is None else SECRET_ACCESS_KEY
        present = SECRET_ACCESS_KEY if access_key is None else ACCESS_KEY_ID
        raise InvalidCredentials(f"key {missing} is missing ({present} is set; both are needed)")
    credentials = None
    if access_key is not None and secret_key is not None:
        session_token = values[SESSION_TOKEN]
        for key, value in (
            (ACCESS_KEY_ID, access_key),
            (SECRET_ACCESS_KEY, secret_key),
            (SESSION_TOKEN, session_token),
        ):
            if value is not None and not _HEADER_SAFE.fullmatch(value):
                raise InvalidCredentials(f"key {key} holds spaces or non-ASCII characters")
        credentials = sigv4.Credentials(access_key, secret_key, session_token)
    elif values[SESSION_TOKEN] is not None:
        raise InvalidCredentials(
            f"key {SESSION_TOKEN} is set without {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY}"
        )
    region = values[REGION] or DEFAULT_REGION
    if not _REGION_PATTERN.fullmatch(region):
        raise InvalidCredentials(f"key {REGION} is not a region name such as {DEFAULT_REGION}")
    endpoint = values[ENDPOINT_URL]
    if endpoint is not None:
        endpoint = _normal_endpoint(endpoint)
    return SourceSettings(
        s3=s3.S3Settings(credentials=credentials, region=region, endpoint=endpoint),
        transport=base.Transport(ca_pem=ca_pem),
    )


def _text(key: str, value: bytes | None) -> str | None:
    """The value as stripped text; None when absent or blank (an empty key means unset)."""
    if value is None:
        return None
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidCredentials(f"key {key} is larger than {MAX_VALUE_BYTES} bytes")
    try:
        decoded = value.decode().strip()
    except UnicodeDecodeError:
        raise InvalidCredentials(f"key {key} is not UTF-8 text") from None
    return decoded or None


def _normal_endpoint(endpoint: str) -> str:
    # Compared with the TrustPolicy's as the policy writes it. It may carry credentials by
    # mistake (https://user:pass@host): never echoed.
    try:
        return endpoints.normal(endpoint)
    except ValueError as error:
        raise InvalidCredentials(f"key {ENDPOINT_URL} {error}") from None


def _checked_pem(pem: bytes) -> bytes:
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise InvalidCredentials(f"key {CA_BUNDLE} is not PEM certificates") from None
    return pem


def _inside(root: Path, *, key: str) -> Path:
    """The real path of the key file, refused unless it is a regular file inside `root`."""
    candidate = root / key
    try:
        resolved = candidate.resolve(strict=True)
    except OSError as error:
        raise InvalidCredentials(f"key {key}: {error.strerror or error}") from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise InvalidCredentials(f"key {key} is a symlink leading out of the credentials directory")
    relative = resolved.relative_to(root).parts
    # Kubernetes' layout keeps the data one level down, in a `..<timestamp>` directory.
    if len(relative) > 1 and not (len(relative) == 2 and relative[0].startswith("..")):
        raise InvalidCredentials(f"key {key} is not laid out as a Secret volume's file")
    return resolved


def _read_key_file(root: Path, key: str) -> bytes | None:
    try:
        (root / key).lstat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InvalidCredentials(f"key {key}: {error.strerror or error}") from None
    resolved = _inside(root, key=key)
    try:
        # O_NOFOLLOW on the resolved path: a symlink swapped in after resolving is refused.
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InvalidCredentials(f"key {key} changed into a symlink while read") from None
        raise InvalidCredentials(f"key {key}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidCredentials(f"key {key} is not a regular file")
        if info.st_size > MAX_VALUE_BYTES:
            raise InvalidCredentials(f"key {key} is larger than {MAX_VALUE_BYTES} bytes")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_VALUE_BYTES + 1)
    finally:
        os.close(fd)
