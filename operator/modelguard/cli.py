"""The `modelguard` command: `modelguard run` starts the operator; `modelguard verify` checks a
local model folder against its signature exactly as the cluster does."""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import typing

if typing.TYPE_CHECKING:
    from modelguard.api import trustpolicy


def _run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: kopf and the handlers are heavy, and user commands that do
    # not run the operator should start fast. Importing handlers registers them with kopf.
    import kopf  # noqa: PLC0415

    from modelguard import handlers  # noqa: F401, PLC0415

    kopf.configure(verbose=args.verbose, debug=args.debug, log_prefix=True)
    # lightkube's HTTP stack logs every request at debug level; our own lines are what matter.
    for noisy in ("httpx", "httpcore", "httpcore2", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        liveness_endpoint=args.liveness,
        # One replica for now; kopf peering for 2+ replicas needs its peering CRD (a later release).
        standalone=True,
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    # Imported here, like _run's: `modelguard run` should not pay for cryptography and the trust
    # layer, nor `modelguard verify` for kopf.
    from modelguard.api import errors  # noqa: PLC0415
    from modelguard.trust import reasons, verify  # noqa: PLC0415

    try:
        spec = _verify_policy(args)
        signature = _read(args.signature, what="--signature")
        if not args.model_dir.is_dir():
            raise reasons.VerificationError(
                reasons.Reason.UNREADABLE, f"MODEL_DIR {str(args.model_dir)!r} is not a directory"
            )
        result = verify.verify_folder(
            args.model_dir, signature, spec, signature_path=args.signature
        )
    except reasons.VerificationError as error:
        print(f"{error.reason}: {error.message}", file=sys.stderr)
        return 1
    except errors.InvalidObjectError as error:
        print(f"{reasons.Reason.INVALID_POLICY}: {'; '.join(error.messages)}", file=sys.stderr)
        return 1
    for violation in result.audit:
        print(f"audit {violation}", file=sys.stderr)
    print(result.summary())
    return 0


def _verify_policy(args: argparse.Namespace) -> trustpolicy.TrustPolicySpec:
    """The TrustPolicySpec the command line asks for: one key, one root, or a policy file."""
    import yaml  # noqa: PLC0415

    from modelguard.api import trustpolicy  # noqa: PLC0415
    from modelguard.trust import reasons, signatures  # noqa: PLC0415

    if args.policy is not None:
        text = _read(args.policy, what="--policy")
        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise reasons.VerificationError(
                reasons.Reason.INVALID_POLICY, f"--policy {str(args.policy)!r} is not YAML: {error}"
            ) from None
        if not isinstance(body, dict):
            raise reasons.VerificationError(
                reasons.Reason.INVALID_POLICY,
                f"--policy {str(args.policy)!r} is not a TrustPolicy object",
            )
        return trustpolicy.parse(body).spec
    if args.public_key is not None:
        pem = _read(args.public_key, what="--public-key")
        signatures.load_public_key(pem, field=f"--public-key {str(args.public_key)!r}")
        signer: dict[str, typing.Any] = {"name": "public-key", "publicKey": pem.decode()}
    else:
        pem = _read(args.certificate_root, what="--certificate-root")
        signatures.load_certificates(
            pem, field=f"--certificate-root {str(args.certificate_root)!r}"
        )
        signer = {"name": "certificate-root", "certificateRoot": pem.decode()}
    # The same defaults as a TrustPolicy that names only this signer.
    return trustpolicy.TrustPolicySpec.model_validate({"signers": [signer]}, by_alias=True)


def _read(path: pathlib.Path, *, what: str) -> bytes:
    from modelguard.trust import reasons  # noqa: PLC0415

    try:
        return path.read_bytes()
    except OSError as error:
        raise reasons.VerificationError(
            reasons.Reason.UNREADABLE, f"{what} {str(path)!r}: {error.strerror or error}"
        ) from None


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
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything, API traffic included")
    run.set_defaults(handler=_run)
    check = commands.add_parser(
        "verify",
        help="verify a local model folder against its OpenSSF Model Signing signature",
        description="Verify MODEL_DIR against SIG exactly as the cluster does. Exit 0 and a"
        " one-line summary when it verifies; exit 1 and `REASON: message` otherwise.",
    )
    check.add_argument("model_dir", type=pathlib.Path, metavar="MODEL_DIR")
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
    check.set_defaults(handler=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
