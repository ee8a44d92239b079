"""One audit record: its fields, its canonical bytes and its hash (pure, no I/O).

A record is one JSON object on one line. `hash` is the SHA-256 of the record's canonical JSON
without `hash` and `sig` (sorted keys, compact separators, UTF-8); `prev` is the `hash` of the
record before it in the chain, or 64 zeros for the first record of a segment; `keyId` names the
audit key and `sig` is its Ed25519 signature of the hash, so that a record proves its origin
wherever it travels and anyone with the public key can check it (`keys`). The record's line is
also a leaf of its segment's Merkle tree (`leaf`), which checkpoints sign.

Every string that comes from outside (a message quoting an S3 error, an object's name, a key
hint) is made safe before it is sealed: a lone surrogate, which UTF-8 cannot carry, becomes the
text of its escape, so that sealing a record never fails on what it quotes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import enum
import hashlib
import json
import math
import typing

from modelguard.api import times
from modelguard.audit import keys, merkle

API_VERSION: typing.Final = "audit.modelguard.dev/v1"
KIND: typing.Final = "AuditRecord"
GENESIS: typing.Final = "0" * 64
"""`prev` of the first record of a segment: nothing comes before it."""

Record = dict[str, typing.Any]


class Decision(enum.StrEnum):
    """What a record says was decided. Readers must accept values they do not know."""

    AUDIT_CHAIN_STARTED = "AuditChainStarted"
    AUDIT_CHAIN_CLOSED = "AuditChainClosed"
    """The operator stopped: the segment ends here, and its last checkpoint covers this record."""
    VERIFIED = "Verified"
    VERIFICATION_REFUSED = "VerificationRefused"
    REPUBLISHED = "Republished"
    APPROVED = "Approved"
    APPROVAL_HELD = "ApprovalHeld"
    BROAD_ACCESS_REFUSED = "BroadAccessRefused"
    PAYLOAD_AUDIT_REFUSED = "PayloadAuditRefused"
    """spec.audit.inputs is Payload, which the model's TrustPolicy does not allow."""
    OPENED_BY_NETWORK_POLICY = "OpenedByNetworkPolicy"
    """Someone else's NetworkPolicy opens a model's pods beyond its TrustPolicy (the message
    names it and the rule)."""
    ROLLED_OUT = "RolledOut"
    DRIFT_REVERTED = "DriftReverted"
    QUARANTINED = "Quarantined"
    QUARANTINE_LIFTED = "QuarantineLifted"
    BACKED_UP = "BackedUp"
    BACKUP_FAILED = "BackupFailed"
    RESTORE_DRILL_PASSED = "RestoreDrillPassed"
    RESTORE_DRILL_FAILED = "RestoreDrillFailed"
    BACKUP_STORE_READY = "BackupStoreReady"
    BACKUP_STORE_REFUSED = "BackupStoreRefused"
    RECORD_FAILED = "AuditRecordFailed"
    """A decision was taken whose own record could not be made; the operator's log says why."""
    INFERENCE_REQUEST = "InferenceRequest"
    """The audit proxy in a model pod passed on (or refused) one inference request."""
    INPUT_RECORDS_DROPPED = "InputRecordsDropped"
    """The audit proxy's record queue was full: this many requests were served unrecorded."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """The object a decision is about, pinned to one incarnation (uid) and one spec (generation)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int

    @classmethod
    def of(cls, body: typing.Mapping[str, typing.Any]) -> Subject:
        """The subject of a Kubernetes object as the API server returned it."""
        metadata = body.get("metadata") or {}
        return cls(
            api_version=str(body.get("apiVersion", "")),
            kind=str(body.get("kind", "")),
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation", 0)),
        )

    def as_json(self) -> dict[str, typing.Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "generation": self.generation,
        }


def canonical(fields: typing.Mapping[str, typing.Any]) -> bytes:
    """The bytes a hash is computed over. ValueError for what JSON cannot carry exactly (NaN,
    infinities, lone surrogates), so that no two records can share one canonical form."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# What a record's hash does not cover: the hash itself, and the signature made of it.
_SEALS: typing.Final = frozenset({"hash", "sig"})
# Domain separation: a record's signed message never ends in a newline, a signed note's text
# always does, so the one key's signatures of records and of checkpoints cannot stand for each
# other.
_SIGNED_PREFIX: typing.Final = b"modelguard audit record\n"
# Deeper than any record the operator makes; what lies below is replaced, not recursed into.
_MAX_DEPTH: typing.Final = 16


def digest(fields: typing.Mapping[str, typing.Any]) -> str:
    """The hex SHA-256 of the canonical JSON of `fields` without its `hash` and `sig`."""
    unsealed = {key: value for key, value in fields.items() if key not in _SEALS}
    return hashlib.sha256(canonical(unsealed)).hexdigest()


def safe(value: typing.Any, *, depth: int = 0) -> typing.Any:
    """`value` as JSON that `canonical` always accepts: strings with lone surrogates escaped,
    non-finite numbers and unknown types as text, mapping keys as strings. Never raises."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(value, typing.Mapping):
        return {safe(str(k)): safe(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe(item, depth=depth + 1) for item in value]
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return safe(text)


def seal(
    *,
    seq: int,
    prev: str,
    time: datetime.datetime,
    decision: str,
    reason: str,
    message: str,
    signer: keys.Signer,
    subject: Subject | None = None,
    details: typing.Mapping[str, typing.Any] | None = None,
) -> Record:
    """A complete record, `hash` and `sig` included; outside strings are made `safe` first."""
    record: Record = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "seq": seq,
        # Milliseconds: records made within one second still read in order.
        "time": times.rfc3339(time, precision="milliseconds"),
        "decision": safe(str(decision)),
        "reason": safe(reason),
        "message": safe(message),
        "prev": prev,
        "keyId": signer.verifier.id,
    }
    if subject is not None:
        record["object"] = safe(subject.as_json())
    if details:
        record["details"] = safe(dict(details))
    record["hash"] = digest(record)
    signature = signer.sign(signed_message(signer.name, record["hash"]))
    record["sig"] = base64.b64encode(signature).decode()
    return record


def signed_message(log_name: str, record_hash: str) -> bytes:
    """What a record's `sig` signs: its hash, under the log's name (a key shared by two logs
    still cannot move records between them)."""
    return _SIGNED_PREFIX + log_name.encode() + b"\n" + record_hash.encode("ascii")


def signature_verifies(record: typing.Mapping[str, typing.Any], verifier: keys.Verifier) -> bool:
    """Whether the record's `sig` is `verifier`'s signature of its `hash` (its content is
    checked against the hash separately)."""
    seal, encoded = record.get("hash"), record.get("sig")
    if not (isinstance(seal, str) and seal.isascii() and isinstance(encoded, str)):
        return False
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        return False
    message = signed_message(verifier.name, seal)
    return len(signature) == 64 and verifier.verifies(message, signature)


def leaf(record: Record) -> bytes:
    """The record's leaf hash in its segment's Merkle tree: RFC 6962's hash of its line (the
    bytes the log holds, without the newline), so that anyone can recompute it from the log."""
    return merkle.leaf_hash(line(record).encode("ascii"))


def line(record: Record) -> str:
    """The record as one line of the audit log: ASCII only (every other character escaped by
    JSON), so no line separator, control character or terminal escape of a quoted string can
    reach a log viewer raw; deterministic, so the same record is the same line."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
