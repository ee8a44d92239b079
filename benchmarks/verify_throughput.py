"""Verification throughput of `modelguard verify` next to `model_signing verify` and the machine.

Builds a model of at least --size-gib GiB (several shards plus small files) in a temporary
directory (or reuses --dir), signs it with model_signing (key method), warms the page cache, then
prints side by side, from the same run: our verification (GB/s, wall time, peak extra RSS),
model_signing's CLI verification (its start-up included) and the machine limit, `openssl speed
-evp sha256` on one core times the cores. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

GIB = 1024**3
CHUNK = 16 * 1024 * 1024


def build_model(directory: pathlib.Path, *, size: int, shards: int) -> int:
    """Several weight shards (pseudo-random bytes) plus small config and tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = size // shards
    block = os.urandom(CHUNK)
    total = 0
    for index in range(shards):
        path = directory / f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        if not path.exists() or path.stat().st_size != per_shard:
            with path.open("wb") as handle:
                written = 0
                while written < per_shard:
                    # Vary each block so no two shards hash alike.
                    piece = block[: min(CHUNK, per_shard - written)]
                    handle.write(index.to_bytes(8, "little") + piece[8:])
                    written += len(piece)
        total += per_shard
    for name in ("config.json", "tokenizer.json", "generation_config.json", "special_tokens.json"):
        (directory / name).write_text('{"model_type": "bench", "vocab_size": 32000}\n' * 50)
        total += (directory / name).stat().st_size
    return total


def sign(model: pathlib.Path, work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public, signature = work / "key.pem", work / "key.pub", work / "model.sig"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    subprocess.run(
        [
            _tool("model_signing"),
            "sign",
            "key",
            str(model),
            "--private_key",
            str(private),
            "--signature",
            str(signature),
        ],
        check=True,
        capture_output=True,
    )
    return signature, public


def timed(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) of the child, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed: {done.stdout}{done.stderr}")
    # ru_maxrss of children is the largest of any child so far: run the smaller one first.
    return elapsed, max(peak, before) * 1024, done.stdout.strip()


def baseline_rss() -> int:
    """Peak RSS of a Python that imports what `modelguard verify` imports and does nothing."""
    code = "import modelguard.cli, modelguard.trust.verify, modelguard.api.trustpolicy, yaml"
    _, peak, _ = timed([sys.executable, "-c", code])
    return peak


def openssl_limit() -> tuple[float, int]:
    """SHA-256 bytes/s of one core at 16 KiB blocks (openssl speed), and the core count."""
    openssl = shutil.which("openssl")
    cores = os.cpu_count() or 1
    if openssl is None:
        return float("nan"), cores
    out = subprocess.run(
        [openssl, "speed", "-seconds", "2", "-bytes", "16384", "-evp", "sha256"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # The result line: "sha256   123456.78k" (thousands of bytes per second).
    match = re.search(r"^sha256\s+([\d.]+)k", out, re.MULTILINE)
    return (float(match.group(1)) * 1000 if match else float("nan")), cores


def warm(directory: pathlib.Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(CHUNK):
                    pass


def _tool(name: str) -> str:
    return str(pathlib.Path(sys.executable).parent / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=pathlib.Path, help="reuse (or create) the model here")
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(scratch)
        model = args.dir or work / "model"
        size = build_model(model, size=int(args.size_gib * GIB), shards=args.shards)
        signature, public = sign(model, work)
        warm(model)
        ours = [
            _tool("modelguard"),
            "verify",
            str(model),
            "--signature",
            str(signature),
            "--public-key",
            str(public),
        ]
        theirs = [
            _tool("model_signing"),
            "verify",
            "key",
            str(model),
            "--signature",
            str(signature),
            "--public_key",
            str(public),
        ]
        idle = baseline_rss()
        our_runs = [timed(ours) for _ in range(args.runs)]
        our_peak = max(peak for _, peak, _ in our_runs)
        their_runs = [timed(theirs) for _ in range(args.runs)]
        their_peak = max(peak for _, peak, _ in their_runs)
        per_core, cores = openssl_limit()
    our_best = min(seconds for seconds, _, _ in our_runs)
    their_best = min(seconds for seconds, _, _ in their_runs)
    limit = per_core * cores
    print(f"model: {size / 1e9:.2f} GB in {args.shards} shards + 4 small files; {cores} cores")
    print(f"{'what':<44} {'GB/s':>7} {'wall s':>8} {'peak extra RSS MiB':>19}")
    print(
        f"{f'modelguard verify (best of {args.runs})':<44} {size / our_best / 1e9:>7.2f} "
        f"{our_best:>8.2f} {(our_peak - idle) / 2**20:>19.1f}"
    )
    print(
        f"{f'model_signing verify key (best of {args.runs})':<44} "
        f"{size / their_best / 1e9:>7.2f} {their_best:>8.2f} {(their_peak - idle) / 2**20:>19.1f}"
    )
    print(
        f"{f'machine limit: openssl sha256 x {cores} cores':<44} {limit / 1e9:>7.2f} "
        f"{size / limit:>8.2f} {'-':>19}"
    )
    print(
        f"ours vs limit: {size / our_best / limit:.0%}; ours vs model_signing wall time: "
        f"{our_best / their_best:.2f}x"
    )
    print(f"ours said: {our_runs[0][2]}")


if __name__ == "__main__":
    main()
