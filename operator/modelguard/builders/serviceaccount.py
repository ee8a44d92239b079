"""The model's own ServiceAccount: an identity with no token mounted and no RBAC."""

from modelguard.api import v1alpha1
from modelguard.builders import meta, names


def build(md: v1alpha1.ModelDeployment) -> meta.Manifest:
    """The ServiceAccount of `md`'s pods."""
    manifest = meta.child(
        md,
        api_version="v1",
        kind="ServiceAccount",
        name=names.child_names(md.name).service_account,
    )
    # A model server has no business with the Kubernetes API; a stolen token would.
    manifest["automountServiceAccountToken"] = False
    return manifest
