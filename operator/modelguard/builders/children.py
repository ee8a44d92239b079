"""Every desired child of a ModelDeployment, in the order they are safe to apply."""

from modelguard.api import placement as placement_api
from modelguard.api import v1alpha1
from modelguard.builders import deployment, meta, networkpolicy, service, serviceaccount


def build_children(
    md: v1alpha1.ModelDeployment,
    *,
    artifact: deployment.VerifiedArtifact,
    placement: placement_api.Placement = placement_api.NONE,
) -> list[meta.Manifest]:
    """The children `md` should have now, in apply order.

    The ServiceAccount comes before the pods that use it, and the NetworkPolicies before any pod
    exists, so a model server never runs for a moment without its isolation. The set of children
    is the same for every spec (only their content varies), so nothing ever needs deleting.
    """
    return [
        serviceaccount.build(md),
        *networkpolicy.build(md),
        service.build(md),
        deployment.build(md, artifact=artifact, placement=placement),
    ]


def child_keys(md: v1alpha1.ModelDeployment) -> list[tuple[str, str]]:
    """(kind, name) of every child `md` has, in apply order: the same whatever the artifact."""
    placeholder = deployment.VerifiedArtifact(root_digest="", signature_digest="", agent_image="")
    return [
        (manifest["kind"], manifest["metadata"]["name"])
        for manifest in build_children(md, artifact=placeholder)
    ]
