"""The modelguard.dev/v1alpha1 ModelDeployment API: its models, defaults and validation.

These models are the single source of the CRD schema (see `modelguard.api.crd`): every field's
docstring becomes its `kubectl explain` text, every default and constraint becomes part of the
schema the API server enforces. Validation that the schema cannot express lives in validators here,
so the operator and the admission webhook refuse exactly the same objects.
"""

import enum
import ipaddress
import re
import typing

import pydantic

from modelguard.api import conventions, cron, errors, inputaudit, quantity, uripaths

GROUP: typing.Final = conventions.GROUP
VERSION: typing.Final = conventions.VERSION
API_VERSION: typing.Final = conventions.API_VERSION
KIND: typing.Final = "ModelDeployment"
PLURAL: typing.Final = "modeldeployments"
SINGULAR: typing.Final = "modeldeployment"
SHORT_NAMES: typing.Final = ("md",)
CATEGORIES: typing.Final = ("modelguard",)

# Condition types; Ready summarises the others and is what `kubectl wait` reads. Reconciling and
# Stalled say the same for tools that read status with kstatus (Flux, kpt, cli-utils): whether
# the operator is still working towards the spec (waiting for a rollout, an approval or a source
# that does not answer) or has stopped on a refusal that needs someone to change something.
CONDITION_VERIFIED: typing.Final = "Verified"
CONDITION_APPROVED: typing.Final = "Approved"
CONDITION_ISOLATED: typing.Final = "Isolated"
CONDITION_BACKED_UP: typing.Final = "BackedUp"
CONDITION_READY: typing.Final = "Ready"
CONDITION_RECONCILING: typing.Final = "Reconciling"
CONDITION_STALLED: typing.Final = "Stalled"
CONDITION_TYPES: typing.Final = (
    CONDITION_VERIFIED,
    CONDITION_APPROVED,
    CONDITION_ISOLATED,
    CONDITION_BACKED_UP,
    CONDITION_READY,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
)

# Condition reasons the operator decides itself (CamelCase). A refusal of the signature, the
# source or an approval carries the trust layer's or the source's own reason (trust/reasons.py,
# sources/errors.py), listed in docs/status.md.

# Ready: the summary.
REASON_AVAILABLE: typing.Final = "Available"
"""Ready: every replica of the version is updated and available."""
REASON_SCALED_TO_ZERO: typing.Final = "ScaledToZero"
"""Ready: spec.serving.replicas is 0 and the Deployment is scaled to zero."""
REASON_PROGRESSING: typing.Final = "Progressing"
"""Ready: the Deployment is rolling the version out."""
REASON_ROLLOUT_STALLED: typing.Final = "RolloutStalled"
"""Ready: the Deployment exceeded its progress deadline."""
REASON_NOT_VERIFIED: typing.Final = "NotVerified"
"""Ready: the spec's version is held, its signature not verified (Verified says why)."""
REASON_NOT_APPROVED: typing.Final = "NotApproved"
"""Ready: the spec's version is held for want of approvals (Approved says why)."""
REASON_NOT_ISOLATED: typing.Final = "NotIsolated"
"""Ready: the spec's version is held, asking for broader network access than allowed."""
REASON_POLICY_NOT_BOUND: typing.Final = "PolicyNotBound"
"""Verified and Ready: the TrustPolicy the model names does not bind the model's namespace."""
REASON_CHILD_CONFLICT: typing.Final = "ChildConflict"
"""Ready: a child's name is taken by an object the operator did not make for this model."""
REASON_APPLY_FAILED: typing.Final = "ApplyFailed"
"""Ready: the API server refused a child (an admission policy, a quota)."""
REASON_QUARANTINED: typing.Final = "Quarantined"
"""Ready: scaled to zero with its network cut, through the spec or automatically."""
REASON_INVALID_SPEC: typing.Final = "InvalidSpec"
"""Ready: the spec cannot be acted upon (what the schema could not refuse)."""
READY_REASONS: typing.Final = (
    REASON_AVAILABLE,
    REASON_SCALED_TO_ZERO,
    REASON_PROGRESSING,
    REASON_ROLLOUT_STALLED,
    REASON_NOT_VERIFIED,
    REASON_NOT_APPROVED,
    REASON_NOT_ISOLATED,
    REASON_POLICY_NOT_BOUND,
    REASON_CHILD_CONFLICT,
    REASON_APPLY_FAILED,
    REASON_QUARANTINED,
    REASON_INVALID_SPEC,
)

# Verified: the signature of the spec's version, and what the pods' agents found.
REASON_SIGNATURE_VERIFIED: typing.Final = "SignatureVerified"
"""Verified: the signature verifies under the bound TrustPolicy."""
REASON_AUDIT_VIOLATIONS: typing.Final = "AuditViolations"
"""Verified: admitted by a TrustPolicy in Audit mode despite violations, which the message lists."""
REASON_POLICY_NOT_FOUND: typing.Final = "PolicyNotFound"
"""Verified: the TrustPolicy the model names does not exist."""
REASON_CREDENTIALS_FORBIDDEN: typing.Final = "CredentialsForbidden"
"""Verified: the operator may not read the source's credentials Secret (no RoleBinding)."""
REASON_CREDENTIALS_NOT_FOUND: typing.Final = "CredentialsNotFound"
"""Verified: the source's credentials Secret does not exist."""
REASON_AGENT_FAILED: typing.Final = "AgentFailed"
"""Verified: a pod's verifying agent failed without a reason of its own."""
VERIFIED_REASONS: typing.Final = (
    REASON_SIGNATURE_VERIFIED,
    REASON_AUDIT_VIOLATIONS,
    REASON_POLICY_NOT_FOUND,
    REASON_POLICY_NOT_BOUND,
    REASON_CREDENTIALS_FORBIDDEN,
    REASON_CREDENTIALS_NOT_FOUND,
    REASON_AGENT_FAILED,
)

