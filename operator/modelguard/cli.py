"""The `modelguard` command: `modelguard run` starts the operator."""

from __future__ import annotations

import argparse
import logging
import sys


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
