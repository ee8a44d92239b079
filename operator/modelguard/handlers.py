"""kopf registrations, and nothing else: each handler is one call into the reconcile layer."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import secrets
import socket
import typing

import kopf

from modelguard import kube, metrics
from modelguard.admission import decisions, readiness, serving, webhooks
from modelguard.api import backupstore, conventions, modelapproval, trustpolicy, v1alpha1
from modelguard.api import placement as placement_api
from modelguard.audit import sink
from modelguard.backup import worker
from modelguard.builders import labels
from modelguard.reconcile import (
    backupjobs,
    backupstores,
    checkpoints,
    checkpointstores,
    election,
    modeldeployment,
    runtime,
    schedule,
    verification,
)

logger = logging.getLogger(__name__)

AGENT_IMAGE_ENV = "MODELGUARD_AGENT_IMAGE"
# The chart's ClusterRole that a namespace binds to let the operator read its storage credentials;
# its name carries the release's, so messages take it from here.
CREDENTIALS_ROLE_ENV = "MODELGUARD_SOURCE_CREDENTIALS_ROLE"
# Seconds a verified signature bundle is trusted to be what its URI still holds (default 300).
REREAD_ENV = "MODELGUARD_BUNDLE_REREAD_SECONDS"


@kopf.on.login()
def login(logger: kopf.Logger, **_: typing.Any) -> kopf.ConnectionInfo | None:
    # kopf calls this at start and again whenever the API server answers 401 to every credential
    # it holds: reading the token file each time is what follows a renewed (projected) token.
    # kopf's own kubeconfig login would keep sending the first token, and stop the operator with
    # "Ran out of valid credentials" once it expired.
    try:
        found = kube.credentials()
    except kube.CredentialsError as error:
        logger.error(f"cannot log in to the API server: {error}")
        return None
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=found.ca_path,
        ca_data=found.ca_data,
        insecure=found.insecure,
        token=found.token,
        certificate_path=found.certificate_path,
        certificate_data=found.certificate_data,
        private_key_path=found.private_key_path,
        private_key_data=found.private_key_data,
        username=found.username,
        password=found.password,
        default_namespace=found.namespace,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaderElection:
    """The Lease whose holder is the one replica that reconciles (`modelguard run
    --leader-election-*`); without one, the process reconciles alone."""

    lease: str
    namespace: str


@dataclasses.dataclass
class _Fleet:
    """What a replica that starts leading reconciles: every model, read from kopf's index (one
    object for the whole operator, as kopf hands each handler a copy of the memo)."""

    models: kopf.Index[str | None, str] | None = None


class _LeaderDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's record of the last handled spec, written by the leading replica only: a standby
    skips the changes it sees (its handlers are filtered out) and kopf would otherwise mark them
    handled, by a write of its own."""

    def __init__(self, leadership: election.Leadership, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self._leadership = leadership

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: typing.Any) -> None:
        if self._leadership.leading:
            super().store(body=body, patch=patch, essence=essence)


