"""The modelguard.dev/v1alpha1 TrustPolicy API (cluster-scoped): who may sign models, and what a
model may be.

A ModelDeployment names the TrustPolicy it answers to (the one named `default` otherwise), among
those the security owner bound to its namespace with spec.namespaceSelector. Like
v1alpha1, these models are the single source of the CRD schema: docstrings become `kubectl
explain` text and the validators here make the operator refuse exactly what the webhook refuses.
"""

import enum
import typing
import urllib.parse

import pydantic
from cryptography import exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import conventions, endpoints, errors, uripaths, v1alpha1

KIND: typing.Final = "TrustPolicy"
PLURAL: typing.Final = "trustpolicies"
SINGULAR: typing.Final = "trustpolicy"
SHORT_NAMES: typing.Final = ("tp",)
DEFAULT_NAME: typing.Final = conventions.DEFAULT_TRUST_POLICY

MAX_SIGNERS: typing.Final = 64
MAX_ENTRIES: typing.Final = 256
MAX_ROLES: typing.Final = 16
SOURCE_PREFIX_PATTERN: typing.Final = (
    rf"^(s3|https|pvc)://{uripaths.HOST_PATTERN}{uripaths.SEGMENTS_PATTERN}$"
)
ENDPOINT_PATTERN: typing.Final = r"^(https?)://[^\s/?#@]+/?$"
_EC_CURVES: typing.Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_ONE_METHOD = "a signer needs exactly one of publicKey, certificateRoot and keyless"
_IDENTITY_ONLY_FOR_ROOTS = "identity applies only to a certificateRoot signer"
_IDENTITY_NEEDED = (
    "identity is required with a certificateRoot that holds a CA certificate: pin the signing "
    "certificate's subject and/or san, or set identity.any: true to trust every certificate "
    "the CA issues"
)
_ONE_IDENTITY = "needs subject and/or san, or any: true (not both)"
MAX_NAME_LENGTH: typing.Final = 1024

SourcePrefix = typing.Annotated[
    str,
    pydantic.Field(pattern=SOURCE_PREFIX_PATTERN, max_length=2048),
    errors.Hint(
        "must be an s3://bucket[/prefix], https://host[/path] or pvc://claim[/path] prefix with "
        + uripaths.ACCEPTED
    ),
]


S3Endpoint = typing.Annotated[
    str,
    pydantic.Field(pattern=ENDPOINT_PATTERN, max_length=512),
    pydantic.AfterValidator(endpoints.normal),
    errors.Hint("must be an http(s)://host[:port] URL, e.g. https://minio.storage.svc:9000"),
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
    # InvalidVersion (a version field other than v1 or v3) is no ValueError.
    except (ValueError, x509.InvalidVersion) as error:
        raise ValueError(
            f"must be PEM certificates (-----BEGIN CERTIFICATE-----): {error}"
        ) from None
    if not certificates:
        raise ValueError("must hold at least one PEM certificate")
    for index, certificate in enumerate(certificates, 1):
        # Names are parsed on first access too: one that does not parse would fail every
        # chain checked against this root.
        for name in ("subject", "issuer"):
            try:
                getattr(certificate, name).rfc4514_string()
            except ValueError as error:
                raise ValueError(
                    f"must be PEM certificates whose names parse: the {name} of certificate "
                    f"{index}: {error}"
                ) from None
        try:
            certificate.extensions  # noqa: B018 - parsed on first access
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
            raise ValueError(
                f"must be PEM certificates whose extensions parse: "
                f"{certificate.subject.rfc4514_string()!r}: {error}"
            ) from None
    return pem


def _distinguished_name(text: str) -> str:
    from cryptography import x509  # noqa: PLC0415 - see _certificates

    try:
        x509.Name.from_rfc4514_string(text)
    except ValueError as error:
        raise ValueError(
            f"must be a distinguished name in RFC 4514 form, e.g. CN=release,O=Example: {error}"
        ) from None
    return text


def _holds_a_ca(pem: str) -> bool:
    from cryptography import x509  # noqa: PLC0415 - see _certificates

    for certificate in x509.load_pem_x509_certificates(pem.encode("utf-8")):
        # Extensions parse: _certificates ran first.
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            continue
        if constraints.value.ca:
            return True
    return False


PublicKeyPEM = typing.Annotated[str, pydantic.AfterValidator(_ec_public_key)]
CertificatesPEM = typing.Annotated[str, pydantic.AfterValidator(_certificates)]
DistinguishedName = typing.Annotated[
    str,
    pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH),
    pydantic.AfterValidator(_distinguished_name),
]
SubjectAltName = typing.Annotated[
    str,
    pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^\S+$"),
    errors.Hint("must be one email address, URI or DNS name, without spaces"),
]


