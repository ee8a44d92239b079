"""Peak memory of the operator verifying a burst of signature files at once: hostile ones next to
normal ones, in the same run, through the operator's own path (verification.verify_model: the fetch
from a local MinIO, the parse, the signature check), with its concurrency bound and without it.

Kinds of signature file, each verified by --burst models at once:
- normal: a real model_signing bundle of a --files-file model (names like those of sharded
  checkpoints);
- hostile flood: as large as the limit allows, an array of short JSON strings, not a bundle at all:
  what cost the most before the bounds (some 13 times its size to parse);
- hostile, unsigned: as large as the limit allows, a payload of tiny JSON objects under a signature
  that does not verify: what costs the most now of what anyone who can write to an allowed source
  can make;
- hostile, signed: as large as the limit allows, signed by the trusted key (a stolen key, or a
  signer who misbehaves): a statement at the value and text bounds at once, the costliest to parse.

Each case runs in a fresh process, whose idle RSS (the operator's modules imported, kopf included)
and peak RSS (VmHWM) are printed; the extra over idle, divided by the verifications that ran at
once, is what one verification costs. The bounded cases use --slots (the chart's default); the
unbounded ones let the whole burst run at once, as before the bound. With --before REV the same
burst also runs against the code of a git revision (its parser, its own thread pool), for the
figure before the change; hostile files are then --mib MiB, within that revision's limit.
Figures are printed, never asserted.

Run: PYTHONPATH=hack .venv/bin/python benchmarks/hostile_bundles.py [--burst 8] [--slots 2]
[--files 10000] [--mib 32] [--before REV]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import inspect
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time
import typing

MIB = 1 << 20
REPO = pathlib.Path(__file__).resolve().parents[1]
POD_LIMIT_MIB = 512


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    kind: str
    slots: int
    tree: str | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=8, help="models verified at once")
    parser.add_argument("--slots", type=int, default=None, help="the bound (default: the chart's)")
    parser.add_argument("--files", type=int, default=10_000, help="files of the normal model")
    parser.add_argument("--mib", type=int, default=None, help="size of the hostile files")
    parser.add_argument("--before", metavar="REV", help="also run the code of this git revision")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(json.loads(args.child)))))
        return
    _parent(args)


def _parent(args: argparse.Namespace) -> None:
    import s3server  # noqa: PLC0415 - hack/, on PYTHONPATH for the parent only
    import signedmodel  # noqa: PLC0415
    from modelguard.reconcile import verification  # noqa: PLC0415
    from modelguard.trust import bundle  # noqa: PLC0415

    slots = args.slots or verification.DEFAULT_CONCURRENCY
    mib = args.mib or bundle.MAX_SIGNATURE_FILE_BYTES // MIB
    with tempfile.TemporaryDirectory() as tmp, s3server.running(pathlib.Path(tmp) / "s3") as server:
        work = pathlib.Path(tmp)
        private, public = signedmodel.generate_key(work)
        files = {
            "normal": _normal(work, private, files=args.files),
            "hostile-flood": _hostile_flood(size=mib * MIB),
            "hostile-unsigned": _hostile_unsigned(private, size=mib * MIB),
            "hostile-signed": _hostile_signed(private, size=mib * MIB),
        }
        server.create_bucket("bench")
        for kind, data in files.items():
            server.put_object("bench", f"{kind}/model.sig", data)
        setup = {
            "public_key": public,
            "burst": args.burst,
            "store": {
                "AWS_ACCESS_KEY_ID": server.credentials.access_key,
                "AWS_SECRET_ACCESS_KEY": server.credentials.secret_key,
                "AWS_REGION": server.region,
                "AWS_ENDPOINT_URL": server.endpoint,
            },
        }
        labels = {
            "normal": f"normal ({args.files} files, {len(files['normal']) / MIB:.1f} MiB)",
            "hostile-flood": f"hostile flood ({len(files['hostile-flood']) / MIB:.0f} MiB)",
            "hostile-unsigned": (
                f"hostile, unsigned ({len(files['hostile-unsigned']) / MIB:.0f} MiB)"
            ),
            "hostile-signed": f"hostile, signed ({len(files['hostile-signed']) / MIB:.0f} MiB)",
        }
        cases = [Case(label, kind, slots) for kind, label in labels.items()]
        cases += [Case(label, kind, args.burst) for kind, label in labels.items()]
        if args.before:
            tree = _extract(args.before, work / "before")
            cases += [
                Case(f"{label} @ {args.before}", kind, args.burst, tree)
                for kind, label in labels.items()
            ]
        results = [(case, _run(case, setup)) for case in cases]
    _report(results, burst=args.burst)


def _normal(work: pathlib.Path, private: pathlib.Path, *, files: int) -> bytes:
    import signedmodel  # noqa: PLC0415

    model = work / "model"
    for index in range(files):
        path = model / f"layers/{index // 100:03d}/part-{index:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(str(index).encode())
    return signedmodel.sign(model, private_key=private, signature=work / "normal.sig")


def _envelope(payload: bytes, *, private: pathlib.Path, signed: bool) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    from modelguard.trust import bundle, signatures  # noqa: PLC0415

    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    message = signatures.pae(bundle.IN_TOTO_PAYLOAD_TYPE, payload)
    sig = key.sign(message, ec.ECDSA(hashes.SHA256())) if signed else bytes(70)
    return json.dumps(
        {
            "mediaType": bundle.MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": signatures.key_hint(key.public_key())}},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(),
                "payloadType": bundle.IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
            },
        }
    ).encode()


def _hostile_flood(*, size: int) -> bytes:
    return b'["ab"' + b',"ab"' * ((size - 6) // 5) + b"]"


def _hostile_unsigned(private: pathlib.Path, *, size: int) -> bytes:
    room = size * 3 // 4 - 1024
    return _envelope(b"[" + b"{}," * (room // 3 - 1) + b"{}]", private=private, signed=False)


def _hostile_signed(private: pathlib.Path, *, size: int) -> bytes:
    # As many values as the statement bound lets through (in 5 bytes each), and one string in the
    # rest of the room, at one byte a character.
    room = size * 3 // 4 - 2048
    count = min(room // 5, 1_000_000)
    payload = b'["' + b"a" * (room - 5 * count) + b'",' + b'"ab",' * count + b'"ab"]'
    return _envelope(payload, private=private, signed=True)


def _extract(revision: str, into: pathlib.Path) -> str:
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "operator"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(into, filter="data")
    return str(into / "operator")


def _run(case: Case, setup: dict[str, typing.Any]) -> dict[str, typing.Any]:
    environment = dict(os.environ)
    # Only the operator's code: the parent's hack/ helpers are not what the operator imports.
    environment["PYTHONPATH"] = case.tree or str(REPO / "operator")
    child = {**setup, "kind": case.kind, "slots": case.slots}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(child)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"{case.label}: the verifying process failed:\n{result.stderr}")
    figures: dict[str, typing.Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _report(results: list[tuple[Case, dict[str, typing.Any]]], *, burst: int) -> None:
    print(
        f"{burst} models verified at once through verification.verify_model, MinIO on the same "
        f"machine; RSS of a fresh process each, MiB; {os.cpu_count()} CPUs"
    )
    print(
        f"{'signature files':<44} {'at once':>7} {'idle':>6} {'peak':>6} {'extra':>6} "
        f"{'per file':>8} {'seconds':>7}  outcome"
    )
    worst = 0.0
    idle = 0.0
    for case, figures in results:
        extra = figures["peak"] - figures["idle"]
        at_once = min(case.slots, burst)
        per_file = extra / at_once
        if case.tree is None:
            idle = max(idle, figures["idle"])
            worst = max(worst, per_file)
        outcome = ", ".join(f"{count} {reason}" for reason, count in figures["outcomes"].items())
        bound = "" if case.slots < burst else " (unbounded)"
        print(
            f"{case.label:<44} {at_once:>7} {figures['idle']:>6.0f} {figures['peak']:>6.0f} "
            f"{extra:>6.0f} {per_file:>8.0f} {figures['seconds']:>7.1f}  {outcome}{bound}"
        )
    slots = min(case.slots for case, _ in results)
    print(
        f"the chart's {POD_LIMIT_MIB} MiB limit: idle {idle:.0f} + {slots} x the costliest file "
        f"({worst:.0f}) = {idle + slots * worst:.0f} MiB"
    )


async def _child(setup: dict[str, typing.Any]) -> dict[str, typing.Any]:
    import datetime  # noqa: PLC0415

    # What the operator imports; its idle RSS is the reference the burst adds to.
    from modelguard import handlers  # noqa: F401, PLC0415
    from modelguard.api import v1alpha1  # noqa: PLC0415
    from modelguard.reconcile import verification  # noqa: PLC0415

    class Kube:
        """The two reads verify_model makes of the API server."""

        async def get_trust_policy(self, name: str) -> dict[str, typing.Any]:
            return {
                "apiVersion": "modelguard.dev/v1alpha1",
                "kind": "TrustPolicy",
                "metadata": {"name": name, "uid": "bench", "generation": 1},
                "spec": {
                    "signers": [{"name": "bench", "publicKey": setup["public_key"]}],
                    "sources": ["s3://bench/"],
                    "minApprovals": 0,
                    "namespaceSelector": {},
                },
            }

        async def get_secret_data(
            self, *, namespace: str, name: str
        ) -> tuple[dict[str, bytes], str]:
            return {key: value.encode() for key, value in setup["store"].items()}, "1"

    models = [
        v1alpha1.parse(
            {
                "apiVersion": "modelguard.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": f"m{index}", "namespace": "bench"},
                "spec": {
                    "model": {
                        "name": "m",
                        "version": "1",
                        "source": {"uri": f"s3://bench/m{index}/", "credentialsSecret": "store"},
                        "signature": {"uri": f"s3://bench/{setup['kind']}/model.sig"},
                    },
                    "serving": {"image": "registry.example/server@sha256:" + "ab" * 32},
                },
            }
        )
        for index in range(setup["burst"])
    ]
    options: dict[str, typing.Any] = {
        "cache": verification.Cache(),
        "now": datetime.datetime.now(datetime.UTC),
        "credentials_role": "bench",
    }
    if "slots" in inspect.signature(verification.verify_model).parameters:
        options["slots"] = verification.Slots(setup["slots"])
    if "bound" in inspect.signature(verification.verify_model).parameters:
        # The policy is read once per pass, before the verification.
        options["bound"] = await verification.bound_policy(
            Kube(),  # type: ignore[arg-type]
            name="default",
            namespace="bench",
            namespace_labels={"kubernetes.io/metadata.name": "bench"},
        )
    idle = _rss("VmRSS")
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(verification.verify_model(Kube(), model, **options) for model in models)  # type: ignore[arg-type]
    )
    seconds = time.monotonic() - started
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        reasons[outcome.decision.reason] = reasons.get(outcome.decision.reason, 0) + 1
    return {"idle": idle, "peak": _rss("VmHWM"), "seconds": seconds, "outcomes": reasons}


def _rss(field: str) -> float:
    """MiB of this process from /proc/self/status: VmRSS now, VmHWM its peak since exec."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