def _leading(memo: kopf.Memo, **_: typing.Any) -> bool:
    """kopf's filter of the handlers that reconcile: on the elected replica only (its writes are
    fenced by the clock besides). A standby's changes are not lost: whoever starts leading
    reconciles every model."""
    leader: election.Leadership = memo.leadership
    return leader.elected


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: typing.Any) -> None:
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    kube_client = kube.Kube.from_environment()
    _elect(memo, kube_client, instance=instance)
    # Progress and diff-base live in annotations with our prefix, so that kopf writes nothing
    # into .status, whose schema stays strict and ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=v1alpha1.GROUP)
    settings.persistence.diffbase_storage = _LeaderDiffBaseStorage(
        memo.leadership, prefix=v1alpha1.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{v1alpha1.GROUP}/finalizer"
    # Explicit watch timeouts: a silently stalled watch is a known failure mode otherwise.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.queueing.worker_limit = 64
    # We post our own Events (reasons users can filter on); kopf reports only its own failures.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = f"{v1alpha1.GROUP}/operator"
    agent_image = os.environ.get(AGENT_IMAGE_ENV, "")
    if "@sha256:" not in agent_image:
        # Without it no model pod could verify its files; refuse to start rather than half-work.
        raise kopf.PermanentError(
            f"{AGENT_IMAGE_ENV} must name the agent image pinned by digest "
            f"(image@sha256:<64 hex>); got {agent_image!r}. The chart sets it."
        )
    reread = _reread_interval(os.environ.get(REREAD_ENV))
    webhooks.configure(settings, memo)
    audit_log: str = memo.get("audit_log") or sink.STANDARD_OUTPUT
    # Where the checkpoints go besides the ConfigMaps: a copy nobody can delete, in the
    # BackupStores that ask for one; each store's check tells how that goes.
    checkpoint_stores = checkpointstores.BackupStores(
        kube_client,
        log_prefix=memo.audit_prefix,
        operator_namespace=os.environ.get("POD_NAMESPACE") or None,
        volume_root=memo.get("backup_volume_root") or backupjobs.DEFAULT_VOLUME_ROOT,
    )
    # Opened last: a retried startup would otherwise start an empty segment per attempt.
    try:
        memo.publisher = await checkpoints.start(
            kube_client,
            audit_log=audit_log,
            instance=instance,
            signer=memo.audit_signer,
            cadence=memo.audit_cadence,
            namespace=memo.audit_namespace,
            prefix=memo.audit_prefix,
            also=[checkpoint_stores],
        )
    except OSError as error:
        # Decisions nobody could audit afterwards are not taken: refuse to start.
        raise kopf.PermanentError(f"--audit-log {audit_log!r}: {error}") from error
    audit = memo.publisher.audit

    async def run(namespace: str, name: str) -> None:
        await _reconcile_quietly(memo, namespace=namespace, name=name)

    memo.scheduler = schedule.Scheduler(run)
    recorder: metrics.Metrics = memo.get("metrics") or metrics.Metrics()
    memo.metrics = recorder
    leader: election.Leadership = memo.leadership
    memo.context = runtime.Context(
        # Reconciles write through a client that refuses once this replica stops leading; the
        # audit checkpoints above, this replica's own log, are written whoever leads.
        kube=kube_client.fenced(lambda: leader.leading),
        instance=instance,
        agent_image=agent_image,
        placement=memo.get("placement") or placement_api.NONE,
        credentials_role=os.environ.get(CREDENTIALS_ROLE_ENV) or "modelguard-source-credentials",
        audit=audit,
        verification_slots=verification.Slots(
            memo.get("verify_concurrency") or verification.DEFAULT_CONCURRENCY
        ),
        recheck=memo.scheduler.recheck,
        verification_cache=verification.Cache(reread=reread),
        metrics=recorder,
        checkpoint_outcome=checkpoint_stores.outcome,
    )
    _configure_backups(memo)
    # Checked again at once when a store starts or stops taking checkpoints.
    checkpoint_stores.changed = lambda name: memo.store_scheduler.fan_out([("", name)])
    memo.checkpoint_stores = checkpoint_stores
    _measure(recorder, memo)
    await _serve_readiness(memo)


async def _serve_readiness(memo: kopf.Memo) -> None:
    """The readiness probe (`--readiness`), Ready once the admission caches are filled."""
    memo.readiness_runner = None
    probe: tuple[socket.socket, str] | None = memo.get("readiness")
    if probe is None:
        return
    caches: webhooks.Caches = memo.admission_caches
    memo.readiness_runner = await readiness.serve(
        probe[0], path=probe[1], filled=lambda: caches.filled
    )


def _elect(memo: kopf.Memo, kube_client: kube.Kube, *, instance: str) -> None:
    """memo.leadership: this replica's part in the election (started once the caches are warm),
    or the only replica."""
    memo.fleet = _Fleet()
    options: LeaderElection | None = memo.get("leader_election")
    if options is None:
        memo.leadership = election.Always()
        return
    memo.leadership = election.Election(
        kube_client,
        namespace=options.namespace,
        name=options.lease,
        # The pod's name, made unique: two processes given one name must not both hold the Lease.
        identity=f"{instance}_{secrets.token_hex(4)}",
        on_started=lambda: _started_leading(memo),
        on_stopped=lambda: _stopped_leading(memo),
    )


def _started_leading(memo: kopf.Memo) -> None:
    """Whatever changed while another replica led (or nobody did, between its end and this
    start) is reconciled now: every model and every BackupStore, as at a start."""
    fleet: _Fleet = memo.fleet
    models: typing.Mapping[str | None, typing.Iterable[str]] = fleet.models or {}
    started = memo.scheduler.fan_out(
        (namespace, name) for namespace, names in models.items() if namespace for name in names
    )
    logger.info("leading: reconciling every model (%d) and BackupStore", started)
    memo.store_scheduler.spawn(_reconcile_every_store(memo))


async def _reconcile_every_store(memo: kopf.Memo) -> None:
    context: runtime.Context = memo.context
    try:
        stores = await context.kube.list_backup_stores()
    except kube.ApiError as error:
        # Each is reconciled again at its next event or check.
        logger.warning("leading: cannot list the BackupStores: %s", error.message)
        return
    memo.store_scheduler.fan_out(("", store["metadata"]["name"]) for store in stores)


def _stopped_leading(memo: kopf.Memo) -> None:
    # The writes already stopped (the fenced client); what was due stays due for the next leader,
    # which reconciles everything when it starts.
    memo.scheduler.clear()
    memo.store_scheduler.clear()
    memo.metrics.forget_models()


def _measure(recorder: metrics.Metrics, memo: kopf.Memo) -> None:
    """The metrics read from the process's state when Prometheus scrapes."""
    context: runtime.Context = memo.context
    scheduler: schedule.Scheduler = memo.scheduler
    publisher: checkpoints.Publisher = memo.publisher
    caches: webhooks.Caches = memo.admission_caches
    recorder.live(
        "modelguard_verification_cache_entries",
        "Entries of the signature verification cache, by table (each bounded).",
        lambda: {(table,): n for table, n in context.verification_cache.sizes().items()},
        labels=("table",),
    )
    recorder.live(
        "modelguard_verification_slots",
        "Signature files being fetched and verified (in_use, at most --verify-concurrency) and "
        "waiting for a slot.",
        lambda: {
            ("in_use",): context.verification_slots.in_use,
            ("waiting",): context.verification_slots.waiting,
        },
        labels=("state",),
    )
    recorder.live(
        "modelguard_reconcile_queue_depth",
        "Reconciles waiting: models due again at a set time (rechecks), and background "
        "reconciles started and not finished (background: fan-outs after a policy, namespace, "
        "approval or NetworkPolicy change, and rechecks that came due).",
        lambda: {("rechecks",): scheduler.scheduled, ("background",): scheduler.running},
        labels=("queue",),
    )
    recorder.live(
        "modelguard_admission_cache_entries",
        "Keys in the caches (kopf indexes) the admission webhooks answer from, by index; empty "
        "until kopf has listed everything once.",
        lambda: {(name,): len(index) for name, index in caches.indexes.items()},
        labels=("index",),
    )
    leader: election.Leadership = memo.leadership
    recorder.live(
        "modelguard_leader",
        "1 when this replica holds the operator's Lease and reconciles (always, without leader "
        "election), 0 on a standby, which only serves the admission webhooks.",
        lambda: {(): int(leader.leading)},
    )
    recorder.live(
        "modelguard_audit_records",
        "Audit records made since the operator started (this segment), by decision.",
        lambda: {(decision,): n for decision, n in context.audit.counts()[0].items()},
        labels=("decision",),
        counter=True,
    )
    recorder.live(
        "modelguard_audit_record_write_failures",
        "Audit records that could not be written to the log (the chain shows the gap).",
        lambda: {(): context.audit.counts()[1]},
        counter=True,
    )
    recorder.live(
        "modelguard_audit_checkpoints",
        "Signed checkpoints of the audit log stored (published), and attempts that failed "
        "(each is retried) or checkpoints dropped unpublished (failed).",
        lambda: {("published",): publisher.published, ("failed",): publisher.failed},
        labels=("result",),
        counter=True,
    )
    recorder.live(
        "modelguard_audit_checkpoints_pending",
        "Checkpoints signed and not yet stored.",
        lambda: {(): publisher.pending},
    )


def _reread_interval(value: str | None) -> datetime.timedelta:
    if not value:
        return verification.REREAD
    if not value.isdigit() or not 1 <= int(value) <= _MAX_REREAD_SECONDS:
        raise kopf.PermanentError(
            f"{REREAD_ENV} must be a whole number of seconds from 1 to {_MAX_REREAD_SECONDS}; "
            f"got {value!r}"
        )
    return datetime.timedelta(seconds=int(value))


_MAX_REREAD_SECONDS: typing.Final = 86400


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: typing.Any) -> None:
    # Not Ready from now on: the webhook Service stops sending reviews here while kopf stops.
    if memo.get("readiness_runner") is not None:
        await memo.readiness_runner.cleanup()
    # First: the Lease handed back, so that another replica takes over without waiting for it to
    # expire, and nothing more is written from here.
    if isinstance(memo.leadership, election.Election):
        await memo.leadership.stop()
    memo.scheduler.close()
    memo.store_scheduler.close()
    # The last checkpoints are still published below; no store is checked after this.
    memo.checkpoint_stores.changed = lambda _: None
    if memo.context.backups is not None:
        memo.context.backups.close()
    # The segment's last record and checkpoint; the pod's grace period bounds the wait.
    try:
        async with asyncio.timeout(_CHECKPOINT_GRACE_SECONDS):
            await memo.publisher.stop()
    except TimeoutError:
        memo.publisher.log_unpublished()
    await memo.context.kube.close()


