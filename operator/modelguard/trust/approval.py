"""Signed ModelApprovals: signing one, and deciding whether a model version is approved.

An approval is a DSSE envelope of an in-toto Statement v1 (subject: the model and its root
digest; predicateType PREDICATE_TYPE; predicate: version, approver, reason, expiresAt,
namespace), signed with ECDSA as model_signing signs (PAE, the hash matching the curve, keyid =
hex SHA-256 of the PEM public key). Each rule below is a small pure function returning None or a
Violation; `check_approval` chains them for one approval, the signature first (until it verifies,
the content is anyone's), and `evaluate_approvals` counts the distinct keys of valid approvers
against the policy's minApprovals and minApprovalsPerRole.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re
import typing

from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.api import modelapproval, times, trustpolicy, v1alpha1
from modelguard.trust import bundle, reasons, signatures, statement

PREDICATE_TYPE: typing.Final = "https://modelguard.dev/approval/v1"
PAYLOAD_TYPE: typing.Final = bundle.IN_TOTO_PAYLOAD_TYPE
_HEX_DIGEST: typing.Final = re.compile(r"^[a-f0-9]{64}$")
_PREDICATE_FIELDS: typing.Final = ("version", "approver", "reason", "expiresAt", "namespace")

Reason = reasons.Reason
Violation = reasons.Violation


@dataclasses.dataclass(frozen=True)
class Claim:
    """What an approval says: the signed statement's content, in the spec's terms."""

    model: str
    version: str
    root_digest: str
    """sha256:<64 hex>, as in ModelApproval spec.rootDigest."""
    approver: str
    reason: str
    expires_at: str
    """RFC 3339, as written."""
    namespace: str

    def expires(self) -> datetime.datetime:
        return times.parse(self.expires_at)

    def statement(self) -> dict[str, typing.Any]:
        """The in-toto Statement v1 that is signed."""
        return {
            "_type": statement.STATEMENT_TYPE,
            "subject": [
                {"name": self.model, "digest": {"sha256": self.root_digest.removeprefix("sha256:")}}
            ],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "version": self.version,
                "approver": self.approver,
                "reason": self.reason,
                "expiresAt": self.expires_at,
                "namespace": self.namespace,
            },
        }


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An approval that did not count, and why."""

    name: str
    """metadata.name of the ModelApproval."""
    violation: Violation


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether a model version is approved: what the Approved condition and status.approval say."""

    approved: bool
    approvers: tuple[str, ...]
    """Distinct approvers whose valid approvals count, sorted."""
    expires_at: datetime.datetime | None
    """When the earliest of the counted approvers' approvals expires: re-evaluate by then."""
    violation: Violation | None
    """Why the version is not approved; None when it is."""
    rejected: tuple[Rejected, ...]
    """Approvals of this model version that did not count, each with its reason."""


# --- signing -------------------------------------------------------------------------------------


