"""Labels of a ModelDeployment's children and pods, and the selector that finds them.

Selectors use only MODEL_DEPLOYMENT, whose value (the ModelDeployment's name) never changes: a
Deployment's selector is immutable, and a new model version must roll the pods, not orphan them.
"""

import typing

from modelguard.api import v1alpha1

NAME: typing.Final = "app.kubernetes.io/name"
INSTANCE: typing.Final = "app.kubernetes.io/instance"
VERSION: typing.Final = "app.kubernetes.io/version"
COMPONENT: typing.Final = "app.kubernetes.io/component"
MANAGED_BY: typing.Final = "app.kubernetes.io/managed-by"
MODEL_DEPLOYMENT: typing.Final = f"{v1alpha1.GROUP}/model-deployment"

TEMPLATE_HASH: typing.Final = "pod-template-hash"
"""Added by the Deployment controller to every pod of a ReplicaSet; its value, a hash of the pod
template, is known only once the ReplicaSet exists."""

MANAGER: typing.Final = "modelguard"
MODEL_SERVER: typing.Final = "model-server"


def selector(md_name: str) -> dict[str, str]:
    """Labels that select the children and pods of the ModelDeployment called `md_name`."""
    return {MODEL_DEPLOYMENT: md_name}


def spawned(md_name: str) -> dict[str, str]:
    """Labels that select what the model's Deployment spawns (ReplicaSets, pods) and nothing a
    user made: admission lets only Kubernetes' controllers write such objects with MANAGED_BY."""
    return {**selector(md_name), MANAGED_BY: MANAGER}


def of(md: v1alpha1.ModelDeployment) -> dict[str, str]:
    """Labels of every child and pod of `md`."""
    return {
        NAME: md.spec.model.name,
        INSTANCE: md.name,
        VERSION: md.spec.model.version,
        COMPONENT: MODEL_SERVER,
        MANAGED_BY: MANAGER,
        **selector(md.name),
    }
