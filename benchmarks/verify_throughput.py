"""Verification throughput of `modelguard verify` next to `model_signing verify` and the machine.

Builds a model of at least --size-gib GiB (several shards plus small files) in a temporary
directory (or reuses --dir), signs it with model_signing (key method), warms the page cache, then
runs, interleaved, --runs times each: our verification, model_signing's CLI verification, each
tool's imports alone (its start-up), and `openssl dgst -sha256` over the same files in one process
per core. Prints medians and ranges side by side, from the same run: GB/s and wall time (start-up
included), each process's own peak RSS, and the extra memory: that peak minus the peak of the same
tool's imports alone. The machine limit is `openssl speed -evp sha256` on one core times the
cores; `-multi` shows what the cores give at once right now. Figures are printed, never asserted.

Each tool's time is a fixed start-up plus hashing that grows with the model, so the ratios depend
on the size: start-up weighs on small models, and on large ones both tools approach the machine
limit (and each other). The last lines take start-up away, which no size changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

GIB = 1024**3
CHUNK = 16 * 1024 * 1024
# What each CLI imports before it reads a byte of the model, verifying with a public key.
OUR_IMPORTS = "modelguard.cli, modelguard.trust.verify"
THEIR_IMPORTS = "model_signing._cli"


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


@dataclasses.dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss: int
    """The child's own peak RSS in bytes, with a floor of a bare interpreter's (see timed)."""
    output: str


# Forks and execs the command, then reports its wall time and rusage through a pipe. Linux keeps
# the peak RSS of a process across exec, so a child forked from this benchmark (some 70 MiB by
# then) would report at least that; forked from a bare interpreter, its floor is a few MiB.
_LAUNCHER = """
import os, sys, time
report = int(sys.argv[1])
started = time.monotonic()
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
elapsed = time.monotonic() - started
os.write(report, f"{elapsed} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def timed(command: list[str]) -> Run:
    """Wall seconds from fork to exit, the child's own peak RSS and its output."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as output, os.fdopen(read_end, "rb") as report:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write_end), *command],
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        figures = report.read().decode().split()
        launcher.wait()
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    if launcher.returncode != 0 or len(figures) != 3 or figures[2] != "0":
        code = figures[2] if len(figures) == 3 else f"launcher {launcher.returncode}"
        sys.exit(f"{command[0]} failed ({code}): {text}")
    elapsed, max_rss_kib = float(figures[0]), int(figures[1])
    return Run(elapsed, max_rss_kib * 1024, text)  # Linux reports ru_maxrss in KiB


def openssl_limit(cores: int) -> tuple[float, float]:
    """SHA-256 bytes/s at 16 KiB blocks (openssl speed): one core's times the cores, and what
    `-multi` measures with all cores at once (less when the machine is shared)."""
    return _openssl_speed([]) * cores, _openssl_speed(["-multi", str(cores)])


def _openssl_speed(extra: list[str]) -> float:
    openssl = shutil.which("openssl")
    if openssl is None:
        return float("nan")
    out = subprocess.run(
        [openssl, "speed", *extra, "-seconds", "2", "-bytes", "16384", "-evp", "sha256"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # The result line: "sha256   123456.78k" (thousands of bytes per second).
    match = re.search(r"^sha256\s+([\d.]+)k", out, re.MULTILINE)
    return float(match.group(1)) * 1000 if match else float("nan")


def openssl_files(model: pathlib.Path, cores: int) -> list[str] | None:
    """One shell line hashing every file with `openssl dgst`, one process per core, the files
    dealt out largest first: what a C tool does with the same files, start-up included."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    files = sorted(
        (path for path in model.rglob("*") if path.is_file()), key=lambda p: -p.stat().st_size
    )
    groups: list[list[str]] = [[] for _ in range(cores)]
    loads = [0] * cores
    for path in files:
        lightest = loads.index(min(loads))
        groups[lightest].append(shlex.quote(str(path)))
        loads[lightest] += path.stat().st_size
    jobs = " & ".join(
        f"{openssl} dgst -sha256 {' '.join(group)} >/dev/null" for group in groups if group
    )
    return ["/bin/sh", "-c", f"{jobs} & wait"]


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
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(scratch)
        model = args.dir or work / "model"
        size = build_model(model, size=int(args.size_gib * GIB), shards=args.shards)
        signature, public = sign(model, work)
        warm(model)
        commands = {
            "ours": [
                _tool("modelguard"),
                "verify",
                str(model),
                "--signature",
                str(signature),
                "--public-key",
                str(public),
            ],
            "theirs": [
                _tool("model_signing"),
                "verify",
                "key",
                str(model),
                "--signature",
                str(signature),
                "--public_key",
                str(public),
            ],
            # What the CLIs import before they read a byte; their start-up and memory baselines.
            "ours idle": [sys.executable, "-c", f"import {OUR_IMPORTS}"],
            "theirs idle": [sys.executable, "-c", f"import {THEIR_IMPORTS}"],
        }
        c_tool = openssl_files(model, cores)
        if c_tool is not None:
            commands["openssl"] = c_tool
        runs: dict[str, list[Run]] = {name: [] for name in commands}
        # Interleaved, so that a busy moment of a shared machine does not favour one tool.
        for _ in range(args.runs):
            for name, command in commands.items():
                runs[name].append(timed(command))
        limit, measured_limit = openssl_limit(cores)

    def seconds(name: str) -> tuple[float, float, float]:
        figures = [run.seconds for run in runs[name]]
        return statistics.median(figures), min(figures), max(figures)

    def peak(name: str) -> float:
        return statistics.median(run.peak_rss for run in runs[name]) / 2**20

    print(
        f"model: {size / 1e9:.2f} GB in {args.shards} shards + 4 small files; {cores} cores; "
        f"median of {args.runs} runs [min-max]"
    )
    print(
        f"{'what':<46} {'GB/s':>6} {'wall s':>7} {'[min-max]':>13} {'peak RSS MiB':>13} "
        f"{'extra MiB':>10}"
    )
    rows = [
        ("modelguard verify", "ours", "ours idle"),
        ("model_signing verify key", "theirs", "theirs idle"),
        ("  start-up: modelguard's imports only", "ours idle", None),
        ("  start-up: model_signing's imports only", "theirs idle", None),
    ]
    if "openssl" in runs:
        rows.append((f"openssl dgst -sha256, {cores} processes", "openssl", None))
    for label, name, idle in rows:
        median, low, high = seconds(name)
        rate = f"{size / median / 1e9:>6.2f}" if idle is not None or name == "openssl" else " " * 6
        extra = f"{peak(name) - peak(idle):>10.1f}" if idle is not None else f"{'-':>10}"
        print(
            f"{label:<46} {rate} {median:>7.2f} {f'[{low:.2f}-{high:.2f}]':>13} "
            f"{peak(name):>13.1f} {extra}"
        )
    print(
        f"{f'machine limit: openssl speed sha256 x {cores}':<46} {limit / 1e9:>6.2f} "
        f"{size / limit:>7.2f}"
    )
    print(
        f"{f'  measured: openssl speed -multi {cores}':<46} {measured_limit / 1e9:>6.2f} "
        f"{size / measured_limit:>7.2f}"
    )
    ours, theirs = seconds("ours")[0], seconds("theirs")[0]
    print(
        f"ours vs limit: {size / ours / limit:.0%}; ours vs model_signing wall time: "
        f"{ours / theirs:.2f}x; extra = peak RSS minus that of the same tool's imports alone"
    )
    # Start-up is a fixed cost and hashing scales with the model: the first dominates small models,
    # the second large ones, so each figure above depends on the size. These two do not.
    for label, name in (("ours", "ours"), ("model_signing", "theirs")):
        hashing = seconds(name)[0] - seconds(f"{name} idle")[0]
        print(
            f"{label}, start-up taken away: {hashing:.2f} s, {size / hashing / 1e9:.2f} GB/s, "
            f"{size / hashing / limit:.0%} of the limit"
        )
    print(f"ours said: {runs['ours'][0].output}")


if __name__ == "__main__":
    main()
