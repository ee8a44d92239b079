"""The `modelguard` command: `modelguard run` starts the operator; `modelguard verify` checks a
local model folder against its signature exactly as the cluster does; `modelguard audit verify`
checks the operator's audit log; `modelguard agent ...` are the in-pod entrypoints
(`fetch-verify`: the init container that fills the model volume)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import logging
import os
import pathlib
import re
import sys
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

    from cryptography.hazmat.primitives.asymmetric import ec

    from modelguard.admission import serving
    from modelguard.api import trustpolicy
    from modelguard.trust import approval, policy, signatures


@contextlib.contextmanager
def _start_up() -> Iterator[None]:
    """Imports of a command that runs once and exits, made without the cyclic garbage collector.

    Imports create tens of thousands of objects that live as long as the process; while they are
    made, the collector runs again and again and finds nothing to free. Frozen afterwards, they are
    not scanned again, at exit either: `modelguard verify` starts some 15 % faster. Reference
    counting frees memory as ever, and the collector runs again for what comes after.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: kopf and the handlers are heavy, and user commands that do
    # not run the operator should start fast. Importing handlers registers them with kopf.
    import kopf  # noqa: PLC0415

    from modelguard import handlers  # noqa: F401, PLC0415
    from modelguard.audit import keys  # noqa: PLC0415

    if args.audit_key_file is None:
        raise SystemExit(
            "--audit-key-file (or MODELGUARD_AUDIT_KEY_FILE) is required: the installation's"
            " audit key, 32 or more random bytes (the chart mounts its Secret); without it no"
            " audit record could be told from forged text"
        )
    try:
        audit_key = keys.load(args.audit_key_file)
    except keys.InvalidKey as error:
        raise SystemExit(str(error)) from None
    configure_logging(verbose=args.verbose, debug=args.debug)
    kopf.run(
        memo=kopf.Memo(
            webhook=_webhook_options(args),
            audit_log=args.audit_log,
            audit_key=audit_key,
            verify_concurrency=args.verify_concurrency,
        ),
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        liveness_endpoint=args.liveness,
        # One replica for now; kopf peering for 2+ replicas needs its peering CRD (a later release).
        standalone=True,
    )
    return 0


def configure_logging(*, verbose: bool, debug: bool) -> None:
    """kopf's log format on standard error, every line escaped: what a log line quotes (an S3
    error, an object's name, a traceback) never starts a line of its own."""
    import kopf  # noqa: PLC0415

    from modelguard import logs  # noqa: PLC0415
    from modelguard.admission import serving as webhook_serving  # noqa: PLC0415

    kopf.configure(verbose=verbose, debug=debug, log_prefix=True)
    logs.escape_handlers(logging.getLogger())
    # lightkube's HTTP stack logs every request at debug level; our own lines are what matter.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # One access line per admission request is noise at hundreds per second, and costs time.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(webhook_serving.DenialLogFilter())


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _webhook_options(args: argparse.Namespace) -> serving.Options:
    from modelguard.admission import decisions, serving  # noqa: PLC0415

    if args.webhook_port is not None and not args.operator_username:
        raise SystemExit("--webhook-port needs --operator-username (the operator's own identity)")
    return serving.Options(
        port=args.webhook_port,
        cert_dir=args.webhook_cert_dir,
        addr=args.webhook_addr,
        identity=decisions.Identity(
            operator_username=args.operator_username or "",
            break_glass_group=args.break_glass_group,
        ),
        client_ca=args.webhook_client_ca,
        client_names=tuple(args.webhook_client_name or ()),
    )


def _add_webhook_flags(run: argparse.ArgumentParser) -> None:
    webhook = run.add_argument_group("admission webhook (configured by the chart, served here)")
    webhook.add_argument(
        "--webhook-port", type=int, metavar="PORT", help="serve admission over TLS (default: off)"
    )
    webhook.add_argument(
        "--webhook-addr",
        # In a pod: the Service reaches it on the pod IP; tests pass 127.0.0.1.
        default="0.0.0.0",  # noqa: S104
        metavar="ADDR",
        help="listen address (default all)",
    )
    webhook.add_argument(
        "--webhook-cert-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="tls.crt and tls.key (a mounted kubernetes.io/tls Secret); reloaded when they change",
    )
    webhook.add_argument(
        "--webhook-client-ca",
        type=pathlib.Path,
        metavar="PEM",
        help="answer only TLS clients with a certificate this CA signed: the API server's webhook"
        " client certificate (its AdmissionConfiguration kubeConfigFile); default: any client",
    )
    webhook.add_argument(
        "--webhook-client-name",
        action="append",
        metavar="NAME",
        help="with --webhook-client-ca: the client certificate's common name or DNS name must be"
        " one of these (repeatable)",
    )
    webhook.add_argument(
        "--operator-username",
        metavar="USER",
        help="the operator's own user, the only one that may write managed children,"
        " e.g. system:serviceaccount:modelguard-system:modelguard",
    )
    webhook.add_argument(
        "--break-glass-group",
        default="modelguard:break-glass",
        metavar="GROUP",
        help="members may change managed children directly (default modelguard:break-glass)",
    )


