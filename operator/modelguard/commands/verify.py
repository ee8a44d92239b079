"""`modelguard verify`: a local model folder (or single-file model) checked against its signature
exactly as the cluster checks it; the one-line summary, or `REASON: message`.

The trust layer's modules are imported as they are needed: a public key needs neither x509 nor
the API models, which are a large share of the command's start-up.
"""

from __future__ import annotations

import pathlib
import sys
import typing

from modelguard.commands import files
from modelguard.trust import reasons, verify

if typing.TYPE_CHECKING:
    from modelguard.api import trustpolicy
    from modelguard.trust import policy, signatures


def run(
    *,
    model: pathlib.Path,
    signature: pathlib.Path,
    public_key: pathlib.Path | None,
    certificate_root: pathlib.Path | None,
    policy_file: pathlib.Path | None,
    certificate_subject: str | None,
    certificate_san: str | None,
    any_certificate_identity: bool,
    ignore_paths: typing.Sequence[str],
    ignore_unsigned_files: bool,
) -> int:
    """Exit code 0 and the summary on standard output, 1 and the refusal on standard error."""
    try:
        rules = _rules(
            public_key=public_key,
            certificate_root=certificate_root,
            policy_file=policy_file,
            certificate_subject=certificate_subject,
            certificate_san=certificate_san,
            any_certificate_identity=any_certificate_identity,
        )
        signature_file = files.read(signature, what="--signature")
        if not (model.is_dir() or model.is_file()):
            raise reasons.VerificationError(
                reasons.Reason.UNREADABLE, f"MODEL {str(model)!r} is neither a folder nor a file"
            )
        result = verify.verify_folder(
            model,
            signature_file,
            rules,
            signature_path=signature,
            ignore_paths=_ignore_paths(ignore_paths),
            ignore_unsigned_files=ignore_unsigned_files,
        )
    except reasons.VerificationError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        return 1
    for violation in result.audit:
        print(f"audit {violation}", file=sys.stderr)
    print(result.summary())
    return 0


def _ignore_paths(entries: typing.Sequence[str]) -> tuple[str, ...]:
    """--ignore-paths checked as OMS 6.2.1 has them: exact relative paths, no globs."""
    from modelguard.trust import paths  # noqa: PLC0415

    checked = []
    for entry in entries:
        # "cache/" names the folder cache, as a shell's completion writes it.
        trimmed = entry[:-1] if entry.endswith("/") and len(entry) > 1 else entry
        violation = paths.check_ignore_path(trimmed, field="--ignore-paths")
        if violation is not None:
            raise reasons.VerificationError.of(violation)
        checked.append(trimmed)
    return tuple(checked)


def _rules(
    *,
    public_key: pathlib.Path | None,
    certificate_root: pathlib.Path | None,
    policy_file: pathlib.Path | None,
    certificate_subject: str | None,
    certificate_san: str | None,
    any_certificate_identity: bool,
) -> policy.Rules:
    """What the command line asks to enforce: one key, one root, or a TrustPolicy file."""
    from modelguard.trust import policy, signatures  # noqa: PLC0415

    identity_flags = [
        flag
        for flag, value in (
            ("--certificate-subject", certificate_subject),
            ("--certificate-san", certificate_san),
            ("--any-certificate-identity", any_certificate_identity or None),
        )
        if value is not None
    ]
    if identity_flags and certificate_root is None:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            f"{identity_flags[0]} applies only with --certificate-root",
        )
    if policy_file is not None:
        return policy.rules_of(_policy(policy_file))
    if public_key is not None:
        pem = files.read(public_key, what="--public-key")
        key = signatures.load_public_key(pem, field=f"--public-key {str(public_key)!r}")
        signer: signatures.TrustedSigner = signatures.KeySigner("public-key", key)
    else:
        assert certificate_root is not None, "the parser requires one source of trust"
        signer = _certificate_signer(
            certificate_root,
            subject=certificate_subject,
            san=certificate_san,
            anyone=any_certificate_identity,
        )
    # A TrustPolicy that names only this signer, with every default: without the API models,
    # which a key or a root does not need.
    return policy.Rules(signers=(signer,))


def _certificate_signer(
    root: pathlib.Path, *, subject: str | None, san: str | None, anyone: bool
) -> signatures.TrustedSigner:
    """--certificate-root and the identity it pins, as a TrustPolicy signer would have them."""
    from modelguard.trust import certificates, signatures  # noqa: PLC0415

    pem = files.read(root, what="--certificate-root")
    field = f"--certificate-root {str(root)!r}"
    roots = certificates.load(pem, field=field)
    names = subject is not None or san is not None
    if names and anyone:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            "--any-certificate-identity and --certificate-subject/--certificate-san exclude "
            "each other",
        )
    if not names and not anyone and any(map(certificates.is_ca, roots)):
        # As a TrustPolicy's identity: a CA certifies whoever it likes.
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            f"{field} holds a CA certificate: pin the signing certificate with "
            "--certificate-subject and/or --certificate-san, or trust everyone it certifies "
            "with --any-certificate-identity",
        )
    identity = None
    if names:
        identity = certificates.Identity(
            subject=None
            if subject is None
            else certificates.subject_name(subject, field="--certificate-subject"),
            san=san,
            subject_field="--certificate-subject",
            san_field="--certificate-san",
        )
    return signatures.CertificateSigner("certificate-root", roots, identity)


def _policy(path: pathlib.Path) -> trustpolicy.TrustPolicySpec:
    """The spec of a TrustPolicy YAML file; InvalidPolicy naming what is wrong otherwise."""
    import yaml  # noqa: PLC0415

    from modelguard.api import errors, trustpolicy  # noqa: PLC0415

    text = files.read(path, what="--policy")
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY, f"--policy {str(path)!r} is not YAML: {error}"
        ) from None
    if not isinstance(body, dict):
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY, f"--policy {str(path)!r} is not a TrustPolicy object"
        )
    try:
        return trustpolicy.parse(body).spec
    except errors.InvalidObjectError as error:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY, "; ".join(error.messages)
        ) from None