_CHECKPOINT_GRACE_SECONDS: typing.Final = 10


# No kopf timers or daemons on ModelDeployment: kopf would put a finalizer on every object for them,
# and deleting a model (or its namespace) would then hang whenever the operator is down. Children
# need no cleanup of ours: the garbage collector follows their ownerReferences.
@kopf.on.resume(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, when=_leading)
@kopf.on.create(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, when=_leading)
@kopf.on.update(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, when=_leading)
async def model_deployment(
    namespace: str | None, name: str, memo: kopf.Memo, **_: typing.Any
) -> None:
    assert namespace is not None, "ModelDeployment is namespaced"
    await _reconcile(memo, namespace=namespace, name=name)


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def model_deployment_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: typing.Any
) -> None:
    """A ModelDeployment deleted: its metrics' state goes with it (no pass runs for a model with
    no children left to change)."""
    if type == "DELETED" and namespace is not None:
        memo.metrics.forget(namespace, name)


_MANAGED = {labels.MANAGED_BY: labels.MANAGER}


@kopf.on.event("apps", "v1", "deployments", labels=_MANAGED)
@kopf.on.event("", "v1", "services", labels=_MANAGED)
@kopf.on.event("", "v1", "serviceaccounts", labels=_MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=_MANAGED)
@kopf.on.event("", "v1", "pods", labels=_MANAGED)
async def managed_child(
    namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **_: typing.Any
) -> None:
    """A model's child changed: its rollout progressed (Ready may follow), someone edited it
    (drift, which the reconcile reverts), or a pod's verifying agent refused the files."""
    owner = meta.labels.get(labels.MODEL_DEPLOYMENT)
    if owner and namespace is not None:
        await _reconcile_quietly(memo, namespace=namespace, name=owner)


