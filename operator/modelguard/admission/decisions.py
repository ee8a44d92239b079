"""Pure admission decisions: an AdmissionReview request in, allowed or denied with a message out.

Nothing here talks to the API server or reads files: the API server waits on these answers (with a
timeout of at most 5 s and failurePolicy Fail for our objects), so they are made from the request
and from state the operator already holds in memory.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import typing

from modelguard.api import modelapproval, trustpolicy
from modelguard.builders import labels
from modelguard.trust import approval

Request = collections.abc.Mapping[str, typing.Any]

BREAK_GLASS_GROUP: typing.Final = "modelguard:break-glass"
"""Members of this group may change managed children directly, e.g. during an incident. Bind it
only to people, never to workloads; the operator puts the desired state back at its next
reconcile, so a break-glass change is a stop-gap, not a configuration."""

# Kubernetes' own controllers that must keep working on managed children, and only with the
# operations they need. With --use-service-account-credentials each controller has its own
# ServiceAccount; without it they all act as system:kube-controller-manager.
_CONTROLLERS: typing.Final[collections.abc.Mapping[str, frozenset[str]]] = {
    # Deletes children whose owner is gone, and edits ownerReferences/finalizers of foreground
    # deletions.
    "system:serviceaccount:kube-system:generic-garbage-collector": frozenset({"UPDATE", "DELETE"}),
    # Empties a namespace that is being deleted.
    "system:serviceaccount:kube-system:namespace-controller": frozenset({"DELETE"}),
    # Writes the deployment.kubernetes.io/revision annotation on the Deployment itself (an UPDATE
    # of the main resource, not of status).
    "system:serviceaccount:kube-system:deployment-controller": frozenset({"UPDATE"}),
    "system:kube-controller-manager": frozenset({"UPDATE", "DELETE"}),
}
# Who may resize a managed Deployment through its scale subresource besides the operator.
_SCALERS: typing.Final = frozenset(
    {
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "system:kube-controller-manager",
    }
)
_GUARDED_OPERATIONS: typing.Final = frozenset({"CREATE", "UPDATE", "DELETE"})


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who may change managed children: the operator's own user name, and the break-glass group."""

    operator_username: str
    break_glass_group: str = BREAK_GLASS_GROUP


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""

    @classmethod
    def allow(cls) -> Decision:
        return cls(allowed=True)

    @classmethod
    def deny(cls, message: str) -> Decision:
        return cls(allowed=False, message=message)


def managed_child(request: Request, *, identity: Identity) -> Decision:
    """Bypass protection: only the operator (and break-glass) may write what the operator manages.

    `request` is the AdmissionReview's `request` field. An object counts as managed when either its
    new or its old version carries the managed-by label, so that removing the label is refused too.
    """
    operation = str(request.get("operation", ""))
    subresource = request.get("subResource") or ""
    user = request.get("userInfo") or {}
    username = str(user.get("username", ""))
    if username == identity.operator_username or identity.break_glass_group in (
        user.get("groups") or []
    ):
        return Decision.allow()
    if subresource == "scale":
        # A Scale object carries no labels: the webhook configuration cannot select managed
        # Deployments' scale by label, so whoever routes scale here has already decided it is ours.
        if username in _SCALERS:
            return Decision.allow()
        return Decision.deny(_refusal(request, change="scaling"))
    if subresource or operation not in _GUARDED_OPERATIONS:
        # status and the like are written by Kubernetes' controllers; they carry no intent.
        return Decision.allow()
    if not _is_managed(request):
        return Decision.allow()
    if operation in _CONTROLLERS.get(username, frozenset()):
        return Decision.allow()
    return Decision.deny(_refusal(request, change=_verb(operation)))