def _verify(args: argparse.Namespace) -> int:
    # Imported here, like _run's: `modelguard run` should not pay for cryptography and the trust
    # layer, nor `modelguard verify` for kopf.
    with _start_up():
        from modelguard.trust import reasons, verify  # noqa: PLC0415

    try:
        rules = _verify_rules(args)
        signature = _read(args.signature, what="--signature")
        if not (args.model_dir.is_dir() or args.model_dir.is_file()):
            raise reasons.VerificationError(
                reasons.Reason.UNREADABLE,
                f"MODEL {str(args.model_dir)!r} is neither a folder nor a file",
            )
        result = verify.verify_folder(
            args.model_dir,
            signature,
            rules,
            signature_path=args.signature,
            ignore_paths=_ignore_paths(args.ignore_paths),
            ignore_unsigned_files=args.ignore_unsigned_files,
        )
    except reasons.VerificationError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        return 1
    for violation in result.audit:
        print(f"audit {violation}", file=sys.stderr)
    print(result.summary())
    return 0


def _ignore_paths(entries: list[str] | None) -> tuple[str, ...]:
    """--ignore-paths checked as OMS 6.2.1 has them: exact relative paths, no globs."""
    from modelguard.trust import paths, reasons  # noqa: PLC0415

    checked = []
    for entry in entries or []:
        # "cache/" names the folder cache, as a shell's completion writes it.
        trimmed = entry[:-1] if entry.endswith("/") and len(entry) > 1 else entry
        violation = paths.check_ignore_path(trimmed, field="--ignore-paths")
        if violation is not None:
            raise reasons.VerificationError.of(violation)
        checked.append(trimmed)
    return tuple(checked)


def _verify_rules(args: argparse.Namespace) -> policy.Rules:
    """What the command line asks to enforce: one key, one root, or a TrustPolicy file."""
    from modelguard.trust import policy, reasons, signatures  # noqa: PLC0415

    identity_flags = [
        flag
        for flag, value in (
            ("--certificate-subject", args.certificate_subject),
            ("--certificate-san", args.certificate_san),
            ("--any-certificate-identity", args.any_certificate_identity or None),
        )
        if value is not None
    ]
    if identity_flags and args.certificate_root is None:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            f"{identity_flags[0]} applies only with --certificate-root",
        )
    if args.policy is not None:
        return policy.rules_of(_policy_file(args.policy))
    if args.public_key is not None:
        pem = _read(args.public_key, what="--public-key")
        key = signatures.load_public_key(pem, field=f"--public-key {str(args.public_key)!r}")
        signer: signatures.TrustedSigner = signatures.KeySigner("public-key", key)
    else:
        signer = _certificate_signer(args)
    # A TrustPolicy that names only this signer, with every default: without the API models,
    # which a key or a root does not need.
    return policy.Rules(signers=(signer,))


def _certificate_signer(args: argparse.Namespace) -> signatures.TrustedSigner:
    """--certificate-root and the identity it pins, as a TrustPolicy signer would have them."""
    from modelguard.trust import certificates, reasons, signatures  # noqa: PLC0415

    pem = _read(args.certificate_root, what="--certificate-root")
    field = f"--certificate-root {str(args.certificate_root)!r}"
    roots = certificates.load(pem, field=field)
    names = args.certificate_subject is not None or args.certificate_san is not None
    if names and args.any_certificate_identity:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_POLICY,
            "--any-certificate-identity and --certificate-subject/--certificate-san exclude "
            "each other",
        )
    if not names and not args.any_certificate_identity and any(map(certificates.is_ca, roots)):
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
            if args.certificate_subject is None
            else certificates.subject_name(args.certificate_subject, field="--certificate-subject"),
            san=args.certificate_san,
            subject_field="--certificate-subject",
            san_field="--certificate-san",
        )
    return signatures.CertificateSigner("certificate-root", roots, identity)


