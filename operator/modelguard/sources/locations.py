"""Where artifacts live: parsing source URIs and checking file names, with no I/O.

Three schemes, each naming a folder:
- `s3://bucket/prefix/`: objects under `prefix/` in `bucket` (the whole bucket without a prefix).
  Keys are taken literally, as the AWS CLI does: no percent-decoding.
- `https://host[:port]/path/` (`http://` only when written so): files below that URL path. HTTP has
  no folder listing, so such a source serves the files a signature manifest names and nothing else.
- `pvc://claim/path`: a directory inside a PersistentVolumeClaim, which the pod mounts under a mount
  root (`<root>/<claim>/<path>`).

A file name is always relative to its folder and uses `/` between segments. Unsafe names are refused
here, before any request or file system call, whatever the server or the file system would do.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from modelguard.api import filenames, uripaths
from modelguard.sources import errors

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A PersistentVolumeClaim name is a DNS-1123 subdomain.
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclasses.dataclass(frozen=True)
class S3Location:
    bucket: str
    # Empty for the whole bucket, else ends with "/".
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclasses.dataclass(frozen=True)
class HttpLocation:
    # scheme://host[:port]/path/ with the path percent-encoded as given, always ending with "/".
    base: str

    def __str__(self) -> str:
        return self.base


@dataclasses.dataclass(frozen=True)
class PvcLocation:
    claim: str
    # Empty for the volume's root, else a safe relative path without a trailing "/".
    path: str

    def __str__(self) -> str:
        return f"pvc://{self.claim}/{self.path}"


Location = S3Location | HttpLocation | PvcLocation


def check_name(name: str) -> str:
    """Returns `name` if it is a safe relative file name, else raises UnsafePath."""
    problem = filenames.problem(name)
    if problem:
        raise errors.UnsafePath(f"{_shown(name)} {problem}")
    return name


def _shown(name: str) -> str:
    # Names end up in conditions and Events: quoted so that odd characters stay visible, and cut.
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "..."


def _folder(path: str, *, uri: str) -> str:
    """`path` as a folder: "" or safe segments ending with "/"."""
    path = path.strip("/")
    if not path:
        return ""
    problem = filenames.problem(path)
    if problem:
        raise errors.UnsafePath(f"{_shown(uri)}: its path {problem}")
    return path + "/"


def parse(uri: str) -> Location:
    """The folder `uri` names; InvalidSource or UnsafePath when it cannot be used."""
    _check_path(uri)
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise errors.InvalidSource(f"{_shown(uri)}: not a URI (want s3://, https:// or pvc://)")
    scheme = scheme.lower()
    if scheme == "s3":
        return _parse_s3(rest, uri=uri)
    if scheme in ("https", "http"):
        return _parse_http(uri)
    if scheme == "pvc":
        return _parse_pvc(rest, uri=uri)
    raise errors.InvalidSource(f"{_shown(uri)}: unsupported scheme {scheme!r}")


def parse_file(uri: str) -> tuple[Location, str]:
    """The folder and file name of a URI naming one file, such as a signature bundle's."""
    _check_path(uri)
    folder, sep, name = uri.rpartition("/")
    if not sep or not name or folder.endswith(":/"):
        raise errors.InvalidSource(f"{_shown(uri)}: does not name a file")
    location = parse(folder + "/")
    if isinstance(location, HttpLocation):
        name = urllib.parse.unquote(name)
    return location, check_name(name)


def _check_path(uri: str) -> None:
    problem = uripaths.problem(uri)
    if problem is not None:
        raise errors.UnsafePath(f"{_shown(uri)} {problem}; accepted: {uripaths.ACCEPTED}")


def _parse_s3(rest: str, *, uri: str) -> S3Location:
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise errors.InvalidSource(f"{_shown(uri)}: {bucket!r} is not a valid bucket name")
    if "?" in prefix or "#" in prefix:
        raise errors.InvalidSource(f"{_shown(uri)}: a query or fragment has no meaning here")
    return S3Location(bucket=bucket, prefix=_folder(prefix, uri=uri))


def _parse_http(uri: str) -> HttpLocation:
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as error:
        raise errors.InvalidSource(f"{_shown(uri)}: {error}") from None
    if parts.username is not None or parts.password is not None:
        # They would be copied into status, Events and logs.
        raise errors.InvalidSource(f"{_shown(uri)}: credentials in a URI are refused")
    if not parts.hostname:
        raise errors.InvalidSource(f"{_shown(uri)}: no host")
    if parts.query or parts.fragment:
        raise errors.InvalidSource(f"{_shown(uri)}: a query or fragment has no meaning here")
    folder = _folder(urllib.parse.unquote(parts.path), uri=uri)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path.strip("/")
    base = f"{parts.scheme.lower()}://{netloc}/" + (path + "/" if folder else "")
    return HttpLocation(base=base)


def _parse_pvc(rest: str, *, uri: str) -> PvcLocation:
    claim, _, path = rest.partition("/")
    if len(claim) > 253 or not _CLAIM.match(claim):
        raise errors.InvalidSource(f"{_shown(uri)}: {claim!r} is not a valid claim name")
    return PvcLocation(claim=claim, path=_folder(path, uri=uri).rstrip("/"))


def s3_key(location: S3Location, name: str) -> str:
    return location.prefix + check_name(name)


def http_url(location: HttpLocation, name: str) -> str:
    """The URL of `name` below `location`, each segment percent-encoded."""
    segments = check_name(name).split("/")
    return location.base + "/".join(urllib.parse.quote(s, safe="") for s in segments)
