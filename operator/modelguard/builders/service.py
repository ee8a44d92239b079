"""The ClusterIP Service in front of the model server pods."""

from modelguard.api import v1alpha1
from modelguard.builders import labels, meta, names


def build(md: v1alpha1.ModelDeployment) -> meta.Manifest:

    manifest = meta.child(
        md, api_version="v1", kind="Service", name=names.child_names(md.name).service
    )
    manifest["spec"] = {
        "type": "ClusterIP",
        "selector": labels.selector(md.name),
        "ports": [
            {
                "name": names.PORT_NAME,
                "protocol": "TCP",
                "port": md.spec.serving.port,
                "targetPort": names.PORT_NAME,
            }
        ],
    }
    return manifest
