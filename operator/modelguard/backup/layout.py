"""Where a backup's objects go in a store, and the documents that describe it (pure).

A backup is, seen as a folder, every file it keeps:

    model/<path>           the model's files, as its signature lists them
    model.sig              the model's signature bundle, the one the operator verified
    approvals/<name>.json  the ModelApprovals that counted for the backed-up version
    modeldeployment.json   the ModelDeployment (identity, generation and spec)
    context.json           what else a restore needs: the root digest, the TrustPolicy and its
                           generation, the position in the audit trail, the store and retention
    index.json             every other file's object key, version, size and SHA-256

and beside it `<id>.sig`, the backup manifest: an OpenSSF Model Signing bundle signed with the
operator's backup key, whose statement lists every file above with its SHA-256, so that
`modelguard verify` and `model_signing` check the folder as they check a model.

In the store every file is an object named by its content (`objects/sha256/<hex>`, or for a model
file whose signature does not give its SHA-256, by its signed digests), written once: a second
backup of the same files stores nothing twice. Manifests live under
`backups/<namespace>/<model deployment>/<id>.sig`; ids sort by time.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import typing

from modelguard.trust import digests

API_VERSION: typing.Final = "backup.modelguard.dev/v1"
MODEL_DIR: typing.Final = "model/"
SIGNATURE: typing.Final = "model.sig"
APPROVALS_DIR: typing.Final = "approvals/"
MODEL_DEPLOYMENT: typing.Final = "modeldeployment.json"
CONTEXT: typing.Final = "context.json"
INDEX: typing.Final = "index.json"
MANIFEST_SUFFIX: typing.Final = ".sig"
OBJECTS: typing.Final = "objects/"
BACKUPS: typing.Final = "backups/"
ID_PATTERN: typing.Final = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$"
_ID: typing.Final = re.compile(ID_PATTERN)
# Documents of a backup other than the model's files are small: a ModelDeployment or an approval
# is at most what etcd stores (1.5 MiB); the index lists at most 100,000 files.
MAX_DOCUMENT_BYTES: typing.Final = 2 << 20
MAX_INDEX_BYTES: typing.Final = 64 << 20


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file of a backup: its name in the backup folder, where it is stored, and what it is."""

    path: str
    key: str
    size: int
    sha256: str
    """Hex SHA-256 of the whole file."""
    version_id: str | None = None
    """The store's version of the object (None where the store keeps no versions): a restore
    reads exactly it, so a newer version put under the key later changes nothing."""

    def as_json(self) -> dict[str, typing.Any]:
        found: dict[str, typing.Any] = {
            "path": self.path,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.version_id is not None:
            found["versionId"] = self.version_id
        return found


def backup_id(*, at: datetime.datetime, root_digest: str) -> str:
    """`<UTC time>-<12 hex of the root digest>`: sorts by time, says which version at a glance."""
    stamp = at.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{root_digest.removeprefix('sha256:')[:12]}"


def is_backup_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))


def model_prefix(*, namespace: str, name: str) -> str:
    """The folder of a ModelDeployment's backup manifests."""
    return f"{BACKUPS}{namespace}/{name}/"


def manifest_key(*, namespace: str, name: str, backup: str) -> str:
    return f"{model_prefix(namespace=namespace, name=name)}{backup}{MANIFEST_SUFFIX}"


def sha256_key(hex_digest: str) -> str:
    """The object of a file whose SHA-256 is `hex_digest`."""
    return f"{OBJECTS}sha256/{hex_digest}"


def model_file_key(resources: typing.Sequence[digests.Resource]) -> str:
    """The object of a model file, from what its signature says of it: its SHA-256 when the
    signature gives it (files serialization, sha256), else its signed digests (the algorithm
    names the hash and shard size) hashed together."""
    if len(resources) == 1 and resources[0].algorithm == "sha256" and resources[0].start is None:
        return sha256_key(resources[0].digest.hex())
    algorithm = resources[0].algorithm
    combined = hashlib.sha256()
    for resource in resources:
        combined.update(resource.digest)
    return f"{OBJECTS}{algorithm}/{combined.hexdigest()}"


def signed_sha256(resources: typing.Sequence[digests.Resource]) -> str | None:
    """The file's SHA-256 when its signature gives it, else None."""
    if len(resources) == 1 and resources[0].algorithm == "sha256" and resources[0].start is None:
        return resources[0].digest.hex()
    return None


def approval_path(name: str) -> str:
    return f"{APPROVALS_DIR}{name}.json"


def document(value: typing.Mapping[str, typing.Any]) -> bytes:
    """A JSON document of the backup: sorted keys, two-space indent, UTF-8, newline-terminated,
    so that the same content is the same bytes (and the same object)."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def index_document(*, backup: str, entries: typing.Sequence[Entry]) -> bytes:
    return document(
        {
            "apiVersion": API_VERSION,
            "kind": "BackupIndex",
            "backupId": backup,
            "files": [entry.as_json() for entry in sorted(entries, key=lambda e: e.path)],
        }
    )


class InvalidDocument(ValueError):
    """A document of the backup does not have the shape this version writes."""


def parse_index(data: bytes, *, backup: str) -> dict[str, Entry]:
    """The index's entries by path; InvalidDocument naming what is wrong."""
    root = _json(data, what=INDEX)
    if root.get("kind") != "BackupIndex" or root.get("backupId") != backup:
        raise InvalidDocument(f"{INDEX} is not the index of backup {backup}")
    files = root.get("files")
    if not isinstance(files, list):
        raise InvalidDocument(f"{INDEX}: files is not a list")
    found: dict[str, Entry] = {}
    for number, item in enumerate(files):
        if not isinstance(item, dict):
            raise InvalidDocument(f"{INDEX}: files[{number}] is not an object")
        path, key, size, sha = (item.get(f) for f in ("path", "key", "size", "sha256"))
        version = item.get("versionId")
        if not (
            isinstance(path, str)
            and isinstance(key, str)
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
            and isinstance(sha, str)
            and re.fullmatch(r"[0-9a-f]{64}", sha)
            and (version is None or isinstance(version, str))
        ):
            raise InvalidDocument(f"{INDEX}: files[{number}] lacks path, key, size or sha256")
        if path in found:
            raise InvalidDocument(f"{INDEX}: {path!r} is listed twice")
        found[path] = Entry(path=path, key=key, size=size, sha256=sha, version_id=version)
    return found


def parse_context(data: bytes) -> dict[str, typing.Any]:
    root = _json(data, what=CONTEXT)
    if root.get("kind") != "BackupContext":
        raise InvalidDocument(f"{CONTEXT} is not a BackupContext")
    return root


def _json(data: bytes, *, what: str) -> dict[str, typing.Any]:
    try:
        root = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidDocument(f"{what} is not JSON") from None
    if not isinstance(root, dict) or root.get("apiVersion") != API_VERSION:
        raise InvalidDocument(f"{what} is not a {API_VERSION} document")
    return root
