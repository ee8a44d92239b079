"""What the format check (trust.formats.classify) costs per file, next to a reference measured in
the same run on the same bytes.

Cases: a safetensors file of --size-mib MiB (classified from its head and tail; reference:
sha256 of the whole file, which verification does anyway), a zip of 2,000 deflated 16 KiB
members, none code-capable (every member inspected; reference: zipfile reading every member
whole), a pickle of as many small opcodes as the limit (reference: pickletools.genops over
it), and 2,000,000 two-opcode pickles in a row, past the file's opcode limit (reference:
pickle.load of each, as a loader reads pickles in a row). Prints medians of --runs runs; figures
are printed, never asserted.

    python benchmarks/format_classify.py [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import pickle
import pickletools
import statistics
import struct
import tempfile
import time
import typing
import zipfile

from modelguard.trust import formats

MIB = 1 << 20


def _safetensors(path: pathlib.Path, size: int) -> None:
    header = b'{"w": {"dtype": "U8", "shape": [%d], "data_offsets": [0, %d]}}' % (size, size)
    block = os.urandom(16 * MIB)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        for start in range(0, size, len(block)):
            handle.write(block[: min(len(block), size - start)])


def _archive(path: pathlib.Path) -> None:
    # No member is code-capable, so every one is inspected.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/version", b"3\n")
        for index in range(2000):
            archive.writestr(f"archive/data/{index}", os.urandom(16 << 10))


def _long_pickle(path: pathlib.Path) -> None:
    path.write_bytes(b"\x80\x02(" + b"K\x01" * (formats.LIMITS.pickle_opcodes - 10) + b"l.")


def _pickles_in_a_row(path: pathlib.Path) -> None:
    path.write_bytes(b"N." * 2_000_000)


def _load_each(path: pathlib.Path) -> None:
    with path.open("rb") as handle:
        while handle.peek(1):
            pickle.load(handle)  # noqa: S301 - None, 2,000,000 times: the file built above


def _classify(path: pathlib.Path) -> None:
    with path.open("rb") as handle:
        formats.classify(handle)


def _sha256(path: pathlib.Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MIB):
            digest.update(chunk)


def _read_members(path: pathlib.Path) -> None:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            archive.read(info)


def _genops(path: pathlib.Path) -> None:
    for _ in pickletools.genops(io.BytesIO(path.read_bytes())):
        pass


def _median(call: typing.Callable[[pathlib.Path], None], path: pathlib.Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call(path)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


Reference = tuple[typing.Callable[[pathlib.Path], None], str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = pathlib.Path(directory)
        size_bytes = args.size_mib * MIB
        cases: list[tuple[str, pathlib.Path, typing.Callable[[pathlib.Path], None], Reference]] = [
            (
                "safetensors",
                root / "model.safetensors",
                lambda path: _safetensors(path, size_bytes),
                (_sha256, "sha256 whole"),
            ),
            ("zip", root / "weights.npz", _archive, (_read_members, "zipfile read all")),
            ("opcodes", root / "long.pkl", _long_pickle, (_genops, "pickletools.genops")),
            ("row", root / "row.pkl", _pickles_in_a_row, (_load_each, "pickle.load each")),
        ]
        for name, path, build, (reference, label) in cases:
            build(path)
            size = path.stat().st_size / MIB
            ours = _median(_classify, path, args.runs)
            theirs = _median(reference, path, args.runs)
            print(
                f"{name:12} {size:9.1f} MiB  classify {ours * 1000:9.1f} ms   "
                f"{label} {theirs * 1000:9.1f} ms"
            )


if __name__ == "__main__":
    main()