def _policy_file(path: pathlib.Path) -> trustpolicy.TrustPolicySpec:
    """The spec of a TrustPolicy YAML file; InvalidPolicy naming what is wrong otherwise."""
    import yaml  # noqa: PLC0415

    from modelguard.api import errors, trustpolicy  # noqa: PLC0415
    from modelguard.trust import reasons  # noqa: PLC0415

    text = _read(path, what="--policy")
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


def _read(path: pathlib.Path, *, what: str) -> bytes:
    from modelguard.trust import reasons  # noqa: PLC0415

    try:
        return path.read_bytes()
    except OSError as error:
        raise reasons.VerificationError(
            reasons.Reason.UNREADABLE, f"{what} {str(path)!r}: {error.strerror or error}"
        ) from None


def _approve(args: argparse.Namespace) -> int:
    # Imported here, like _verify's: signing needs cryptography and the trust layer, not kopf.
    import yaml  # noqa: PLC0415

    from modelguard.api import errors  # noqa: PLC0415
    from modelguard.trust import approval, reasons  # noqa: PLC0415

    try:
        key = _private_key(args.key)
        expires_at = _expires_at(args.expires, now=datetime.datetime.now(datetime.UTC))
        root_digest = _root_digest(args)
        claim = approval.Claim(
            model=args.model,
            version=args.version,
            root_digest=root_digest,
            approver=args.approver,
            reason=args.reason,
            expires_at=expires_at,
            namespace=args.namespace,
        )
        name = args.name or _approval_name(claim)
        signed = approval.build(claim, private_key=key, name=name)
    except reasons.VerificationError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        return 1
    except errors.InvalidObjectError as error:
        print(f"{reasons.Reason.INVALID_APPROVAL}: {'; '.join(error.messages)}", file=sys.stderr)
        return 1
    body = signed.model_dump(mode="json", exclude_none=True)
    sys.stdout.write(yaml.safe_dump(body, sort_keys=False, width=100))
    return 0


def _private_key(path: pathlib.Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC private key from PEM; InvalidKey naming --key otherwise."""
    from cryptography import exceptions  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    from modelguard.trust import reasons  # noqa: PLC0415

    field = f"--key {str(path)!r}"
    try:
        key = serialization.load_pem_private_key(_read(path, what="--key"), password=None)
    except TypeError:
        # cryptography says TypeError when the key is encrypted and no password was given.
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY,
            f"{field} is encrypted; decrypt it (openssl ec -in KEY -out PLAIN) to sign",
        ) from None
    except (ValueError, exceptions.UnsupportedAlgorithm) as error:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY, f"{field} is not a PEM private key: {error}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise reasons.VerificationError(
            reasons.Reason.INVALID_KEY,
            f"{field} is not an elliptic-curve key (approvers sign with EC P-256/384/521)",
        )
    return key


_DURATION_UNITS: typing.Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _expires_at(text: str, *, now: datetime.datetime) -> str:
    """--expires as RFC 3339: a duration from now (30d, 12h, 2w) or a time; InvalidApproval."""
    from modelguard.api import times  # noqa: PLC0415
    from modelguard.trust import reasons  # noqa: PLC0415

    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if match is not None:
        when = now + datetime.timedelta(
            seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        )
        text = times.rfc3339(when)
    else:
        try:
            when = times.parse(text)
        except ValueError:
            raise reasons.VerificationError(
                reasons.Reason.INVALID_APPROVAL,
                f"--expires {text!r} is neither a duration (30d, 12h, 90m, 2w) nor an RFC 3339 "
                "time (2030-01-01T00:00:00Z)",
            ) from None
    if when <= now:
        raise reasons.VerificationError(
            reasons.Reason.INVALID_APPROVAL, f"--expires {text!r} is not in the future"
        )
    return text


def _root_digest(args: argparse.Namespace) -> str:
    """--digest checked, or the root digest of --digest-of computed as model_signing does."""
    from modelguard.api import modelapproval  # noqa: PLC0415
    from modelguard.trust import digests, folder, reasons  # noqa: PLC0415

    if args.digest is not None:
        digest: str = args.digest.strip().lower()
        if not re.fullmatch(modelapproval.ROOT_DIGEST_PATTERN, digest):
            raise reasons.VerificationError(
                reasons.Reason.INVALID_APPROVAL,
                f"--digest {args.digest!r} is not sha256:<64 hex digits>",
            )
        return digest
    model_dir: pathlib.Path = args.digest_of
    if not model_dir.is_dir():
        raise reasons.VerificationError(
            reasons.Reason.UNREADABLE, f"--digest-of {str(model_dir)!r} is not a directory"
        )
    files = folder.scan(model_dir, ignore_paths=_MODEL_SIGNING_IGNORED)
    # model_signing's defaults: files serialization, sha256.
    resources = folder.hash_files(model_dir, files, hash_type="sha256", shard_size=None)
    return f"sha256:{digests.root_digest(resources).hex()}"


# What `model_signing sign` leaves out by default: git's files, and the signature itself, which
# the ModelDeployment default (model.sig beside the files) puts inside the model folder.
_MODEL_SIGNING_IGNORED: typing.Final = (
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    "model.sig",
)


def _approval_name(claim: approval.Claim) -> str:
    """A default object name: model-version-approver, made a valid Kubernetes name."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{claim.model}-{claim.version}-{claim.approver}".lower())
    return name[:253].strip("-.")