async def _reconcile(memo: kopf.Memo, *, namespace: str, name: str) -> None:
    if not _leading(memo):
        # A standby's events (and a former leader's timers) are left to the leading replica.
        return
    try:
        await modeldeployment.reconcile(memo.context, namespace=namespace, name=name)
    except runtime.RetryLater as error:
        raise kopf.TemporaryError(str(error), delay=5) from error


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def models_by_policy(
    namespace: str | None, name: str, spec: kopf.Spec, **_: typing.Any
) -> dict[str, tuple[str | None, str]]:
    """Which ModelDeployments answer to which TrustPolicy, kept current by kopf's watch."""
    return {str(spec.get("trustPolicy") or conventions.DEFAULT_TRUST_POLICY): (namespace, name)}


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, trustpolicy.PLURAL)
async def trust_policy_changed(name: str, memo: kopf.Memo, **kwargs: typing.Any) -> None:
    """A policy was created, changed or deleted: every model under it is verified again, what
    serves included, all at once."""
    # kopf passes every index by its handler's name.
    index: kopf.Index[str, tuple[str | None, str]] = kwargs["models_by_policy"]
    memo.scheduler.fan_out(
        (namespace, model) for namespace, model in index.get(name, []) if namespace is not None
    )


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def models_by_namespace(namespace: str | None, name: str, **_: typing.Any) -> dict[str | None, str]:
    """The ModelDeployments of each namespace."""
    return {namespace: name}


