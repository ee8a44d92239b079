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

from modelguard.api import errors, modelapproval, trustpolicy, v1alpha1
from modelguard.builders import deployment, labels, names
from modelguard.trust import access, approval, binding, inputaudit, reasons, signatures

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
# What the model's Deployment spawns is guarded too, or a sidecar written into its ReplicaSet, or
# an image swapped in a running pod, would bypass the guard on the Deployment. Their own
# controllers make and change them. (Pod deletion is not guarded: the ReplicaSet makes another.)
_SPAWNED_BY: typing.Final[
    collections.abc.Mapping[str, collections.abc.Mapping[str, frozenset[str]]]
] = {
    "ReplicaSet": {
        "system:serviceaccount:kube-system:deployment-controller": frozenset(
            {"CREATE", "UPDATE", "DELETE"}
        ),
        "system:kube-controller-manager": frozenset({"CREATE", "UPDATE", "DELETE"}),
    },
    "Pod": {
        # Creates them, and adopts or releases them (an UPDATE of ownerReferences).
        "system:serviceaccount:kube-system:replicaset-controller": frozenset({"CREATE", "UPDATE"}),
        "system:kube-controller-manager": frozenset({"CREATE", "UPDATE"}),
    },
}
_GUARDED_OPERATIONS: typing.Final = frozenset({"CREATE", "UPDATE", "DELETE"})
# A debug container joins a running model pod and may mount its volumes, read-write.
_GUARDED_SUBRESOURCES: typing.Final = frozenset({"ephemeralcontainers"})


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who may change managed children: the operator's own user name, and the break-glass group."""

    operator_username: str
    break_glass_group: str = BREAK_GLASS_GROUP


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    """Shown by kubectl (and GitOps tools) for an allowed request that will not do what its
    author probably expects."""

    @classmethod
    def allow(cls, *warnings: str) -> Decision:
        return cls(allowed=True, warnings=warnings)

    @classmethod
    def deny(cls, message: str) -> Decision:
        return cls(allowed=False, message=message)


CACHES_NOT_FILLED: typing.Final = "caches not yet filled"


def caches_not_filled(request: Request) -> Decision:
    """The answer of a webhook that judges from the operator's caches while they are not filled
    (kopf's first listing is not in): refused, as a policy, approval, namespace or model pod
    missing from them may only be one not read yet, and the answer would then admit what a full
    view refuses. Readiness waits for the same caches, so the API server is sent here only by a
    configuration that bypasses it (a URL, not the Service), or in the moment it takes to see."""
    kind = str((request.get("kind") or {}).get("kind") or "object")
    where = "/".join(str(part) for part in (request.get("namespace"), request.get("name")) if part)
    return Decision.deny(
        f"ModelGuard's {CACHES_NOT_FILLED}: this replica is starting and has not read the"
        f" TrustPolicies, approvals, namespaces and models it judges {kind} {where} against;"
        " refused rather than judged from a partial view. Retry in a few seconds."
    )


def managed_child(request: Request, *, identity: Identity) -> Decision:
    """Bypass protection: only the operator (and break-glass) may write what the operator manages.

    `request` is the AdmissionReview's `request` field. An object counts as managed when either its
    new or its old version carries the managed-by label, so that removing the label is refused too.
    """
    operation = str(request.get("operation", ""))
    subresource = request.get("subResource") or ""
    username = str((request.get("userInfo") or {}).get("username", ""))
    if _may_change_managed(request, identity=identity):
        return Decision.allow()
    if subresource in _GUARDED_SUBRESOURCES and _is_managed(request):
        return Decision.deny(_refusal(request, change=f"adding {subresource} to"))
    if subresource or operation not in _GUARDED_OPERATIONS:
        # status and the like are written by Kubernetes' controllers; they carry no intent.
        return Decision.allow()
    if not _is_managed(request):
        return Decision.allow()
    kind = str((request.get("kind") or {}).get("kind") or "")
    if operation in _CONTROLLERS.get(username, frozenset()) | _SPAWNED_BY.get(kind, {}).get(
        username, frozenset()
    ):
        return Decision.allow()
    return Decision.deny(_refusal(request, change=_verb(operation)))