def _add_approve(commands: typing.Any) -> None:
    approve = commands.add_parser(
        "approve",
        help="sign a ModelApproval for one model version",
        description="Print a signed ModelApproval YAML for MODEL at VERSION and its root digest,"
        " for a GitOps commit or `kubectl apply -f -`. Exit 1 and `REASON: message` on a bad"
        " key, digest, duration or name.",
    )
    approve.add_argument("--model", required=True, metavar="NAME", help="spec.model.name")
    approve.add_argument("--version", required=True, metavar="V", help="spec.model.version")
    digest = approve.add_mutually_exclusive_group(required=True)
    digest.add_argument("--digest", metavar="sha256:HEX", help="the model's signed root digest")
    digest.add_argument(
        "--digest-of",
        type=pathlib.Path,
        metavar="MODEL_DIR",
        help="compute the root digest of a local model folder as model_signing does (sha256,"
        " files; .git*, .github and model.sig left out)",
    )
    approve.add_argument(
        "--key", required=True, type=pathlib.Path, metavar="PRIVATE.pem", help="EC private key"
    )
    approve.add_argument(
        "--approver", required=True, metavar="NAME", help="your name in the TrustPolicy"
    )
    approve.add_argument(
        "-n", "--namespace", required=True, metavar="NS", help="namespace of the ModelDeployment"
    )
    approve.add_argument(
        "--expires",
        default="30d",
        metavar="30d|RFC3339",
        help="a duration (s, m, h, d, w) or an RFC 3339 time (default 30d)",
    )
    approve.add_argument("--reason", default="", metavar="TEXT", help="why it is approved")
    approve.add_argument(
        "--name", metavar="OBJECT_NAME", help="metadata.name (default MODEL-VERSION-APPROVER)"
    )
    approve.set_defaults(handler=_approve)


