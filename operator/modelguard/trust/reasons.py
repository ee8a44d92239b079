"""The machine-readable reasons a model is refused, and the one error type that carries them.

A reason is what a status condition, an Event, an audit record and the CLI's exit line all say;
the message beside it names the field or file, so whoever reads it can act without the logs.
"""

from __future__ import annotations

import dataclasses
import enum

from modelguard.api import text


class Reason(enum.StrEnum):
    """Why a model, a signature bundle or a policy was refused (a condition reason: CamelCase)."""

    MALFORMED_BUNDLE = "MalformedBundle"
    """The signature file is not a sigstore bundle (or JSONL of bundles) we can read."""
    WRONG_PAYLOAD_TYPE = "WrongPayloadType"
    """The DSSE payload is not an in-toto statement of the model_signing predicate."""
    MALFORMED_STATEMENT = "MalformedStatement"
    """The in-toto statement is not a model_signing v1.0 statement we can read."""
    ROOT_DIGEST_MISMATCH = "RootDigestMismatch"
    """The statement's subject digest does not match its own resources."""
    UNSUPPORTED_HASH = "UnsupportedHash"
    """A hash algorithm or serialization method this verifier does not implement."""
    HASH_NOT_ALLOWED = "HashNotAllowed"
    """A hash algorithm the policy does not allow."""
    BAD_SIGNATURE = "BadSignature"
    """The signature does not verify with the key the bundle names."""
    UNTRUSTED_SIGNER = "UntrustedSigner"
    """No key or certificate root of the policy verifies the signature (for a certificate: no
    valid path from it to a root of the policy)."""
    CERTIFICATE_EXPIRED = "CertificateExpired"
    """A certificate of the chain had expired at the time checked (verification time)."""
    CERTIFICATE_NOT_YET_VALID = "CertificateNotYetValid"
    """A certificate of the chain was not yet valid at the time checked (verification time)."""
    CERTIFICATE_NOT_FOR_SIGNING = "CertificateNotForSigning"
    """The signing certificate lacks extended key usage codeSigning (or, having keyUsage, lacks
    digitalSignature)."""
    CERTIFICATE_PATH_LENGTH_EXCEEDED = "CertificatePathLengthExceeded"
    """More CAs below a CA than its basicConstraints pathLenConstraint allows."""
    CERTIFICATE_NAME_CONSTRAINT_VIOLATED = "CertificateNameConstraintViolated"
    """A name of a certificate outside a CA's nameConstraints (or of a kind they cannot judge)."""
    CERTIFICATE_UNKNOWN_CRITICAL_EXTENSION = "CertificateUnknownCriticalExtension"
    """A certificate of the chain has a critical extension the verifier does not implement."""
    CERTIFICATE_IDENTITY_MISMATCH = "CertificateIdentityMismatch"
    """The signing certificate chains to the signer's root but is not the identity it pins."""
    KEYLESS_UNAVAILABLE = "KeylessUnavailable"
    """Keyless (sigstore public-good) verification needs online infrastructure."""
    TOO_FEW_SIGNERS = "TooFewSigners"
    """Fewer distinct trusted signers than the policy's minSigners."""
    BROAD_ACCESS_REFUSED = "BroadAccessRefused"
    """spec.access asks for more than the policy's spec.network allows."""
    PAYLOAD_AUDIT_NOT_ALLOWED = "PayloadAuditNotAllowed"
    """spec.audit.inputs is Payload, which the policy's spec.audit.allowPayload does not allow."""
    # Also condition reasons of the reconcile's own, in api/v1alpha1.py (a test keeps them the
    # same): spelled out here, since `modelguard verify` must start without loading the API
    # models.
    OPENED_BY_NETWORK_POLICY = "OpenedByNetworkPolicy"
    """A NetworkPolicy someone else made opens the model's pods beyond the policy's spec.network."""
    POLICY_NOT_BOUND = "PolicyNotBound"
    """The TrustPolicy a model names does not bind the model's namespace."""
    UNSAFE_PATH = "UnsafePath"
    """An absolute name, `..`, a backslash or NUL, or a symlink in the model folder."""
    MISSING_FILE = "MissingFile"
    """A signed file (or shard) is not in the model."""
    UNEXPECTED_FILE = "UnexpectedFile"
    """The model has a file the signature does not list."""
    DIGEST_MISMATCH = "DigestMismatch"
    """A file's content differs from the signed digest."""
    MODEL_TOO_LARGE = "ModelTooLarge"
    """The model's files exceed the byte bound (spec.model.maxBytes, or the signed sizes)."""
    UNSAFE_FORMAT = "UnsafeFormat"
    """A pickle-based file (code runs when it is loaded) the policy does not allow."""
    SIGNATURE_CHANGED = "SignatureChanged"
    """The signature file at its URI is not the one verified and pinned (its SHA-256 differs)."""
    ROOT_DIGEST_PIN_MISMATCH = "RootDigestPinMismatch"
    """The signature signs other files than the root digest spec.model.rootDigest pins."""
    DIGEST_CHANGED = "DigestChanged"
    """The signature signs other files than the ones first verified for this model version."""
    SUBJECT_NAME_MISMATCH = "SubjectNameMismatch"
    """The signed subject name is not spec.model.name, and the policy requires it to be."""
    SOURCE_NOT_ALLOWED = "SourceNotAllowed"
    """The model's source URI matches none of the policy's sources (or, for a claim, none in
    the model's namespace)."""
    ENDPOINT_NOT_ALLOWED = "SourceEndpointNotAllowed"
    """The credentials name an S3 endpoint that the policy's matching source does not."""
    INVALID_KEY = "InvalidKey"
    """A PEM public key or certificate that does not parse."""
    INVALID_POLICY = "InvalidPolicy"
    """A TrustPolicy that does not parse or validate."""
    UNREADABLE = "Unreadable"
    """A file that cannot be read (missing, permissions, I/O error)."""
    APPROVAL_MISSING = "ApprovalMissing"
    """No ModelApproval names this model version."""
    APPROVAL_EXPIRED = "ApprovalExpired"
    """The approval's signed expiresAt has passed."""
    APPROVAL_DIGEST_MISMATCH = "ApprovalDigestMismatch"
    """The approval is for other bytes: its signed root digest is not the verified one."""
    APPROVAL_BAD_SIGNATURE = "ApprovalBadSignature"
    """The approval's signature does not verify with the approver's key: it was altered."""
    APPROVAL_UNKNOWN_APPROVER = "ApprovalUnknownApprover"
    """The approval is signed by no approver of the policy (or not by the one it names)."""
    APPROVAL_WRONG_NAMESPACE = "ApprovalWrongNamespace"
    """The approval was signed for a model in another namespace."""
    APPROVAL_FIELDS_MISMATCH = "ApprovalFieldsMismatch"
    """The approval's plain spec fields differ from the signed ones."""
    APPROVAL_MALFORMED = "ApprovalMalformed"
    """The approval's signed payload is not an approval statement we can read."""
    TOO_FEW_APPROVALS = "TooFewApprovals"
    """Fewer distinct valid approvers than the policy's minApprovals (or a role's minimum)."""
    INVALID_APPROVAL = "InvalidApproval"
    """A ModelApproval (or the arguments to make one) that does not parse or validate."""


@dataclasses.dataclass(frozen=True)
class Violation:
    """One failed check: a machine-readable reason and a message naming the field or file."""

    reason: Reason
    message: str

    def __post_init__(self) -> None:
        # A refusal quotes what a bundle, a certificate or a store says: escaped once, here, for
        # every condition, Event, audit record and log line that carries it.
        object.__setattr__(self, "message", text.escape(self.message))

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class VerificationError(Exception):
    """A refusal: every failure of the trust layer is one of these, never a bare exception."""

    def __init__(self, reason: Reason, message: str) -> None:
        message = text.escape(message)
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    @classmethod
    def of(cls, violation: Violation) -> VerificationError:
        return cls(violation.reason, violation.message)

    @property
    def violation(self) -> Violation:
        return Violation(self.reason, self.message)