def managed_scale(request: Request, *, identity: Identity, owner: str | None) -> Decision:
    """Bypass protection for the scale subresource of Deployments (`kubectl scale`).

    A Scale object carries no labels, so the webhook configuration cannot select managed
    Deployments by label and every scale request comes here; `owner` is the ModelDeployment that
    manages the Deployment, from the operator's cache, or None when it manages none. Replicas are
    spec.serving.replicas of the ModelDeployment and nothing else: no autoscaler may resize them.
    """
    if owner is None or request.get("operation") != "UPDATE":
        return Decision.allow()
    if _may_change_managed(request, identity=identity):
        return Decision.allow()
    namespace = str(request.get("namespace") or "")
    return Decision.deny(
        f"Deployment {namespace}/{request.get('name')} is managed by ModelGuard; scaling it "
        f"directly is not allowed: set spec.serving.replicas of the ModelDeployment "
        f"{namespace}/{owner} instead (kubectl edit modeldeployment {owner} -n {namespace})."
    )


def trust_policy(request: Request) -> Decision:
    """What a TrustPolicy's CRD schema cannot check: that its keys and certificates parse, and
    that its k-of-n and per-role minimums can be met. A policy that fails these would hold or
    refuse every model that names it, so it is refused when it is written."""
    if not _is_write(request):
        return Decision.allow()
    try:
        policy = trustpolicy.parse(_mapping(request.get("object")))
    except errors.InvalidObjectError as error:
        return Decision.deny(f"TrustPolicy {request.get('name')}: {'; '.join(error.messages)}")
    spec = policy.spec
    if (duplicate := _duplicate_approver_key(spec)) is not None:
        return Decision.deny(f"TrustPolicy {request.get('name')}: {duplicate}")
    warnings: list[str] = []
    if spec.min_approvals > len(spec.approvers):
        warnings.append(
            f"spec.minApprovals is {spec.min_approvals} but spec.approvers lists "
            f"{len(spec.approvers)}: every rollout under this policy is held until approvers are "
            "added"
        )
    for index, signer in enumerate(spec.signers):
        if signer.identity is not None and signer.identity.any:
            warnings.append(
                f"spec.signers[{index}] ({signer.name}) trusts every code-signing certificate "
                "its certificateRoot's CAs issue (identity.any): pin identity.subject or "
                "identity.san unless the CA certifies model signers only"
            )
    return Decision.allow(*warnings)


def _duplicate_approver_key(spec: trustpolicy.TrustPolicySpec) -> str | None:
    """Approvals count keys (one key under two names is one approver): a policy listing one key
    twice promises a k-of-n it does not have."""
    try:
        keys = approval.trusted_approvers(spec)
    except reasons.VerificationError:
        return None  # a key that does not parse is refused by the schema already
    first: dict[str, int] = {}
    for index, approver in enumerate(spec.approvers):
        fingerprint = signatures.key_hint(keys[approver.name].key)
        if fingerprint in first:
            earlier = first[fingerprint]
            return (
                f"spec.approvers[{index}] ({approver.name}) has the key of "
                f"spec.approvers[{earlier}] ({spec.approvers[earlier].name}): one key is one "
                "approver, whatever its names;"
                " list it once, with all its roles"
            )
        first[fingerprint] = index
    return None