# Approved and Isolated.
REASON_APPROVED: typing.Final = "Approved"
"""Approved: enough valid ModelApprovals name the verified root digest."""
REASON_WITHIN_POLICY: typing.Final = "WithinPolicy"
"""Isolated: the network access asked for is within the TrustPolicy's limits."""
REASON_OPENED_BY_NETWORK_POLICY: typing.Final = "OpenedByNetworkPolicy"
"""Isolated: a NetworkPolicy the operator did not make selects the model's pods and allows what
the TrustPolicy's spec.network would refuse (NetworkPolicies add up)."""
APPROVED_REASONS: typing.Final = (REASON_APPROVED,)
ISOLATED_REASONS: typing.Final = (REASON_WITHIN_POLICY, REASON_OPENED_BY_NETWORK_POLICY)

# BackedUp: the last backup, read back and verified, and the drills of it.
REASON_BACKUP_VERIFIED: typing.Final = "BackupVerified"
"""BackedUp: the serving version was backed up, read back and verified (status.lastBackup)."""
REASON_NOTHING_TO_BACK_UP: typing.Final = "NothingToBackUp"
"""BackedUp: no verified, approved version serves yet; the first backup follows its rollout."""
REASON_STORE_NOT_FOUND: typing.Final = "StoreNotFound"
"""BackedUp: the BackupStore spec.backup.store names does not exist."""
REASON_STORE_NOT_READY: typing.Final = "StoreNotReady"
"""BackedUp: the BackupStore is not Ready (its condition says why)."""
REASON_BACKUP_KEY_MISSING: typing.Final = "BackupKeyMissing"
"""BackedUp: the operator runs without a backup key (--backup-key-file), so it signs nothing."""
REASON_BACKUP_UNSUPPORTED: typing.Final = "BackupUnsupported"
"""BackedUp: the source cannot be backed up by the operator (a pvc:// source, or an https://
source whose signature gives no file sizes)."""
REASON_BACKUP_FAILED: typing.Final = "BackupFailed"
"""BackedUp: the last attempt failed (the message says why); it is retried with backoff."""
REASON_READ_BACK_MISMATCH: typing.Final = "ReadBackMismatch"
"""BackedUp: an object read back from the store is not what was written (or what a signature
says it is); nothing counts as backed up."""
REASON_DRILL_FAILED: typing.Final = "DrillFailed"
"""BackedUp: the last restore drill of the latest backup failed (status.lastDrill says why)."""
BACKED_UP_REASONS: typing.Final = (
    REASON_BACKUP_VERIFIED,
    REASON_NOTHING_TO_BACK_UP,
    REASON_STORE_NOT_FOUND,
    REASON_STORE_NOT_READY,
    REASON_BACKUP_KEY_MISSING,
    REASON_BACKUP_UNSUPPORTED,
    REASON_BACKUP_FAILED,
    REASON_READ_BACK_MISMATCH,
    REASON_DRILL_FAILED,
)

# What the operator did that no condition shows: Event reasons (and audit reasons) of their own.
REASON_APPLIED: typing.Final = "Applied"
"""Event: children were created or replaced with the operator's intent."""
REASON_DRIFT_REVERTED: typing.Final = "DriftReverted"
"""Event: a child someone else changed was made the operator's intent again."""
REASON_REPUBLISHED: typing.Final = "Republished"
"""Event and audit record: a version's signature signs other files now, accepted."""
REASON_BACKED_UP: typing.Final = "BackedUp"
"""Event and audit record: a backup was written, read back and verified."""
REASON_RESTORE_DRILL_PASSED: typing.Final = "RestoreDrillPassed"
"""Event and audit record: the latest backup was restored into scratch space and verified."""
REASON_RESTORE_DRILL_FAILED: typing.Final = "RestoreDrillFailed"
"""Event and audit record: the latest backup could not be restored and verified."""
EVENT_REASONS: typing.Final = (
    REASON_APPLIED,
    REASON_DRIFT_REVERTED,
    REASON_REPUBLISHED,
    REASON_BACKED_UP,
    REASON_RESTORE_DRILL_PASSED,
    REASON_RESTORE_DRILL_FAILED,
)
REASON_CHANGED_BY_ANOTHER_MANAGER: typing.Final = "ChangedByAnotherManager"
"""Audit record of a revert: a field manager other than the operator wrote to the child."""
REASON_SPEC_QUARANTINE: typing.Final = "SpecQuarantine"
"""Audit record of a quarantine asked for by spec.quarantine."""
REASON_SPEC_CHANGED: typing.Final = "SpecChanged"
"""Audit record of a quarantine lifted by a change of the spec."""
REASON_SIGNER_REVOKED: typing.Final = "SignerRevoked"
"""status.quarantine and its audit record: what serves is no longer accepted by the policy."""
REASON_POLICY_WITHDRAWN: typing.Final = "PolicyWithdrawn"
"""status.quarantine and its audit record: no TrustPolicy judges what serves any more (the one
the model names is deleted, no longer binds the namespace, or does not parse)."""
REASON_OUTSIDE_POLICY: typing.Final = "OutsidePolicy"
"""status.quarantine and its audit record: what serves admits code-capable formats, or opens
network access, that its TrustPolicy no longer allows."""
REASON_SERVING_UNVERIFIABLE: typing.Final = "ServingUnverifiable"
"""status.quarantine and its audit record: no verification of what serves is recorded to judge
it by."""
SERVING_QUARANTINE_REASONS: typing.Final = (
    REASON_SIGNER_REVOKED,
    REASON_POLICY_WITHDRAWN,
    REASON_OUTSIDE_POLICY,
    REASON_SERVING_UNVERIFIABLE,
)
"""Why the operator quarantines what serves on its policy's account; a version verified and
approved under the current policy replaces it."""