@kopf.on.event(
    "networking.k8s.io", "v1", "networkpolicies", labels={labels.MANAGED_BY: kopf.ABSENT}
)
async def network_policy_changed(
    namespace: str | None, memo: kopf.Memo, **kwargs: typing.Any
) -> None:
    """Someone else's NetworkPolicy appeared, changed or went: it may open (or stop opening) the
    pods of the namespace's models, which are reconciled again."""
    index: kopf.Index[str | None, str] = kwargs["models_by_namespace"]
    if namespace is not None:
        memo.scheduler.fan_out((namespace, model) for model in index.get(namespace, []))


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(name: str, memo: kopf.Memo, **kwargs: typing.Any) -> None:
    """A namespace's labels may have changed which TrustPolicies bind it: its models are
    reconciled again."""
    index: kopf.Index[str | None, str] = kwargs["models_by_namespace"]
    memo.scheduler.fan_out((name, model) for model in index.get(name, []))


# --- Admission webhooks ------------------------------------------------------------------------
# kopf serves them; the ValidatingWebhookConfiguration that routes requests here ships in the
# chart (settings.admission.managed stays unset). Each handler is one call into
# admission.webhooks, answered from memory only: the API server is waiting, with failurePolicy
# Fail for our objects. The validating handlers are coroutines although they never await: kopf
# would otherwise hand each request to a thread pool and back, a large share of the time an
# admission request takes.


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, trustpolicy.PLURAL, id=webhooks.TRUST_POLICIES)
def trust_policy_names(name: str, body: kopf.Body, **_: typing.Any) -> dict[str, kopf.Body]:
    return webhooks.index_trust_policy(name=name, body=body)


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, modelapproval.PLURAL, id=webhooks.APPROVALS_BY_MODEL)
def approvals_by_model(
    namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: typing.Any
) -> dict[tuple[str | None, str], kopf.Body]:
    return webhooks.index_approval(namespace=namespace, spec=spec, body=body)


@kopf.index("apps", "v1", "deployments", labels=_MANAGED, id=webhooks.MANAGED_DEPLOYMENTS)
def managed_deployments(
    namespace: str | None, name: str, meta: kopf.Meta, **_: typing.Any
) -> dict[tuple[str | None, str], str]:
    return webhooks.index_managed_deployment(namespace=namespace, name=name, meta=meta)


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, id=webhooks.POLICIES_BY_MODEL)
def policies_by_model(
    namespace: str | None, spec: kopf.Spec, **_: typing.Any
) -> dict[tuple[str | None, str], str]:
    return webhooks.index_policy_by_model(namespace=namespace, spec=spec)


@kopf.index("", "v1", "namespaces", id=webhooks.NAMESPACE_LABELS)
def namespace_labels(name: str, labels: kopf.Labels, **_: typing.Any) -> dict[str, dict[str, str]]:
    return webhooks.index_namespace(name=name, labels=labels)


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, id=webhooks.MODELS_BY_NAMESPACE)
def model_pods_by_namespace(
    namespace: str | None, name: str, body: kopf.Body, **_: typing.Any
) -> dict[str | None, decisions.ModelPods]:
    return webhooks.index_model_pods(namespace=namespace, name=name, body=body)


@kopf.index("", "v1", "pods", labels=_MANAGED, id=webhooks.MODEL_PODS)
def model_pods_by_name(
    namespace: str | None, name: str, labels: kopf.Labels, **_: typing.Any
) -> dict[tuple[str | None, str], str]:
    return webhooks.index_model_pod(namespace=namespace, name=name, pod_labels=labels)


@kopf.index("", "v1", "pods", labels=_MANAGED, id=webhooks.MODEL_POD_LABELS)
def model_pod_labels(
    namespace: str | None, labels: kopf.Labels, **_: typing.Any
) -> dict[tuple[str | None, str], dict[str, str]]:
    return webhooks.index_model_pod_labels(namespace=namespace, pod_labels=labels)


