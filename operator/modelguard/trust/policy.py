"""The TrustPolicy's checks, as small pure functions over what verification established.

Each check returns None when it passes, or a Violation with a machine-readable reason and a
message naming the field or file; `evaluate` runs them in order, like cert-manager's policy
chains. Which violations Audit mode admits (recorded, reported, not fatal) is decided here too.
"""

from __future__ import annotations

import dataclasses
import typing

from modelguard.trust import formats, reasons, signatures, statement

if typing.TYPE_CHECKING:
    from modelguard.api import trustpolicy

# Authenticity and integrity are never waived: without them nobody knows what the bytes are.
# Audit mode admits only violations of what the policy *prefers*.
AUDITABLE: typing.Final = frozenset(
    {
        reasons.Reason.UNSAFE_FORMAT,
        reasons.Reason.SOURCE_NOT_ALLOWED,
        reasons.Reason.HASH_NOT_ALLOWED,
        reasons.Reason.TOO_FEW_SIGNERS,
    }
)

Check = typing.Callable[[], reasons.Violation | None]


@dataclasses.dataclass(frozen=True)
class Rules:
    """What verification enforces of a TrustPolicy: the signers' material loaded, the rest plain
    values. The defaults are a TrustPolicy's that names only its signers (a unit test holds them
    equal), so `modelguard verify --public-key` checks exactly what such a policy would without
    loading the API models: they are most of the command's start-up."""

    signers: tuple[signatures.TrustedSigner, ...]
    min_signers: int = 1
    hash_algorithms: frozenset[str] = frozenset({"sha256"})
    sources: tuple[str, ...] = ()
    allow_formats: frozenset[str] = frozenset()
    """Code-capable format families admitted (formats.Family values): spec.formats.allow."""
    audit: bool = False
    """Enforcement is Audit: admit (and report) the violations AUDITABLE lists."""


def rules_of(spec: trustpolicy.TrustPolicySpec) -> Rules:
    """The rules of a TrustPolicySpec; InvalidKey naming the field of a signer that won't load."""
    # Imported here: the module is loaded already when a spec exists, and the key path of
    # `modelguard verify` never loads it.
    from modelguard.api import trustpolicy  # noqa: PLC0415

    return Rules(
        signers=tuple(trusted_signers(spec)),
        min_signers=spec.min_signers,
        hash_algorithms=frozenset(str(algorithm) for algorithm in spec.hash_algorithms),
        sources=tuple(spec.sources),
        allow_formats=frozenset(spec.formats.allowed()),
        audit=spec.enforcement is trustpolicy.Enforcement.AUDIT,
    )


def trusted_signers(spec: trustpolicy.TrustPolicySpec) -> list[signatures.TrustedSigner]:
    """The policy's signers as verification material; InvalidKey naming the field otherwise."""
    result: list[signatures.TrustedSigner] = []
    for index, signer in enumerate(spec.signers):
        field = f"spec.signers[{index}]"
        if signer.public_key is not None:
            key = signatures.load_public_key(
                signer.public_key.encode("utf-8"), field=f"{field}.publicKey"
            )
            result.append(signatures.KeySigner(signer.name, key))
        elif signer.certificate_root is not None:
            from modelguard.trust import certificates  # noqa: PLC0415 - see its docstring

            roots = certificates.load(
                signer.certificate_root.encode("utf-8"), field=f"{field}.certificateRoot"
            )
            result.append(signatures.CertificateSigner(signer.name, roots))
        elif signer.keyless is not None:
            result.append(
                signatures.KeylessSigner(
                    signer.name, signer.keyless.issuer, signer.keyless.identity
                )
            )
    return result


def check_min_signers(
    verified: typing.Sequence[signatures.Verified], *, min_signers: int
) -> reasons.Violation | None:
    distinct = sorted({item.signer for item in verified})
    if len(distinct) >= min_signers:
        return None
    return reasons.Violation(
        reasons.Reason.TOO_FEW_SIGNERS,
        f"spec.minSigners is {min_signers} but {len(distinct)} distinct trusted signer(s) "
        f"signed ({', '.join(distinct) or 'none'})",
    )


def check_hash_algorithm(
    signed: statement.Statement, *, allowed: typing.Collection[str]
) -> reasons.Violation | None:
    hash_type = signed.serialization.hash_type
    if hash_type in allowed:
        return None
    return reasons.Violation(
        reasons.Reason.HASH_NOT_ALLOWED,
        f"the signature uses hash {hash_type!r}; spec.hashAlgorithms allows "
        f"{', '.join(sorted(allowed))}",
    )


def check_formats(
    found: typing.Mapping[str, formats.Finding], *, allowed: typing.Collection[str]
) -> reasons.Violation | None:
    """Refuse a file whose loader can run code unless spec.formats.allow lists its family: the
    one rule of `modelguard verify` and of the agent in the pod."""
    refused = sorted(name for name, finding in found.items() if not finding.needs.issubset(allowed))
    if not refused:
        return None
    first = refused[0]
    missing = sorted(found[first].needs - set(allowed))
    more = f" (and {len(refused) - 1} more file(s))" if len(refused) > 1 else ""
    return reasons.Violation(
        reasons.Reason.UNSAFE_FORMAT,
        f"file {first!r} is {found[first]}{more}: loading it can run code; admitting it needs "
        f"{' and '.join(missing)} in spec.formats.allow",
    )


def check_source(uri: str, *, sources: typing.Sequence[str]) -> reasons.Violation | None:
    if any(_matches(uri, prefix) for prefix in sources):
        return None
    return reasons.Violation(
        reasons.Reason.SOURCE_NOT_ALLOWED,
        f"source {uri!r} matches none of spec.sources ({', '.join(sources) or 'none listed'})",
    )


def _matches(uri: str, prefix: str) -> bool:
    # Whole path segments: s3://models must not admit s3://models-evil/.
    base = prefix.rstrip("/")
    return uri == base or uri.startswith(base + "/")


def evaluate(checks: typing.Iterable[Check]) -> list[reasons.Violation]:
    """Every violation of `checks`, in order."""
    return [violation for check in checks if (violation := check()) is not None]


def enforce(
    violations: typing.Sequence[reasons.Violation], *, audit: bool
) -> list[reasons.Violation]:
    """Raise the first violation Enforce (or Audit, for what it never waives) refuses; return
    the ones admitted under Audit, to be recorded and reported."""
    for violation in violations:
        if not audit or violation.reason not in AUDITABLE:
            raise reasons.VerificationError.of(violation)
    return list(violations)
