"""The TrustPolicy's checks, as small pure functions over what verification established.

Each check returns None when it passes, or a Violation with a machine-readable reason and a
message naming the field or file; `evaluate` runs them in order, like cert-manager's policy
chains. Which violations Audit mode admits (recorded, reported, not fatal) is decided here too.
"""

from __future__ import annotations

import dataclasses
import typing
import urllib.parse

from modelguard.api import uripaths
from modelguard.trust import formats, reasons, signatures, statement

if typing.TYPE_CHECKING:
    from modelguard.api import trustpolicy

# Authenticity and integrity are never waived: without them nobody knows what the bytes are.
# Nor is where the bytes come from: reading from wherever a spec points would let any tenant
# make the operator fetch from inside the cluster. Audit mode admits only violations of what the
# policy *prefers*.
AUDITABLE: typing.Final = frozenset(
    {
        reasons.Reason.UNSAFE_FORMAT,
        reasons.Reason.HASH_NOT_ALLOWED,
        reasons.Reason.TOO_FEW_SIGNERS,
    }
)
AWS_ENDPOINT: typing.Final = "AWS S3 (the source names no endpoint)"

Check = typing.Callable[[], reasons.Violation | None]


@dataclasses.dataclass(frozen=True)
class SourceRule:
    """One entry of a TrustPolicy's spec.sources, as plain values."""

    uri: str
    endpoint: str | None = None
    """Normalized scheme://host[:port] of an s3:// source's server; None: AWS S3."""
    namespace: str | None = None
    any_namespace: bool = False
    allow_private_addresses: bool = False
    """Host names may resolve to private addresses: spec.sources[i].allowPrivateAddresses."""


@dataclasses.dataclass(frozen=True)
class Binding:
    """The source entry a URI is read under: spec.sources[index]."""

    index: int
    rule: SourceRule

    @property
    def endpoint(self) -> str | None:
        return self.rule.endpoint

    @property
    def allow_private_addresses(self) -> bool:
        return self.rule.allow_private_addresses


@dataclasses.dataclass(frozen=True)
class Rules:
    """What verification enforces of a TrustPolicy: the signers' material loaded, the rest plain
    values. The defaults are a TrustPolicy's that names only its signers (a unit test holds them
    equal), so `modelguard verify --public-key` checks exactly what such a policy would without
    loading the API models: they are most of the command's start-up."""

    signers: tuple[signatures.TrustedSigner, ...]
    min_signers: int = 1
    hash_algorithms: frozenset[str] = frozenset({"sha256"})
    sources: tuple[SourceRule, ...] = ()
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
        sources=source_rules(spec),
        allow_formats=frozenset(spec.formats.allowed()),
        audit=spec.enforcement is trustpolicy.Enforcement.AUDIT,
    )


def source_rules(spec: trustpolicy.TrustPolicySpec) -> tuple[SourceRule, ...]:
    return tuple(
        SourceRule(
            uri=source.uri,
            endpoint=source.endpoint,
            namespace=source.namespace,
            any_namespace=source.any_namespace,
            allow_private_addresses=source.allow_private_addresses,
        )
        for source in spec.sources
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
            identity = None
            if signer.identity is not None and not signer.identity.any:
                identity = certificates.Identity(
                    subject=None
                    if signer.identity.subject is None
                    else certificates.subject_name(
                        signer.identity.subject, field=f"{field}.identity.subject"
                    ),
                    san=signer.identity.san,
                    subject_field=f"{field}.identity.subject",
                    san_field=f"{field}.identity.san",
                )
            result.append(signatures.CertificateSigner(signer.name, roots, identity))
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


def check_source(
    uri: str, *, sources: typing.Sequence[SourceRule], namespace: str | None
) -> reasons.Violation | None:
    """None when `uri` may be read under some entry of `sources` for a model in `namespace`."""
    found = bind(uri, sources=sources, namespace=namespace)
    return found if isinstance(found, reasons.Violation) else None


def bind(
    uri: str,
    *,
    sources: typing.Sequence[SourceRule],
    namespace: str | None,
    requested_endpoint: str | None = None,
    requested_by: str = "the credentials",
) -> Binding | reasons.Violation:
    """The entry of `sources` that `uri` is read under, or why there is none.

    `requested_endpoint` is an S3 endpoint the credentials name (normalized); it must be the
    endpoint of a matching entry, which is then the one used. Without it the first matching entry
    decides. A claim is matched in its namespace only, unless its entry admits any namespace."""
    problem = uripaths.problem(uri)
    if problem is not None:
        # Before any prefix: a path that a server reads as another folder is below none of them.
        return reasons.Violation(
            reasons.Reason.SOURCE_NOT_ALLOWED,
            f"source {_shown(uri)} {problem}; a source path needs {uripaths.ACCEPTED}",
        )
    matching = [
        Binding(index, rule) for index, rule in enumerate(sources) if _matches(uri, rule.uri)
    ]
    if not matching:
        listed = ", ".join(rule.uri for rule in sources) or "none listed"
        return reasons.Violation(
            reasons.Reason.SOURCE_NOT_ALLOWED,
            f"source {_shown(uri)} matches none of spec.sources ({listed})",
        )
    if uri.lower().startswith("pvc://"):
        here = [b for b in matching if b.rule.any_namespace or b.rule.namespace == namespace]
        if not here:
            allowed = ", ".join(
                f"spec.sources[{b.index}] ({b.rule.uri}) in namespace {b.rule.namespace}"
                for b in matching
            )
            return reasons.Violation(
                reasons.Reason.SOURCE_NOT_ALLOWED,
                f"source {_shown(uri)} is a claim of namespace {namespace}, but the policy admits "
                f"that claim only as {allowed}",
            )
        return here[0]
    if not uri.lower().startswith("s3://") or requested_endpoint is None:
        return matching[0]
    for binding in matching:
        if binding.endpoint == requested_endpoint:
            return binding
    bound = "; ".join(
        f"spec.sources[{b.index}].endpoint is {b.endpoint or AWS_ENDPOINT}" for b in matching
    )
    return reasons.Violation(
        reasons.Reason.ENDPOINT_NOT_ALLOWED,
        f"{requested_by} names the S3 endpoint {_shown(requested_endpoint)} for {_shown(uri)}, "
        f"but {bound}; remove the key, or have the policy name that endpoint",
    )


def _shown(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _matches(uri: str, prefix: str) -> bool:
    """Whether `uri` lies below `prefix`, by whole path segments: s3://models must not admit
    s3://models-evil/. https:// compares scheme, host and port as a client connects to them."""
    have, want = _split(uri), _split(prefix)
    if have is None or want is None:
        return False
    return have[0] == want[0] and have[1][: len(want[1])] == want[1]


def _split(uri: str) -> tuple[str, tuple[str, ...]] | None:
    """(origin, path segments) of a source URI; None when it is not one to match at all."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or uripaths.problem(uri) is not None:
        return None
    if scheme in ("https", "http"):
        try:
            parts = urllib.parse.urlsplit(uri)
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            return None
        if "@" in parts.netloc or parts.query or parts.fragment or not parts.hostname:
            return None
        origin = f"{scheme}://{parts.hostname.lower()}:{port}"
        path = urllib.parse.unquote(parts.path)
    elif scheme in ("s3", "pvc"):
        name, _, path = rest.partition("/")
        origin = f"{scheme}://{name}"
    else:
        return None
    path = path.strip("/")
    segments = tuple(path.split("/")) if path else ()
    # A URI that climbs or doubles its slashes is not below anything: servers resolve "..".
    if any(uripaths.dot_segment(segment) for segment in segments):
        return None
    return origin, segments


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
