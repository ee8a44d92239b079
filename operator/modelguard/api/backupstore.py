"""The modelguard.dev/v1alpha1 BackupStore API (cluster-scoped): where offline backups of models
go, and how immutable they are there.

An S3-compatible bucket with object lock (Compliance by default) and versioning, its credentials
in a Secret in the operator's namespace only; or, by explicit choice and documented as weaker, a
volume (nothing stops whoever can write to it from changing a backup: a restore then refuses
the changed file, but the backup is lost). Like v1alpha1, these models are the single source of
the CRD schema.
"""

import enum
import typing

import pydantic

from modelguard.api import conventions, cron, errors, trustpolicy, v1alpha1

KIND: typing.Final = "BackupStore"
PLURAL: typing.Final = "backupstores"
SINGULAR: typing.Final = "backupstore"
SHORT_NAMES: typing.Final = ("mgbs",)

# The BackupStore's one condition, and its reasons.
CONDITION_READY: typing.Final = "Ready"
REASON_STORE_READY: typing.Final = "StoreReady"
"""Ready: the bucket has object lock and versioning, the credentials work."""
REASON_DOWNGRADE_ACCEPTED: typing.Final = "DowngradeAccepted"
"""Ready: the bucket lacks object lock or versioning, which spec.s3.acceptMutableBucket accepts."""
REASON_MUTABLE_VOLUME: typing.Final = "MutableVolume"
"""Ready: a volume store, accepted by spec.volume.acceptMutable (not immutable)."""
REASON_OBJECT_LOCK_DISABLED: typing.Final = "ObjectLockDisabled"
"""Not ready: the bucket was made without object lock."""
REASON_VERSIONING_DISABLED: typing.Final = "VersioningDisabled"
"""Not ready: the bucket does not keep versions."""
REASON_BUCKET_NOT_FOUND: typing.Final = "BucketNotFound"
"""Not ready: the bucket does not exist."""
REASON_STORE_CREDENTIALS_NOT_FOUND: typing.Final = "StoreCredentialsNotFound"
"""Not ready: the credentials Secret does not exist in the operator's namespace."""
REASON_STORE_CREDENTIALS_FORBIDDEN: typing.Final = "StoreCredentialsForbidden"
"""Not ready: the chart does not let the operator read that Secret (backup.credentialsSecrets)."""
REASON_STORE_UNREACHABLE: typing.Final = "StoreUnreachable"
"""Not ready: no answer from the endpoint (connection, DNS, TLS, server errors)."""
REASON_STORE_DENIED: typing.Final = "StoreDenied"
"""Not ready: the store refused the credentials or the request."""
REASON_STORE_REFUSED: typing.Final = "StoreRefused"
"""Not ready: the endpoint breaks a rule every store keeps (a redirect, a refused address, an
endpoint the credentials' AWS_ENDPOINT_URL contradicts, credentials that do not parse)."""
REASON_VOLUME_NOT_MOUNTED: typing.Final = "VolumeNotMounted"
"""Not ready: the claim is not mounted into the operator (the chart's backup.volumes)."""
REASON_INVALID_STORE: typing.Final = "InvalidStore"
"""Not ready: the spec cannot be acted upon."""
READY_REASONS: typing.Final = (
    REASON_STORE_READY,
    REASON_DOWNGRADE_ACCEPTED,
    REASON_MUTABLE_VOLUME,
    REASON_OBJECT_LOCK_DISABLED,
    REASON_VERSIONING_DISABLED,
    REASON_BUCKET_NOT_FOUND,
    REASON_STORE_CREDENTIALS_NOT_FOUND,
    REASON_STORE_CREDENTIALS_FORBIDDEN,
    REASON_STORE_UNREACHABLE,
    REASON_STORE_DENIED,
    REASON_STORE_REFUSED,
    REASON_VOLUME_NOT_MOUNTED,
    REASON_INVALID_STORE,
)

# Whether the store keeps the audit log's checkpoints it is asked for (spec.auditCheckpoints),
# and why not; absent when it is not asked.
CONDITION_AUDIT_CHECKPOINTS: typing.Final = "AuditCheckpoints"
REASON_CHECKPOINTS_STORED: typing.Final = "CheckpointsStored"
"""True: the last checkpoint due was written here, under object lock, and read back."""
REASON_NO_CHECKPOINT_YET: typing.Final = "NoCheckpointYet"
"""Unknown: no checkpoint written here yet by this operator process (none was due since it
started, the store asked for them or became Ready again)."""
REASON_CHECKPOINT_STORE_NOT_READY: typing.Final = "CheckpointStoreNotReady"
"""False: nothing is written to the store while it is not Ready or its bucket has no object
lock; the checkpoints wait (and are in the operator's ConfigMaps)."""
REASON_CHECKPOINT_WRITE_FAILED: typing.Final = "CheckpointWriteFailed"
"""False: the store refused the last checkpoint, or writing or reading it back failed; it is
retried with backoff."""
AUDIT_CHECKPOINTS_REASONS: typing.Final = (
    REASON_CHECKPOINTS_STORED,
    REASON_NO_CHECKPOINT_YET,
    REASON_CHECKPOINT_STORE_NOT_READY,
    REASON_CHECKPOINT_WRITE_FAILED,
)