# Upper bounds on lists that carry CEL rules: the API server refuses a CRD whose rules it cannot
# bound in cost, and NetworkPolicies with more peers than this are a smell anyway.
MAX_PEERS: typing.Final = 64
MAX_EGRESS_RULES: typing.Final = 64
# Versions whose first verified root digest status.verifiedDigests remembers.
MAX_VERIFIED_DIGESTS: typing.Final = 32

DEFAULT_REQUESTS: typing.Final = {"cpu": "100m", "memory": "256Mi"}
DEFAULT_LIMITS: typing.Final = {"memory": "1Gi"}
DEFAULT_SIGNATURE_FILE: typing.Final = "model.sig"
# The bound on a model's bytes when its signature gives no sizes (the files serialization).
DEFAULT_MAX_MODEL_BYTES: typing.Final = "16Gi"
MAX_MODEL_BYTES: typing.Final = "1Pi"

IMAGE_DIGEST_PATTERN: typing.Final = r"^[^\s@]+@sha256:[a-f0-9]{64}$"
DNS_SUBDOMAIN_PATTERN: typing.Final = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# The version becomes the value of the app.kubernetes.io/version label, so it obeys label rules.
LABEL_VALUE_PATTERN: typing.Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# What a source path may hold: the rule of api/uripaths, which the TrustPolicy's prefixes obey too.
ARTIFACT_URI_PATTERN: typing.Final = (
    rf"^(s3|https|pvc)://{uripaths.HOST_PATTERN}{uripaths.SEGMENTS_PATTERN}$"
)
# The object's name becomes the Service's name, which must be a DNS-1035 label.
OBJECT_NAME_PATTERN: typing.Final = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
OBJECT_NAME_RULE: typing.Final = (
    "must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a"
    " letter): it names the model's Service"
)
CONDITION_TYPE_PATTERN: typing.Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: typing.Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITION_MESSAGE: typing.Final = 32768

ImageDigest = typing.Annotated[
    str,
    pydantic.Field(pattern=IMAGE_DIGEST_PATTERN),
    errors.Hint("must be pinned by digest (image@sha256:<64 hex>)"),
]
ObjectName = typing.Annotated[
    str,
    pydantic.Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253),
    errors.Hint("must be a Kubernetes object name: lowercase letters, digits, '-' and '.'"),
]
LabelValue = typing.Annotated[
    str,
    pydantic.Field(pattern=LABEL_VALUE_PATTERN, min_length=1, max_length=63),
    errors.Hint(
        "must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or"
        " digit (it is used as a label value)"
    ),
]
ArtifactURI = typing.Annotated[
    str,
    pydantic.Field(pattern=ARTIFACT_URI_PATTERN),
    errors.Hint("must be an s3://, https:// or pvc:// URI with " + uripaths.ACCEPTED),
]
Quantity = typing.Annotated[
    str,
    pydantic.Field(pattern=quantity.PATTERN),
    errors.Hint('must be a Kubernetes quantity such as "500m", "2" or "1Gi"'),
]
Port = typing.Annotated[int, pydantic.Field(ge=1, le=65535)]


# --- spec ----------------------------------------------------------------------------------------


class ModelSource(conventions.Spec):
    """Where the model's files are read from."""

    uri: ArtifactURI
    """URI of the model's files (a directory, or a prefix for s3://). Accepted schemes:
    s3://bucket/prefix/, https://host/path/ and pvc://claim-name/path (a PersistentVolumeClaim in
    this namespace). Required."""

    credentials_secret: ObjectName | None = None
    """Name of a Secret in this namespace with read-only credentials for the source. Omit it for
    sources that need none (public https://, pvc://)."""

    egress: list["SourceEgressRule"] = pydantic.Field(default=[], max_length=MAX_EGRESS_RULES)
    """Where the pod must connect to read the source: the S3 or HTTPS endpoint, e.g. {to:
    [{ipBlock: {cidr: 10.0.5.10/32}}], ports: [{port: 9000}]}, for the verifying init container
    (fetch-verify). NetworkPolicies apply to whole pods, so keep it to the endpoint and its port:
    it gets a NetworkPolicy of its own (<name>-allow-source), IP ranges are checked against the
    TrustPolicy's spec.network.egressCIDRs like spec.access.egress, and quarantine cuts it.
    Default: [] (the source is not reachable; a pvc:// source needs nothing)."""


class ModelSignature(conventions.Spec):
    """Where the model's OpenSSF Model Signing bundle is read from."""

    uri: ArtifactURI | None = None
    """URI of the signature bundle (as written by the model_signing tool). Default: model.sig
    beside the source, that is <source.uri>/model.sig. Accepted schemes: s3://, https://, pvc://."""