def model_approval(
    request: Request,
    *,
    policies: collections.abc.Mapping[str, trustpolicy.TrustPolicySpec],
    now: datetime.datetime,
) -> Decision:
    """What a ModelApproval's CRD schema cannot check, refused when it is written rather than
    silently counting for nothing later: the signed statement parses and says exactly what the
    plain fields say, for this namespace; a new approval has not already expired; and under the
    TrustPolicies of the models it approves (`policies`, from the operator's cache), the signature
    verifies with the named approver's key.

    An approver that a policy does not name yet is a warning, not a refusal: a GitOps sync may
    apply the approval before the policy change that adds its approver.
    """
    if not _is_write(request):
        return Decision.allow()
    try:
        parsed = modelapproval.parse(_mapping(request.get("object")))
    except errors.InvalidObjectError as error:
        return Decision.deny(
            f"ModelApproval {request.get('name')}: {'; '.join(error.messages)}. {_APPROVE_HINT}"
        )
    spec = parsed.spec
    try:
        claim = approval.read_claim(spec.signature)
    except reasons.VerificationError as error:
        return _approval_refused(error.violation)
    namespace = str(request.get("namespace") or "")
    checks: list[typing.Callable[[], approval.Violation | None]] = [
        lambda: approval.check_fields(spec, claim),
        lambda: approval.check_namespace(claim, namespace=namespace, object_namespace=None),
    ]
    if request.get("operation") == "CREATE":
        # Only when created: an approval that expires later stays, as the record of a decision.
        checks.append(lambda: approval.check_expiry(claim, now=now))
    for check in checks:
        if (violation := check()) is not None:
            return _approval_refused(violation)
    warnings = []
    for name, policy in sorted(policies.items()):
        try:
            approvers = approval.trusted_approvers(policy)
        except reasons.VerificationError:
            continue  # a broken policy is reported on the models that name it
        violation = approval.check_signature(
            spec.signature, approver=spec.approver, approvers=approvers
        )
        if violation is None:
            continue
        if spec.approver in approvers:
            return _approval_refused(violation, policy=name)
        warnings.append(
            f"TrustPolicy {name}: {violation.message}; this approval counts for nothing under it "
            "until the policy names that approver"
        )
    if not policies:
        warnings.append(
            f"no ModelDeployment in namespace {namespace} serves model {spec.model!r} yet: the "
            "signature is checked against its TrustPolicy when one does"
        )
    return Decision.allow(*warnings)


_APPROVE_HINT: typing.Final = (
    "Produce approvals with `modelguard approve` and the approver's own key; apply them unchanged"
)


def _approval_refused(violation: approval.Violation, *, policy: str | None = None) -> Decision:
    under = f" under TrustPolicy {policy}" if policy else ""
    return Decision.deny(
        f"ModelApproval refused{under} ({violation.reason}): {violation.message}. {_APPROVE_HINT}"
    )


def _may_change_managed(request: Request, *, identity: Identity) -> bool:
    user = request.get("userInfo") or {}
    return str(user.get("username", "")) == identity.operator_username or (
        identity.break_glass_group in (user.get("groups") or [])
    )


def _is_write(request: Request) -> bool:
    return request.get("operation") in ("CREATE", "UPDATE") and not request.get("subResource")


def model_deployment(
    request: Request, *, known_policies: collections.abc.Collection[str] | None
) -> Decision:
    """Cross-field checks of a ModelDeployment that its CRD schema cannot express.

    `known_policies` are the TrustPolicy names the operator has seen; None when it does not know
    yet (its cache is not filled), and then the reconcile reports a missing policy instead.
    """
    if not _is_write(request):
        return Decision.allow()
    policy = _trust_policy(request.get("object"))
    # Only a newly named policy is checked: an unrelated edit of a model whose policy was deleted
    # (e.g. quarantining it) must still go through.
    if request.get("operation") == "UPDATE" and policy == _trust_policy(request.get("oldObject")):
        return Decision.allow()
    if known_policies is None or policy in known_policies:
        return Decision.allow()
    # The other policies' names stay out of the denial: whoever may write a ModelDeployment is
    # not necessarily allowed to list TrustPolicies, and a denial must not list them instead.
    return Decision.deny(
        f"spec.trustPolicy: TrustPolicy {policy!r} does not exist; create it first, or name an"
        " existing one (kubectl get trustpolicies)"
    )