BUCKET_PATTERN: typing.Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
KEY_PREFIX_PATTERN: typing.Final = r"^([a-z0-9][a-z0-9._-]*/)*$"
MAX_RETENTION_DAYS: typing.Final = 36500
AUDIT_CHECKPOINTS_NEED_S3: typing.Final = (
    "auditCheckpoints: only an S3 store with object lock keeps audit checkpoints out of reach "
    "of the log's writer; a volume store, or a bucket accepted without it "
    "(acceptMutableBucket), cannot"
)


class LockMode(enum.StrEnum):
    """How object lock holds a backup."""

    COMPLIANCE = "Compliance"
    """Nobody, the store's root user included, deletes or overwrites it, or shortens its
    retention, until the retention ends."""
    GOVERNANCE = "Governance"
    """Only identities granted s3:BypassGovernanceRetention can delete it early."""

    def s3(self) -> typing.Literal["COMPLIANCE", "GOVERNANCE"]:
        return "COMPLIANCE" if self is LockMode.COMPLIANCE else "GOVERNANCE"


class ObjectLock(conventions.Spec):
    """The retention every object of a backup is written with."""

    mode: LockMode = LockMode.COMPLIANCE
    """Compliance or Governance. Default: Compliance."""

    retention_days: int = pydantic.Field(default=30, ge=1, le=MAX_RETENTION_DAYS)
    """Days each backup object is locked at least (a ModelDeployment's spec.backup.retain may ask
    for more, never less). 1 to 36500. Default: 30."""


class S3Store(conventions.Spec):
    """An S3-compatible bucket with object lock."""

    endpoint: trustpolicy.S3Endpoint | None = None
    """The S3 server, scheme://host[:port]. The credentials' AWS_ENDPOINT_URL may only repeat
    it. Default: AWS S3 itself (https://s3.<region>.amazonaws.com)."""

    bucket: typing.Annotated[
        str,
        pydantic.Field(pattern=BUCKET_PATTERN),
        errors.Hint("must be an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-'"),
    ]
    """The bucket. Made with object lock enabled (which turns versioning on), e.g. `mc mb
    --with-lock` or `aws s3api create-bucket --object-lock-enabled-for-bucket`. Required."""

    prefix: typing.Annotated[
        str,
        pydantic.Field(pattern=KEY_PREFIX_PATTERN, max_length=256),
        errors.Hint("must be empty or folders ending in '/', e.g. modelguard/"),
    ] = ""
    """A folder of the bucket to write below, e.g. modelguard/. Default: the bucket's root."""

    credentials_secret: v1alpha1.ObjectName
    """Name of a Secret in the operator's namespace (never a model's) with AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY and optionally AWS_REGION, AWS_ENDPOINT_URL and AWS_CA_BUNDLE. Grant
    the identity only what a writer of backups needs: put and read objects, read the bucket's
    versioning and object lock configuration, extend retention; never delete, bypass governance
    retention or change the bucket (README, "Offline backups"). The chart must list it in
    backup.credentialsSecrets. Required."""

    allow_private_addresses: bool = False
    """Let the endpoint's host name resolve to private addresses (an in-cluster MinIO Service).
    Loopback, link-local and metadata addresses are reached only by an endpoint that names that
    IP itself. Default: false."""

    object_lock: ObjectLock = ObjectLock()
    """Mode and retention of every object. Default: Compliance, 30 days."""

    accept_mutable_bucket: bool = False
    """Accept a bucket without object lock or versioning: backups can then be overwritten or
    deleted by whoever holds write access to it (a restore refuses a changed file, but the backup
    is lost). An explicit, documented downgrade. Default: false (such a bucket is refused)."""


class VolumeStore(conventions.Spec):
    """A PersistentVolumeClaim in the operator's namespace, mounted into the operator. Weaker than
    S3 with object lock: files are written once and read-only, but whoever can write to the
    volume can change or delete them."""

    model_config = conventions.Spec.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.acceptMutable == true",
                    "message": "a volume store is not immutable: set acceptMutable: true to "
                    "choose it anyway, or use an S3 bucket with object lock",
                }
            ]
        }
    }

    claim_name: v1alpha1.ObjectName
    """The claim, mounted into the operator by the chart's backup.volumes. Required."""

    accept_mutable: bool
    """Must be true: says that this store is chosen knowing it is not immutable. Required."""

    @pydantic.field_validator("accept_mutable")
    @classmethod
    def _explicit(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "a volume store is not immutable: set acceptMutable: true to choose it anyway, "
                "or use an S3 bucket with object lock"
            )
        return value


