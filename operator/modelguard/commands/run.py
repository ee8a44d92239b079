"""`modelguard run`: the operator itself: its audit key loaded, its logging set up, then kopf
running the handlers (which importing `handlers` registers)."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import socket
import typing

import kopf

# Importing handlers registers them with kopf.
from modelguard import handlers, logs
from modelguard import metrics as operator_metrics
from modelguard.admission import readiness, serving
from modelguard.api import errors, placement
from modelguard.audit import keys, sink
from modelguard.backup import manifest
from modelguard.commands import files
from modelguard.reconcile import vocabulary

# The ConfigMaps' names are `<prefix>-<segment>-<size>-<hash>` and their `audit.modelguard.dev/log`
# label is the prefix: a DNS label, at most 63 characters.
_PREFIX: typing.Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """Where the audit log's checkpoints go and how often (`modelguard run --audit-*`)."""

    log_name: str | None
    cadence: sink.Cadence
    namespace: str | None
    prefix: str


@dataclasses.dataclass(frozen=True)
class MetricsOptions:
    """Where Prometheus metrics are served (`modelguard run --metrics-*`); port None: nowhere."""

    port: int | None
    addr: str


@dataclasses.dataclass(frozen=True)
class ModelPodOptions:
    """Where every model pod runs (`modelguard run --model-pod-*`): JSON as given, None: unset."""

    node_selector: str | None = None
    tolerations: str | None = None


@dataclasses.dataclass(frozen=True)
class LeaderElectionOptions:
    """The Lease that elects the one replica that reconciles (`modelguard run
    --leader-election-*`); no lease: this process reconciles alone."""

    lease: str | None = None
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class BackupOptions:
    """What `modelguard run` is told about backups (all optional: no key, no backups)."""

    key_file: pathlib.Path | None = None
    trusted_keys_file: pathlib.Path | None = None
    volume_root: pathlib.Path | None = None
    drill_scratch: pathlib.Path | None = None
    concurrency: int = 1


def run(
    *,
    namespaces: typing.Sequence[str],
    liveness: str | None,
    audit_log: str,
    readiness_url: str | None = None,
    audit_key_file: pathlib.Path | None,
    audit: AuditOptions,
    verify_concurrency: int,
    model_pods: ModelPodOptions = ModelPodOptions(),
    backup: BackupOptions = BackupOptions(),
    leader_election: LeaderElectionOptions = LeaderElectionOptions(),
    webhook: serving.Options,
    metrics: MetricsOptions = MetricsOptions(port=None, addr=""),
    verbose: bool,
    debug: bool,
) -> int:
    """Runs the operator until it is stopped; SystemExit with the reason when it cannot start.
    No `namespaces`: every namespace."""
    model_placement = _placement(model_pods)
    election = _leader_election(leader_election)
    signer, namespace = _audit(audit_key_file, audit)
    backup_key, trusted = _backup_keys(backup)
    configure_logging(verbose=verbose, debug=debug)
    recorder = operator_metrics.Metrics(reasons=vocabulary.reasons())
    probe = _bind_readiness(readiness_url)
    server = _serve_metrics(recorder, metrics)
    try:
        kopf.run(
            memo=kopf.Memo(
                webhook=webhook,
                audit_log=audit_log,
                audit_signer=signer,
                audit_cadence=audit.cadence,
                audit_namespace=namespace,
                audit_prefix=audit.prefix,
                verify_concurrency=verify_concurrency,
                placement=model_placement,
                metrics=recorder,
                backup_key=backup_key,
                backup_trusted_keys=trusted,
                backup_volume_root=backup.volume_root,
                drill_scratch=backup.drill_scratch,
                backup_concurrency=backup.concurrency,
                leader_election=election,
                readiness=probe,
            ),
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
            # No kopf peering: it would stop a standby's watches, and with them the caches its
            # admission webhooks answer from. Replicas elect the one that reconciles by a Lease
            # (handlers.LeaderElection; docs/decisions).
            standalone=True,
        )
    finally:
        if server is not None:
            server.close()
        if probe is not None:
            probe[0].close()
    return 0


def _bind_readiness(url: str | None) -> tuple[socket.socket, str] | None:
    """The readiness probe's socket and path, bound before kopf starts (handlers serve it)."""
    if url is None:
        return None
    try:
        endpoint = readiness.parse(url)
        return readiness.bind(endpoint), endpoint.path
    except ValueError as error:
        raise SystemExit(f"--readiness: {error}") from None
    except OSError as error:
        raise SystemExit(f"--readiness {url}: {error.strerror}") from None


