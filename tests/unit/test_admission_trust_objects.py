"""Admission of TrustPolicies, ModelApprovals and `kubectl scale` of managed Deployments, as named
table cases: what the CRD schemas cannot check is refused when written, with the field and the
way to fix it."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import typing

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard.admission import decisions
from modelguard.api import trustpolicy
from modelguard.trust import approval

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
NAMESPACE = "team-nlp"
OPERATOR = "system:serviceaccount:modelguard-system:modelguard"
IDENTITY = decisions.Identity(operator_username=OPERATOR)
KEYS = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("alice", "bob", "mallory")}


def _pem(name: str) -> str:
    return (
        KEYS[name]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _request(
    operation: str,
    body: dict[str, typing.Any] | None,
    *,
    name: str = "x",
    namespace: str | None = NAMESPACE,
    user: str = "alice@example.com",
    groups: tuple[str, ...] = ("system:authenticated",),
    subresource: str | None = None,
) -> dict[str, typing.Any]:
    return {
        "operation": operation,
        "subResource": subresource,
        "userInfo": {"username": user, "groups": list(groups)},
        "namespace": namespace,
        "name": name,
        "object": body,
        "oldObject": None,
    }


# --- TrustPolicy ---------------------------------------------------------------------------------


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "corporate-ca")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


CA_PEM = _ca_pem()


def _policy_body(**spec: typing.Any) -> dict[str, typing.Any]:
    return {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "signers": [{"name": "release", "publicKey": _pem("alice")}],
            "approvers": [{"name": "bob", "publicKey": _pem("bob"), "roles": ["security"]}],
            **spec,
        },
    }


@dataclasses.dataclass(frozen=True)
class PolicyCase:
    body: dict[str, typing.Any]
    allowed: bool
    says: str = ""


POLICY_CASES = {
    "valid policy": PolicyCase(_policy_body(), allowed=True),
    "signer key is not PEM": PolicyCase(
        _policy_body(signers=[{"name": "release", "publicKey": "ssh-ed25519 AAAA"}]),
        allowed=False,
        says="spec.signers[0].publicKey: must be a PEM public key",
    ),
    "certificate root is not a certificate": PolicyCase(
        _policy_body(signers=[{"name": "ca", "certificateRoot": _pem("alice")}]),
        allowed=False,
        says="spec.signers[0].certificateRoot: must be PEM certificates",
    ),
    "CA root without the signer's identity": PolicyCase(
        _policy_body(signers=[{"name": "ca", "certificateRoot": CA_PEM}]),
        allowed=False,
        says="spec.signers[0]: identity is required with a certificateRoot that holds a CA",
    ),
    "CA root pinning a SAN": PolicyCase(
        _policy_body(
            signers=[{"name": "ca", "certificateRoot": CA_PEM, "identity": {"san": "a@b.example"}}]
        ),
        allowed=True,
    ),
    "CA root trusting any identity is a warning": PolicyCase(
        _policy_body(
            signers=[{"name": "ca", "certificateRoot": CA_PEM, "identity": {"any": True}}]
        ),
        allowed=True,
        says="spec.signers[0] (ca) trusts every code-signing certificate",
    ),
    "approver key is not elliptic-curve": PolicyCase(
        _policy_body(approvers=[{"name": "bob", "publicKey": "-----BEGIN PUBLIC KEY-----\n"}]),
        allowed=False,
        says="spec.approvers[0].publicKey",
    ),
    "more signers needed than listed": PolicyCase(
        _policy_body(minSigners=2),
        allowed=False,
        says="minSigners is 2 but only 1 signer(s) are listed",
    ),
    "role nobody holds": PolicyCase(
        _policy_body(minApprovalsPerRole={"auditor": 1}),
        allowed=False,
        says="minApprovalsPerRole[auditor] is 1 but 0 approver(s) hold role 'auditor'",
    ),
    "one key under two approver names": PolicyCase(
        _policy_body(
            approvers=[
                {"name": "bob", "publicKey": _pem("bob"), "roles": ["security"]},
                {"name": "alice", "publicKey": _pem("alice")},
                {"name": "bob2", "publicKey": _pem("bob"), "roles": ["model-owner"]},
            ]
        ),
        allowed=False,
        says="spec.approvers[2] (bob2) has the key of spec.approvers[0] (bob): one key is one "
        "approver, whatever its names; list it once, with all its roles",
    ),
    "more approvals needed than approvers is a warning": PolicyCase(
        _policy_body(approvers=[]),
        allowed=True,
        says="every rollout under this policy is held until approvers are added",
    ),
}


@pytest.mark.parametrize("case", POLICY_CASES.values(), ids=POLICY_CASES.keys())
def test_trust_policy(case: PolicyCase) -> None:
    decision = decisions.trust_policy(_request("CREATE", case.body, name="default", namespace=None))
    assert decision.allowed is case.allowed, decision
    said = decision.message if not case.allowed else " ".join(decision.warnings)
    assert case.says in said, said
    if case.allowed and not case.says:
        assert decision.warnings == ()


def test_trust_policy_denial_names_the_policy() -> None:
    body = _policy_body(minSigners=2)
    decision = decisions.trust_policy(_request("UPDATE", body, name="strict", namespace=None))
    assert decision.message.startswith("TrustPolicy strict: spec: ")


# --- ModelApproval -------------------------------------------------------------------------------


def _claim(**changes: str) -> approval.Claim:
    claim = approval.Claim(
        model="sentiment-bert",
        version="1.4.0",
        root_digest="sha256:" + "ab" * 32,
        approver="bob",
        reason="evaluated: SEC-1",
        expires_at="2030-02-01T00:00:00Z",
        namespace=NAMESPACE,
    )
    return dataclasses.replace(claim, **changes)


def _approval_body(*, key: str = "bob", **changes: str) -> dict[str, typing.Any]:
    built = approval.build(_claim(**changes), private_key=KEYS[key], name="bert-1-4-0")
    return built.model_dump(mode="json", by_alias=True)


def _edited(body: dict[str, typing.Any], **spec: typing.Any) -> dict[str, typing.Any]:
    return {**body, "spec": {**body["spec"], **spec}}


def _resigned_payload(body: dict[str, typing.Any], *, digest: str) -> dict[str, typing.Any]:
    """The signed statement's digest changed, the signature left as it was."""
    envelope = body["spec"]["signature"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = digest.removeprefix("sha256:")
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return _edited(body, rootDigest=digest, signature={**envelope, "payload": payload})


POLICY = trustpolicy.parse(_policy_body()).spec
OTHER_POLICY = trustpolicy.parse(
    _policy_body(approvers=[{"name": "carol", "publicKey": _pem("alice")}], minApprovals=1)
).spec


@dataclasses.dataclass(frozen=True)
class ApprovalCase:
    body: dict[str, typing.Any]
    allowed: bool
    says: str = ""
    policies: typing.Mapping[str, trustpolicy.TrustPolicySpec] = dataclasses.field(
        default_factory=lambda: {"default": POLICY}
    )
    operation: str = "CREATE"


APPROVAL_CASES = {
    "signed by the named approver": ApprovalCase(_approval_body(), allowed=True),
    "field edited after signing": ApprovalCase(
        _edited(_approval_body(), version="2.0.0"),
        allowed=False,
        says="spec.version '2.0.0' differs from the signed '1.4.0'",
    ),
    "signed statement altered": ApprovalCase(
        _resigned_payload(_approval_body(), digest="sha256:" + "cd" * 32),
        allowed=False,
        says="ApprovalBadSignature",
    ),
    "signed with another key than the approver's": ApprovalCase(
        _approval_body(key="mallory"),
        allowed=False,
        says="no signature is made with the key of approver 'bob'",
    ),
    "signed for another namespace": ApprovalCase(
        _approval_body(namespace="team-cv"),
        allowed=False,
        says="is signed for namespace 'team-cv', not the model's namespace 'team-nlp'",
    ),
    "already expired when created": ApprovalCase(
        _approval_body(expires_at="2029-12-31T00:00:00Z"),
        allowed=False,
        says="expired at 2029-12-31T00:00:00Z",
    ),
    "expired approval may still be updated": ApprovalCase(
        _approval_body(expires_at="2029-12-31T00:00:00Z"), allowed=True, operation="UPDATE"
    ),
    "payload is not a statement": ApprovalCase(
        _edited(
            _approval_body(),
            signature={**_approval_body()["spec"]["signature"], "payload": "bm90IGpzb24="},
        ),
        allowed=False,
        says="signature.payload is not a base64 JSON statement",
    ),
    "schema violation names the field": ApprovalCase(
        _edited(_approval_body(), rootDigest="md5:00"),
        allowed=False,
        says="spec.rootDigest",
    ),
    "approver the policy does not name is a warning": ApprovalCase(
        _approval_body(),
        allowed=True,
        says="TrustPolicy other: approver 'bob' is not an approver of the policy",
        policies={"other": OTHER_POLICY},
    ),
    "no model serves it yet is a warning": ApprovalCase(
        _approval_body(),
        allowed=True,
        says="no ModelDeployment in namespace team-nlp serves model 'sentiment-bert' yet",
        policies={},
    ),
}


@pytest.mark.parametrize("case", APPROVAL_CASES.values(), ids=APPROVAL_CASES.keys())
def test_model_approval(case: ApprovalCase) -> None:
    decision = decisions.model_approval(
        _request(case.operation, case.body), policies=case.policies, now=NOW
    )
    assert decision.allowed is case.allowed, decision
    said = decision.message if not case.allowed else " ".join(decision.warnings)
    assert case.says in said, said
    if case.allowed and not case.says:
        assert decision.warnings == ()
    if not case.allowed:
        assert "modelguard approve" in decision.message


def test_approval_refused_under_one_policy_names_it() -> None:
    decision = decisions.model_approval(
        _request("CREATE", _approval_body(key="mallory")),
        policies={"default": POLICY, "other": OTHER_POLICY},
        now=NOW,
    )
    assert not decision.allowed
    assert "under TrustPolicy default" in decision.message


def test_deleting_an_approval_is_not_judged() -> None:
    decision = decisions.model_approval(_request("DELETE", None), policies={}, now=NOW)
    assert decision.allowed
    assert decision.warnings == ()


# --- kubectl scale -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScaleCase:
    request: dict[str, typing.Any]
    owner: str | None
    allowed: bool


SCALE = {"kind": "Scale", "metadata": {"name": "bert", "namespace": NAMESPACE}}
SCALE_CASES = {
    "user scales a managed Deployment": ScaleCase(
        _request("UPDATE", SCALE, subresource="scale"), owner="bert", allowed=False
    ),
    "autoscaler scales a managed Deployment (the spec has no autoscaling)": ScaleCase(
        _request(
            "UPDATE",
            SCALE,
            subresource="scale",
            user="system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        ),
        owner="bert",
        allowed=False,
    ),
    "user scales an unmanaged Deployment": ScaleCase(
        _request("UPDATE", SCALE, subresource="scale"), owner=None, allowed=True
    ),
    "operator scales": ScaleCase(
        _request("UPDATE", SCALE, subresource="scale", user=OPERATOR), owner="bert", allowed=True
    ),
    "break-glass scales": ScaleCase(
        _request("UPDATE", SCALE, subresource="scale", groups=("modelguard:break-glass",)),
        owner="bert",
        allowed=True,
    ),
}


@pytest.mark.parametrize("case", SCALE_CASES.values(), ids=SCALE_CASES.keys())
def test_managed_scale(case: ScaleCase) -> None:
    decision = decisions.managed_scale(case.request, identity=IDENTITY, owner=case.owner)
    assert decision.allowed is case.allowed, decision


def test_scale_refusal_says_which_field_to_change() -> None:
    decision = decisions.managed_scale(
        _request("UPDATE", SCALE, subresource="scale", name="bert"), identity=IDENTITY, owner="nlp"
    )
    assert "set spec.serving.replicas of the ModelDeployment team-nlp/nlp" in decision.message
    assert "kubectl edit modeldeployment nlp -n team-nlp" in decision.message


# --- broad network access of a ModelDeployment ---------------------------------------------------


def _model(
    *,
    access: dict[str, typing.Any] | None = None,
    policy: str = "default",
    source_egress: list[dict[str, typing.Any]] | None = None,
    inputs: str | None = None,
) -> dict[str, typing.Any]:
    body: dict[str, typing.Any] = {
        "apiVersion": "modelguard.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bert", "namespace": NAMESPACE},
        "spec": {
            "model": {
                "name": "sentiment-bert",
                "version": "1.4.0",
                "source": {"uri": "s3://models/bert/", "egress": source_egress or []},
            },
            "serving": {"image": "registry.example/server@sha256:" + "0" * 64},
            "trustPolicy": policy,
            "access": access or {},
        },
    }
    if inputs is not None:
        body["spec"]["audit"] = {"inputs": inputs}
    return body


EVERY_NAMESPACE = {"ingress": [{"namespaceSelector": {}}]}
ANYWHERE = {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]}
NARROW = {"ingress": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}


