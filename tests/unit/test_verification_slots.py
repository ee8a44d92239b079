"""The operator's bound on signature files in memory at once: verification.Slots, and
verify_model holding a slot from the start of a bundle's fetch to the end of its check."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import threading
import typing

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelguard import cli
from modelguard.api import trustpolicy, v1alpha1
from modelguard.reconcile import observations, verification
from modelguard.trust import bundle, digests, signatures

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class _Gauge:
    """How many are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


@pytest.mark.parametrize("size", [1, 2, 3])
async def test_no_more_checks_run_at_once_than_there_are_slots(size: int) -> None:
    slots = verification.Slots(size)
    gauge = _Gauge()
    release = threading.Event()

    def check() -> None:
        gauge.enter()
        release.wait(timeout=10)
        gauge.leave()

    async def one(origin: str) -> None:
        async with slots.slot(origin) as slot:
            await slot.run(check)

    tasks = [asyncio.create_task(one(f"https://store-{index}")) for index in range(3 * size + 1)]
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert gauge.now == size
    release.set()
    await asyncio.gather(*tasks)
    assert gauge.most == size


async def test_a_cancelled_check_keeps_its_slot_until_its_thread_is_done() -> None:
    slots = verification.Slots(1)
    release = threading.Event()
    started = threading.Event()

    def check() -> None:
        started.set()
        release.wait(timeout=10)

    async def first() -> None:
        async with slots.slot() as slot:
            await slot.run(check)

    async def second() -> str:
        async with slots.slot():
            return "ran"

    task = asyncio.create_task(first())
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    waiting = asyncio.create_task(second())
    await asyncio.sleep(0.2)
    # The thread still holds its bundle: no other may be read yet.
    assert not waiting.done()
    release.set()
    assert await asyncio.wait_for(waiting, timeout=5) == "ran"


@pytest.mark.parametrize(("size", "share"), [(1, 1), (2, 1), (3, 1), (4, 2)])
async def test_a_store_that_stalls_holds_at_most_its_share_of_the_slots(
    size: int, share: int
) -> None:
    # Many models of one store that never answers: the models of another store still get a slot
    # at once (with one slot, they wait for the fetch deadline at most).
    slots = verification.Slots(size)
    assert slots.per_origin == share
    stalled = asyncio.Event()
    held = 0

    async def stalling() -> None:
        nonlocal held
        async with slots.slot("http://slow.example:9000"):
            held += 1
            await stalled.wait()

    tasks = [asyncio.create_task(stalling()) for _ in range(3 * size)]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert held == share
    if size > 1:

        async def other() -> str:
            async with slots.slot("http://minio.example:9000"):
                return "verified"

        assert await asyncio.wait_for(other(), timeout=5) == "verified"
    stalled.set()
    await asyncio.gather(*tasks)
    assert held == 3 * size
    # Origins are forgotten once no one uses them: the table does not grow with policies.
    assert slots._origins == {}


def test_a_pool_of_no_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        verification.Slots(0)


def test_the_command_line_default_is_the_pool_default() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert args.verify_concurrency == verification.DEFAULT_CONCURRENCY
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--verify-concurrency=0"])


# --- verify_model: what the operator runs for every model -----------------------------------


class _Kube:
    """The two reads verify_model makes; nothing else is called."""

    def __init__(self, public_pem: str) -> None:
        self.policy = {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "TrustPolicy",
            "metadata": {"name": "default", "uid": "u-1", "generation": 1},
            "spec": {
                "signers": [{"name": "team", "publicKey": public_pem}],
                "sources": [{"uri": "s3://models/"}, {"uri": "s3://models-b/"}],
                "namespaceSelector": {},
                "minApprovals": 0,
            },
        }

    async def get_trust_policy(self, name: str) -> dict[str, typing.Any]:
        return self.policy

    async def get_secret_data(self, *, namespace: str, name: str) -> None:
        raise AssertionError("no credentials are named")