class ModelSpec(conventions.Spec):
    """The model to serve: which one, which version, and where its files and signature are."""

    name: conventions.DNSLabel
    """Logical name of the model (approvals name it), e.g. sentiment-bert. A DNS-1123 label: at
    most 63 lowercase letters, digits and '-'. Required."""

    version: LabelValue
    """Version of the model to serve, e.g. 1.4.0. Changing it rolls out the new version once it is
    verified and approved. 1 to 63 letters, digits, '-', '_' or '.' (it becomes a label value).
    Required."""

    source: ModelSource
    """Where the model's files are read from. Required."""

    signature: ModelSignature = ModelSignature()
    """Where the signature of the model's files is read from. Default: model.sig beside the
    source."""

    max_bytes: Quantity = DEFAULT_MAX_MODEL_BYTES
    """The most bytes the model's files may take, e.g. 40Gi, when the signature does not give
    their sizes (model_signing's default files serialization signs digests only): the verifying
    init container stops and empties the model volume past it (reason ModelTooLarge), and the
    volume's sizeLimit follows it. A shard-serialized signature gives every file's size: those
    bound the volume instead. 1 byte to 1Pi. Default: 16Gi."""

    @pydantic.field_validator("max_bytes")
    @classmethod
    def _at_least_a_byte(cls, value: str) -> str:
        if quantity.parse(value) < 1:
            raise ValueError(f"{value} is less than one byte; give a size such as 40Gi")
        if quantity.parse(value) > quantity.parse(MAX_MODEL_BYTES):
            # Past it the volume's sizeLimit would overflow what Kubernetes quantities hold.
            raise ValueError(f"{value} is more than {MAX_MODEL_BYTES}")
        return value

    def model_bytes(self) -> int:
        """max_bytes in whole bytes."""
        return int(quantity.parse(self.max_bytes))

    root_digest: conventions.RootDigest | None = None
    """The root digest the version's signature must sign, sha256:<64 hex> (what `modelguard
    verify` prints, and what a ModelApproval names). When set, a validly signed bundle for other
    files (another model, an older release put under this version's URI) is refused with
    RootDigestPinMismatch, naming both digests. It also accepts, explicitly, a version re-published
    under the same URI with new files (see the TrustPolicy's onRepublish). Default: none (the
    digest first verified for this model and version is recorded in status.verifiedDigests, and
    a later change is refused)."""

    def signature_uri(self) -> str:
        """The signature bundle's URI: the one given, or model.sig beside the source."""
        if self.signature.uri is not None:
            return self.signature.uri
        return f"{self.source.uri.rstrip('/')}/{DEFAULT_SIGNATURE_FILE}"


class ResourceRequirements(conventions.Spec):
    """Compute resources of the model server container."""

    requests: dict[str, Quantity] = pydantic.Field(default=DEFAULT_REQUESTS)
    """Resources the scheduler reserves, by resource name (cpu, memory, nvidia.com/gpu, ...).
    Default: cpu 100m, memory 256Mi. Giving this map replaces the whole default."""

    limits: dict[str, Quantity] = pydantic.Field(default=DEFAULT_LIMITS)
    """Most the container may use, by resource name. Default: memory 1Gi (no CPU limit, so the
    server is throttled rather than killed). Giving this map replaces the whole default; an empty
    map removes the memory limit. A limit may not be lower than the matching request."""

    @pydantic.model_validator(mode="after")
    def _requests_within_limits(self) -> typing.Self:
        for resource, limit in self.limits.items():
            request = self.requests.get(resource)
            if request is not None and quantity.parse(request) > quantity.parse(limit):
                raise ValueError(
                    f"requests[{resource}] {request} exceeds limits[{resource}] {limit}; "
                    "raise the limit or lower the request"
                )
        return self


class ServingSpec(conventions.Spec):
    """How the model is served: the server image, its port, replicas and resources."""

    image: ImageDigest
    """Model server image, pinned by digest: registry/repository@sha256:<64 hex digits> (a tag
    may precede the digest). Tags alone are refused: a tag can be moved to other content.
    Required."""

    port: Port = 8080
    """TCP port the model server listens on; the Service exposes the same port, named http.
    1 to 65535. Default: 8080."""

    replicas: int = pydantic.Field(default=1, ge=0)
    """Number of model server pods. 0 or more. Default: 1."""

    resources: ResourceRequirements = ResourceRequirements()
    """Compute resources of the model server container. Default: requests cpu 100m, memory
    256Mi; limits memory 1Gi."""


class LabelSelectorOperator(enum.StrEnum):
    """How a label selector requirement compares a label with its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(conventions.Spec):
    """One requirement of a label selector: a label key, an operator and values."""

    key: str = pydantic.Field(min_length=1)
    """Label key the requirement applies to. Required."""

    operator: LabelSelectorOperator
    """In, NotIn, Exists or DoesNotExist. Required."""

    values: list[str] | None = None
    """Values to compare with: required and non-empty for In and NotIn, absent for Exists and
    DoesNotExist."""

    @pydantic.model_validator(mode="after")
    def _values_match_operator(self) -> typing.Self:
        needs_values = self.operator in (LabelSelectorOperator.IN, LabelSelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if not needs_values and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(conventions.Spec):
    """Selects objects by label; all given terms must match. An empty selector ({}) matches all."""

    match_labels: dict[str, str] | None = None
    """Labels that must all be present with exactly these values."""

    match_expressions: list[LabelSelectorRequirement] | None = None
    """Requirements that must all hold."""


class IPBlock(conventions.Spec):
    """A range of IP addresses, typically outside the cluster."""

    cidr: conventions.CIDR
    """The range, e.g. 10.0.0.0/8 or 2001:db8::/32. Required."""

    except_: list[conventions.CIDR] | None = pydantic.Field(default=None, alias="except")
    """Ranges inside cidr that are excluded."""

    @pydantic.model_validator(mode="after")
    def _exceptions_inside(self) -> typing.Self:
        network = ipaddress.ip_network(self.cidr, strict=False)
        for excluded in self.except_ or []:
            inner = ipaddress.ip_network(excluded, strict=False)
            if inner.version != network.version or not inner.subnet_of(network):  # type: ignore[arg-type]
                raise ValueError(f"except entry {excluded} is not inside cidr {self.cidr}")
            if inner == network:
                raise ValueError(f"except entry {excluded} excludes all of cidr {self.cidr}")
        return self


_PEER_SELECTOR_OR_BLOCK = (
    "ipBlock cannot be combined with namespaceSelector or podSelector; use separate peers"
)
_PEER_REQUIRED = "a peer needs namespaceSelector, podSelector or ipBlock"


class NetworkPeer(conventions.Spec):
    """Who may connect, or where to: pods chosen by labels, or an IP range.

    namespaceSelector alone selects every pod in the matching namespaces; podSelector alone
    selects pods in this namespace; both together select the matching pods in the matching
    namespaces. ipBlock stands alone.
    """

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            # The API server refuses such a peer in the NetworkPolicy built from it: say so at
            # apply time instead of failing the rollout later.
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.ipBlock) || "
                    "(!has(self.namespaceSelector) && !has(self.podSelector))",
                    "message": _PEER_SELECTOR_OR_BLOCK,
                },
                {
                    "rule": "has(self.ipBlock) || has(self.namespaceSelector) || "
                    "has(self.podSelector)",
                    "message": _PEER_REQUIRED,
                },
            ]
        }
    )

    namespace_selector: LabelSelector | None = None
    """Namespaces, by their labels (every namespace carries kubernetes.io/metadata.name: <name>).
    {} selects all namespaces."""

    pod_selector: LabelSelector | None = None
    """Pods, by their labels; in this namespace unless namespaceSelector is also given. {}
    selects all pods."""

    ip_block: IPBlock | None = None
    """An IP range; cannot be combined with the selectors."""

    @pydantic.model_validator(mode="after")
    def _one_kind_of_peer(self) -> typing.Self:
        selectors = self.namespace_selector is not None or self.pod_selector is not None
        if self.ip_block is not None and selectors:
            raise ValueError(_PEER_SELECTOR_OR_BLOCK)
        if self.ip_block is None and not selectors:
            raise ValueError(_PEER_REQUIRED)
        return self


class Protocol(enum.StrEnum):
    """Transport protocol of a port."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class NetworkPort(conventions.Spec):
    """A destination port."""

    port: Port
    """Port number, 1 to 65535. Required."""

    protocol: Protocol = Protocol.TCP
    """TCP, UDP or SCTP. Default: TCP."""


