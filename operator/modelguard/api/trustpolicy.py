"""The modelguard.dev/v1alpha1 TrustPolicy API (cluster-scoped): who may sign models, and what a
model may be.

A ModelDeployment names the TrustPolicy it answers to (the one named `default` otherwise), among
those the security owner bound to its namespace with spec.namespaceSelector. Like
v1alpha1, these models are the single source of the CRD schema: docstrings become `kubectl
explain` text and the validators here make the operator refuse exactly what the webhook refuses.
"""

import enum
import typing

import pydantic
from cryptography import exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import conventions, errors, v1alpha1

KIND: typing.Final = "TrustPolicy"
PLURAL: typing.Final = "trustpolicies"
SINGULAR: typing.Final = "trustpolicy"
SHORT_NAMES: typing.Final = ("tp",)
DEFAULT_NAME: typing.Final = conventions.DEFAULT_TRUST_POLICY

MAX_SIGNERS: typing.Final = 64
MAX_ENTRIES: typing.Final = 256
MAX_ROLES: typing.Final = 16
SOURCE_PREFIX_PATTERN: typing.Final = r"^(s3|https|pvc)://[^\s/]+(/[^\s]*)?$"
_EC_CURVES: typing.Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_ONE_METHOD = "a signer needs exactly one of publicKey, certificateRoot and keyless"

SourcePrefix = typing.Annotated[
    str,
    pydantic.Field(pattern=SOURCE_PREFIX_PATTERN, max_length=2048),
    errors.Hint(
        "must be an s3://bucket[/prefix], https://host[/path] or pvc://claim[/path] prefix"
    ),
]


_EC_KEY_NEEDED: typing.Final = "must be an elliptic-curve P-256, P-384 or P-521 public key"


def _ec_public_key(pem: str) -> str:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"must be a PEM public key (-----BEGIN PUBLIC KEY-----): {error}"
        ) from None
    except exceptions.UnsupportedAlgorithm as error:
        raise ValueError(f"{_EC_KEY_NEEDED} ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _EC_CURVES:
        raise ValueError(_EC_KEY_NEEDED)
    return pem


def _certificates(pem: str) -> str:
    # Imported when a policy has certificate roots: x509 is a large share of a CLI's start-up.
    from cryptography import x509  # noqa: PLC0415

    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("utf-8"))
    except ValueError as error:
        raise ValueError(
            f"must be PEM certificates (-----BEGIN CERTIFICATE-----): {error}"
        ) from None
    if not certificates:
        raise ValueError("must hold at least one PEM certificate")
    return pem


PublicKeyPEM = typing.Annotated[str, pydantic.AfterValidator(_ec_public_key)]
CertificatesPEM = typing.Annotated[str, pydantic.AfterValidator(_certificates)]


class KeylessIdentity(conventions.Spec):
    """A sigstore keyless signer: an OIDC identity certified by Fulcio, logged in Rekor.

    Verifying it needs the public-good sigstore infrastructure online; ModelGuard verifies
    offline, so a bundle signed this way is refused with KeylessUnavailable for now.
    """

    issuer: str = pydantic.Field(min_length=1)
    """OIDC issuer that authenticated the signer, e.g. https://accounts.google.com. Required."""

    identity: str = pydantic.Field(min_length=1)
    """Identity (email or workload URI) in the signing certificate. Required."""


class Signer(conventions.Spec):
    """A trusted model signer: exactly one of publicKey, certificateRoot or keyless."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.publicKey), has(self.certificateRoot), "
                    "has(self.keyless)].filter(x, x).size() == 1",
                    "message": _ONE_METHOD,
                }
            ]
        }
    )

    name: conventions.DNSLabel
    """Name of the signer, reported in status.verification and audit records. Required."""

    public_key: PublicKeyPEM | None = None
    """PEM elliptic-curve public key (P-256, P-384 or P-521) of model_signing's key method."""

    certificate_root: CertificatesPEM | None = None
    """PEM certificate(s) of a root CA: a signature made with model_signing's certificate method
    verifies when its certificate chains to one of them."""

    keyless: KeylessIdentity | None = None
    """Sigstore keyless identity. Needs the public-good sigstore infrastructure: not available
    offline, where such signatures are refused (KeylessUnavailable)."""

    @pydantic.model_validator(mode="after")
    def _one_method(self) -> typing.Self:
        given = [self.public_key, self.certificate_root, self.keyless]
        if sum(item is not None for item in given) != 1:
            raise ValueError(_ONE_METHOD)
        return self


ApprovalCount = typing.Annotated[int, pydantic.Field(ge=1, le=MAX_SIGNERS)]


class Approver(conventions.Spec):
    """Someone whose signed ModelApprovals count."""

    name: conventions.DNSLabel
    """Name of the approver, reported in status.approval. Required."""

    public_key: PublicKeyPEM
    """PEM elliptic-curve public key the approver signs ModelApprovals with. Required."""

    roles: list[str] = pydantic.Field(default=[], max_length=MAX_ROLES)
    """Roles of the approver (e.g. security, model-owner), for policies that need them."""


class Formats(conventions.Spec):
    """Which file formats a model may contain, judged by content, not by extension."""

    allow_pickle: bool = False
    """Allow pickle-based files (pickle, PyTorch .pt/.pth/.bin archives, joblib, NumPy object
    arrays): loading them runs code chosen by whoever wrote them. Default: false."""


