"""Source settings from a Kubernetes Secret: the one place that knows the Secret's keys.

The operator reads the Secret through the API (`from_secret_data`); the in-pod agent reads the same
Secret mounted as a volume (`from_directory`). The keys follow the AWS SDK conventions, so Secrets
written for other tools (KServe's among them) work as they are:

- AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: both or neither (neither: anonymous requests);
- AWS_SESSION_TOKEN: optional, temporary credentials;
- AWS_REGION: optional, default us-east-1;
- AWS_ENDPOINT_URL: optional, an S3-compatible server (`https://host[:port]`);
- AWS_CA_BUNDLE: optional, PEM certificates of a private CA to trust instead of the system's.

Errors are InvalidCredentials naming the key, never its value.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import errno
import hashlib
import os
import re
import ssl
import stat
import tempfile
import typing
import urllib.parse
from pathlib import Path

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
    """Settings from a Secret's decoded data; errors name the key, never a value.

    A CA bundle is written once to a file named by its digest under the temporary directory (the
    HTTP transport takes a file); certificates are public, so the file is not a secret."""
    values = {key: _text(key, data.get(key)) for key in KEYS}
    ca_path = _stored_ca_bundle(data[CA_BUNDLE]) if values[CA_BUNDLE] is not None else None
    return _settings(values, ca_path=ca_path)


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
    # The mounted file serves as it is: nothing is copied out of the Secret volume.
    ca_path = _inside(root, key=CA_BUNDLE) if values[CA_BUNDLE] is not None else None
    if ca_path is not None:
        _check_pem(raw[CA_BUNDLE])
    return _settings(values, ca_path=ca_path)


def _settings(values: dict[str, str | None], *, ca_path: Path | None) -> SourceSettings:
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
        _check_endpoint(endpoint)
    return SourceSettings(
        s3=s3.S3Settings(credentials=credentials, region=region, endpoint=endpoint),
        transport=base.Transport(ca_bundle=ca_path),
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


def _check_endpoint(endpoint: str) -> None:
    # The endpoint may carry credentials by mistake (https://user:pass@host): never echoed.
    problem = None
    try:
        parts = urllib.parse.urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        problem = "is not a URL"
    else:
        if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
            problem = "is not an http(s)://host[:port] URL"
        elif parts.username is not None or parts.password is not None:
            problem = "holds user information (the keys belong in their own entries)"
        elif parts.path.strip("/") or parts.query or parts.fragment:
            problem = "has a path, query or fragment (only scheme, host and port)"
    if problem is not None:
        raise InvalidCredentials(f"key {ENDPOINT_URL} {problem}")


def _check_pem(pem: bytes) -> None:
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise InvalidCredentials(f"key {CA_BUNDLE} is not PEM certificates") from None


def _stored_ca_bundle(pem: bytes) -> Path:
    _check_pem(pem)
    directory = Path(tempfile.gettempdir()) / f"modelguard-ca-{os.getuid()}"
    target = directory / f"{hashlib.sha256(pem).hexdigest()}.pem"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
        # A shared /tmp: only a directory of our own, that nobody else can write, is used.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise InvalidCredentials(f"key {CA_BUNDLE}: {directory} is not a private directory")
        if not target.exists():
            with tempfile.NamedTemporaryFile(dir=directory, delete=False) as staged:
                staged.write(pem)
            Path(staged.name).replace(target)
    except OSError as error:
        raise InvalidCredentials(
            f"key {CA_BUNDLE}: cannot store it for the HTTP client: {error.strerror or error}"
        ) from None
    return target


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