class RestoreDrill(conventions.Spec):
    """Restore drills: the latest backup of every model written here is restored into a scratch
    location and verified end to end, on a schedule."""

    schedule: typing.Annotated[
        str,
        pydantic.Field(min_length=1, max_length=128),
        pydantic.AfterValidator(cron.check),
    ] = "@weekly"
    """When, in cron syntax (UTC), e.g. "0 4 * * 0", or a macro (@daily, @weekly, ...). Default:
    @weekly."""

    suspend: bool = False
    """true: no drills. Default: false."""


class BackupStoreSpec(conventions.Spec):
    """Where backups are written: exactly one of s3 and volume."""

    model_config = conventions.Spec.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.s3) != has(self.volume)",
                    "message": "exactly one of s3 and volume",
                },
                {
                    "rule": "!has(self.auditCheckpoints) || !self.auditCheckpoints || "
                    "(has(self.s3) && !(has(self.s3.acceptMutableBucket) && "
                    "self.s3.acceptMutableBucket))",
                    "message": AUDIT_CHECKPOINTS_NEED_S3,
                },
            ]
        }
    }

    s3: S3Store | None = None
    """An S3-compatible bucket with object lock (recommended)."""

    volume: VolumeStore | None = None
    """A volume: weaker, allowed only with acceptMutable: true."""

    drill: RestoreDrill = RestoreDrill()
    """Restore drills of the backups written here. Default: weekly."""

    audit_checkpoints: bool = False
    """Also keep the operator's signed audit checkpoints here: each one its own object under
    audit-checkpoints/, written once and locked like a backup (spec.s3.objectLock), so that
    whoever controls the operator's namespace cannot remove or replace them; `modelguard audit
    verify --checkpoints` reads a copy of that folder. An S3 store with object lock only (not a
    volume, not with acceptMutableBucket). Default: false."""

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> typing.Self:
        if (self.s3 is None) == (self.volume is None):
            raise ValueError("exactly one of s3 and volume")
        if self.audit_checkpoints and (self.s3 is None or self.s3.accept_mutable_bucket):
            raise ValueError(AUDIT_CHECKPOINTS_NEED_S3)
        return self


class SigningKeyStatus(conventions.Status):
    """The operator's backup key, whose public half checks every backup manifest."""

    key_id: str | None = None
    """Hex SHA-256 of the PEM public key (the manifests' key hint)."""

    public_key: str | None = None
    """The PEM public key: keep a copy outside the cluster, `modelguard restore` needs it."""


class BackupStoreStatus(conventions.Status):
    """What the operator found at the store."""

    observed_generation: int | None = pydantic.Field(
        default=None, json_schema_extra={"format": "int64"}
    )
    """metadata.generation of the spec this status describes."""

    conditions: list[v1alpha1.Condition] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready: StoreReady, DowngradeAccepted or MutableVolume; or why not (ObjectLockDisabled,
    VersioningDisabled, BucketNotFound, StoreCredentialsNotFound, StoreCredentialsForbidden,
    StoreUnreachable, StoreDenied, StoreRefused, VolumeNotMounted, InvalidStore).
    AuditCheckpoints, with spec.auditCheckpoints only: CheckpointsStored, NoCheckpointYet
    (Unknown), or why not (CheckpointStoreNotReady, CheckpointWriteFailed)."""

    object_lock: str | None = None
    """The bucket's object lock: Enabled or Disabled (volume: Unsupported)."""

    versioning: str | None = None
    """The bucket's versioning: Enabled, Suspended or Disabled (volume: Unsupported)."""

    signing_key: SigningKeyStatus | None = None
    """The key backups written here are signed with."""


class BackupStore(conventions.Wire):
    """Where offline backups of models go: S3 with object lock, or (weaker) a volume."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = conventions.API_VERSION
    """APIVersion defines the versioned schema of this representation of an object."""

    kind: str = KIND
    """Kind is a string value representing the REST resource this object represents."""

    metadata: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    """Standard object metadata."""

    spec: BackupStoreSpec
    """Where backups are written and how they are locked."""

    status: BackupStoreStatus | None = None
    """What the operator found at the store."""

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))


def parse(body: typing.Mapping[str, typing.Any]) -> BackupStore:
    """A BackupStore from a raw object body; errors.InvalidObjectError, one message per problem."""
    try:
        return BackupStore.model_validate(body, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        raise errors.InvalidObjectError(errors.messages(error, model=BackupStore)) from error