def _audit_verify(args: argparse.Namespace) -> int:
    # Imported here, like _verify's: a pure check of text needs neither kopf nor cryptography.
    from modelguard.audit import chain, keys  # noqa: PLC0415

    try:
        key = keys.load(args.key_file)
    except keys.InvalidKey as error:
        print(error, file=sys.stderr)
        return 1
    try:
        if args.file == "-":
            result = chain.verify(_decoded(sys.stdin.buffer), key=key)
        else:
            with pathlib.Path(args.file).open("rb") as lines:
                result = chain.verify(_decoded(lines), key=key)
    except OSError as error:
        print(f"{args.file}: {error.strerror or error}", file=sys.stderr)
        return 1
    if not result.intact:
        print(result.summary(), file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _decoded(lines: typing.IO[bytes]) -> typing.Iterator[str]:
    # Invalid UTF-8 must not stop the check: a record holding it then fails its hash, and any
    # other line is skipped anyway.
    for raw in lines:
        yield raw.decode("utf-8", errors="replace")


def _add_audit(commands: typing.Any) -> None:
    audit = commands.add_parser("audit", help="the operator's audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_commands.add_parser(
        "verify",
        help="check that no audit record was edited, deleted, inserted or reordered",
        description="Check the hash chain of the audit records in FILE (the operator's"
        " --audit-log, or `kubectl logs` of the operator). Only records sealed with the"
        " installation's audit key count; other lines, records forged by whoever could put text"
        " into the log included, are ignored (and counted). Exit 0 and `N records in K segments,"
        " chain intact`; exit 1 and `line L: what is wrong` otherwise. A missing tail or a whole"
        " missing segment cannot be seen from the chain alone.",
    )
    check.add_argument("file", metavar="FILE", help="the audit log, or - for standard input")
    check.add_argument(
        "--key-file",
        required=True,
        type=pathlib.Path,
        metavar="KEY",
        help="the installation's audit key (the chart's Secret <release>-audit-key, key `key`)",
    )
    check.set_defaults(handler=_audit_verify)


def _fetch_verify(args: argparse.Namespace) -> int:
    # Imported here, like _run's: the agent needs the sources and the trust layer, not kopf.
    with _start_up():
        from modelguard.agent import fetchverify  # noqa: PLC0415

    options = fetchverify.Options(
        source=args.source,
        signature=args.signature,
        root_digest=args.root_digest,
        dest=args.dest,
        credentials_dir=args.credentials_dir,
        allow_formats=frozenset(args.allow_format or ())
        | ({"Pickle"} if args.allow_pickle else set()),
        audit_formats=args.audit_formats,
        parallel=args.parallel,
        signature_digest=args.signature_digest,
        **({} if args.max_bytes is None else {"max_bytes": args.max_bytes}),
        source_endpoint=args.source_endpoint,
        signature_endpoint=args.signature_endpoint,
        source_private_addresses=args.source_private_addresses,
        signature_private_addresses=args.signature_private_addresses,
    )
    return fetchverify.run(options, termination_log=args.termination_log)


def _add_agent(commands: typing.Any) -> None:
    agent = commands.add_parser("agent", help="in-pod entrypoints (init container, sidecars)")
    agent_commands = agent.add_subparsers(dest="agent_command", required=True)
    fetch = agent_commands.add_parser(
        "fetch-verify",
        help="stream a signed model into a directory, verifying every file as it arrives",
        description="Fetch every file the signature lists from SOURCE into DEST, hashing in the"
        " same pass, and refuse any missing, extra or changed file or unsafe format. The root"
        " digest is the one the operator verified. Exit 0 and a summary line; exit 1 and"
        " `REASON: message` (also written to the termination log) with DEST left empty.",
    )
    fetch.add_argument("--source", required=True, metavar="URI", help="s3://, https:// or pvc://")
    fetch.add_argument(
        "--signature", required=True, metavar="URI", help="the signature bundle (model.sig)"
    )
    fetch.add_argument(
        "--root-digest", required=True, metavar="sha256:HEX", help="the verified root digest"
    )
    fetch.add_argument(
        "--signature-digest",
        metavar="sha256:HEX",
        help="the SHA-256 of the signature file the operator verified (binds the file names,"
        " which the root digest does not)",
    )
    fetch.add_argument("--dest", required=True, type=pathlib.Path, metavar="DIR")
    for which in ("source", "signature"):
        fetch.add_argument(
            f"--{which}-endpoint",
            metavar="URL",
            help=f"the S3 server (scheme://host[:port]) the TrustPolicy binds the {which} to"
            " (default: AWS S3); a credentials AWS_ENDPOINT_URL naming another is refused",
        )
        fetch.add_argument(
            f"--{which}-private-addresses",
            action="store_true",
            help=f"let the {which}'s host name resolve to private addresses (the TrustPolicy"
            " source says allowPrivateAddresses); loopback, link-local and metadata addresses"
            " stay refused",
        )
    fetch.add_argument(
        "--credentials-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="a mounted Secret: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,"
        " AWS_REGION, AWS_ENDPOINT_URL, AWS_CA_BUNDLE (default: anonymous)",
    )
    fetch.add_argument(
        "--allow-format",
        action="append",
        choices=("Pickle", "Keras", "HDF5"),
        metavar="FAMILY",
        help="admit this family of code-capable formats: Pickle, Keras or HDF5 (repeatable; the"
        " TrustPolicy's spec.formats.allow)",
    )
    fetch.add_argument(
        "--allow-pickle", action="store_true", help="the same as --allow-format Pickle"
    )
    fetch.add_argument(
        "--audit-formats",
        "--audit-pickle",
        dest="audit_formats",
        action="store_true",
        help="admit code-capable formats not allowed but report each on an `audit UnsafeFormat:`"
        " line, in the termination log too (a TrustPolicy in Audit mode)",
    )
    fetch.add_argument(
        "--parallel", type=int, default=4, metavar="N", help="files fetched at once (default 4)"
    )
    fetch.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="the most bytes written in all; past it the fetch is refused (ModelTooLarge) and"
        " DEST emptied (default 16 GiB; each file is also bounded by its signed or listed size)",
    )
    fetch.add_argument(
        "--termination-log",
        type=pathlib.Path,
        default=pathlib.Path("/dev/termination-log"),
        metavar="FILE",
        help="where the one-line failure reason goes, or on success the audit lines if any"
        " (default /dev/termination-log)",
    )
    fetch.set_defaults(handler=_fetch_verify)