class KeylessIdentity(conventions.Spec):
    """A sigstore keyless signer: an OIDC identity certified by Fulcio, logged in Rekor.

    Verifying it needs the public-good sigstore infrastructure online; ModelGuard verifies
    offline, so a bundle signed this way is refused with KeylessUnavailable for now.
    """

    issuer: str = pydantic.Field(min_length=1)
    """OIDC issuer that authenticated the signer, e.g. https://accounts.google.com. Required."""

    identity: str = pydantic.Field(min_length=1)
    """Identity (email or workload URI) in the signing certificate. Required."""


class CertificateIdentity(conventions.Spec):
    """Which certificates under a certificateRoot may sign: the signing certificate must carry
    every name given here (subject and san both, when both are given), compared exactly. Or
    any: true, every code-signing certificate the root's CAs issue."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.subject) || has(self.san)) != (has(self.any) && self.any)",
                    "message": _ONE_IDENTITY,
                }
            ]
        }
    )

    subject: DistinguishedName | None = None
    """Exact subject distinguished name of the signing certificate, in RFC 4514 form, most
    specific attribute first, as `openssl x509 -noout -subject -nameopt RFC2253` prints it, e.g.
    CN=release,O=Example. Attributes, their order and values must all match."""

    san: SubjectAltName | None = None
    """A subject alternative name the signing certificate must carry, exactly (case included): a
    URI if it has "://" (e.g. spiffe://example.com/ml/release), else an email address if it has
    "@", else a DNS name. Matched against that kind of SAN only."""

    any: bool = False
    """Trust every code-signing certificate the root's CAs issue, whoever it names. Only for a
    CA that issues model-signing certificates alone. Default: false."""

    @pydantic.model_validator(mode="after")
    def _names_or_any(self) -> typing.Self:
        if (self.subject is not None or self.san is not None) == self.any:
            raise ValueError(_ONE_IDENTITY)
        return self


class Signer(conventions.Spec):
    """A trusted model signer: exactly one of publicKey, certificateRoot or keyless."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.publicKey), has(self.certificateRoot), "
                    "has(self.keyless)].filter(x, x).size() == 1",
                    "message": _ONE_METHOD,
                },
                {
                    "rule": "!has(self.identity) || has(self.certificateRoot)",
                    "message": _IDENTITY_ONLY_FOR_ROOTS,
                },
            ]
        }
    )

    name: conventions.DNSLabel
    """Name of the signer, reported in status.verification and audit records. Required."""

    public_key: PublicKeyPEM | None = None
    """PEM elliptic-curve public key (P-256, P-384 or P-521) of model_signing's key method."""

    certificate_root: CertificatesPEM | None = None
    """PEM certificate(s) of a root CA, or a self-signed signing certificate itself: a signature
    made with model_signing's certificate method verifies when its certificate has a valid
    RFC 5280 path to one of them, valid now, with extended key usage codeSigning. A root holding
    a CA needs identity too."""

    identity: CertificateIdentity | None = None
    """Which signing certificates under certificateRoot count as this signer: their subject
    and/or SAN, or any. Required when certificateRoot holds a CA certificate (a CA may certify
    many people); not needed for a self-signed signing certificate, which certifies only
    itself."""

    keyless: KeylessIdentity | None = None
    """Sigstore keyless identity. Needs the public-good sigstore infrastructure: not available
    offline, where such signatures are refused (KeylessUnavailable)."""

    @pydantic.model_validator(mode="after")
    def _one_method(self) -> typing.Self:
        given = [self.public_key, self.certificate_root, self.keyless]
        if sum(item is not None for item in given) != 1:
            raise ValueError(_ONE_METHOD)
        if self.identity is not None and self.certificate_root is None:
            raise ValueError(_IDENTITY_ONLY_FOR_ROOTS)
        # A CA certifies whoever it likes: which of them sign for this signer must be said.
        if (
            self.certificate_root is not None
            and self.identity is None
            and _holds_a_ca(self.certificate_root)
        ):
            raise ValueError(_IDENTITY_NEEDED)
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