class EgressRule(conventions.Spec):
    """Destinations the model server may connect to."""

    to: list[NetworkPeer] = pydantic.Field(min_length=1, max_length=MAX_PEERS)
    """Destinations; at least one. To allow any address, say so: ipBlock {cidr: 0.0.0.0/0}.
    Required."""

    ports: list[NetworkPort] = pydantic.Field(default=[], max_length=MAX_PEERS)
    """Ports allowed to those destinations. Default: [] (every port)."""


class SourceEgressRule(EgressRule):
    """A destination the verifying init container needs to read the model's source."""

    ports: list[NetworkPort] = pydantic.Field(min_length=1, max_length=MAX_PEERS)
    """The endpoint's ports, e.g. [{port: 443}]; at least one: a source is read on its own port
    only. Required."""


ModelSource.model_rebuild()
ModelSpec.model_rebuild()


class AccessSpec(conventions.Spec):
    """Who may call the model, and what the model may call. Both are closed by default."""

    ingress: list[NetworkPeer] = pydantic.Field(default=[], max_length=MAX_PEERS)
    """Callers allowed to reach the serving port; nothing else can connect to the model's pods.
    Default: [] (nobody may call it)."""

    egress: list[EgressRule] = pydantic.Field(default=[], max_length=MAX_EGRESS_RULES)
    """Destinations the model server may connect to, besides cluster DNS. Default: [] (DNS only)."""


class AuditInputs(enum.StrEnum):
    """How much of each inference request is recorded."""

    NONE = "None"
    METADATA = "Metadata"
    PAYLOAD = "Payload"


# A JSON path of a redaction rule: $ then .name, .*, [n] or [*] steps (the audit proxy's grammar).
JSON_PATH_PATTERN: typing.Final = r"^\$((\.[A-Za-z0-9_-]+)|(\.\*)|(\[(\*|[0-9]+)\]))+$"
HEADER_NAME_PATTERN: typing.Final = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
MAX_REDACTION_RULES: typing.Final = 64
DEFAULT_MAX_REQUEST_BYTES: typing.Final = "16Mi"
MAX_REQUEST_BYTES: typing.Final = "1Gi"
DEFAULT_MAX_CONNECTIONS: typing.Final = 256
# Each caller's connection holds one to the model server as well (two file descriptors) and its
# buffers count against the proxy's memory limit; past some thousands a pod needs more than a
# sidecar's share, and more pods serve more callers.
MAX_CONNECTIONS: typing.Final = 16384
JsonPath = typing.Annotated[str, pydantic.Field(pattern=JSON_PATH_PATTERN, max_length=256)]
HeaderName = typing.Annotated[str, pydantic.Field(pattern=HEADER_NAME_PATTERN, max_length=128)]


class Redaction(conventions.Spec):
    """Values of recorded payloads replaced by their length and a keyed HMAC (HMAC-SHA256 under a
    key the audit proxy makes at its start and never writes down: equal values can be told equal
    within one proxy's log, the value cannot be read back)."""

    json_paths: list[JsonPath] = pydantic.Field(default=[], max_length=MAX_REDACTION_RULES)
    """JSON paths into request bodies, e.g. $.messages[*].content, $.user.email, $.inputs[0]:
    $ then .name, .*, [n] or [*] steps. Default: []."""

    # Written from the proxy's own list, so that `kubectl explain` says what it redacts.
    headers: list[HeaderName] = pydantic.Field(
        default=[],
        max_length=MAX_REDACTION_RULES,
        description="Request header names (any case) whose values are replaced. "
        f"{inputaudit.always_redacted_text()} always are, whatever the rules say. Default: [].",
    )


class RateLimit(conventions.Spec):
    """Requests per second a model pod accepts, over all callers; more are answered 429."""

    requests_per_second: int = pydantic.Field(default=1000, ge=1, le=1_000_000)
    """Sustained requests per second per pod. Default: 1000."""

    burst: int = pydantic.Field(default=2000, ge=1, le=10_000_000)
    """Requests accepted at once above the sustained rate. Default: 2000."""