def _serve_metrics(
    recorder: operator_metrics.Metrics, options: MetricsOptions
) -> operator_metrics.Server | None:
    """The metrics' HTTP server, started before kopf so that a port already taken stops the
    start with a message rather than a traceback later."""
    if options.port is None:
        return None
    try:
        return recorder.serve(port=options.port, addr=options.addr)
    except OSError as error:
        raise SystemExit(
            f"--metrics-port {options.port} (--metrics-addr {options.addr}): {error.strerror}"
        ) from None


def _leader_election(options: LeaderElectionOptions) -> handlers.LeaderElection | None:
    """The Lease to take part in the election of; SystemExit when it cannot be used."""
    if options.lease is None:
        return None
    if not _LEASE_NAME.fullmatch(options.lease):
        raise SystemExit(
            f"--leader-election-lease {options.lease!r}: expected a Lease name (lowercase letters,"
            " digits, '-' and '.', starting and ending with a letter or digit, at most 253"
            " characters)"
        )
    if not options.namespace:
        raise SystemExit(
            "--leader-election-namespace (or POD_NAMESPACE) is required with"
            " --leader-election-lease: the namespace of the Lease (the operator's own; the chart"
            " sets it)"
        )
    return handlers.LeaderElection(lease=options.lease, namespace=options.namespace)


_LEASE_NAME: typing.Final = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def _placement(options: ModelPodOptions) -> placement.Placement:
    """The model pods' placement; SystemExit naming each setting that is wrong: a placement the
    API server would refuse would stop every rollout, one it accepts and that was not meant
    would run models where they should not."""
    try:
        return placement.parse(node_selector=options.node_selector, tolerations=options.tolerations)
    except errors.InvalidObjectError as error:
        raise SystemExit(
            "the model pods' placement (the chart's modelPods: --model-pod-node-selector,"
            " --model-pod-tolerations or $MODELGUARD_MODEL_POD_NODE_SELECTOR,"
            " $MODELGUARD_MODEL_POD_TOLERATIONS) is not valid:\n  " + "\n  ".join(error.messages)
        ) from None


def _backup_keys(
    options: BackupOptions,
) -> tuple[manifest.BackupKey | None, list[typing.Any]]:
    """The backup key and the public keys rotated out; SystemExit naming the file when one
    cannot be used (a key given and not usable is never ignored)."""
    key = None
    if options.key_file is not None:
        try:
            key = manifest.load_key(options.key_file)
        except manifest.InvalidKey as error:
            raise SystemExit(str(error)) from None
    trusted: list[typing.Any] = []
    if options.trusted_keys_file is not None:
        try:
            trusted = manifest.load_public_keys(
                [files.read(options.trusted_keys_file, what="--backup-trusted-keys-file")]
            )
        except Exception as error:
            raise SystemExit(f"--backup-trusted-keys-file: {error}") from None
    return key, trusted


def _audit(key_file: pathlib.Path | None, options: AuditOptions) -> tuple[keys.Signer, str]:
    """The audit key and the checkpoints' namespace; SystemExit saying what is missing."""
    if key_file is None:
        raise SystemExit(
            "--audit-key-file (or MODELGUARD_AUDIT_KEY_FILE) is required: the installation's"
            " Ed25519 audit key in PEM (the chart mounts its Secret); it signs every audit record"
            " and checkpoint"
        )
    if not options.log_name:
        raise SystemExit(
            "--audit-log-name (or MODELGUARD_AUDIT_LOG_NAME) is required: the name verifiers know"
            " this log and its key by (the chart's audit.logName, default <namespace>/<release>)"
        )
    if not options.namespace:
        raise SystemExit(
            "--audit-checkpoints-namespace (or POD_NAMESPACE) is required: the namespace where the"
            " operator stores the audit log's checkpoints (its own; the chart sets it)"
        )
    if not _PREFIX.fullmatch(options.prefix):
        raise SystemExit(
            f"--audit-checkpoints-prefix {options.prefix!r}: expected lowercase letters, digits"
            " and '-', starting and ending with a letter or digit, at most 63 characters (it is"
            " also a label value)"
        )
    try:
        return keys.load_signer(key_file, name=options.log_name), options.namespace
    except keys.InvalidKey as error:
        raise SystemExit(str(error)) from None


def configure_logging(*, verbose: bool, debug: bool) -> None:
    """kopf's log format on standard error, every line escaped: what a log line quotes (an S3
    error, an object's name, a traceback) never starts a line of its own."""
    kopf.configure(verbose=verbose, debug=debug, log_prefix=True)
    logs.escape_handlers(logging.getLogger())
    # lightkube's HTTP stack logs every request at debug level; our own lines are what matter.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # One access line per admission request is noise at hundreds per second, and costs time.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(serving.DenialLogFilter())