class CodeFormat(enum.StrEnum):
    """A family of model formats whose usual loader can run code chosen by whoever wrote the
    file."""

    PICKLE = "Pickle"
    KERAS = "Keras"
    HDF5 = "HDF5"


class Formats(conventions.Spec):
    """Which file formats a model may contain, judged by content, not by extension or first
    bytes: every member of an archive, recursively. Default: none whose loader can run code."""

    allow: list[CodeFormat] = pydantic.Field(
        default=[], max_length=len(CodeFormat), json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Code-capable formats a model may contain anyway: loading them runs code chosen by whoever
    wrote the file. Pickle: pickle streams of any protocol, compressed pickles (joblib), PyTorch
    zip and legacy tar checkpoints (.pt, .pth, .bin), NumPy arrays that hold Python objects, and
    lz4 or zstd files, which cannot be inspected. Keras: .keras archives whose config names a
    Lambda layer or code outside Keras. HDF5: every HDF5 file (.h5; a Keras .h5 model can hold
    marshalled bytecode). A file too large or too deeply nested to inspect fully needs all
    three. Default: [] (none)."""

    allow_pickle: bool = False
    """Deprecated: the same as listing Pickle in allow. Default: false."""

    def allowed(self) -> tuple[str, ...]:
        """The families allowed, allowPickle included, sorted."""
        names = {str(item) for item in self.allow}
        if self.allow_pickle:
            names.add(CodeFormat.PICKLE)
        return tuple(sorted(names))


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


class OnRepublish(enum.StrEnum):
    """What a new root digest for a model version already verified with another one does."""

    REFUSE = "Refuse"
    REAPPROVE = "Reapprove"


_ENDPOINT_ONLY_S3 = "endpoint is only for s3:// sources (an https:// uri names its own host)"
_NAMESPACE_ONLY_PVC = "namespace and anyNamespace are only for pvc:// sources"
_PRIVATE_NOT_FOR_PVC = "allowPrivateAddresses is only for s3:// and https:// sources"
_PVC_NEEDS_NAMESPACE = (
    "a pvc:// source needs exactly one of namespace (the claim's namespace) and anyNamespace: true"
)


class Source(conventions.Spec):
    """A place models may come from, bound to the endpoint that serves it: the operator and the
    verifying init container read only from there and follow no redirect."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.endpoint) || self.uri.startsWith('s3://')",
                    "message": _ENDPOINT_ONLY_S3,
                },
                {
                    "rule": "self.uri.startsWith('pvc://') || "
                    "(!has(self.namespace) && !(has(self.anyNamespace) && self.anyNamespace))",
                    "message": _NAMESPACE_ONLY_PVC,
                },
                {
                    "rule": "!self.uri.startsWith('pvc://') || "
                    "(has(self.namespace) != (has(self.anyNamespace) && self.anyNamespace))",
                    "message": _PVC_NEEDS_NAMESPACE,
                },
                {
                    "rule": "!self.uri.startsWith('pvc://') || "
                    "!(has(self.allowPrivateAddresses) && self.allowPrivateAddresses)",
                    "message": _PRIVATE_NOT_FOR_PVC,
                },
            ]
        }
    )

    uri: SourcePrefix
    """URI prefix models may come from: s3://bucket[/prefix], https://host[:port][/path] or
    pvc://claim[/path]. It matches whole path segments (s3://models/a admits s3://models/a/x,
    not s3://models/ab). An https:// prefix binds its scheme, host and port. Required."""

    endpoint: S3Endpoint | None = None
    """For s3:// only: the S3 server (scheme://host[:port]) the bucket is read from, e.g.
    http://minio.storage.svc:9000. A credentials Secret's AWS_ENDPOINT_URL must be absent or name
    this same endpoint. Default: AWS S3 itself (https://s3.<region>.amazonaws.com), and a Secret
    naming any other endpoint is refused."""

    namespace: conventions.DNSLabel | None = None
    """For pvc:// only: the namespace whose claim this is. A pod mounts claims of its own
    namespace, so only models in this namespace may use it. A pvc:// source needs this or
    anyNamespace."""

    any_namespace: bool = False
    """For pvc:// only: admit the claim of that name in whichever namespace the model runs in,
    filled by that namespace's owners. Default: false."""

    allow_private_addresses: bool = False
    """For s3:// and https:// only: let the server's host name (the endpoint's, for s3://)
    resolve to a private, non-global address: RFC 1918 (10/8, 172.16/12, 192.168/16), shared
    100.64/10, IPv6 unique-local fc00::/7 and other non-global ranges. That is where an
    in-cluster object store lives (http://minio.storage.svc:9000 resolves to a ClusterIP), but
    also the nodes, the kube-apiserver's Service and everything else inside the cluster's
    networks: the operator and the verifying init container would read from there, so keep
    spec.model.source.egress narrow. Loopback, link-local (169.254/16, fe80::/10) and cloud
    metadata addresses are never admitted by it: a source reaches one only by naming that IP
    literal in its uri or endpoint. Default: false (host names must resolve to public
    addresses only)."""

    @pydantic.model_validator(mode="after")
    def _fields_fit_the_scheme(self) -> typing.Self:
        scheme = self.uri.partition("://")[0]
        if scheme == "https":
            parts = urllib.parse.urlsplit(self.uri)
            if "@" in parts.netloc or parts.query or parts.fragment:
                raise ValueError("an https:// uri takes no user information, query or fragment")
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ValueError("the port of the https:// uri is not a number") from None
        if self.endpoint is not None and scheme != "s3":
            raise ValueError(_ENDPOINT_ONLY_S3)
        if scheme != "pvc" and (self.namespace is not None or self.any_namespace):
            raise ValueError(_NAMESPACE_ONLY_PVC)
        if scheme == "pvc" and (self.namespace is not None) == self.any_namespace:
            raise ValueError(_PVC_NEEDS_NAMESPACE)
        if scheme == "pvc" and self.allow_private_addresses:
            raise ValueError(_PRIVATE_NOT_FOR_PVC)
        return self