class AuditSpec(conventions.Spec):
    """What is recorded about inference requests, and the limits the audit proxy enforces."""

    inputs: AuditInputs = AuditInputs.METADATA
    """None: no audit proxy, nothing recorded, no limits. Metadata: a proxy in the model pod
    records per request the time, caller, method, path, sizes, body SHA-256, status and
    latency in a signed, chained, checkpointed log (the proxy's standard output). Payload:
    Metadata plus the request's headers and JSON body with the redaction rules applied; opt-in,
    since a payload may hold personal data, and refused (PayloadAuditNotAllowed) unless the
    TrustPolicy's spec.audit.allowPayload is true. Default: Metadata."""

    max_request_bytes: Quantity = DEFAULT_MAX_REQUEST_BYTES
    """Larger request bodies are refused with 413, declared ones before they are read, streamed
    ones as soon as they pass it. 1 byte to 1Gi. Default: 16Mi."""

    rate_limit: RateLimit = RateLimit()
    """Requests per second per pod; more are refused with 429 and recorded. Default: 1000 per
    second, bursts of 2000."""

    max_connections: int = pydantic.Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, le=MAX_CONNECTIONS)
    """Callers' connections the audit proxy of a pod serves at once (each holds one to the
    model server too); past it a new connection is answered 503 (TooManyConnections) and
    recorded, so that callers holding connections open cannot exhaust the pod's file
    descriptors or the model server's connection slots. The proxy's memory limit follows it:
    96Mi plus 1Mi per connection, what a connection's buffers may hold with a slow model server
    or a caller that does not read. 1 to 16384. Default: 256 (a 352Mi limit)."""

    redact: Redaction = Redaction()
    """Payload: values replaced before they are recorded, on top of the TrustPolicy's
    spec.audit.redact (a model can redact more than its policy, never less). Default: none
    beyond the policy's and the credential headers."""

    @pydantic.field_validator("max_request_bytes")
    @classmethod
    def _request_bound(cls, value: str) -> str:
        if quantity.parse(value) < 1:
            raise ValueError(f"{value} is less than one byte; give a size such as 16Mi")
        if quantity.parse(value) > quantity.parse(MAX_REQUEST_BYTES):
            raise ValueError(f"{value} is more than {MAX_REQUEST_BYTES}")
        return value

    def request_bytes(self) -> int:
        """max_request_bytes in whole bytes."""
        return int(quantity.parse(self.max_request_bytes))


RETAIN_PATTERN: typing.Final = r"^[1-9][0-9]{0,4}d$"


class BackupSpec(conventions.Spec):
    """Offline backups of the serving model: its verified files, signature, approvals and spec,
    written once to a BackupStore, read back and verified."""

    store: ObjectName
    """Name of the (cluster-scoped) BackupStore to write to. Required."""

    schedule: typing.Annotated[
        str, pydantic.Field(min_length=1, max_length=128), pydantic.AfterValidator(cron.check)
    ] = "@daily"
    """When to back up besides every rollout of a new version, in cron syntax (UTC), e.g.
    "0 3 * * *", or a macro (@hourly, @daily, @weekly, @monthly). Default: @daily."""

    retain: (
        typing.Annotated[
            str,
            pydantic.Field(pattern=RETAIN_PATTERN),
            errors.Hint('must be a number of days such as "90d"'),
        ]
        | None
    ) = None
    """How long each backup is locked in the store, in days, e.g. "90d"; at least the
    BackupStore's spec.s3.objectLock.retentionDays, which is also the default. Nothing is ever
    deleted by the operator: an expired backup is removed by the bucket's own lifecycle rules."""

    def retain_days(self) -> int | None:
        return int(self.retain.removesuffix("d")) if self.retain is not None else None


class OnUnapproved(enum.StrEnum):
    """What happens when the requested version is not approved."""

    HOLD = "Hold"
    REJECT = "Reject"


class RolloutSpec(conventions.Spec):
    """How a new version goes live."""

    on_unapproved: OnUnapproved = OnUnapproved.HOLD
    """Hold: keep serving the last approved version and wait for an approval. Reject: refuse
    the change at apply time. Default: Hold."""


class ModelDeploymentSpec(conventions.Spec):
    """The model version to serve and how; everything not written has the secure default."""

    model: ModelSpec
    """The model to serve. Required."""

    trust_policy: ObjectName = conventions.DEFAULT_TRUST_POLICY
    """Name of the (cluster-scoped) TrustPolicy that decides who may sign and approve this model;
    it must bind this namespace (its spec.namespaceSelector), else the model is refused
    (PolicyNotBound). Default: default."""

    serving: ServingSpec
    """How the model is served. Required."""

    access: AccessSpec = AccessSpec()
    """Network access. Default: nobody may call the model; it may reach DNS only."""

    audit: AuditSpec = AuditSpec()
    """Audit of inference requests by a proxy in the model pod, in front of the serving port
    (the Service and the NetworkPolicy point at the proxy). Default: metadata of every
    request, with a 16Mi request bound and 1000 requests per second per pod."""

    backup: BackupSpec | None = None
    """Offline backups to a BackupStore: on the schedule and whenever a new version is rolled
    out. Default: none."""

    rollout: RolloutSpec = RolloutSpec()
    """Rollout of new versions. Default: hold unapproved versions."""

    quarantine: bool = False
    """true stops the model: zero replicas and all traffic denied, nothing deleted. Default:
    false."""


# --- status --------------------------------------------------------------------------------------