@dataclasses.dataclass(frozen=True)
class AccessCase:
    operation: str
    new: dict[str, typing.Any]
    old: dict[str, typing.Any] | None
    allowed: bool
    says: str = ""


ACCESS_CASES = {
    "declared callers": AccessCase("CREATE", _model(access=NARROW), None, allowed=True),
    "every namespace": AccessCase(
        "CREATE",
        _model(access=EVERY_NAMESPACE),
        None,
        allowed=False,
        says='TrustPolicy "default" must set spec.network.allowAllNamespaces: true',
    ),
    "egress anywhere": AccessCase(
        "CREATE",
        _model(access=ANYWHERE),
        None,
        allowed=False,
        says="spec.access.egress[0].to[0].ipBlock.cidr: 0.0.0.0/0 is not inside the ranges",
    ),
    "update that widens access": AccessCase(
        "UPDATE",
        _model(access=EVERY_NAMESPACE),
        _model(access=NARROW),
        allowed=False,
        says="allowAllNamespaces",
    ),
    "source endpoint anywhere": AccessCase(
        "UPDATE",
        _model(
            source_egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]
        ),
        _model(),
        allowed=False,
        says="spec.model.source.egress[0].to[0].ipBlock.cidr: 0.0.0.0/0 is not inside the ranges",
    ),
    "unrelated update of a model the policy no longer allows (e.g. quarantine)": AccessCase(
        "UPDATE", _model(access=EVERY_NAMESPACE), _model(access=EVERY_NAMESPACE), allowed=True
    ),
    "payload audit the policy does not allow": AccessCase(
        "CREATE",
        _model(inputs="Payload"),
        None,
        allowed=False,
        says="spec.audit.inputs is Payload, but TrustPolicy default does not allow",
    ),
    "update to payload audit": AccessCase(
        "UPDATE",
        _model(inputs="Payload"),
        _model(inputs="Metadata"),
        allowed=False,
        says="spec.audit.allowPayload is false",
    ),
    "metadata audit needs no permission": AccessCase(
        "CREATE", _model(inputs="Metadata"), None, allowed=True
    ),
    "moving to a policy that does not allow it": AccessCase(
        "UPDATE",
        _model(access=EVERY_NAMESPACE, policy="strict"),
        _model(access=EVERY_NAMESPACE),
        allowed=False,
        says='TrustPolicy "strict"',
    ),
}


@pytest.mark.parametrize("case", ACCESS_CASES.values(), ids=ACCESS_CASES.keys())
def test_broad_access(case: AccessCase) -> None:
    request = {**_request(case.operation, case.new, name="bert"), "oldObject": case.old}
    name = case.new["spec"]["trustPolicy"]
    decision = decisions.broad_access(request, policy=POLICY, policy_name=name)
    assert decision.allowed is case.allowed, decision
    assert case.says in decision.message, decision.message


def test_broad_access_is_left_to_the_reconcile_without_the_policy() -> None:
    request = _request("CREATE", _model(access=EVERY_NAMESPACE), name="bert")
    assert decisions.broad_access(request, policy=None, policy_name="default").allowed
