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
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import typing
import urllib.parse
from collections.abc import AsyncIterator, Callable

from modelguard import kube, sources
from modelguard.api import errors, times, trustpolicy, v1alpha1
from modelguard.reconcile import binding, conditions, observations
from modelguard.sources import credentials
from modelguard.sources import errors as source_errors
from modelguard.trust import bundle, evidence, reasons, verify
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
# Signature files fetched and verified at once, by default. One costs at most some 170 MiB while it
# is read and checked, whatever it holds (docs/decisions/0009-bounded-signature-files.md): two fit
# the chart's 512Mi memory limit beside the operator itself.
DEFAULT_CONCURRENCY: typing.Final = 2
# Longest message a refusal carries into the status condition: a bundle's own text (a name it
# lists, say) would otherwise make the status as large as the bundle.
_MAX_MESSAGE: typing.Final = 2048

_T = typing.TypeVar("_T")


class Slots:
    """At most `size` signature files in memory at once, from the start of their fetch to the end
    of their check; further ones wait for a slot. The check runs in one of `size` threads: parsing
    and checking a large bundle takes a while, and the event loop also answers admission requests,
    which the API server is waiting for. A slot whose caller is cancelled is free only once its
    thread is done: the thread holds the memory until then."""

    def __init__(self, size: int = DEFAULT_CONCURRENCY) -> None:
        if size < 1:
            raise ValueError(f"verification concurrency must be at least 1, got {size}")
        self.size = size
        # What one origin (a store's endpoint) may hold of the slots, so that a store that stalls
        # or drips its bytes delays the models of other stores by nothing: with one slot, it can
        # only delay them by the fetch deadline.
        self.per_origin = max(1, size // 2)
        self._free = asyncio.Semaphore(size)
        self._origins: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="verify"
        )
        self.in_use = 0
        """Slots held now (the operator's metrics)."""

    @property
    def waiting(self) -> int:
        """Signature files waiting for a slot."""
        return sum(users[0] for _, users in list(self._origins.values())) - self.in_use

    @contextlib.asynccontextmanager
    async def slot(self, origin: str = "") -> AsyncIterator[_Slot]:
        """A slot for a signature file read from `origin` (scheme://host:port of its store)."""
        share, users = self._origins.setdefault(origin, (asyncio.Semaphore(self.per_origin), [0]))
        users[0] += 1
        try:
            await share.acquire()
            try:
                await self._free.acquire()
            except BaseException:
                share.release()
                raise
        except BaseException:
            self._forget(origin, users)
            raise
        held = _Slot(self._threads)
        self.in_use += 1

        def release() -> None:
            self.in_use -= 1
            self._free.release()
            share.release()
            self._forget(origin, users)

        try:
            yield held
        finally:
            running = held.running
            if running is None or running.done():
                release()
            else:
                loop = asyncio.get_running_loop()
                running.add_done_callback(lambda _: _release_from_thread(loop, release))

    def _forget(self, origin: str, users: list[int]) -> None:
        # Origins come and go with policies: the table holds only those in use.
        users[0] -= 1
        if users[0] == 0:
            self._origins.pop(origin, None)


class _Slot:
    def __init__(self, threads: concurrent.futures.ThreadPoolExecutor) -> None:
        self._threads = threads
        self.running: concurrent.futures.Future[typing.Any] | None = None

    async def run(self, work: Callable[[], _T]) -> _T:
        """`work()` in the slot's thread."""
        self.running = self._threads.submit(work)
        return await asyncio.wrap_future(self.running)


def _release_from_thread(loop: asyncio.AbstractEventLoop, release: Callable[[], None]) -> None:
    # A closed loop (the operator stopping) has no waiter left to wake.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(release)


def _origin(uri: str, endpoint: str | None) -> str:
    """Where a signature file is read from: its S3 endpoint, else its URI's scheme and host."""
    if endpoint is not None:
        return endpoint
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


FETCH_DEADLINE: typing.Final = datetime.timedelta(seconds=20)
"""The longest a control-plane fetch of one signature bundle may take, connection included."""


_Store = collections.OrderedDict[tuple[str, ...], observations.Verdict]


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

    def sizes(self) -> dict[str, int]:
        """Entries held per table (the operator's metrics), each bounded by the cache size."""
        return {
            "verified_inputs": len(self._by_inputs),
            "bundles": len(self._by_bundle),
            "refusals": len(self._refused_since),
        }

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
        store: collections.OrderedDict[tuple[str, ...], observations.Verdict], key: tuple[str, ...]
    ) -> observations.Verdict | None:
        found = store.get(key)
        if found is not None:
            store.move_to_end(key)
        return found

    @staticmethod
    def _put(
        store: collections.OrderedDict[tuple[str, ...], observations.Verdict],
        key: tuple[str, ...],
        value: observations.Verdict,
    ) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _CACHE_SIZE:
            store.popitem(last=False)


