"""kopf registrations, and nothing else: each handler is one call into the reconcile layer."""

from __future__ import annotations

import logging
import os
import socket
import typing

import kopf

from modelguard import kube
from modelguard.api import trustpolicy, v1alpha1
from modelguard.builders import labels
from modelguard.reconcile import modeldeployment

logger = logging.getLogger(__name__)

AGENT_IMAGE_ENV = "MODELGUARD_AGENT_IMAGE"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: typing.Any) -> None:
    # Progress and diff-base live in annotations with our prefix, so that kopf writes nothing
    # into .status, whose schema stays strict and ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=v1alpha1.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=v1alpha1.GROUP, key="last-handled-configuration"
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
    memo.context = modeldeployment.Context(
        kube=kube.Kube.from_environment(),
        instance=os.environ.get("POD_NAME") or socket.gethostname(),
        agent_image=agent_image,
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: typing.Any) -> None:
    await memo.context.kube.close()


# No kopf timers or daemons on ModelDeployment: kopf would put a finalizer on every object for them,
# and deleting a model (or its namespace) would then hang whenever the operator is down. Children
# need no cleanup of ours: the garbage collector follows their ownerReferences.
@kopf.on.resume(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
@kopf.on.create(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
@kopf.on.update(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
async def model_deployment(
    namespace: str | None, name: str, memo: kopf.Memo, **_: typing.Any
) -> None:
    assert namespace is not None, "ModelDeployment is namespaced"
    await _reconcile(memo, namespace=namespace, name=name)


@kopf.on.event("apps", "v1", "deployments", labels={labels.MANAGED_BY: labels.MANAGER})
async def managed_deployment(
    namespace: str | None, meta: kopf.Meta, memo: kopf.Memo, **_: typing.Any
) -> None:
    """A model's Deployment changed (its rollout progressed): the model's Ready may have too."""
    owner = meta.labels.get(labels.MODEL_DEPLOYMENT)
    if not owner or namespace is None:
        return
    try:
        await _reconcile(memo, namespace=namespace, name=owner)
    except kopf.TemporaryError as error:
        # Event handlers are not retried; the next event or the periodic resync converges.
        logger.warning("%s/%s: %s", namespace, owner, error)


async def _reconcile(memo: kopf.Memo, *, namespace: str, name: str) -> None:
    try:
        await modeldeployment.reconcile(memo.context, namespace=namespace, name=name)
    except modeldeployment.RetryLater as error:
        raise kopf.TemporaryError(str(error), delay=5) from error


@kopf.index(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
def models_by_policy(
    namespace: str | None, name: str, spec: kopf.Spec, **_: typing.Any
) -> dict[str, tuple[str | None, str]]:
    """Which ModelDeployments answer to which TrustPolicy, kept current by kopf's watch."""
    return {str(spec.get("trustPolicy", "default")): (namespace, name)}


@kopf.on.event(v1alpha1.GROUP, v1alpha1.VERSION, trustpolicy.PLURAL)
async def trust_policy_changed(name: str, memo: kopf.Memo, **kwargs: typing.Any) -> None:
    """A policy was created, changed or deleted: every model under it is verified again."""
    # kopf passes every index by its handler's name.
    index: kopf.Index[str, tuple[str | None, str]] = kwargs["models_by_policy"]
    for namespace, model in index.get(name, []):
        if namespace is None:
            continue
        try:
            await _reconcile(memo, namespace=namespace, name=model)
        except kopf.TemporaryError as error:
            logger.warning("%s/%s: %s", namespace, model, error)