def policy_bound(
    request: Request,
    *,
    policy: trustpolicy.TrustPolicySpec | None,
    policy_name: str,
    namespace_labels: collections.abc.Mapping[str, str] | None,
) -> Decision:
    """A ModelDeployment naming a TrustPolicy that does not bind its namespace is refused when
    written, by the rule the reconcile applies (trust.binding): a model owner picks among the
    policies bound to the namespace, never a laxer one meant for other namespaces.

    Only a new model or a newly named policy is judged: a policy unbound later must not block
    unrelated edits of a running model, such as quarantining it. Without the policy or the
    namespace's labels in the cache (a namespace made a moment ago, a cache still filling), the
    reconcile decides, by the same rule. The message names the policy asked for and no other.
    """
    body, old = request.get("object"), request.get("oldObject")
    if not _is_write(request) or policy is None or namespace_labels is None:
        return Decision.allow()
    if request.get("operation") == "UPDATE" and _trust_policy(body) == _trust_policy(old):
        return Decision.allow()
    unbound = binding.check(
        policy,
        name=policy_name,
        namespace=str(request.get("namespace") or ""),
        labels=namespace_labels,
    )
    return Decision.allow() if unbound is None else Decision.deny(unbound.message)


@dataclasses.dataclass(frozen=True)
class ModelPods:
    """A ModelDeployment of a namespace as admission knows it from the operator's cache: the
    TrustPolicy it names, the labels its builder gives its pods (of the spec's version, and of
    the one that serves when that differs) and the full labels of its pods that exist (the
    pod-template-hash the Deployment controller adds among them, and whatever a mutating
    webhook adds)."""

    name: str
    policy_name: str
    pod_labels: tuple[collections.abc.Mapping[str, str], ...]
    live_pod_labels: tuple[collections.abc.Mapping[str, str], ...] = ()
    # The one port its callers may reach (None: it records no inputs, any port is the server's).
    # Unknown (a spec that cannot be read), it counts as recording them, at the usual port.
    audited_port: access.AuditedPort | None = dataclasses.field(
        default_factory=lambda: access.AuditedPort(names.PORT_NAME, deployment.AUDIT_PROXY_PORT)
    )


def audited_port(model: v1alpha1.ModelDeployment) -> access.AuditedPort | None:
    """The audit proxy's port, the only one callers of `model` may reach, when it records its
    inputs (decision 0026)."""
    if not deployment.audited(model):
        return None
    return access.AuditedPort(names.PORT_NAME, deployment.proxy_port(model))


def network_policy(
    request: Request,
    *,
    identity: Identity,
    models: collections.abc.Iterable[ModelPods],
    policies: collections.abc.Mapping[str, trustpolicy.TrustPolicySpec],
) -> Decision:
    """A NetworkPolicy that selects a model's pods and allows what the model's TrustPolicy would
    refuse is refused when written: NetworkPolicies add up, so it would widen the model's own.

    `models` are the namespace's ModelDeployments and `policies` their TrustPolicies, from the
    operator's cache; a model whose policy is not there is not judged here (the reconcile reports
    such NetworkPolicies too: Isolated=False/OpenedByNetworkPolicy). Only a changed spec is
    judged: relabelling, or the garbage collector orphaning one, is not blocked by a policy
    tightened since.

    The selector is judged against every label the model's pods carry: those of its pods that
    exist, and for pods still to come the builder's labels plus a pod-template-hash of any value.
    The refusal names neither the TrustPolicy nor its ranges: whoever may write NetworkPolicies
    in a namespace may read neither (decision 0014: say less).
    """
    if not _is_write(request) or _operator(request, identity=identity):
        return Decision.allow()
    body, old = _mapping(request.get("object")), _mapping(request.get("oldObject"))
    if request.get("operation") == "UPDATE" and body.get("spec") == old.get("spec"):
        return Decision.allow()
    namespace = str(request.get("namespace") or "")
    # Named as the request names it (a generated name, the namespace of the URL).
    body = {
        **body,
        "metadata": {
            **_mapping(body.get("metadata")),
            "namespace": namespace,
            "name": request.get("name") or _mapping(body.get("metadata")).get("name"),
        },
    }
    refusals: list[str] = []
    for model in models:
        policy = policies.get(model.policy_name)
        if policy is None:
            continue
        messages: dict[str, None] = {}
        judged = [(found, (labels.TEMPLATE_HASH,)) for found in model.pod_labels] + [
            (found, ()) for found in model.live_pod_labels
        ]
        for pod_labels, unknown in judged:
            for violation in access.check_network_policy(
                body,
                pod_labels=pod_labels,
                network=policy.network,
                policy_name=model.policy_name,
                unknown_labels=unknown,
                disclose=False,
                audited_port=model.audited_port,
            ):
                messages[violation.message] = None
        if messages:
            refusals.append(
                f"{'; '.join(messages)}. It selects the pods of ModelDeployment "
                f"{namespace}/{model.name}, which it would open beyond what the model's "
                "TrustPolicy allows: narrow spec.podSelector so that it does not select them "
                "(by any label they carry), or the rule"
            )
    return Decision.deny(" ".join(refusals)) if refusals else Decision.allow()


