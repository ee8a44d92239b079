"""The modelguard.dev/v1alpha1 ModelApproval API (namespaced): a signed statement that one model
version, at one root digest, may run in this namespace, by whom and until when.

The signature envelope is the truth: a DSSE envelope of an in-toto Statement v1 whose subject is
the model and its root digest, predicateType https://modelguard.dev/approval/v1, predicate
{version, approver, reason, expiresAt, namespace}. The plain spec fields repeat what is signed so
that `kubectl get` and a code review can read it; `modelguard.trust.approval` refuses an approval
whose plain fields differ from the signed ones. Like v1alpha1, these models are the single source
of the CRD schema.
"""

import base64
import binascii
import datetime
import re
import typing

import pydantic

from modelguard.api import conventions, errors, times, v1alpha1

KIND: typing.Final = "ModelApproval"
PLURAL: typing.Final = "modelapprovals"
SINGULAR: typing.Final = "modelapproval"
SHORT_NAMES: typing.Final = ("ma",)

ROOT_DIGEST_PATTERN: typing.Final = conventions.ROOT_DIGEST_PATTERN
# An approval signs a handful of short fields: these bound what a hostile object makes us decode.
MAX_PAYLOAD_CHARS: typing.Final = 16384
MAX_SIGNATURE_CHARS: typing.Final = 1024
MAX_SIGNATURES: typing.Final = 8
MAX_REASON_CHARS: typing.Final = 1024

RootDigest = conventions.RootDigest


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be standard base64") from None
    return value


def _rfc3339(value: str) -> str:
    times.parse(value)
    return value


Base64 = typing.Annotated[
    str,
    pydantic.AfterValidator(_base64),
    # The API server checks base64 itself for format byte, before the webhook sees the object.
    pydantic.Field(min_length=1, json_schema_extra={"format": "byte"}),
]
Timestamp = typing.Annotated[
    str,
    pydantic.AfterValidator(_rfc3339),
    pydantic.Field(json_schema_extra={"format": "date-time"}),
]


class Signature(conventions.Spec):
    """One DSSE signature."""

    keyid: str = pydantic.Field(default="", max_length=256)
    """Hex SHA-256 of the signer's PEM public key (model_signing's key hint); picks the approver
    key to check. Default: "" (every approver key is tried)."""

    sig: Base64 = pydantic.Field(max_length=MAX_SIGNATURE_CHARS)
    """ECDSA signature (DER, base64) over the DSSE pre-authentication encoding of payloadType and
    payload. Required."""


class Envelope(conventions.Spec):
    """A DSSE envelope (https://github.com/secure-systems-lab/dsse) of an in-toto statement."""

    payload_type: str = pydantic.Field(min_length=1, max_length=256)
    """Media type of the payload: application/vnd.in-toto+json. Required."""

    payload: Base64 = pydantic.Field(max_length=MAX_PAYLOAD_CHARS)
    """The in-toto Statement v1, base64: subject [{name: <model>, digest: {sha256: <hex>}}],
    predicateType https://modelguard.dev/approval/v1, predicate {version, approver, reason,
    expiresAt, namespace}. Required."""

    signatures: list[Signature] = pydantic.Field(min_length=1, max_length=MAX_SIGNATURES)
    """Signatures over the payload; the one by the named approver's key counts. Required."""


class ModelApprovalSpec(conventions.Spec):
    """Which model version may run, approved by whom, why and until when; and the signature."""

    model: conventions.DNSLabel
    """Logical name of the model, as in ModelDeployment spec.model.name. Required."""

    version: v1alpha1.LabelValue
    """Model version approved, as in ModelDeployment spec.model.version. Required."""

    root_digest: RootDigest
    """Root digest of the model's signed files (sha256:<64 hex>), as in the model's signature
    and status.verification.rootDigest. Only these exact bytes are approved. Required."""

    approver: conventions.DNSLabel
    """Name of the approver in the TrustPolicy; the signature must verify with that approver's
    key. Required."""

    reason: str = pydantic.Field(default="", max_length=MAX_REASON_CHARS)
    """Why the version is approved (evaluation, ticket), for people reading it. Default: ""."""

    expires_at: Timestamp
    """When the approval stops counting (RFC 3339). A version already serving keeps serving, but
    reports ApprovalExpired and blocks the next rollout. Required."""

    signature: Envelope
    """The approver's signature over all of the above and the namespace: written by `modelguard
    approve`. The signed values are the truth; the fields above must equal them. Required."""

    def expires(self) -> datetime.datetime:
        """expiresAt as an aware datetime."""
        return times.parse(self.expires_at)


class ModelApprovalStatus(conventions.Status):
    """What the operator observed about this approval."""

    observed_generation: int | None = pydantic.Field(
        default=None, json_schema_extra={"format": "int64"}
    )
    """metadata.generation of the spec this status describes."""

    conditions: list[v1alpha1.Condition] = pydantic.Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Conditions of the approval, such as whether its signature verifies."""


class ModelApproval(conventions.Wire):
    """A signed approval for one model version, at one root digest, in this namespace."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = conventions.API_VERSION
    """APIVersion defines the versioned schema of this representation of an object."""

    kind: str = KIND
    """Kind is a string value representing the REST resource this object represents."""

    metadata: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    """Standard object metadata."""

    spec: ModelApprovalSpec
    """The approved model version and the approver's signature."""

    status: ModelApprovalStatus | None = None
    """What the operator observed about this approval."""

    @pydantic.field_validator("metadata")
    @classmethod
    def _name_is_an_object_name(cls, metadata: dict[str, typing.Any]) -> dict[str, typing.Any]:
        name = metadata.get("name")
        if isinstance(name, str) and not (
            len(name) <= 253 and re.match(v1alpha1.DNS_SUBDOMAIN_PATTERN, name)
        ):
            raise ValueError(f"name {name!r} must be lowercase letters, digits, '-' and '.'")
        return metadata

    @property
    def name(self) -> str:
        """metadata.name, or "" when the object has none yet."""
        value = self.metadata.get("name")
        return value if isinstance(value, str) else ""

    @property
    def namespace(self) -> str | None:
        """metadata.namespace, or None when the object has none yet."""
        value = self.metadata.get("namespace")
        return value if isinstance(value, str) and value else None


def parse(body: typing.Mapping[str, typing.Any]) -> ModelApproval:
    """A ModelApproval from a raw object body; errors.InvalidObjectError, one line per problem."""
    try:
        return ModelApproval.model_validate(body, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        raise errors.InvalidObjectError(errors.messages(error, model=ModelApproval)) from error