def _env_path(name: str) -> pathlib.Path | None:
    value = os.environ.get(name)
    return pathlib.Path(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelguard", description="ModelGuard: secure-by-default ML model deployments."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        metavar="NAMESPACE",
        help="watch only this namespace (repeatable); the default is every namespace",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--audit-log",
        default="-",
        metavar="PATH",
        help="append audit records to this file; - (the default) is standard output, which then"
        " carries nothing else (logs go to standard error)",
    )
    run.add_argument(
        "--audit-key-file",
        type=pathlib.Path,
        default=_env_path("MODELGUARD_AUDIT_KEY_FILE"),
        metavar="KEY",
        help="the installation's audit key (32+ random bytes) that seals every record, so that"
        " `modelguard audit verify` tells them from forged text; required"
        " (default $MODELGUARD_AUDIT_KEY_FILE)",
    )
    run.add_argument(
        "--verify-concurrency",
        type=_at_least_one,
        default=2,
        metavar="N",
        help="signature files fetched and verified at once (default 2); each may take some"
        " 170 MiB, so raise it only with the memory limit (docs/chart.md)",
    )
    _add_webhook_flags(run)
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything, API traffic included")
    run.set_defaults(handler=_run)
    check = commands.add_parser(
        "verify",
        help="verify a local model folder against its OpenSSF Model Signing signature",
        description="Verify MODEL against SIG exactly as the cluster does. Exit 0 and a"
        " one-line summary when it verifies; exit 1 and `REASON: message` otherwise.",
    )
    check.add_argument(
        "model_dir",
        type=pathlib.Path,
        metavar="MODEL",
        help="the model folder, or the file of a single-file model",
    )
    check.add_argument(
        "--signature",
        type=pathlib.Path,
        required=True,
        metavar="SIG",
        help="the signature: a sigstore bundle (model.sig) or JSONL, one bundle per line",
    )
    trust = check.add_mutually_exclusive_group(required=True)
    trust.add_argument("--public-key", type=pathlib.Path, metavar="PEM", help="trusted EC key")
    trust.add_argument(
        "--certificate-root", type=pathlib.Path, metavar="PEM", help="trusted root certificate(s)"
    )
    trust.add_argument(
        "--policy", type=pathlib.Path, metavar="TRUSTPOLICY.yaml", help="a TrustPolicy object"
    )
    check.add_argument(
        "--certificate-subject",
        metavar="DN",
        help="with --certificate-root: the signing certificate's exact subject (RFC 4514, e.g."
        " CN=release,O=Example)",
    )
    check.add_argument(
        "--certificate-san",
        metavar="NAME",
        help="with --certificate-root: an exact SAN the signing certificate must carry (email,"
        " URI or DNS name)",
    )
    check.add_argument(
        "--any-certificate-identity",
        action="store_true",
        help="with --certificate-root holding a CA: any code-signing certificate it issues",
    )
    check.add_argument(
        "--ignore-unsigned-files",
        action="store_true",
        help="admit files the signature does not list (each signed file is still required and"
        " verified); by default an unsigned file is refused (UnexpectedFile)",
    )
    check.add_argument(
        "--ignore-paths",
        action="append",
        metavar="PATH",
        help="a path from the model root to leave out, a file or a folder (repeatable), beside"
        " the signature's ignore_paths and .git, .gitattributes, .github, .gitignore; a signed"
        " file below it is still verified",
    )
    check.set_defaults(handler=_verify)
    _add_approve(commands)
    _add_audit(commands)
    _add_agent(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