def _not_a_plain_prefix(value: object) -> object:
    # The v1alpha1 string form left the S3 endpoint and the claim's namespace to the tenant.
    if isinstance(value, str):
        raise ValueError(
            f"{value!r} is a plain prefix; a source is now an object naming what binds it, e.g. "
            '{uri: "s3://models/", endpoint: "https://minio.storage.svc:9000"} (no endpoint: AWS '
            'S3), {uri: "https://models.example/"} or {uri: "pvc://store/", namespace: team-a}'
        )
    return value


BoundSource = typing.Annotated[Source, pydantic.BeforeValidator(_not_a_plain_prefix)]


class InputAudit(conventions.Spec):
    """What the audit proxies of the models under this policy may record."""

    allow_payload: bool = False
    """Whether ModelDeployments under this policy may record request payloads
    (spec.audit.inputs: Payload); refused with PayloadAuditNotAllowed otherwise. Default:
    false (metadata only)."""

    redact: v1alpha1.Redaction = v1alpha1.Redaction()
    """Values every payload record under this policy has replaced; a model's own rules add to
    these and cannot remove any. Default: none beyond the credential headers."""

    caller_identity_header: v1alpha1.HeaderName | None = None
    """A request header that carries the caller's authenticated identity, set by something the
    platform runs in front of the models (a mesh sidecar, an authenticating gateway) that
    removes it from callers' own requests, e.g. x-forwarded-client-cert. Recorded as the
    caller's identity; unset: callers are recorded by address only, since a header anyone can
    send proves nothing. Default: unset."""


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
    """Distinct approvers whose approvals a model version needs, counted by key: one key listed
    under two names is one approver (and such a policy is refused). Default: 1."""

    min_approvals_per_role: dict[str, ApprovalCount] = pydantic.Field(default={})
    """Distinct approvers holding a role whose approvals a model version needs, by role, e.g.
    {security: 1, model-owner: 1}; on top of minApprovals. Each role needs that many approvers
    (distinct keys) holding it. Default: {} (no role needs any)."""

    sources: list[BoundSource] = pydantic.Field(default=[], max_length=MAX_ENTRIES)
    """Where models and their signatures may come from, each bound to its endpoint, e.g. {uri:
    s3://models/team-a/, endpoint: http://minio.storage.svc:9000, allowPrivateAddresses: true}
    (an in-cluster MinIO), {uri:
    https://models.example/} or {uri: pvc://model-store/, namespace: team-a}. Nothing else is
    read, in Enforce and Audit mode alike. A host name must resolve to public addresses only,
    unless its source says allowPrivateAddresses; loopback, link-local and cloud metadata
    addresses are refused unless a source names that IP address itself. Default: [] (no source is
    allowed until one is listed)."""

    hash_algorithms: list[HashAlgorithm] = pydantic.Field(
        default=[HashAlgorithm.SHA256], min_length=1
    )
    """Hash types a signature may use. Default: [sha256]."""

    formats: Formats = Formats()
    """Which file formats a model may contain. Default: none whose loader can run code."""

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

    on_republish: OnRepublish = OnRepublish.REFUSE
    """What happens when a model version's signature, read again, signs other files than the
    ones first verified for that version (someone with write access to the store put another
    signed model, or an older release, under the version's URI, or the version was re-published):
    Refuse: Verified=False with DigestChanged naming both digests; what serves keeps serving and
    the new files are never rolled out, unless the ModelDeployment pins the new digest in
    spec.model.rootDigest. Reapprove: the new files are accepted as a re-publication, reported
    (an Event and an audit record name both digests) and, like any version, need approvals for
    their own root digest. Either way the change is never silent. Default: Refuse."""

    require_subject_name: bool = False
    """Whether the signed statement's subject name must equal the ModelDeployment's
    spec.model.name (refused with SubjectNameMismatch otherwise). model_signing names the
    subject after the folder (or file) it signed, so this binds a signature to its model only
    when release pipelines sign a folder named after the model. Default: false, because OMS
    calls the name informational and older signers write "model" for every model.
    Subject names are signed; versions are not, so no rule binds spec.model.version."""

    audit: InputAudit = InputAudit()
    """What the audit proxies of the models under this policy may record, and how payloads are
    redacted. Default: metadata only, callers by address."""

    enforcement: Enforcement = Enforcement.ENFORCE
    """Enforce: a model that violates the policy is refused. Audit: violations of formats,
    hashAlgorithms and minSigners are recorded and reported but the model is admitted; a bad or
    untrusted signature, changed, missing or extra files, unsafe paths and a source outside
    spec.sources (nothing is read from there) are refused in both modes. Default: Enforce."""

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