def sign(claim: Claim, *, private_key: ec.EllipticCurvePrivateKey) -> modelapproval.Envelope:
    """The DSSE envelope of `claim`'s statement, signed with `private_key`; InvalidKey otherwise."""
    algorithm = signatures.CURVE_HASHES.get(private_key.curve.name)
    if algorithm is None:
        raise reasons.VerificationError(
            Reason.INVALID_KEY,
            f"the private key uses curve {private_key.curve.name}; supported: "
            f"{', '.join(signatures.CURVE_HASHES)}",
        )
    payload = json.dumps(claim.statement(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    signature = private_key.sign(signatures.pae(PAYLOAD_TYPE, payload), ec.ECDSA(algorithm()))
    return modelapproval.Envelope(
        payload_type=PAYLOAD_TYPE,
        payload=base64.b64encode(payload).decode("ascii"),
        signatures=[
            modelapproval.Signature(
                keyid=signatures.key_hint(private_key.public_key()),
                sig=base64.b64encode(signature).decode("ascii"),
            )
        ],
    )


def build(
    claim: Claim, *, private_key: ec.EllipticCurvePrivateKey, name: str
) -> modelapproval.ModelApproval:
    """The signed ModelApproval object for `claim`; errors.InvalidObjectError for bad fields."""
    envelope = sign(claim, private_key=private_key)
    body = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": modelapproval.KIND,
        "metadata": {"name": name, "namespace": claim.namespace},
        "spec": {
            "model": claim.model,
            "version": claim.version,
            "rootDigest": claim.root_digest,
            "approver": claim.approver,
            "reason": claim.reason,
            "expiresAt": claim.expires_at,
            "signature": envelope.model_dump(mode="json"),
        },
    }
    return modelapproval.parse(body)


# --- reading -------------------------------------------------------------------------------------


def trusted_approvers(spec: trustpolicy.TrustPolicySpec) -> dict[str, signatures.KeySigner]:
    """The policy's approvers by name, as verification keys; InvalidKey naming the field."""
    return {
        approver.name: signatures.KeySigner(
            approver.name,
            signatures.load_public_key(
                approver.public_key.encode("utf-8"), field=f"spec.approvers[{index}].publicKey"
            ),
        )
        for index, approver in enumerate(spec.approvers)
    }


def read_claim(envelope: modelapproval.Envelope) -> Claim:
    """The claim in a (verified) envelope's payload; ApprovalMalformed naming the field."""
    try:
        document = json.loads(base64.b64decode(envelope.payload, validate=True))
    except (ValueError, RecursionError) as error:
        raise _malformed(f"signature.payload is not a base64 JSON statement: {error}") from None
    root = _object(document, "statement")
    if root.get("_type") != statement.STATEMENT_TYPE:
        raise _malformed(
            f"statement _type is {root.get('_type')!r}, not {statement.STATEMENT_TYPE!r}"
        )
    if root.get("predicateType") != PREDICATE_TYPE:
        raise _malformed(
            f"statement predicateType is {root.get('predicateType')!r}, not {PREDICATE_TYPE!r}"
        )
    subjects = root.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise _malformed("statement subject must list exactly one model")
    subject = _object(subjects[0], "subject[0]")
    digest = _object(subject.get("digest"), "subject[0].digest").get("sha256")
    if not isinstance(digest, str) or not _HEX_DIGEST.match(digest):
        raise _malformed("subject[0].digest.sha256 is not 64 lowercase hex digits")
    predicate = _object(root.get("predicate"), "predicate")
    values = {key: _string(predicate.get(key), f"predicate.{key}") for key in _PREDICATE_FIELDS}
    claim = Claim(
        model=_string(subject.get("name"), "subject[0].name"),
        version=values["version"],
        root_digest=f"sha256:{digest}",
        approver=values["approver"],
        reason=values["reason"],
        expires_at=values["expiresAt"],
        namespace=values["namespace"],
    )
    try:
        claim.expires()
    except ValueError as error:
        raise _malformed(f"predicate.expiresAt {claim.expires_at!r} {error}") from None
    return claim


# --- rules ---------------------------------------------------------------------------------------


def check_signature(
    envelope: modelapproval.Envelope,
    *,
    approver: str,
    approvers: typing.Mapping[str, signatures.KeySigner],
) -> Violation | None:
    """None when a signature of `envelope` verifies with the key of the approver it names."""
    signer = approvers.get(approver)
    if signer is None:
        return Violation(
            Reason.APPROVAL_UNKNOWN_APPROVER,
            f"approver {approver!r} is not an approver of the policy "
            f"({', '.join(sorted(approvers)) or 'none configured'})",
        )
    if envelope.payload_type != PAYLOAD_TYPE:
        return Violation(
            Reason.APPROVAL_MALFORMED,
            f"signature.payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}",
        )
    failures: list[reasons.VerificationError] = []
    for index, item in enumerate(envelope.signatures):
        signed = bundle.Bundle(
            label=f"signature.signatures[{index}]",
            payload_type=envelope.payload_type,
            payload=base64.b64decode(envelope.payload),
            signature=base64.b64decode(item.sig),
            key_hint=item.keyid or None,
            certificates=(),
            keyless=False,
        )
        try:
            signatures.verify(signed, [signer])
        except reasons.VerificationError as error:
            failures.append(error)
            continue
        return None
    if any(failure.reason is Reason.BAD_SIGNATURE for failure in failures):
        return Violation(
            Reason.APPROVAL_BAD_SIGNATURE,
            f"the signature does not verify with the key of approver {approver!r}: the approval "
            "was altered after it was signed",
        )
    return Violation(
        Reason.APPROVAL_UNKNOWN_APPROVER,
        f"no signature is made with the key of approver {approver!r} (keyid "
        f"{signatures.key_hint(signer.key)}); it is signed by a key the policy does not give "
        "that approver",
    )


def check_fields(spec: modelapproval.ModelApprovalSpec, claim: Claim) -> Violation | None:
    """None when the plain spec fields say what the signed statement says."""
    plain = {
        "model": spec.model,
        "version": spec.version,
        "rootDigest": spec.root_digest,
        "approver": spec.approver,
        "reason": spec.reason,
    }
    signed = {
        "model": claim.model,
        "version": claim.version,
        "rootDigest": claim.root_digest,
        "approver": claim.approver,
        "reason": claim.reason,
    }
    differing = [key for key in plain if plain[key] != signed[key]]
    # The same instant may be written Z or +00:00: what counts is when it is.
    if spec.expires() != claim.expires():
        differing.append("expiresAt")
        plain["expiresAt"], signed["expiresAt"] = spec.expires_at, claim.expires_at
    if not differing:
        return None
    first = differing[0]
    return Violation(
        Reason.APPROVAL_FIELDS_MISMATCH,
        f"spec.{first} {plain[first]!r} differs from the signed {signed[first]!r}"
        + (f" (and {', '.join(differing[1:])})" if len(differing) > 1 else "")
        + "; the signed values count, edit nothing by hand",
    )


def check_digest(claim: Claim, *, root_digest: str | None) -> Violation | None:
    """None when the approval is for the verified bytes."""
    # None: at admission, before the version is verified, its digest is not known yet; the
    # rollout gate checks it once it is.
    if root_digest is None or claim.root_digest == root_digest:
        return None
    return Violation(
        Reason.APPROVAL_DIGEST_MISMATCH,
        f"approves root digest {claim.root_digest}, but version {claim.version} verified as "
        f"{root_digest}: the approval is for other bytes",
    )


def check_namespace(
    claim: Claim, *, namespace: str, object_namespace: str | None
) -> Violation | None:
    """None when the approval was signed for this namespace (and lives in it)."""
    for where, value in (("the model's namespace", namespace), ("its own", object_namespace)):
        if value is not None and claim.namespace != value:
            return Violation(
                Reason.APPROVAL_WRONG_NAMESPACE,
                f"is signed for namespace {claim.namespace!r}, not {where} {value!r}",
            )
    return None


def check_expiry(claim: Claim, *, now: datetime.datetime) -> Violation | None:
    """None while the approval has not expired."""
    if now < claim.expires():
        return None
    return Violation(
        Reason.APPROVAL_EXPIRED,
        f"approval by {claim.approver!r} expired at {claim.expires_at}",
    )


def check_approval(
    approval: modelapproval.ModelApproval,
    *,
    approvers: typing.Mapping[str, signatures.KeySigner],
    namespace: str,
    root_digest: str | None,
    now: datetime.datetime,
) -> Claim | Violation:
    """The verified claim of one approval, or the first rule it breaks."""
    spec = approval.spec
    violation = check_signature(spec.signature, approver=spec.approver, approvers=approvers)
    if violation is not None:
        return violation
    try:
        claim = read_claim(spec.signature)
    except reasons.VerificationError as error:
        return error.violation
    checks: list[typing.Callable[[], Violation | None]] = [
        lambda: check_fields(spec, claim),
        lambda: check_namespace(claim, namespace=namespace, object_namespace=approval.namespace),
        lambda: check_digest(claim, root_digest=root_digest),
        lambda: check_expiry(claim, now=now),
    ]
    for check in checks:
        violation = check()
        if violation is not None:
            return violation
    return claim


def check_min_approvals(
    approved: typing.Mapping[str, str], *, min_approvals: int
) -> Violation | None:
    """None when enough distinct keys approved; `approved` maps approver names to their key's
    fingerprint. Keys count, not names: one key listed under two names is one person."""
    keys = set(approved.values())
    if len(keys) >= min_approvals:
        return None
    return Violation(
        Reason.TOO_FEW_APPROVALS,
        f"spec.minApprovals is {min_approvals} but {len(keys)} distinct approver key(s) approved "
        f"({', '.join(sorted(approved)) or 'none'})",
    )


def check_role_minimums(
    approved: typing.Mapping[str, str],
    *,
    roles: typing.Mapping[str, typing.Collection[str]],
    minimums: typing.Mapping[str, int],
) -> Violation | None:
    """None when every role has enough distinct keys holding it; `approved` maps approver names
    to their key's fingerprint, `roles` is by approver name."""
    for role, needed in sorted(minimums.items()):
        holders = sorted(name for name in approved if role in roles.get(name, ()))
        keys = {approved[name] for name in holders}
        if len(keys) < needed:
            return Violation(
                Reason.TOO_FEW_APPROVALS,
                f"spec.minApprovalsPerRole[{role}] is {needed} but {len(keys)} distinct key(s) "
                f"with role {role!r} approved ({', '.join(holders) or 'none'})",
            )
    return None


# --- the decision --------------------------------------------------------------------------------


def evaluate_approvals(
    approvals: typing.Iterable[modelapproval.ModelApproval],
    *,
    policy: trustpolicy.TrustPolicySpec,
    namespace: str,
    model: str,
    version: str,
    root_digest: str | None,
    now: datetime.datetime,
) -> Decision:
    """Whether `model` `version`, verified as `root_digest` (sha256:<hex>), may run in `namespace`.

    `approvals` may be every ModelApproval of the namespace: those naming another model or
    version are not considered. Distinct keys count: the same approver twice counts once, and so
    does one key that the policy lists under two approver names.
    `now` must be timezone-aware. InvalidKey if the policy's approver keys do not load.
    """
    keys = trusted_approvers(policy)
    relevant = sorted(
        (a for a in approvals if a.spec.model == model and a.spec.version == version),
        key=lambda a: a.name,
    )
    valid: dict[str, datetime.datetime] = {}
    fingerprints = {name: signatures.key_hint(signer.key) for name, signer in keys.items()}
    rejected: list[Rejected] = []
    for approval in relevant:
        outcome = check_approval(
            approval, approvers=keys, namespace=namespace, root_digest=root_digest, now=now
        )
        if isinstance(outcome, Violation):
            rejected.append(Rejected(approval.name, outcome))
            continue
        # An approver's approval lasts as long as the longest of theirs.
        valid[outcome.approver] = max(outcome.expires(), valid.get(outcome.approver, now))
    roles = {approver.name: approver.roles for approver in policy.approvers}
    counted = {name: fingerprints[name] for name in valid}
    violation = check_min_approvals(counted, min_approvals=policy.min_approvals) or (
        check_role_minimums(counted, roles=roles, minimums=policy.min_approvals_per_role)
    )
    if violation is not None:
        violation = _explain(
            violation,
            counted=len(valid),
            relevant=relevant,
            rejected=rejected,
            model=model,
            version=version,
        )
    return Decision(
        approved=violation is None,
        approvers=tuple(sorted(valid)),
        expires_at=min(valid.values(), default=None),
        violation=violation,
        rejected=tuple(rejected),
    )


def _explain(
    violation: Violation,
    *,
    counted: int,
    relevant: typing.Sequence[modelapproval.ModelApproval],
    rejected: typing.Sequence[Rejected],
    model: str,
    version: str,
) -> Violation:
    """The violation that says best why: missing, the one bad approval, or too few and why."""
    if not relevant:
        return Violation(
            Reason.APPROVAL_MISSING,
            f"no ModelApproval approves model {model!r} version {version!r}; {violation.message}",
        )
    if not rejected:
        return violation
    first = rejected[0]
    more = f" (and {len(rejected) - 1} more did not count)" if len(rejected) > 1 else ""
    detail = f"ModelApproval {first.name!r}: {first.violation.message}{more}"
    if not counted:
        # Nothing counted at all: the rejected approval's own reason is the story.
        return Violation(first.violation.reason, f"{detail}; {violation.message}")
    return Violation(violation.reason, f"{violation.message}; {first.violation.reason}: {detail}")


def _object(value: typing.Any, field: str) -> dict[str, typing.Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{field} is missing or not a JSON object")
    return value


def _string(value: typing.Any, field: str) -> str:
    if not isinstance(value, str):
        raise _malformed(f"{field} is missing or not a string")
    return value


def _malformed(message: str) -> reasons.VerificationError:
    return reasons.VerificationError(Reason.APPROVAL_MALFORMED, message)
