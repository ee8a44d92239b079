"""What one pass observed, as plain data (pure, no I/O): what observe read before deciding
(`Observed`, the verification's `Verdict`), and what writing the children found (`Applied`).

A new observation a decision needs is a field here, read once in observe.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import typing

import pydantic

from modelguard.api import modelapproval, trustpolicy, v1alpha1
from modelguard.builders import deployment, names
from modelguard.reconcile import backupviews, conditions
from modelguard.trust import evidence, reasons

logger = logging.getLogger(__name__)

Manifest = dict[str, typing.Any]


@dataclasses.dataclass(frozen=True)
class Serving:
    """The artifact a live Deployment of the model runs, as pinned in it."""

    source_uri: str
    signature_uri: str
    signature_digest: str
    root_digest: str
    signature_endpoint: str | None = None
    """The S3 endpoint the pods' agent reads the bundle from (None: AWS S3, or not s3://)."""

    @classmethod
    def of(cls, live: Manifest | None) -> Serving | None:
        """What a live Deployment of the operator's pins, and where its agent reads it."""
        artifact = deployment.artifact_of(live) if live is not None else None
        source = deployment.source_of(live) if live is not None else None
        if artifact is None or source is None:
            return None
        return cls(
            source_uri=source[0],
            signature_uri=source[1],
            signature_digest=artifact.signature_digest,
            root_digest=artifact.root_digest,
            signature_endpoint=artifact.signature_endpoint,
        )


@dataclasses.dataclass(frozen=True)
class Verified:
    """A model version whose signatures the policy accepts."""

    root_digest: str
    """"sha256:<hex>", pinned into the pod for the agent."""
    signature_digest: str
    """"sha256:<hex>" of the signature file verified: the root digest binds the file digests but
    not their names, so the pod must read this very bundle, not a rewritten one."""
    signers: str
    subject_name: str
    """The statement's subject[0].name: model_signing writes the signed folder's name."""
    files: int
    bytes: int | None
    verified_at: str
    allow_formats: tuple[str, ...]
    """The code-capable format families the policy allows, for the pod's agent."""
    audit_formats: bool
    """The policy's enforcement is Audit: the pod's agent admits, and reports, code-capable
    files it does not allow."""
    audit: tuple[reasons.Violation, ...]
    """Violations admitted because the policy's enforcement is Audit."""
    policy: trustpolicy.TrustPolicySpec
    """The policy it was verified under; its approvers decide the approval gate."""
    source_endpoint: str | None = None
    """The S3 endpoint the policy binds the source to (None: AWS S3, or not an s3:// source)."""
    signature_endpoint: str | None = None
    """The same for the signature bundle."""
    source_private_addresses: bool = False
    """The policy's source for spec.model.source admits private addresses."""
    signature_private_addresses: bool = False
    """The same for the signature bundle."""
    evidence: evidence.Evidence | None = None
    """What the verification established, kept to judge these bytes again when the policy
    changes while they serve."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A signature bundle judged under a TrustPolicy: the Verified condition, and what verified."""

    decision: conditions.Decision
    verified: Verified | None
    transient: bool = False
    """True when retrying soon may succeed (the source was unreachable)."""
    recheck_after: datetime.timedelta | None = None
    """When to look at the bundle again, for a refusal that a change at the source (not in the
    cluster) could lift."""
    policy: trustpolicy.TrustPolicy | None = None
    """The bound policy it was decided under, when there is one: what serves is judged by it too."""
    reread_at: datetime.datetime | None = None
    """For a verified bundle: when to read it again, to see whether it was replaced."""


@dataclasses.dataclass(frozen=True)
class BoundPolicy:
    """The TrustPolicy a model answers to, read once per pass whether or not its spec parses:
    it judges the spec's version and what serves."""

    name: str
    policy: trustpolicy.TrustPolicy | None
    """None when none judges the model: `refusal` says why."""
    refusal: conditions.Decision | None = None
    """Why no policy judges it (PolicyNotFound, PolicyNotBound, InvalidPolicy)."""

    @property
    def key(self) -> str:
        """uid/generation: what a judgement under this policy holds for."""
        metadata = self.policy.metadata if self.policy is not None else {}
        return f"{metadata.get('uid', '')}/{metadata.get('generation', '')}"