class Network(conventions.Spec):
    """The most a ModelDeployment under this policy may open itself to. Selectors of pods and
    namespaces inside the cluster are the model owner's to declare; what reaches beyond (IP
    ranges) or admits everyone (every namespace) needs the security owner's say-so here."""

    egress_cidrs: list[conventions.CIDR] = pydantic.Field(
        default=[], max_length=MAX_ENTRIES, alias="egressCIDRs"
    )
    """IP ranges a model may name in spec.access.egress ipBlocks: each must lie inside one of
    these. Default: [] (no egress to IP ranges; in-cluster destinations by selector only). List
    0.0.0.0/0 to allow anything."""

    ingress_cidrs: list[conventions.CIDR] = pydantic.Field(
        default=[], max_length=MAX_ENTRIES, alias="ingressCIDRs"
    )
    """IP ranges a model may name in spec.access.ingress ipBlocks: each must lie inside one of
    these. Default: [] (callers by selector only)."""

    allow_all_namespaces: bool = False
    """Whether a model may name every namespace as callers or as egress destinations: by
    namespaceSelector: {}, or by a selector that names no label value (only NotIn, Exists or
    DoesNotExist terms, which can match every namespace). Default: false."""


class HashAlgorithm(enum.StrEnum):
    """A hash type of model_signing's serialization."""

    SHA256 = "sha256"
    BLAKE2B = "blake2b"


class Enforcement(enum.StrEnum):
    """What a violation does."""

    ENFORCE = "Enforce"
    AUDIT = "Audit"


class TrustPolicySpec(conventions.Spec):
    """Who may sign models, who may approve them, and what a model may be."""

    signers: list[Signer] = pydantic.Field(
        min_length=1,
        max_length=MAX_SIGNERS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Trusted model signers, each named; at least one. Required."""

    min_signers: int = pydantic.Field(default=1, ge=1, le=MAX_SIGNERS)
    """Distinct trusted signers whose signatures a model needs (k of n; several signatures come
    as a JSONL file, one bundle per line). Default: 1."""

    approvers: list[Approver] = pydantic.Field(
        default=[],
        max_length=MAX_SIGNERS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """People whose signed ModelApprovals count. Default: []."""

    min_approvals: int = pydantic.Field(default=1, ge=0, le=MAX_SIGNERS)
    """Distinct approvers whose approvals a model version needs. Default: 1."""

    min_approvals_per_role: dict[str, ApprovalCount] = pydantic.Field(default={})
    """Distinct approvers holding a role whose approvals a model version needs, by role, e.g.
    {security: 1, model-owner: 1}; on top of minApprovals. Each role needs that many approvers
    holding it. Default: {} (no role needs any)."""

    sources: list[SourcePrefix] = pydantic.Field(default=[], max_length=MAX_ENTRIES)
    """Where models may come from: URI prefixes such as s3://models/team-a/,
    https://models.example/ or pvc://model-store/. A prefix matches whole path segments.
    Default: [] (no source is allowed until one is listed)."""

    hash_algorithms: list[HashAlgorithm] = pydantic.Field(
        default=[HashAlgorithm.SHA256], min_length=1
    )
    """Hash types a signature may use. Default: [sha256]."""

    formats: Formats = Formats()
    """Which file formats a model may contain. Default: no pickle-based formats."""

    network: Network = Network()
    """Network limits of ModelDeployments under this policy. Default: nothing opened."""

    namespace_selector: v1alpha1.LabelSelector | None = None
    """The namespaces whose ModelDeployments may answer to this policy; a model in any other
    namespace that names it is refused (PolicyNotBound). Unset: no namespace (a new policy applies
    nowhere until bound); {} binds every namespace. Select by `kubernetes.io/metadata.name`, which
    the API server sets to the namespace's name and nobody can change: any other namespace label
    is only as trustworthy as whoever may create or label namespaces. Several policies may bind
    one namespace; each of its models names the one it answers to in spec.trustPolicy.
    Default: unset."""

    enforcement: Enforcement = Enforcement.ENFORCE
    """Enforce: a model that violates the policy is refused. Audit: violations of formats,
    sources, hashAlgorithms and minSigners are recorded and reported but the model is admitted;
    a bad or untrusted signature, changed, missing or extra files and unsafe paths are refused in
    both modes. Default: Enforce."""

    @pydantic.model_validator(mode="after")
    def _minimums_can_be_met(self) -> typing.Self:
        # k of n with n < k would refuse every model forever: refuse the policy at apply instead.
        if self.min_signers > len(self.signers):
            raise ValueError(
                f"minSigners is {self.min_signers} but only {len(self.signers)} signer(s) are "
                "listed in signers"
            )
        # A role nobody (or too few) holds would hold every rollout forever: refuse it at apply.
        for role, needed in sorted(self.min_approvals_per_role.items()):
            holders = sum(role in approver.roles for approver in self.approvers)
            if holders < needed:
                raise ValueError(
                    f"minApprovalsPerRole[{role}] is {needed} but {holders} approver(s) hold "
                    f"role {role!r}"
                )
        return self


class TrustPolicy(conventions.Wire):
    """Trusted model signers and approvers, allowed sources, hashes and formats (cluster-wide)."""

    model_config = pydantic.ConfigDict(extra="ignore")

    api_version: str = conventions.API_VERSION
    """APIVersion defines the versioned schema of this representation of an object."""

    kind: str = KIND
    """Kind is a string value representing the REST resource this object represents."""

    metadata: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    """Standard object metadata."""

    spec: TrustPolicySpec
    """Who may sign and approve models, and what a model may be."""


def parse(body: typing.Mapping[str, typing.Any]) -> TrustPolicy:
    """A TrustPolicy from a raw object body; errors.InvalidObjectError, one message per problem."""
    try:
        return TrustPolicy.model_validate(body, by_alias=True, by_name=False)
    except pydantic.ValidationError as error:
        raise errors.InvalidObjectError(errors.messages(error, model=TrustPolicy)) from error
