"""One audit record: its fields, its canonical bytes and its hash (pure, no I/O).

A record is one JSON object on one line. `hash` is the SHA-256 of the record's canonical JSON
without `hash` (sorted keys, compact separators, UTF-8); `prev` is the `hash` of the record
before it in the chain, or 64 zeros for the first record of a segment.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import typing

API_VERSION: typing.Final = "audit.modelguard.dev/v1"
KIND: typing.Final = "AuditRecord"
GENESIS: typing.Final = "0" * 64
"""`prev` of the first record of a segment: nothing comes before it."""

Record = dict[str, typing.Any]


class Decision(enum.StrEnum):
    """What a record says was decided. Readers must accept values they do not know."""

    AUDIT_CHAIN_STARTED = "AuditChainStarted"
    VERIFIED = "Verified"
    VERIFICATION_REFUSED = "VerificationRefused"
    REPUBLISHED = "Republished"
    APPROVED = "Approved"
    APPROVAL_HELD = "ApprovalHeld"
    BROAD_ACCESS_REFUSED = "BroadAccessRefused"
    ROLLED_OUT = "RolledOut"
    DRIFT_REVERTED = "DriftReverted"
    QUARANTINED = "Quarantined"
    QUARANTINE_LIFTED = "QuarantineLifted"


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


def digest(fields: typing.Mapping[str, typing.Any]) -> str:
    """The hex SHA-256 of the canonical JSON of `fields` without its `hash`."""
    unsealed = {key: value for key, value in fields.items() if key != "hash"}
    return hashlib.sha256(canonical(unsealed)).hexdigest()


def rfc3339(moment: datetime.datetime) -> str:
    """UTC with milliseconds: records made within one second still read in order."""
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seal(
    *,
    seq: int,
    prev: str,
    time: datetime.datetime,
    decision: str,
    reason: str,
    message: str,
    subject: Subject | None = None,
    details: typing.Mapping[str, typing.Any] | None = None,
) -> Record:
    """A complete record, `hash` included."""
    record: Record = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "seq": seq,
        "time": rfc3339(time),
        "decision": str(decision),
        "reason": reason,
        "message": message,
        "prev": prev,
    }
    if subject is not None:
        record["object"] = subject.as_json()
    if details:
        record["details"] = dict(details)
    record["hash"] = digest(record)
    return record


def line(record: Record) -> str:
    """The record as one line of the audit log (canonical, so the same record is the same line)."""
    return canonical(record).decode("utf-8")