@dataclasses.dataclass(frozen=True)
class Observed:
    """What one pass decides from, each object read once, at its start."""

    body: Manifest
    """The ModelDeployment as read."""
    status: v1alpha1.ModelDeploymentStatus
    """Its status as read: what this pass decides anew from."""
    namespace_labels: dict[str, str] | None
    """The labels of the model's namespace (None: it could not be read), for the policy binding."""
    children: dict[tuple[str, str], Manifest]
    """Live objects under the model's child names that carry its label, by (kind, name): the
    operator's own, or someone else's made to look like them."""
    owned: dict[tuple[str, str], str]
    """The uid of every child the operator created for this model, by (kind, name)."""
    pods: list[Manifest]
    """The pods carrying the model's spawned labels."""
    replica_sets: list[Manifest]
    """The ReplicaSets carrying them, read only when a pod has an agent's report to count."""
    now: datetime.datetime
    """The pass's clock: when it observed."""
    model: v1alpha1.ModelDeployment | None = None
    """The parsed object; None when it does not parse (see `invalid`)."""
    invalid: tuple[str, ...] = ()
    """What is wrong with a ModelDeployment that does not parse."""
    verification: Verdict | None = None
    """The spec's version verified against its bound policy (not asked while quarantined)."""
    policy: BoundPolicy | None = None
    """The TrustPolicy the model names, as read (None only where a pass did not look: the unit
    tables of other rules); it judges what serves too."""
    approvals: tuple[modelapproval.ModelApproval, ...] = ()
    """The namespace's readable ModelApprovals (read once the version verified)."""
    network_policies: tuple[Manifest, ...] = ()
    """Every NetworkPolicy of the namespace: someone else's that selects the model's pods opens
    them as surely as the model's own."""
    backup: backupviews.Observed | None = None
    """The BackupStore spec.backup names and this operator's backup jobs (spec.backup set)."""
    contents: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """What each child does as the operator's last write left it (status.children[].content),
    by (kind, name)."""

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 0))

    def child(self, kind: str, name: str) -> Manifest | None:
        """The live child, if it is the operator's: made by it for this model."""
        live = self.children.get((kind, name))
        if live is None or self.owned.get((kind, name)) != live["metadata"].get("uid"):
            return None
        return live

    def deployment(self) -> Manifest | None:
        """The model's own live Deployment: one made by someone else under its name says nothing
        about what the model serves (and pinning a root digest in it must not open the gate)."""
        return self.child("Deployment", names.child_names(self.body["metadata"]["name"]).deployment)


@dataclasses.dataclass(frozen=True)
class Applied:
    """What writing the children found, which no decision could know before: the uids the API
    server gave, the live Deployment left, what someone else had changed, and what failed."""

    created: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """The uid of each child created now, by (kind, name)."""
    written: tuple[str, ...] = ()
    """`Kind/name` of every child created or replaced."""
    reverted: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Children whose changes by other field managers a replacement removed, with those managers."""
    deployment: Manifest | None = None
    """The model's Deployment as the writes left it (None: not reached)."""
    conflicts: tuple[str, ...] = ()
    """Why each child name taken by someone else's object was not written to."""
    refused: str | None = None
    """Why the API server refused one of the operator's own children (an admission policy, a
    quota): nothing after it was written."""
    contents: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    """What each child written (or first checked) does as the API server holds it now
    (drift.content), by (kind, name): anything else found there later is drift."""


def parse_status(raw: typing.Mapping[str, typing.Any] | None) -> v1alpha1.ModelDeploymentStatus:
    """The status read back, leniently: a field that does not parse (written by another version
    of the operator) is left out, never the whole status, which holds the children's uids and the
    verified digests."""
    try:
        return v1alpha1.ModelDeploymentStatus.model_validate(raw or {})
    except pydantic.ValidationError as error:
        logger.warning("status fields that do not parse are decided anew: %s", error)
    status = v1alpha1.ModelDeploymentStatus()
    for key, value in (raw or {}).items():
        try:
            parsed = v1alpha1.ModelDeploymentStatus.model_validate({key: value})
        except pydantic.ValidationError:
            continue
        status = status.model_copy(
            update={field: getattr(parsed, field) for field in parsed.model_fields_set}
        )
    return status
