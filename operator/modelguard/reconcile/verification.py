"""The control-plane signature check of a ModelDeployment: fetch only its signature bundle, verify
it against the TrustPolicy it names, and say what was verified or why not.

Two caches keep this cheap. The fetch is skipped while nothing that decides it changed (the
object and its spec generation, the policy's generation, the credentials' resourceVersion) and the
bundle verified, for at most REREAD (MODELGUARD_BUNDLE_REREAD_SECONDS); the cryptography is
skipped for a bundle already verified under the same policy generation, so models that share one
bundle are verified once. Any change of the spec reads the bundle again, and so does the passing
of REREAD: a bundle replaced at the same URI (a re-publication, or another signed model put there)
is seen within that time, and the reconcile decides what the new root digest may do
(trust/pinning). A refused bundle is fetched again later, with backoff: what refused it may change
at the source, where no watch sees it. The pod's agent re-checks every byte against the root
digest verified here.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import hashlib
import typing

from modelguard import kube, sources
from modelguard.api import errors, trustpolicy, v1alpha1
from modelguard.reconcile import conditions
from modelguard.sources import credentials
from modelguard.sources import errors as source_errors
from modelguard.trust import bundle, reasons, verify
from modelguard.trust import policy as policy_rules

# Failures of the source itself: retried soon, the next attempt may well succeed.
_TRANSIENT: typing.Final = (source_errors.SourceUnreachable, source_errors.BadResponse)
# Everything else about the bundle can change at its URI without any object changing (a
# signature uploaded after the ModelDeployment, a bundle signed again, access granted in the
# store): checked again after a delay that grows with how long it has been refused.
FIRST_RECHECK: typing.Final = datetime.timedelta(seconds=10)
LAST_RECHECK: typing.Final = datetime.timedelta(minutes=5)
# How long a verified bundle is trusted to be what its URI still holds: one small read per model
# in that time finds a bundle replaced behind the cluster's back.
REREAD: typing.Final = datetime.timedelta(minutes=5)
_CACHE_SIZE: typing.Final = 1024


@dataclasses.dataclass(frozen=True)
class Verified:
    """A model version whose signatures the policy accepts."""

    root_digest: str
    """"sha256:<hex>", pinned into the pod for the agent."""
    signature_digest: str
    """"sha256:<hex>" of the signature file verified: the root digest binds the file digests but
    not their names, so the pod must read this very bundle, not a rewritten one."""
    signers: str
    subject_name: str
    """The statement's subject[0].name: model_signing writes the signed folder's name."""
    files: int
    bytes: int | None
    verified_at: str
    allow_formats: tuple[str, ...]
    """The code-capable format families the policy allows, for the pod's agent."""
    audit_formats: bool
    """The policy's enforcement is Audit: the pod's agent admits, and reports, code-capable
    files it does not allow."""
    audit: tuple[reasons.Violation, ...]
    """Violations admitted because the policy's enforcement is Audit."""
    policy: trustpolicy.TrustPolicySpec
    """The policy it was verified under; its approvers decide the approval gate."""
    source_endpoint: str | None = None
    """The S3 endpoint the policy binds the source to (None: AWS S3, or not an s3:// source)."""
    signature_endpoint: str | None = None
    """The same for the signature bundle."""
    source_private_addresses: bool = False
    """The policy's source for spec.model.source admits private addresses."""
    signature_private_addresses: bool = False
    """The same for the signature bundle."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    decision: conditions.Decision
    verified: Verified | None
    transient: bool = False
    """True when retrying soon may succeed (the source was unreachable)."""
    recheck_after: datetime.timedelta | None = None
    """When to look at the bundle again, for a refusal that a change at the source (not in the
    cluster) could lift."""
    reread_at: datetime.datetime | None = None
    """For a verified bundle: when to read it again, to see whether it was replaced."""


_Store = collections.OrderedDict[tuple[str, ...], "Outcome"]


class Cache:
    """Bounded, per operator process; losing it costs one re-verification per model."""

    def __init__(self, *, reread: datetime.timedelta = REREAD) -> None:
        self.reread = reread
        """How long a verified bundle is trusted to be what its URI still holds."""
        # Only successes: a refusal is looked at again (see recheck_after).
        self._by_inputs: _Store = collections.OrderedDict()
        self._by_bundle: _Store = collections.OrderedDict()
        self._refused_since: collections.OrderedDict[tuple[str, ...], datetime.datetime] = (
            collections.OrderedDict()
        )

    def recheck_after(
        self, inputs: tuple[str, ...], *, now: datetime.datetime
    ) -> datetime.timedelta:
        """The delay before the next look at inputs refused again: as long as they have been
        refused so far, from FIRST_RECHECK up to LAST_RECHECK. Counted in time, not in refusals:
        a reconcile that an Event or a status write brings adds none."""
        since = self._refused_since.setdefault(inputs, now)
        self._refused_since.move_to_end(inputs)
        while len(self._refused_since) > _CACHE_SIZE:
            self._refused_since.popitem(last=False)
        return min(max(FIRST_RECHECK, now - since), LAST_RECHECK)

    @staticmethod
    def _get(
        store: collections.OrderedDict[tuple[str, ...], Outcome], key: tuple[str, ...]
    ) -> Outcome | None:
        found = store.get(key)
        if found is not None:
            store.move_to_end(key)
        return found

    @staticmethod
    def _put(
        store: collections.OrderedDict[tuple[str, ...], Outcome],
        key: tuple[str, ...],
        value: Outcome,
    ) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _CACHE_SIZE:
            store.popitem(last=False)


async def verify_model(
    kube_client: kube.Kube,
    model: v1alpha1.ModelDeployment,
    *,
    cache: Cache,
    now: datetime.datetime,
    credentials_role: str,
) -> Outcome:
    """Verifies the signature bundle of `model` against its TrustPolicy."""
    policy_name = model.spec.trust_policy
    body = await kube_client.get_trust_policy(policy_name)
    if body is None:
        return _refused(
            "PolicyNotFound",
            f'spec.trustPolicy: TrustPolicy "{policy_name}" does not exist; a security owner '
            "creates it (kubectl explain trustpolicy.spec)",
        )
    try:
        policy = trustpolicy.parse(body)
    except errors.InvalidObjectError as error:
        return _refused("InvalidPolicy", f'TrustPolicy "{policy_name}": {error}')

    settings, secret_version, refusal = await _source_settings(
        kube_client, model, credentials_role=credentials_role
    )
    if refusal is not None:
        return refusal
    source = model.spec.model.source
    signature_uri = model.spec.model.signature_uri()
    inputs = (
        # A claim's binding depends on the model's namespace: models elsewhere share nothing.
        model.namespace,
        source.uri,
        signature_uri,
        str(policy.metadata.get("uid", "")),
        str(policy.metadata.get("generation", "")),
        secret_version,
        # A spec change reads the bundle again: going back to an earlier spec must not bring back
        # what was verified then, the bundle at its URI may have been replaced since.
        model.uid,
        str(model.metadata.get("generation", "")),
    )
    cached = Cache._get(cache._by_inputs, inputs)
    if cached is not None and cached.reread_at is not None and now < cached.reread_at:
        return cached

    # Before the fetch: the operator reads only from where the security owner lets models come
    # from, and from the endpoint the policy names there, not from wherever a spec or a Secret
    # points (an internal service, say). Audit mode waives none of it.
    endpoints: dict[str, str | None] = {}
    private: dict[str, bool] = {}
    for field, uri in (("spec.model.signature", signature_uri), ("spec.model.source", source.uri)):
        bound = policy_rules.bind(
            uri,
            sources=policy_rules.source_rules(policy.spec),
            namespace=model.namespace,
            requested_endpoint=settings.s3.endpoint if settings else None,
            requested_by=f'Secret "{source.credentials_secret}" key {credentials.ENDPOINT_URL}',
        )
        if isinstance(bound, reasons.Violation):
            return _refused(
                str(bound.reason), f'{field}: {bound.message} (TrustPolicy "{policy_name}")'
            )
        endpoints[field] = bound.endpoint if uri.startswith("s3://") else None
        private[field] = bound.allow_private_addresses
    signature_endpoint = endpoints["spec.model.signature"]
    try:
        signature_file = await _fetch_bundle(
            signature_uri,
            settings=settings,
            endpoint=signature_endpoint,
            private_addresses=private["spec.model.signature"],
        )
    except source_errors.SourceError as error:
        message = f"spec.model.signature {signature_uri}: {error.message}"
        if isinstance(error, _TRANSIENT):
            if cached is not None:
                # The bundle verified before and the store does not answer now: nothing says it
                # changed, so a network blip does not turn a serving model unverified.
                return dataclasses.replace(cached, reread_at=now + FIRST_RECHECK)
            return _refused(error.reason, message, transient=True)
        return dataclasses.replace(
            _refused(error.reason, message), recheck_after=cache.recheck_after(inputs, now=now)
        )

    bundle_digest = hashlib.sha256(signature_file).hexdigest()
    # Not the model's uid or generation: models share bundles (a claim's binding does depend on
    # the namespace).
    by_bundle = (bundle_digest, *inputs[:5])
    # In a thread: parsing and checking a large bundle takes a while, and the event loop also
    # answers admission requests, which the API server is waiting for.
    outcome = Cache._get(cache._by_bundle, by_bundle)
    if outcome is None:
        outcome = await asyncio.to_thread(
            functools.partial(
                _verify,
                signature_file,
                policy=policy,
                source_uri=source.uri,
                signature_uri=signature_uri,
                signature_digest=f"sha256:{bundle_digest}",
                namespace=model.namespace,
                now=now,
            )
        )
    Cache._put(cache._by_bundle, by_bundle, outcome)
    if outcome.verified is None:
        return dataclasses.replace(outcome, recheck_after=cache.recheck_after(inputs, now=now))
    outcome = dataclasses.replace(
        outcome,
        verified=dataclasses.replace(
            outcome.verified,
            source_endpoint=endpoints["spec.model.source"],
            signature_endpoint=signature_endpoint,
            source_private_addresses=private["spec.model.source"],
            signature_private_addresses=private["spec.model.signature"],
        ),
    )
    cache._refused_since.pop(inputs, None)
    outcome = dataclasses.replace(outcome, reread_at=now + cache.reread)
    Cache._put(cache._by_inputs, inputs, outcome)
    return outcome


def _verify(
    signature_file: bytes,
    *,
    policy: trustpolicy.TrustPolicy,
    source_uri: str,
    signature_uri: str,
    signature_digest: str,
    namespace: str,
    now: datetime.datetime,
) -> Outcome:
    try:
        signed = verify.verify_signatures(
            signature_file,
            policy_rules.rules_of(policy.spec),
            source_uri=source_uri,
            signature_uri=signature_uri,
            namespace=namespace,
        )
    except reasons.VerificationError as error:
        return _refused(str(error.reason), f"{signature_uri}: {error.message}")
    statement = signed.statement
    if statement.single_file():
        # Not tampering: the agent would refuse it (a source is a folder), and quarantine.
        return _refused(
            str(reasons.Reason.MISSING_FILE),
            f"{signature_uri}: the statement signs a single-file model (its one resource is "
            "named '.'), which names no file in spec.model.source: sign the folder that holds "
            "the file",
        )
    sizes = statement.file_sizes()
    # The files serialization signs digests only; sizes are known for the shards one.
    total = None if None in sizes.values() else sum(v for v in sizes.values() if v is not None)
    signers = ",".join(sorted({who.signer for who in signed.signers}))
    root = f"sha256:{statement.root_digest.hex()}"
    message = f"{len(sizes)} files, root {root}, signed by {signers}"
    if signed.audit:
        message += "; admitted under Audit despite: " + "; ".join(
            f"{v.reason}: {v.message}" for v in signed.audit
        )
    return Outcome(
        decision=conditions.Decision(
            "True",
            conditions.AUDIT_VIOLATIONS if signed.audit else "SignatureVerified",
            message,
        ),
        verified=Verified(
            root_digest=root,
            signature_digest=signature_digest,
            signers=signers,
            subject_name=statement.model_name,
            files=len(sizes),
            bytes=total,
            verified_at=conditions.rfc3339(now),
            allow_formats=policy.spec.formats.allowed(),
            audit_formats=policy.spec.enforcement is trustpolicy.Enforcement.AUDIT,
            audit=signed.audit,
            policy=policy.spec,
        ),
    )


async def _source_settings(
    kube_client: kube.Kube, model: v1alpha1.ModelDeployment, *, credentials_role: str
) -> tuple[credentials.SourceSettings | None, str, Outcome | None]:
    secret_name = model.spec.model.source.credentials_secret
    if not secret_name:
        return None, "", None
    try:
        found = await kube_client.get_secret_data(namespace=model.namespace, name=secret_name)
    except kube.ApiError as error:
        if error.status == 403:
            return (
                None,
                "",
                _refused(
                    "CredentialsForbidden",
                    f"spec.model.source.credentialsSecret: the operator may not read Secret "
                    f'"{secret_name}"; grant it with a RoleBinding in namespace {model.namespace} '
                    f"to the ClusterRole {credentials_role} (docs/chart.md)",
                ),
            )
        raise
    if found is None:
        return (
            None,
            "",
            _refused(
                "CredentialsNotFound",
                f'spec.model.source.credentialsSecret: Secret "{secret_name}" does not exist in '
                f"namespace {model.namespace}",
            ),
        )
    data, version = found
    try:
        return credentials.from_secret_data(data), version, None
    except source_errors.SourceError as error:
        return (
            None,
            version,
            _refused(
                error.reason,
                f'spec.model.source.credentialsSecret "{secret_name}": {error.message}',
            ),
        )


async def _fetch_bundle(
    signature_uri: str,
    *,
    settings: credentials.SourceSettings | None,
    endpoint: str | None,
    private_addresses: bool,
) -> bytes:
    settings = credentials.with_private_addresses(
        credentials.bind_endpoint(
            settings or credentials.from_secret_data({}),
            endpoint=endpoint,
            bound_by="the TrustPolicy",
        ),
        allowed=private_addresses,
    )
    source, name = sources.open_file(
        signature_uri, s3_settings=settings.s3, transport_settings=settings.transport
    )
    async with source:
        return await source.read_small(name, max_bytes=bundle.MAX_SIGNATURE_FILE_BYTES)


def _refused(reason: str, message: str, *, transient: bool = False) -> Outcome:
    return Outcome(conditions.Decision("False", reason, message), None, transient=transient)