class ConditionStatus(enum.StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(conventions.Status):
    """One aspect of the object's state, in the shape of Kubernetes' metav1.Condition."""

    type: str = pydantic.Field(pattern=CONDITION_TYPE_PATTERN, max_length=316)
    """Verified, Approved, Isolated, BackedUp, Ready, Reconciling or Stalled."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str = pydantic.Field(pattern=CONDITION_REASON_PATTERN, min_length=1, max_length=1024)
    """Why the condition last changed, in CamelCase. Ready: Available, ScaledToZero,
    Progressing, RolloutStalled, NotVerified, NotApproved, NotIsolated, PolicyNotBound,
    ChildConflict, ApplyFailed, Quarantined or InvalidSpec. Verified: SignatureVerified,
    AuditViolations, or why not: PolicyNotFound, PolicyNotBound, CredentialsForbidden,
    CredentialsNotFound, AgentFailed, or the signature's, the source's or a
    pod's agent's own reason (UntrustedSigner, DigestMismatch, SourceUnreachable, ...; all in
    docs/status.md). Approved: Approved, or why not (ApprovalMissing, TooFewApprovals, ...).
    Isolated: WithinPolicy, BroadAccessRefused (the spec asks for more than its TrustPolicy
    allows) or OpenedByNetworkPolicy (someone else's NetworkPolicy opens the model's pods
    beyond it). BackedUp: BackupVerified, or why not: NothingToBackUp, StoreNotFound,
    StoreNotReady, BackupKeyMissing, BackupUnsupported, BackupFailed, ReadBackMismatch,
    DrillFailed. Reconciling (True while a rollout progresses, an approval is awaited or a source
    is retried) and Stalled (True for a refusal that needs someone to change the spec, the
    policy, the signature or the cluster, and for a quarantine) carry the reason of the
    condition that causes them."""

    message: str = pydantic.Field(max_length=MAX_CONDITION_MESSAGE)
    """Human-readable detail."""

    last_transition_time: str = pydantic.Field(json_schema_extra={"format": "date-time"})
    """When status last changed (RFC 3339)."""

    observed_generation: int | None = pydantic.Field(
        default=None, ge=0, json_schema_extra={"format": "int64"}
    )
    """metadata.generation the condition was set for."""


class VerificationStatus(conventions.Status):
    """The result of the last successful signature verification."""

    version: str | None = None
    """The model version (spec.model.version) this verification is of."""

    root_digest: str | None = None
    """Digest over all of the model's files, as signed (e.g. sha256:...)."""

    signer: str | None = None
    """Name of the TrustPolicy signer whose signature verified."""

    files: int | None = None
    """Number of files covered by the signature."""

    bytes: int | None = pydantic.Field(default=None, json_schema_extra={"format": "int64"})
    """Total size of those files."""

    verified_at: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """When the signature was verified (RFC 3339)."""


class VerifiedDigest(conventions.Status):
    """The root digest first verified for one version of a model."""

    model: str | None = None
    """spec.model.name."""

    version: str | None = None
    """spec.model.version."""

    root_digest: str | None = None
    """The root digest verified first (or last accepted as a re-publication) for them."""

    since: str | None = pydantic.Field(default=None, json_schema_extra={"format": "date-time"})
    """When it was recorded (RFC 3339)."""


class ApprovalStatus(conventions.Status):
    """The approval the active version runs under."""

    approvers: list[str] | None = None
    """Names of the approvers whose signed ModelApprovals count."""

    expires_at: str | None = pydantic.Field(default=None, json_schema_extra={"format": "date-time"})
    """When the earliest of those approvals expires (RFC 3339)."""


class BackupStatus(conventions.Status):
    """The last completed offline backup."""

    id: str | None = None
    """The backup's id (`modelguard restore --backup`): its UTC time and root digest prefix."""

    store: str | None = None
    """The BackupStore it was written to."""

    location: str | None = None
    """The backup manifest's object inside the store."""

    version: str | None = None
    """The model version backed up."""

    root_digest: str | None = None
    """The root digest of the files backed up (sha256:...): the one verified and serving."""

    completed_at: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """When it was written and read back (RFC 3339)."""

    retain_until: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """Until when its objects are locked (RFC 3339)."""

    files: int | None = None
    """Files the backup holds (the model's, its signature, approvals, spec and context)."""

    bytes: int | None = pydantic.Field(default=None, json_schema_extra={"format": "int64"})
    """Their total size."""

    written_bytes: int | None = pydantic.Field(default=None, json_schema_extra={"format": "int64"})
    """Bytes this backup wrote; what an earlier backup stored already is not written again."""


class DrillStatus(conventions.Status):
    """The last restore drill: the latest backup restored into scratch space and verified."""

    backup_id: str | None = None
    """The backup drilled."""

    completed_at: str | None = pydantic.Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    """When it ended (RFC 3339)."""

    result: str | None = None
    """Passed or Failed."""

    message: str | None = None
    """What was verified, or why it failed (naming the file)."""


class QuarantineStatus(conventions.Status):
    """An automatic quarantine: why, since when, and for which generation of the spec."""

    reason: str | None = None
    """What the verifying agent in a pod found (DigestMismatch, UnexpectedFile, ...)."""

    message: str | None = None
    """The agent's words, naming the pod and the file."""

    generation: int | None = None
    """The spec generation it holds for; any change of the spec lifts it."""

    since: str | None = pydantic.Field(default=None, json_schema_extra={"format": "date-time"})
    """When the model was quarantined (RFC 3339)."""


MAX_CHILDREN: typing.Final = 32


class OwnedChild(conventions.Status):
    """An object the operator created for the model."""

    kind: str = pydantic.Field(min_length=1, max_length=63)
    """Deployment, Service, ServiceAccount or NetworkPolicy."""

    name: str = pydantic.Field(min_length=1, max_length=253)
    """The object's name, in the model's namespace."""

    uid: str = pydantic.Field(min_length=1, max_length=64)
    """metadata.uid the API server gave it when the operator created it."""

    content: str | None = pydantic.Field(default=None, max_length=80)
    """sha256 of what the object does (its spec, labels and annotations) as the operator's last
    write left it: anything else found there later is reverted, whoever wrote it."""


MAX_SERVING_EVIDENCE: typing.Final = 2


class KeptSignature(conventions.Status):
    """One signature of a verified signature file, as judging it again needs it."""

    signature: str
    """The signature (base64)."""

    key_hint: str | None = None
    """Key method: hex SHA-256 of the signer's PEM public key, as the bundle names it."""

    certificates: list[str] | None = None
    """Certificate method: the bundle's chain, signing certificate first (base64 DER)."""


class ServingEvidence(conventions.Status):
    """What verifying the signature file of a rolled-out artifact established: the operator
    judges those bytes again from this (never from the store) whenever its TrustPolicy changes."""

    root_digest: str
    """The root digest verified."""

    signature_digest: str
    """sha256 of the signature file verified."""

    hash_algorithm: str
    """The hash the statement uses for the model's files."""

    source_uri: str
    """spec.model.source.uri it was verified for."""

    signature_uri: str
    """Where the signature file was read."""

    verified_at: str = pydantic.Field(json_schema_extra={"format": "date-time"})
    """When it was verified; certificates are judged again at that time."""

    message_digests: dict[str, str]
    """The signed message's digest by hash name (base64)."""

    signatures: list[KeptSignature] = pydantic.Field(default_factory=list)
    """The signatures over that message."""

    judged_under: str | None = None
    """The TrustPolicy (uid/generation) that last accepted it."""


class ModelDeploymentStatus(conventions.Status):
    """What the operator observed and did; read by kubectl, kubectl wait and GitOps tools."""

    observed_generation: int | None = pydantic.Field(
        default=None, json_schema_extra={"format": "int64"}
    )
    """metadata.generation of the spec this status describes."""

    active_version: str | None = None
    """Model version serving now; differs from spec.model.version while a rollout is held."""

    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Verified, Approved, Isolated, BackedUp, Ready (the summary), and Reconciling and Stalled
    (the same summary as kstatus reads it: Flux, kpt)."""

    verification: VerificationStatus | None = None
    """The last successful signature verification."""

    verified_digests: list[VerifiedDigest] | None = pydantic.Field(
        default=None, max_length=MAX_VERIFIED_DIGESTS
    )
    """The root digest first verified for each (model, version) this object served or asked
    for, newest first, at most 32: a later signature of other files for the same version is
    refused (DigestChanged) unless the TrustPolicy's onRepublish or spec.model.rootDigest accepts
    it. Deleting the object forgets them."""

    approval: ApprovalStatus | None = None
    """The approval the active version runs under."""

    last_backup: BackupStatus | None = None
    """The last completed offline backup."""

    last_drill: DrillStatus | None = None
    """The last restore drill of the latest backup."""

    quarantine: QuarantineStatus | None = None
    """Set while the model is quarantined automatically (a pod found tampered files, or the
    signer of what serves was revoked)."""

    children: list[OwnedChild] | None = pydantic.Field(
        default=None,
        max_length=MAX_CHILDREN,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["kind", "name"],
        },
    )
    """The objects the operator created for this model, by uid. Only these are its children: an
    object under a child's name that is not listed here is someone else's, whatever its
    ownerReferences claim, and is never written to (Ready=False, ChildConflict)."""

    serving_evidence: list[ServingEvidence] | None = pydantic.Field(
        default=None, max_length=MAX_SERVING_EVIDENCE
    )
    """What verified the artifact that serves (and the spec's version, when another): what
    serves is judged again from this whenever its TrustPolicy changes, whatever the store, the
    credentials or the spec say by then."""


# --- the object ----------------------------------------------------------------------------------


class ModelDeployment(conventions.Wire):
    """One model version served securely: verified, approved, isolated, audited and backed up."""

    model_config = pydantic.ConfigDict(
        # The envelope may grow fields (the API server's, kopf's); the spec inside stays strict.
        extra="ignore",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # Checked here because the name becomes the Service's name and a label value;
                    # a longer or digit-first name would be accepted and then never reconcile.
                    "rule": f"self.metadata.name.matches('{OBJECT_NAME_PATTERN}')",
                    "message": f"metadata.name {OBJECT_NAME_RULE}",
                }
            ]
        },
    )

    api_version: str = API_VERSION
    """APIVersion defines the versioned schema of this representation of an object."""

    kind: str = KIND
    """Kind is a string value representing the REST resource this object represents."""

    metadata: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    """Standard object metadata."""

    spec: ModelDeploymentSpec
    """The model version to serve and how."""

    status: ModelDeploymentStatus | None = None
    """What the operator observed and did."""

    @pydantic.field_validator("metadata")
    @classmethod
    def _name_fits_children(cls, metadata: dict[str, typing.Any]) -> dict[str, typing.Any]:
        name = metadata.get("name")
        if isinstance(name, str) and not re.match(OBJECT_NAME_PATTERN, name):
            raise ValueError(f'name "{name}" {OBJECT_NAME_RULE}')
        return metadata

    @property
    def name(self) -> str:
        """metadata.name."""
        return self._metadata_string("name")

    @property
    def namespace(self) -> str:
        """metadata.namespace."""
        return self._metadata_string("namespace")

    @property
    def uid(self) -> str:
        """metadata.uid, which ownerReferences of the children point at."""
        return self._metadata_string("uid")

    def _metadata_string(self, key: str) -> str:
        value = self.metadata.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"ModelDeployment has no metadata.{key}")
        return value


def parse(body: typing.Mapping[str, typing.Any]) -> ModelDeployment:
    """A ModelDeployment from a raw object body (as the API server or kopf returns it).

    Raises errors.InvalidObjectError with one message per problem, each naming its field.
    """
    try:
        # Only the wire names: the API server would refuse `trust_policy`, so parsing must too.
        return ModelDeployment.model_validate(body, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        raise errors.InvalidObjectError(validation_messages(error)) from error


def validation_messages(error: pydantic.ValidationError) -> list[str]:
    """One `path: problem` line per problem in `error`, raised validating a ModelDeployment."""
    return errors.messages(error, model=ModelDeployment)
