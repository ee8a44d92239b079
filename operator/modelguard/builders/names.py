"""Names of a ModelDeployment's children and of the parts of its pods, decided in one place."""

import dataclasses
import typing

CONTAINER: typing.Final = "model-server"
PORT_NAME: typing.Final = "http"
"""The pod port callers reach: the audit proxy's when it runs, else the model server's."""
SERVER_PORT_NAME: typing.Final = "model"
"""The model server's port behind the audit proxy."""
METRICS_PORT_NAME: typing.Final = "audit-metrics"
MODEL_VOLUME: typing.Final = "model"
TMP_VOLUME: typing.Final = "tmp"


@dataclasses.dataclass(frozen=True)
class ChildNames:
    """The name of every child a ModelDeployment can have, whether it exists now or not."""

    service_account: str
    deployment: str
    service: str
    default_deny: str
    allow_ingress: str
    allow_egress: str
    allow_source: str


def child_names(md_name: str) -> ChildNames:
    """Names of the children of the ModelDeployment called `md_name`.

    The Service keeps the ModelDeployment's own name, so callers reach <name>.<namespace>.svc.
    """
    return ChildNames(
        service_account=md_name,
        deployment=md_name,
        service=md_name,
        default_deny=f"{md_name}-default-deny",
        allow_ingress=f"{md_name}-allow-ingress",
        allow_egress=f"{md_name}-allow-egress",
        allow_source=f"{md_name}-allow-source",
    )