async def bound_policy(
    kube_client: kube.Kube,
    *,
    name: str,
    namespace: str,
    namespace_labels: typing.Mapping[str, str] | None,
) -> observations.BoundPolicy:
    """The TrustPolicy `name` if it exists, parses and binds `namespace` (whose labels are
    `namespace_labels`); else why not."""
    body = await kube_client.get_trust_policy(name)
    if body is None:
        return observations.BoundPolicy(
            name,
            None,
            conditions.Decision(
                "False",
                v1alpha1.REASON_POLICY_NOT_FOUND,
                f'spec.trustPolicy: TrustPolicy "{name}" does not exist; a security owner '
                "creates it (kubectl explain trustpolicy.spec)",
            ),
        )
    try:
        policy = trustpolicy.parse(body)
    except errors.InvalidObjectError as error:
        return observations.BoundPolicy(
            name,
            None,
            conditions.Decision(
                "False", str(reasons.Reason.INVALID_POLICY), f'TrustPolicy "{name}": {error}'
            ),
        )
    unbound = binding.check(policy, name=name, namespace=namespace, labels=namespace_labels)
    if unbound is not None:
        return observations.BoundPolicy(name, None, unbound)
    return observations.BoundPolicy(name, policy)


async def verify_model(
    kube_client: kube.Kube,
    model: v1alpha1.ModelDeployment,
    *,
    bound: observations.BoundPolicy,
    cache: Cache,
    slots: Slots,
    now: datetime.datetime,
    credentials_role: str,
) -> observations.Verdict:
    """Verifies the signature bundle of `model` against its bound TrustPolicy, in one of
    `slots`."""
    if bound.policy is None:
        refusal = bound.refusal or conditions.Decision(
            "False", v1alpha1.REASON_POLICY_NOT_FOUND, f'TrustPolicy "{bound.name}"'
        )
        return observations.Verdict(refusal, None)
    outcome = await _verify_under(
        kube_client,
        model,
        policy=bound.policy,
        cache=cache,
        slots=slots,
        now=now,
        credentials_role=credentials_role,
    )
    return dataclasses.replace(outcome, policy=bound.policy)


async def _verify_under(
    kube_client: kube.Kube,
    model: v1alpha1.ModelDeployment,
    *,
    policy: trustpolicy.TrustPolicy,
    cache: Cache,
    slots: Slots,
    now: datetime.datetime,
    credentials_role: str,
) -> observations.Verdict:
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
                str(bound.reason),
                f'{field}: {bound.message} (TrustPolicy "{model.spec.trust_policy}")',
            )
        endpoints[field] = bound.endpoint if uri.startswith("s3://") else None
        private[field] = bound.allow_private_addresses
    signature_endpoint = endpoints["spec.model.signature"]
    # A slot from the fetch to the end of the check: at most that many signature files are in
    # memory at once, whatever they hold.
    async with slots.slot(_origin(signature_uri, signature_endpoint)) as slot:
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
                    # The bundle verified before and the store does not answer now: nothing says
                    # it changed, so a network blip does not turn a serving model unverified.
                    return dataclasses.replace(cached, reread_at=now + FIRST_RECHECK)
                return _refused(error.reason, message, transient=True)
            return dataclasses.replace(
                _refused(error.reason, message), recheck_after=cache.recheck_after(inputs, now=now)
            )
        bundle_digest = await slot.run(lambda: hashlib.sha256(signature_file).hexdigest())
        # Not the model's uid or generation: models share bundles (a claim's binding does depend
        # on the namespace).
        by_bundle = (bundle_digest, *inputs[:5])
        outcome = Cache._get(cache._by_bundle, by_bundle)
        if outcome is None:
            outcome = await slot.run(
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
) -> observations.Verdict:
    try:
        bundles = verify.bundles_of(signature_file)
        signed = verify.verify_signatures(
            signature_file,
            policy_rules.rules_of(policy.spec),
            source_uri=source_uri,
            signature_uri=signature_uri,
            namespace=namespace,
            bundles=bundles,
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
    return observations.Verdict(
        decision=conditions.Decision(
            "True",
            v1alpha1.REASON_AUDIT_VIOLATIONS
            if signed.audit
            else v1alpha1.REASON_SIGNATURE_VERIFIED,
            message,
        ),
        verified=observations.Verified(
            root_digest=root,
            signature_digest=signature_digest,
            signers=signers,
            subject_name=statement.model_name,
            files=len(sizes),
            bytes=total,
            verified_at=times.rfc3339(now),
            allow_formats=policy.spec.formats.allowed(),
            audit_formats=policy.spec.enforcement is trustpolicy.Enforcement.AUDIT,
            audit=signed.audit,
            policy=policy.spec,
            evidence=evidence.record(
                bundles,
                payload=signed.payload,
                root_digest=root,
                signature_digest=signature_digest,
                hash_algorithm=statement.serialization.hash_type,
                source_uri=source_uri,
                signature_uri=signature_uri,
                verified_at=now,
            ),
        ),
    )


async def _source_settings(
    kube_client: kube.Kube, model: v1alpha1.ModelDeployment, *, credentials_role: str
) -> tuple[credentials.SourceSettings | None, str, observations.Verdict | None]:
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
                    v1alpha1.REASON_CREDENTIALS_FORBIDDEN,
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
                v1alpha1.REASON_CREDENTIALS_NOT_FOUND,
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
    # A deadline for the whole fetch, whatever the transport's own timeouts allow: one tenant's
    # endpoint that answers slowly (or never) must not hold up its model's reconcile for long.
    try:
        async with asyncio.timeout(FETCH_DEADLINE.total_seconds()), source:
            return await source.read_small(name, max_bytes=bundle.MAX_SIGNATURE_FILE_BYTES)
    except TimeoutError:
        raise source_errors.SourceUnreachable(
            f"no complete answer within {FETCH_DEADLINE.total_seconds():.0f}s"
        ) from None


def _refused(reason: str, message: str, *, transient: bool = False) -> observations.Verdict:
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return observations.Verdict(
        conditions.Decision("False", reason, message), None, transient=transient
    )