_CONNECTIONS: typing.Final[collections.abc.Mapping[str, str]] = {
    "exec": "exec into",
    "attach": "attach to",
    "portforward": "port-forward to",
    "proxy": "proxy to",
}


_PROXY_SCHEMES: typing.Final = frozenset({"", "http", "https"})


def connected_pod(name: str) -> str | None:
    """The pod a CONNECT request reaches, from the name the API server puts in the request; None
    when the API server would not read it as a pod's name.

    The pod proxy is addressed as `pods/[scheme:]name[:port]/proxy` and the admission request
    names that whole segment; the API server splits it only when it resolves the location, as
    k8s.io/apimachinery/pkg/util/net SplitSchemeNamePort does: `name`, `name:port` and
    `scheme:name:port`, with a scheme of http or https and a non-empty name. exec, attach and
    port-forward name the pod itself, which holds no colon, so the same reading fits them.
    """
    parts = name.split(":")
    if len(parts) > 3:
        return None
    scheme, pod = (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])
    if not pod or scheme not in _PROXY_SCHEMES:
        return None
    return pod


def model_pod_connect(
    request: Request, *, identity: Identity, model: str | None, caches_filled: bool
) -> Decision:
    """exec, attach, port-forward and proxy into a model's pods (CONNECT requests): refused to
    all but the break-glass group. Whoever may exec into a model's pod (the `edit` role may)
    reads its verified files (the weights leave the cluster) and changes the serving process,
    with no refusal, no drift and no audit record; port-forward and the API server's proxy reach
    its port past its NetworkPolicies.

    A CONNECT request carries no labels, so the webhook is sent every such request in the
    namespaces it guards, and `model` is the ModelDeployment whose pod the request names, from
    the operator's cache of model pods (None: not a model's pod). Until that cache is filled,
    no pod is known not to be a model's, and every request is refused with a retry hint.
    """
    if request.get("operation") != "CONNECT":
        return Decision.allow()
    if identity.break_glass_group in ((request.get("userInfo") or {}).get("groups") or []):
        return Decision.allow()
    namespace = str(request.get("namespace") or "")
    pod = f"pod {namespace}/{request.get('name')}"
    connection = _CONNECTIONS.get(str(request.get("subResource") or ""), "connect to")
    if connected_pod(str(request.get("name") or "")) is None:
        # Unread, the name could reach any pod, a model's among them: refused (the API server
        # would refuse it too, so nothing that works is lost).
        return Decision.deny(
            f"{pod} is not a pod name the API server accepts ([scheme:]name[:port], scheme http "
            "or https): refused, as ModelGuard cannot tell which pod it reaches"
        )
    if model is None and caches_filled:
        return Decision.allow()
    if model is None:
        return Decision.deny(
            f"ModelGuard's {CACHES_NOT_FILLED}: it is starting and cannot tell yet whether {pod}"
            f" is one of a model's pods, which nobody may {connection}: retry in a few seconds"
        )
    return Decision.deny(
        f"{pod} serves ModelDeployment {namespace}/{model}, and nobody may {connection} a "
        "model's pods: its files are the verified model and its process serves it. Read its "
        f"logs (kubectl logs), status and Events instead (kubectl describe modeldeployment "
        f"{model} -n {namespace}); in an incident, the break-glass group may."
    )


