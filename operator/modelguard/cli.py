"""The `modelguard` command line: its arguments parsed, and handed to the module that does the
command (modelguard.commands; the agent's own for `agent fetch-verify`). `modelguard run` starts
the operator; `modelguard verify` checks a local model folder against its signature exactly as
the cluster does; `modelguard approve` signs a ModelApproval; `modelguard audit verify` checks the
operator's audit log; `modelguard agent ...` are the in-pod entrypoints (`fetch-verify`: the init
container that fills the model volume)."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import socket
import sys
import typing

if typing.TYPE_CHECKING:
    from modelguard.admission import serving

# Each command's module is imported when it runs, not here: kopf and the handlers are heavy, and
# user commands that do not run the operator should start fast (`modelguard verify` pays for
# neither kopf nor, with a public key, x509 and the API models).


def _run(args: argparse.Namespace) -> int:
    from modelguard.audit import sink  # noqa: PLC0415
    from modelguard.commands import run  # noqa: PLC0415

    return run.run(
        namespaces=args.namespace or [],
        liveness=args.liveness,
        readiness_url=args.readiness,
        audit_log=args.audit_log,
        audit_key_file=args.audit_key_file,
        audit=run.AuditOptions(
            log_name=args.audit_log_name,
            cadence=sink.Cadence(
                records=args.audit_checkpoint_records, seconds=args.audit_checkpoint_seconds
            ),
            namespace=args.audit_checkpoints_namespace,
            prefix=args.audit_checkpoints_prefix,
        ),
        verify_concurrency=args.verify_concurrency,
        model_pods=run.ModelPodOptions(
            node_selector=args.model_pod_node_selector, tolerations=args.model_pod_tolerations
        ),
        backup=run.BackupOptions(
            key_file=args.backup_key_file,
            trusted_keys_file=args.backup_trusted_keys_file,
            volume_root=args.backup_volume_root,
            drill_scratch=args.drill_scratch_dir,
            concurrency=args.backup_concurrency,
        ),
        leader_election=run.LeaderElectionOptions(
            lease=args.leader_election_lease, namespace=args.leader_election_namespace
        ),
        webhook=_webhook_options(args),
        metrics=run.MetricsOptions(port=args.metrics_port, addr=args.metrics_addr),
        verbose=args.verbose,
        debug=args.debug,
    )


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {number}")
    return number


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


NODE_SELECTOR_ENV: typing.Final = "MODELGUARD_MODEL_POD_NODE_SELECTOR"
TOLERATIONS_ENV: typing.Final = "MODELGUARD_MODEL_POD_TOLERATIONS"


def _add_model_pod_flags(run: argparse.ArgumentParser) -> None:
    pods = run.add_argument_group("model pods (configured by the chart's modelPods)")
    pods.add_argument(
        "--model-pod-node-selector",
        default=os.environ.get(NODE_SELECTOR_ENV),
        metavar="JSON",
        help="the nodeSelector of every model pod, a JSON map of label keys to values, e.g."
        f' {{"pool": "gpu"}} (default ${NODE_SELECTOR_ENV}; none: any node)',
    )
    pods.add_argument(
        "--model-pod-tolerations",
        default=os.environ.get(TOLERATIONS_ENV),
        metavar="JSON",
        help="the tolerations of every model pod, a JSON list as in a pod spec"
        f" (default ${TOLERATIONS_ENV}; none: no taint tolerated)",
    )


def _add_backup_flags(run: argparse.ArgumentParser) -> None:
    backups = run.add_argument_group("backups (configured by the chart)")
    backups.add_argument(
        "--backup-key-file",
        type=pathlib.Path,
        default=_env_path("MODELGUARD_BACKUP_KEY_FILE"),
        metavar="KEY",
        help="the EC private key (PEM) that signs backup manifests; without it no backup is"
        " taken (BackedUp=False, BackupKeyMissing) (default $MODELGUARD_BACKUP_KEY_FILE)",
    )
    backups.add_argument(
        "--backup-trusted-keys-file",
        type=pathlib.Path,
        default=_env_path("MODELGUARD_BACKUP_TRUSTED_KEYS_FILE"),
        metavar="PEM",
        help="public keys rotated out, which restore drills still accept for older backups",
    )
    backups.add_argument(
        "--backup-volume-root",
        type=pathlib.Path,
        metavar="DIR",
        help="where the chart mounts volume stores' claims (<DIR>/<claim>)",
    )
    backups.add_argument(
        "--drill-scratch-dir",
        type=pathlib.Path,
        metavar="DIR",
        help="scratch space restore drills restore into (the chart's emptyDir)",
    )
    backups.add_argument(
        "--backup-concurrency",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="backups and drills running at once, off the event loop (default 1)",
    )


def _verify(args: argparse.Namespace) -> int:
    from modelguard.commands import startup  # noqa: PLC0415

    with startup.frozen_imports():
        from modelguard.commands import verify  # noqa: PLC0415

    return verify.run(
        model=args.model_dir,
        signature=args.signature,
        public_key=args.public_key,
        certificate_root=args.certificate_root,
        policy_file=args.policy,
        certificate_subject=args.certificate_subject,
        certificate_san=args.certificate_san,
        any_certificate_identity=args.any_certificate_identity,
        ignore_paths=args.ignore_paths or [],
        ignore_unsigned_files=args.ignore_unsigned_files,
    )


def _approve(args: argparse.Namespace) -> int:
    from modelguard.commands import approve  # noqa: PLC0415

    return approve.run(
        model=args.model,
        version=args.version,
        digest=args.digest,
        digest_of=args.digest_of,
        key=args.key,
        approver=args.approver,
        namespace=args.namespace,
        expires=args.expires,
        reason=args.reason,
        name=args.name,
        now=datetime.datetime.now(datetime.UTC),
    )


def _audit_verify(args: argparse.Namespace) -> int:
    from modelguard.commands import auditlog  # noqa: PLC0415

    return auditlog.verify(
        file=args.file,
        public_keys=args.public_key or [],
        sources=args.checkpoints or [],
        no_checkpoints=args.no_checkpoints,
        since=args.since,
    )


def _audit_public_key(args: argparse.Namespace) -> int:
    from modelguard.commands import auditlog  # noqa: PLC0415

    return auditlog.public_key(key_file=args.key_file, log_name=args.log_name)


def _restore(args: argparse.Namespace) -> int:
    from modelguard.commands import restore  # noqa: PLC0415

    return restore.run(
        model_deployment=args.model_deployment,
        backup=args.backup,
        store=restore.StoreFlags(
            endpoint=args.store_endpoint,
            bucket=args.bucket,
            prefix=args.store_prefix,
            volume=args.store_volume,
            credentials_dir=args.store_credentials,
            private_addresses=args.store_private_addresses,
        ),
        target=restore.TargetFlags(
            to=args.to,
            export=args.export,
            signature_to=args.signature_to,
            endpoint=args.to_endpoint,
            credentials_dir=args.to_credentials,
            private_addresses=args.to_private_addresses,
            approvals_out=args.approvals_out,
        ),
        backup_public_keys=args.backup_public_key,
        public_key=args.public_key,
        certificate_root=args.certificate_root,
        policy_file=args.policy,
        certificate_subject=args.certificate_subject,
        certificate_san=args.certificate_san,
        any_certificate_identity=args.any_certificate_identity,
    )


def _add_restore(commands: typing.Any) -> None:
    restore = commands.add_parser(
        "restore",
        help="bring a model back from a backup, every file verified",
        description="Restore the model of a backup of NAMESPACE/NAME (the latest, or --backup)"
        " into --to (its S3 source, or a new local folder), after checking the backup manifest"
        " under --backup-public-key, every file against it, the model's signature under"
        " --policy (or --public-key / --certificate-root) and its root digest against the"
        " backup's; the backed-up approvals are judged again under --policy. Or --export the"
        " whole backup as a folder, with its manifest beside it, for `modelguard verify` and"
        " `model_signing verify`. Exit 0 and a summary; exit 1 and `REASON: message` naming the"
        " file that failed (a local folder is then left empty).",
    )
    restore.add_argument("model_deployment", metavar="NAMESPACE/NAME")
    restore.add_argument("--backup", metavar="ID", help="the backup's id (default: the latest)")
    store = restore.add_argument_group("the backup store")
    store.add_argument(
        "--store-endpoint", metavar="URL", help="the S3 server, scheme://host[:port]"
    )
    store.add_argument("--bucket", metavar="NAME", help="the BackupStore's bucket")
    store.add_argument("--store-prefix", default="", metavar="PREFIX", help="its spec.s3.prefix")
    store.add_argument(
        "--store-volume", type=pathlib.Path, metavar="DIR", help="a volume store, mounted here"
    )
    store.add_argument(
        "--store-credentials",
        type=pathlib.Path,
        metavar="DIR",
        help="a folder holding AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ... (a Secret's"
        " layout); default: those environment variables",
    )
    store.add_argument(
        "--store-private-addresses",
        action="store_true",
        help="let the endpoint's host name resolve to private addresses",
    )
    store.add_argument(
        "--backup-public-key",
        type=pathlib.Path,
        action="append",
        required=True,
        metavar="PEM",
        help="the operator's backup public key (BackupStore status.signingKey.publicKey);"
        " repeat it, or put several in one file, for keys rotated out",
    )
    trust = restore.add_mutually_exclusive_group()
    trust.add_argument("--policy", type=pathlib.Path, metavar="TRUSTPOLICY.yaml")
    trust.add_argument("--public-key", type=pathlib.Path, metavar="PEM", help="the model signer")
    trust.add_argument("--certificate-root", type=pathlib.Path, metavar="PEM")
    restore.add_argument("--certificate-subject", metavar="DN")
    restore.add_argument("--certificate-san", metavar="NAME")
    restore.add_argument("--any-certificate-identity", action="store_true")
    where = restore.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to", metavar="s3://BUCKET/PREFIX/|DIR", help="where the model's files go back"
    )
    where.add_argument(
        "--export", type=pathlib.Path, metavar="DIR", help="the whole backup as a new folder"
    )
    restore.add_argument(
        "--signature-to",
        metavar="URI|FILE",
        help="where the model's signature goes (default: model.sig inside --to)",
    )
    restore.add_argument("--to-endpoint", metavar="URL", help="the model store's S3 server")
    restore.add_argument("--to-credentials", type=pathlib.Path, metavar="DIR")
    restore.add_argument("--to-private-addresses", action="store_true")
    restore.add_argument(
        "--approvals-out",
        type=pathlib.Path,
        metavar="FILE",
        help="write the backed-up ModelApprovals here, for `kubectl apply -f`",
    )
    restore.set_defaults(handler=_restore)


def _backup_public_key(args: argparse.Namespace) -> int:
    from modelguard.backup import manifest  # noqa: PLC0415

    try:
        print(manifest.load_key(args.key_file).public_pem(), end="")
    except manifest.InvalidKey as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def _add_backup(commands: typing.Any) -> None:
    backup = commands.add_parser("backup", help="the operator's backups")
    backup_commands = backup.add_subparsers(dest="backup_command", required=True)
    public = backup_commands.add_parser(
        "public-key",
        help="print the public key of a backup key",
        description="Print the PEM public key of the backup key in KEY (the chart's Secret"
        " <release>-backup-key, key `key.pem`): what `modelguard restore --backup-public-key`"
        " and `model_signing verify key` check backup manifests with.",
    )
    public.add_argument("--key-file", type=pathlib.Path, required=True, metavar="KEY")
    public.set_defaults(handler=_backup_public_key)


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


def _add_audit(commands: typing.Any) -> None:
    audit = commands.add_parser("audit", help="the operator's audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_commands.add_parser(
        "verify",
        help="prove the audit log complete and unchanged against its signed checkpoints",
        description="Check the audit records in LOG (the operator's --audit-log, or `kubectl"
        " logs` of the operator) against the log's signed checkpoints. Only records signed by"
        " one of the public keys count; other lines are ignored (and counted). Each record must"
        " be unchanged and follow the one before it, and the records of each segment must give"
        " the Merkle root of every checkpoint of that segment: so an edited, deleted, inserted"
        " or moved record, a cut tail, a removed segment, a chain rewritten from an edit onwards"
        " and an old checkpoint offered for newer ones all show. Exit 0 and `N records in K"
        " segments, chain intact; ...`; exit 1 and the first problem (`line L: ...`) otherwise.",
    )
    check.add_argument("file", metavar="LOG", help="the audit log, or - for standard input")
    check.add_argument(
        "--public-key",
        action="append",
        metavar="KEY",
        help="the log's verifier key (<name>+<key ID>+<key>, see `audit public-key`), or a file"
        " of them, one per line; repeatable: after a key rotation give every key of the log",
    )
    where = check.add_mutually_exclusive_group()
    where.add_argument(
        "--checkpoints",
        action="append",
        metavar="SOURCE",
        help="where the checkpoints are: a directory or file of signed notes (a copy of the"
        " backup store), or `kubectl get configmaps -l audit.modelguard.dev/log -o json|yaml`"
        " output, or - for standard input; repeatable",
    )
    where.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="check the records and their chain only: a missing tail, a removed segment or a"
        " chain rewritten with the key would not show",
    )
    check.add_argument(
        "--since",
        metavar="TIME",
        help="the log was collected from TIME on (a date or RFC 3339 time): checkpointed"
        " segments that started earlier need not be in it",
    )
    check.set_defaults(handler=_audit_verify)
    public = audit_commands.add_parser(
        "public-key",
        help="print the verifier key of an audit key, to give to verifiers",
        description="Print the verifier key (<name>+<key ID>+<base64 key>, the format of"
        " C2SP signed notes and Go's sumdb/note) of the Ed25519 audit key in KEY under the log"
        " name NAME. It lets anyone verify the log and nobody sign: publish it.",
    )
    public.add_argument(
        "--key-file",
        required=True,
        type=pathlib.Path,
        metavar="KEY",
        help="the audit key, PEM (the chart's Secret <release>-audit-key, key `key.pem`)",
    )
    public.add_argument(
        "--log-name",
        required=True,
        metavar="NAME",
        help="the log's name (the chart's audit.logName; default <namespace>/<release>)",
    )
    public.set_defaults(handler=_audit_public_key)


def _fetch_verify(args: argparse.Namespace) -> int:
    from modelguard.commands import startup  # noqa: PLC0415

    # The agent needs the sources and the trust layer, not kopf.
    with startup.frozen_imports():
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


def _audit_proxy(args: argparse.Namespace) -> int:
    from modelguard.agent import auditproxy, inputrecords  # noqa: PLC0415
    from modelguard.audit import keys, sink  # noqa: PLC0415

    # In a pod the host name is the pod's name.
    host = socket.gethostname()
    log_name = args.log_name.replace("{pod}", host)
    try:
        redaction = inputrecords.Redaction.of(
            paths=args.redact_path or (), headers=args.redact_header or ()
        )
        keys.Verifier(name=log_name, public=bytes(32))
    except (inputrecords.InvalidRule, keys.InvalidKey) as error:
        print(f"modelguard agent audit-proxy: {error}", file=sys.stderr)
        return 2
    settings = auditproxy.Settings(
        listen_host=args.listen_host,
        listen_port=args.port,
        upstream_host=args.upstream_host,
        upstream_port=args.upstream_port,
        mode=args.inputs,
        log_name=log_name,
        max_request_bytes=args.max_request_bytes,
        rate=args.rate,
        burst=args.burst or max(1, int(args.rate or 1)),
        max_connections=args.max_connections,
        redaction=redaction,
        identity_header=args.identity_header,
        payload_bytes=args.payload_bytes,
        queue_bytes=args.queue_bytes,
        metrics_port=args.metrics_port,
        cadence=sink.Cadence(records=args.checkpoint_records, seconds=args.checkpoint_seconds),
    )
    instance = args.instance or host
    return auditproxy.run(settings, instance=instance)


def _positive_rate(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number > 1e9:
        raise argparse.ArgumentTypeError(f"must be above 0 (and at most 1e9), got {value}")
    return number


def _add_audit_proxy(agent_commands: typing.Any) -> None:
    from modelguard.agent import auditproxy, inputrecords  # noqa: PLC0415

    proxy = agent_commands.add_parser(
        "audit-proxy",
        help="the sidecar in front of the model server that records every inference request",
        description="Pass HTTP/1.1 requests on to the model server on UPSTREAM_PORT, streaming"
        " bodies, and write one signed, chained record per request (and signed checkpoints) to"
        " standard output as JSON lines; refuse requests over the size or rate limit with 413"
        " or 429, recorded too. Stops on SIGTERM after the requests in flight, closing its log"
        " segment with a last checkpoint.",
    )
    proxy.add_argument("--port", type=int, required=True, help="where callers connect")
    proxy.add_argument("--listen-host", default="0.0.0.0", help="default 0.0.0.0 (the pod)")  # noqa: S104
    proxy.add_argument(
        "--upstream-port", type=int, required=True, help="the model server's port on localhost"
    )
    proxy.add_argument("--upstream-host", default="127.0.0.1", help="default 127.0.0.1")
    proxy.add_argument(
        "--inputs",
        choices=[inputrecords.METADATA, inputrecords.PAYLOAD],
        default=inputrecords.METADATA,
        help="Metadata (default): time, caller, sizes, digest, status, latency; Payload: also"
        " the redacted headers and JSON body",
    )
    proxy.add_argument(
        "--log-name",
        required=True,
        help="the input log's name (its key's name); {pod} stands for the host name, which in a"
        " pod is the pod's name, e.g. team-a/{pod}/inputs",
    )
    proxy.add_argument(
        "--max-request-bytes",
        type=_at_least_one,
        required=True,
        metavar="N",
        help="larger request bodies are refused with 413 (streamed bodies as soon as they pass it)",
    )
    proxy.add_argument(
        "--rate",
        type=_positive_rate,
        metavar="RPS",
        help="requests per second over all callers; more are refused with 429 (default: none)",
    )
    proxy.add_argument("--burst", type=_at_least_one, metavar="N", help="default: the rate")
    proxy.add_argument(
        "--max-connections",
        type=_at_least_one,
        default=auditproxy.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="callers' connections served at once; past it a new one is answered 503 and"
        f" recorded (default {auditproxy.DEFAULT_MAX_CONNECTIONS})",
    )
    proxy.add_argument(
        "--redact-path",
        action="append",
        metavar="JSONPATH",
        help="Payload: a JSON path whose values are replaced by length and HMAC (repeatable)",
    )
    proxy.add_argument(
        "--redact-header",
        action="append",
        metavar="NAME",
        help="Payload: a header whose value is replaced (repeatable; credentials always are)",
    )
    proxy.add_argument(
        "--identity-header",
        metavar="NAME",
        help="the header the platform sets to the caller's identity (only when it is trusted)",
    )
    proxy.add_argument(
        "--payload-bytes",
        type=_at_least_one,
        default=64 * 1024,
        metavar="N",
        help="Payload: bodies up to this size are recorded (default 64 KiB); larger by digest",
    )
    proxy.add_argument(
        "--queue-bytes",
        type=_at_least_one,
        default=8 << 20,
        metavar="N",
        help="bytes of records waiting to be written; past it requests are served unrecorded,"
        " counted, and the count recorded (default 8 MiB)",
    )
    proxy.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    proxy.add_argument("--checkpoint-records", type=_at_least_one, default=1000, metavar="N")
    proxy.add_argument("--checkpoint-seconds", type=_at_least_one, default=300, metavar="S")
    proxy.add_argument("--instance", help="named in the first record (default: the host name)")
    proxy.set_defaults(handler=_audit_proxy)


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
    _add_audit_proxy(agent_commands)


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
        "--readiness",
        metavar="URL",
        help="serve the readiness probe here, e.g. http://0.0.0.0:8081/readyz: 503 until the"
        " caches the admission webhooks answer from are filled, then 200",
    )
    elected = run.add_argument_group(
        "leader election (configured by the chart): of several replicas, the holder of a Lease"
        " reconciles, and every replica serves the admission webhooks"
    )
    elected.add_argument(
        "--leader-election-lease",
        default=os.environ.get("MODELGUARD_LEADER_ELECTION_LEASE") or None,
        metavar="NAME",
        help="take part in the election of this Lease (coordination.k8s.io) and reconcile only"
        " while holding it; default $MODELGUARD_LEADER_ELECTION_LEASE, else none: this process"
        " reconciles alone (never run two so)",
    )
    elected.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        metavar="NS",
        help="the Lease's namespace (default $POD_NAMESPACE, the operator's own)",
    )
    served = run.add_argument_group("Prometheus metrics (configured by the chart)")
    served.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics (text format, plain HTTP) on this port; default: none",
    )
    served.add_argument(
        "--metrics-addr",
        default="0.0.0.0",  # noqa: S104 - a pod's port; the chart's NetworkPolicy bounds who asks
        metavar="ADDR",
        help="the address to serve them on (default 0.0.0.0: every address of the pod)",
    )
    audit = run.add_argument_group("audit log (configured by the chart)")
    audit.add_argument(
        "--audit-log",
        default="-",
        metavar="PATH",
        help="append audit records to this file; - (the default) is standard output, which then"
        " carries nothing else (logs go to standard error)",
    )
    audit.add_argument(
        "--audit-key-file",
        type=pathlib.Path,
        default=_env_path("MODELGUARD_AUDIT_KEY_FILE"),
        metavar="KEY",
        help="the installation's Ed25519 audit key (PEM) that signs every record and checkpoint;"
        " required (default $MODELGUARD_AUDIT_KEY_FILE)",
    )
    audit.add_argument(
        "--audit-log-name",
        default=os.environ.get("MODELGUARD_AUDIT_LOG_NAME"),
        metavar="NAME",
        help="the log's name, which its key and every checkpoint's origin carry; required"
        " (default $MODELGUARD_AUDIT_LOG_NAME)",
    )
    audit.add_argument(
        "--audit-checkpoint-records",
        type=_at_least_one,
        default=1000,
        metavar="N",
        help="sign a checkpoint after N records (default 1000)",
    )
    audit.add_argument(
        "--audit-checkpoint-seconds",
        type=_at_least_one,
        default=300,
        metavar="T",
        help="or T seconds after the last one once records were added (default 300); also at"
        " the start and the stop",
    )
    audit.add_argument(
        "--audit-checkpoints-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        metavar="NS",
        help="store checkpoints as immutable ConfigMaps in this namespace (default"
        " $POD_NAMESPACE, the operator's own)",
    )
    audit.add_argument(
        "--audit-checkpoints-prefix",
        default="modelguard-audit",
        metavar="NAME",
        help="name prefix and `audit.modelguard.dev/log` label of those ConfigMaps (default"
        " modelguard-audit; the chart: <release>-audit)",
    )
    run.add_argument(
        "--verify-concurrency",
        type=_at_least_one,
        default=2,
        metavar="N",
        help="signature files fetched and verified at once (default 2); each may take some"
        " 170 MiB, so raise it only with the memory limit (docs/chart.md)",
    )
    _add_model_pod_flags(run)
    _add_webhook_flags(run)
    _add_backup_flags(run)
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
    _add_restore(commands)
    _add_backup(commands)
    _add_agent(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