def _signed_bundle(key: ec.EllipticCurvePrivateKey, *, payload: bytes | None = None) -> bytes:
    resource = digests.Resource("a.bin", "sha256", b"\x01" * 32)
    payload = (
        payload
        or json.dumps(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [
                    {"name": "m", "digest": {"sha256": digests.root_digest([resource]).hex()}}
                ],
                "predicateType": "https://model_signing/signature/v1.0",
                "predicate": {
                    "serialization": {"method": "files", "hash_type": "sha256"},
                    "resources": [{"name": "a.bin", "algorithm": "sha256", "digest": "01" * 32}],
                },
            }
        ).encode()
    )
    sig = key.sign(signatures.pae(bundle.IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    return json.dumps(
        {
            "mediaType": bundle.MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": signatures.key_hint(key.public_key())}},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": bundle.IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode()}],
            },
        }
    ).encode()


def _model(index: int) -> v1alpha1.ModelDeployment:
    return v1alpha1.parse(
        {
            "apiVersion": "modelguard.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": f"m{index}",
                "namespace": "team",
                "uid": f"md-{index}",
                "generation": 1,
            },
            "spec": {
                "model": {
                    "name": "m",
                    "version": "1",
                    # Two stores: one store holds at most its share of the slots.
                    "source": {"uri": f"s3://models{'-b' if index % 2 else ''}/m{index}/"},
                },
                "serving": {"image": "registry.example/server@sha256:" + "ab" * 32},
            },
        }
    )


async def test_models_verified_at_once_hold_no_more_bundles_than_there_are_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature_file = _signed_bundle(key)
    in_memory = _Gauge()
    fetched: list[str] = []

    async def fetch(
        signature_uri: str, *, settings: object, endpoint: str | None, private_addresses: bool
    ) -> bytes:
        in_memory.enter()
        fetched.append(signature_uri)
        await asyncio.sleep(0.05)
        return signature_file

    check = verification._verify

    def checked(*args: typing.Any, **kwargs: typing.Any) -> observations.Verdict:
        try:
            return check(*args, **kwargs)
        finally:
            in_memory.leave()

    monkeypatch.setattr(verification, "_fetch_bundle", fetch)
    monkeypatch.setattr(verification, "_verify", checked)
    kube = _Kube(pem.decode())
    cache = verification.Cache()
    slots = verification.Slots(2)
    bound = await verification.bound_policy(
        kube,  # type: ignore[arg-type]
        name="default",
        namespace=_model(0).namespace,
        namespace_labels={"kubernetes.io/metadata.name": "team"},
    )
    outcomes = await asyncio.gather(
        *(
            verification.verify_model(
                kube,  # type: ignore[arg-type]
                _model(index),
                bound=bound,
                cache=cache,
                slots=slots,
                now=NOW,
                credentials_role="role",
            )
            for index in range(8)
        )
    )
    assert len(fetched) == 8
    assert all(outcome.verified is not None for outcome in outcomes), outcomes[0]
    assert in_memory.most == 2
    assert in_memory.now == 0


def test_a_refusal_quoting_a_long_name_is_cut_short_for_the_status() -> None:
    # A signed statement may list a name of 4 KiB; the status condition quotes at most 2 KiB.
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    name = "../" + "n" * 4000
    resource = digests.Resource(name, "sha256", b"\x01" * 32)
    payload = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "m", "digest": {"sha256": digests.root_digest([resource]).hex()}}],
            "predicateType": "https://model_signing/signature/v1.0",
            "predicate": {
                "serialization": {"method": "files", "hash_type": "sha256"},
                "resources": [{"name": name, "algorithm": "sha256", "digest": "01" * 32}],
            },
        }
    ).encode()
    outcome = verification._verify(
        _signed_bundle(key, payload=payload),
        policy=trustpolicy.parse(_Kube(pem.decode()).policy),
        source_uri="s3://models/m/",
        signature_uri="s3://models/m/model.sig",
        signature_digest="sha256:" + "00" * 32,
        namespace="team",
        now=NOW,
    )
    assert outcome.decision.reason == "UnsafePath"
    assert outcome.decision.message.startswith("s3://models/m/model.sig: resources[0].name '../n")
    assert len(outcome.decision.message) <= 2048