def _operator(request: Request, *, identity: Identity) -> bool:
    user = request.get("userInfo") or {}
    return str(user.get("username", "")) == identity.operator_username


def broad_access(
    request: Request, *, policy: trustpolicy.TrustPolicySpec | None, policy_name: str
) -> Decision:
    """spec.access or spec.model.source.egress broader than the model's TrustPolicy allows (an IP
    range it does not list, every namespace) is refused when written, with the policy field that
    would allow it.

    Only a changed request for network access or a newly named policy is judged: a policy
    tightened later must not block unrelated edits of a running model, such as quarantining it;
    the reconcile reports those as Isolated=False. Without the policy in the cache, the reconcile
    decides.
    """
    body, old = request.get("object"), request.get("oldObject")
    if not _is_write(request) or policy is None:
        return Decision.allow()
    if request.get("operation") == "UPDATE" and (
        _network_asked(body) == _network_asked(old)
        and _inputs_asked(body) == _inputs_asked(old)
        and _trust_policy(body) == _trust_policy(old)
    ):
        return Decision.allow()
    try:
        model = v1alpha1.parse(_mapping(body))
    except errors.InvalidObjectError:
        return Decision.allow()  # the reconcile reports a spec it cannot read, naming the field
    refused = access.check_access(model.spec, network=policy.network, policy_name=policy_name)
    refused += inputaudit.check_inputs(model.spec, audit=policy.audit, policy_name=policy_name)
    if not refused:
        return Decision.allow()
    return Decision.deny("; ".join(violation.message for violation in refused))


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
    if not _is_write(request):
        return Decision.allow()
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict) or policy is None:
        return Decision.allow()
    rollout = _mapping(spec.get("rollout"))
    model = _mapping(spec.get("model"))
    if rollout.get("onUnapproved") != "Reject" or spec.get("quarantine") is True:
        # A quarantined model rolls nothing out; the gate judges the version when it is lifted.
        return Decision.allow()
    old = request.get("oldObject")
    if (
        request.get("operation") == "UPDATE"
        and model == _spec_field(old, "model")
        # Written while quarantined, the version was never judged here: lifting the quarantine
        # is when it would start serving.
        and _spec_field(old, "quarantine") is not True
    ):
        # The version that serves was judged when it was written: an approval that expired since
        # must not block unrelated edits, least of all the quarantine of an incident.
        return Decision.allow()
    decided = approval.evaluate_approvals(
        approvals,
        policy=policy,
        namespace=str(request.get("namespace") or ""),
        model=str(model.get("name", "")),
        version=str(model.get("version", "")),
        # Unknown before the bundle is read, unless the spec pins it: then approvals of other
        # bytes are refused now, as the gate would refuse them later.
        root_digest=pinned if isinstance(pinned := model.get("rootDigest"), str) else None,
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


def _network_asked(body: object) -> tuple[object, object]:
    """What a ModelDeployment asks of the network: spec.access and spec.model.source.egress."""
    source = _mapping(_mapping(_spec_field(body, "model")).get("source"))
    return _spec_field(body, "access"), source.get("egress")


def _inputs_asked(body: object) -> object:
    """What a ModelDeployment asks its audit proxy to record (spec.audit.inputs)."""
    return _mapping(_spec_field(body, "audit")).get("inputs")


def _spec_field(body: object, field: str) -> object:
    spec = body.get("spec") if isinstance(body, dict) else None
    return spec.get(field) if isinstance(spec, dict) else None


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