@kopf.on.event("", "v1", "namespaces")
async def admission_caches_filled(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.caches_filled(memo, kwargs)
    # kopf calls event handlers once every index is filled: a replica takes part in the election
    # only from then on, so that whoever leads starts from a complete view of the models.
    fleet: _Fleet = memo.fleet
    if fleet.models is None:
        fleet.models = kwargs["models_by_namespace"]
    if isinstance(memo.leadership, election.Election):
        memo.leadership.start()


@kopf.on.validate("apps", "v1", "deployments", id=serving.MANAGED_CHILD_PATH)
@kopf.on.validate("", "v1", "serviceaccounts", id=serving.MANAGED_CHILD_PATH)
@kopf.on.validate("", "v1", "services", id=serving.MANAGED_CHILD_PATH)
@kopf.on.validate("networking.k8s.io", "v1", "networkpolicies", id=serving.MANAGED_CHILD_PATH)
# What the model's Deployment spawns, and debug containers joining its pods.
@kopf.on.validate("apps", "v1", "replicasets", id=serving.MANAGED_CHILD_PATH)
@kopf.on.validate("", "v1", "pods", id=serving.MANAGED_CHILD_PATH)
@kopf.on.validate(
    "", "v1", "pods", subresource="ephemeralcontainers", id=serving.MANAGED_CHILD_PATH
)
async def validate_managed_child(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.managed_child(memo, kwargs)


@kopf.on.validate("apps", "v1", "deployments", subresource="scale", id=serving.MANAGED_SCALE_PATH)
async def validate_managed_scale(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.managed_scale(memo, kwargs)


@kopf.on.validate(
    v1alpha1.GROUP, v1alpha1.VERSION, trustpolicy.PLURAL, id=serving.TRUST_POLICY_PATH
)
async def validate_trust_policy(warnings: list[str], **kwargs: typing.Any) -> None:
    webhooks.trust_policy(warnings, kwargs)


@kopf.on.validate(
    v1alpha1.GROUP, v1alpha1.VERSION, modelapproval.PLURAL, id=serving.MODEL_APPROVAL_PATH
)
async def validate_model_approval(
    memo: kopf.Memo, warnings: list[str], **kwargs: typing.Any
) -> None:
    webhooks.model_approval(memo, warnings, kwargs)


@kopf.on.validate("networking.k8s.io", "v1", "networkpolicies", id=serving.NETWORK_POLICY_PATH)
async def validate_network_policy(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.network_policy(memo, kwargs)


# exec, attach, port-forward and proxy into a model's pods: CONNECT requests, which carry no
# labels; the webhook is sent every one in the guarded namespaces.
@kopf.on.validate(
    "", "v1", "pods", subresource="exec", operations=["CONNECT"], id=serving.MODEL_POD_CONNECT_PATH
)
@kopf.on.validate(
    "",
    "v1",
    "pods",
    subresource="attach",
    operations=["CONNECT"],
    id=serving.MODEL_POD_CONNECT_PATH,
)
@kopf.on.validate(
    "",
    "v1",
    "pods",
    subresource="portforward",
    operations=["CONNECT"],
    id=serving.MODEL_POD_CONNECT_PATH,
)
@kopf.on.validate(
    "", "v1", "pods", subresource="proxy", operations=["CONNECT"], id=serving.MODEL_POD_CONNECT_PATH
)
async def validate_model_pod_connect(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.model_pod_connect(memo, kwargs)


@kopf.on.validate(
    v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL, id=serving.MODEL_DEPLOYMENT_PATH
)
async def validate_model_deployment(memo: kopf.Memo, **kwargs: typing.Any) -> None:
    webhooks.model_deployment(memo, kwargs)


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def models_by_name(
    namespace: str | None, name: str, spec: kopf.Spec, **_: typing.Any
) -> dict[tuple[str | None, str], str]:
    """Which ModelDeployments serve which logical model, per namespace (approvals name models)."""
    return {(namespace, str(spec.get("model", {}).get("name", ""))): name}


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, modelapproval.PLURAL)
async def model_approval_changed(
    namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **kwargs: typing.Any
) -> None:
    """An approval appeared, changed or went: the models it names pass the gate again."""
    index: kopf.Index[tuple[str | None, str], str] = kwargs["models_by_name"]
    if namespace is not None:
        memo.scheduler.fan_out(
            (namespace, model) for model in index.get((namespace, str(spec.get("model", ""))), [])
        )


async def _reconcile_quietly(memo: kopf.Memo, *, namespace: str, name: str) -> None:
    """For event handlers and timers, which kopf does not retry: a failure is logged, and the
    model is due again shortly. No next event may come: the one that failed may have been the
    last change of a child (its Deployment's rollout done), and the model would stay Progressing
    (seen with a hundred models created at once, when the API server or the Lease refused)."""
    try:
        await _reconcile(memo, namespace=namespace, name=name)
    except kopf.TemporaryError as error:
        logger.warning("%s/%s: %s", namespace, name, error)
        memo.scheduler.recheck(
            namespace,
            name,
            datetime.datetime.now(datetime.UTC)
            + datetime.timedelta(seconds=error.delay or _RETRY_SECONDS),
        )


_RETRY_SECONDS: typing.Final = 5


# --- Backups -------------------------------------------------------------------------------------


def _configure_backups(memo: kopf.Memo) -> None:
    """The backup jobs of this process (run off the event loop by their own worker) and the
    timers of BackupStore checks."""
    context: runtime.Context = memo.context
    jobs = backupjobs.Jobs(
        kube_client=context.kube,
        key=memo.get("backup_key"),
        trusted_keys=memo.get("backup_trusted_keys") or (),
        operator_namespace=os.environ.get("POD_NAMESPACE") or None,
        instance=context.instance,
        audit=context.audit,
        volume_root=memo.get("backup_volume_root") or backupjobs.DEFAULT_VOLUME_ROOT,
        scratch=memo.get("drill_scratch") or backupjobs.DEFAULT_SCRATCH,
        runner=worker.Worker(concurrency=memo.get("backup_concurrency") or 1),
        credentials_role=context.credentials_role,
    )
    jobs.recheck = memo.scheduler.recheck
    memo.context = dataclasses.replace(context, backups=jobs)

    async def check(_: str, name: str) -> None:
        await _reconcile_store_quietly(memo, name=name)

    memo.store_scheduler = schedule.Scheduler(check)


@kopf.on.resume(v1alpha1.GROUP, v1alpha1.VERSION, backupstore.PLURAL, when=_leading)
@kopf.on.create(v1alpha1.GROUP, v1alpha1.VERSION, backupstore.PLURAL, when=_leading)
@kopf.on.update(v1alpha1.GROUP, v1alpha1.VERSION, backupstore.PLURAL, when=_leading)
async def backup_store(name: str, memo: kopf.Memo, **_: typing.Any) -> None:
    try:
        await _reconcile_store(memo, name=name)
    except runtime.RetryLater as error:
        raise kopf.TemporaryError(str(error), delay=10) from error


async def _reconcile_store(memo: kopf.Memo, *, name: str) -> None:
    if not _leading(memo):
        return
    when = await backupstores.reconcile(memo.context, name=name)
    if when is not None:
        memo.store_scheduler.recheck("", name, when)


async def _reconcile_store_quietly(memo: kopf.Memo, *, name: str) -> None:
    try:
        await _reconcile_store(memo, name=name)
    except runtime.RetryLater as error:
        logger.warning("BackupStore %s: %s", name, error)
        memo.store_scheduler.recheck(
            "", name, datetime.datetime.now(datetime.UTC) + backupstores.RECHECK_REFUSED
        )


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def models_by_store(
    namespace: str | None, name: str, spec: kopf.Spec, **_: typing.Any
) -> dict[str, tuple[str | None, str]]:
    """Which ModelDeployments back up to which BackupStore."""
    store = (spec.get("backup") or {}).get("store")
    return {str(store): (namespace, name)} if store else {}


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, backupstore.PLURAL)
async def backup_store_changed(name: str, memo: kopf.Memo, **kwargs: typing.Any) -> None:
    """A store was checked, changed or deleted: the models that back up there decide again."""
    index: kopf.Index[str, tuple[str | None, str]] = kwargs["models_by_store"]
    memo.scheduler.fan_out(
        (namespace, model) for namespace, model in index.get(name, []) if namespace is not None
    )