def model_deployment(
    request: Request, *, known_policies: collections.abc.Collection[str] | None
) -> Decision:
    """Cross-field checks of a ModelDeployment that its CRD schema cannot express.

    `known_policies` are the TrustPolicy names the operator has seen; None when it does not know
    yet (its cache is not filled), and then the reconcile reports a missing policy instead.
    """
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE") or request.get("subResource"):
        return Decision.allow()
    policy = _trust_policy(request.get("object"))
    # Only a newly named policy is checked: an unrelated edit of a model whose policy was deleted
    # (e.g. quarantining it) must still go through.
    if operation == "UPDATE" and policy == _trust_policy(request.get("oldObject")):
        return Decision.allow()
    if known_policies is None or policy in known_policies:
        return Decision.allow()
    known = ", ".join(sorted(known_policies)) or "none"
    return Decision.deny(
        f"spec.trustPolicy: TrustPolicy {policy!r} does not exist (known: {known}); create it"
        " first, or name an existing one"
    )


def unapproved_rejected(
    request: Request,
    *,
    policy: trustpolicy.TrustPolicySpec | None,
    approvals: collections.abc.Iterable[modelapproval.ModelApproval],
    now: datetime.datetime,
) -> Decision:
    """spec.rollout.onUnapproved: Reject refuses, at apply time, a version without enough valid
    approvals, so that a GitOps sync fails fast with the reason instead of holding silently.

    The version's root digest is not known before it is verified (that needs the network, which
    admission never uses), so approvals are counted for the model and version; the rollout gate
    checks their digests later. Without the policy in the cache, reconcile decides.
    """
    body = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or request.get("subResource"):
        return Decision.allow()
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or policy is None:
        return Decision.allow()
    rollout = _mapping(spec.get("rollout"))
    model = _mapping(spec.get("model"))
    if rollout.get("onUnapproved") != "Reject":
        return Decision.allow()
    decided = approval.evaluate_approvals(
        approvals,
        policy=policy,
        namespace=str(request.get("namespace") or ""),
        model=str(model.get("name", "")),
        version=str(model.get("version", "")),
        root_digest=None,
        now=now,
    )
    if decided.approved:
        return Decision.allow()
    why = decided.violation.message if decided.violation else "no valid approval"
    reason = decided.violation.reason if decided.violation else "ApprovalMissing"
    return Decision.deny(
        f"spec.rollout.onUnapproved is Reject and {model.get('name')} {model.get('version')} is "
        f"not approved ({reason}: {why}); apply a signed ModelApproval first "
        "(modelguard approve), or set onUnapproved: Hold to wait for one"
    )


def _mapping(value: object) -> collections.abc.Mapping[str, typing.Any]:
    return value if isinstance(value, dict) else {}


def _trust_policy(body: object) -> str:
    spec = body.get("spec") if isinstance(body, dict) else None
    policy = spec.get("trustPolicy") if isinstance(spec, dict) else None
    return str(policy) if policy else "default"


def _labels(body: object) -> collections.abc.Mapping[str, typing.Any]:
    meta = body.get("metadata") if isinstance(body, dict) else None
    found = meta.get("labels") if isinstance(meta, dict) else None
    return found if isinstance(found, dict) else {}


def _is_managed(request: Request) -> bool:
    return any(
        _labels(request.get(side)).get(labels.MANAGED_BY) == labels.MANAGER
        for side in ("object", "oldObject")
    )


def _verb(operation: str) -> str:
    return {"CREATE": "creating", "UPDATE": "changing", "DELETE": "deleting"}[operation]


def _refusal(request: Request, *, change: str) -> str:
    namespace = str(request.get("namespace") or "")
    kind = str((request.get("kind") or {}).get("kind") or "object")
    name = str(request.get("name") or "")
    owner = ""
    for side in ("object", "oldObject"):
        owner = owner or str(_labels(request.get(side)).get(labels.MODEL_DEPLOYMENT) or "")
    target = (
        f"edit the ModelDeployment {namespace}/{owner} instead"
        f" (kubectl edit modeldeployment {owner} -n {namespace})"
        if owner
        else "edit the ModelDeployment that owns it instead"
    )
    return (
        f"{kind} {namespace}/{name} is managed by ModelGuard; {change} it directly is not"
        f" allowed: {target}. The operator owns this object and reverts direct changes."
    )
