"""fetch-verify end to end over a PVC source (a real directory, no network): the files written
and sealed, the one-line reason and the empty DEST on each refusal."""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import stat
from pathlib import Path

import pytest
import test_agent_plan as helpers
import test_trust_formats as samples

from modelguard import cli
from modelguard.agent import fetchverify
from modelguard.sources import base, pvc
from modelguard.trust import statement

FILES = {
    "config.json": b'{"a": 1}',
    "weights/model.safetensors": b"\x10" + b"\x00" * 7 + b'{"w":{}}' + b"\x00" * 3_000_000,
    "tokenizer/vocab.txt": b"a b c",
}


def publish(mount_root: Path, files: dict[str, bytes]) -> str:
    """The model and its bundle in claim `store`; returns the pinned root digest."""
    folder = mount_root / "store" / "m"
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    signed = helpers.signed(files)
    (folder / "model.sig").write_bytes(helpers.bundle_bytes(signed))
    return f"sha256:{signed.root_digest.hex()}"


def options(tmp_path: Path, root_digest: str, **overrides: object) -> fetchverify.Options:
    values: dict[str, object] = {
        "source": "pvc://store/m",
        "signature": "pvc://store/m/model.sig",
        "root_digest": root_digest,
        "dest": tmp_path / "dest",
        "mount_root": tmp_path / "claims",
        "chunk_size": 64 << 10,
    }
    return fetchverify.Options(**(values | overrides))  # type: ignore[arg-type]


def test_success_writes_sealed_files_and_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "claims", FILES)
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, root), termination_log=log) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"fetched and verified root {root} files 3 bytes ")
    # The same line is the termination message, which the operator's metrics read
    # (test_pods.py: agent_runs).
    assert log.read_text() == out + "\n"
    for name, content in FILES.items():
        path = tmp_path / "dest" / name
        assert path.read_bytes() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE((tmp_path / "dest" / "weights").stat().st_mode) == 0o555


def tamper_bytes(folder: Path) -> None:
    path = folder / "weights" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def symlink(folder: Path) -> None:
    (folder / "link.json").symlink_to(folder / "config.json")


CASES = {
    "byte changed": ("DigestMismatch", FILES, tamper_bytes),
    "file added": ("UnexpectedFile", FILES, lambda f: (f / "extra.py").write_text("x")),
    "file removed": ("MissingFile", FILES, lambda f: (f / "config.json").unlink()),
    "symlink added": ("UnsafePath", FILES, symlink),
    "pickle": (
        "UnsafeFormat",
        FILES | {"weights/extra.bin": pickle.dumps([1, 2, 3], protocol=2)},
        lambda f: None,
    ),
}
# The bypasses of the old sniffer, through the agent: each is refused, by the same rule and
# message as `modelguard verify`.
CODE_CAPABLE = {
    "pickle-without-proto-header": ("weights/model.bin", samples.BYPASSES["proto4-without-header"]),
    "proto0-float-first": ("weights/model.bin", samples.BYPASSES["proto0-float-first"]),
    "zip-member-long-head": ("model.pt", samples.BYPASSES["zip-member-pickle-with-long-head"]),
    "zip-inside-zip": ("weights.zip", samples.BYPASSES["zip-inside-zip"]),
    "npy-object": ("arrays/a.npy", samples.BYPASSES["npy-structured-object-field"]),
    "legacy-torch-tar": ("model.tar", samples.BYPASSES["legacy-torch-tar"]),
    "lz4-joblib": ("model.joblib", samples.BYPASSES["lz4-frame"]),
    "keras-lambda": ("model.keras", samples.BYPASSES["keras-lambda-layer"]),
    "hdf5": ("model.h5", samples.BYPASSES["hdf5-h5-model"]),
}


@pytest.mark.parametrize(("name", "sample"), CODE_CAPABLE.values(), ids=CODE_CAPABLE.keys())
def test_code_capable_files_are_refused_naming_file_format_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, sample: tuple[bytes, str]
) -> None:
    content, family = sample
    root = publish(tmp_path / "claims", FILES | {name: content})
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, root), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"UnsafeFormat: file {name!r} is "), line
    assert line.endswith(f"admitting it needs {family} in spec.formats.allow"), line
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize("family", ["Keras", "HDF5"])
def test_a_family_allowed_is_admitted_and_the_others_are_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], family: str
) -> None:
    files = FILES | {
        "model.keras": samples.BYPASSES["keras-lambda-layer"][0],
        "model.h5": samples.BYPASSES["hdf5-h5-model"][0],
    }
    root = publish(tmp_path / "claims", files)
    log = tmp_path / "termination-log"
    allowed = options(tmp_path, root, allow_formats=frozenset({family}))
    assert fetchverify.run(allowed, termination_log=log) == 1
    other = "HDF5" if family == "Keras" else "Keras"
    assert capsys.readouterr().err.strip().endswith(f"needs {other} in spec.formats.allow")
    both = options(tmp_path, root, allow_formats=frozenset({"Keras", "HDF5"}))
    assert fetchverify.run(both, termination_log=log) == 0


def test_audit_admits_and_reports_every_code_capable_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = FILES | {
        "model.bin": samples.BYPASSES["proto4-without-header"][0],
        "model.keras": samples.BYPASSES["keras-lambda-layer"][0],
        "model.h5": samples.BYPASSES["hdf5-h5-model"][0],
    }
    root = publish(tmp_path / "claims", files)
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, root, audit_formats=True), termination_log=log) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split("'")[1] for line in lines] == ["model.bin", "model.h5", "model.keras"]
    for line in lines:
        assert line.startswith("audit UnsafeFormat: file ")
        assert line.endswith("admitted because the TrustPolicy's enforcement is Audit")
    summary, *admitted = log.read_text().splitlines()
    assert summary.startswith(f"fetched and verified root {root} files ")
    assert admitted == lines


@pytest.mark.parametrize(("reason", "files", "tamper"), CASES.values(), ids=CASES.keys())
def test_refusals_leave_dest_empty(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    reason: str,
    files: dict[str, bytes],
    tamper: object,
) -> None:
    root = publish(tmp_path / "claims", files)
    tamper(tmp_path / "claims" / "store" / "m")  # type: ignore[operator]
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, root, parallel=2), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"{reason}: ")
    assert log.read_text() == line + "\n"
    if (tmp_path / "dest").exists():
        assert list((tmp_path / "dest").iterdir()) == []


def test_bad_flags_are_refused_without_touching_dest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "claims", FILES)
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, "sha256:xyz"), termination_log=log) == 1
    assert fetchverify.run(options(tmp_path, root, parallel=0), termination_log=log) == 1
    assert capsys.readouterr().err.count("InvalidArgument: ") == 2
    assert not (tmp_path / "dest").exists()


def test_a_file_longer_than_listed_is_refused_before_it_is_all_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A source that sends more than it listed (a file growing, a lying server) must not fill the
    # volume before the digest can say no: the stream stops one chunk past the listed size.
    root = publish(tmp_path / "claims", FILES)
    listed = pvc.PvcSource.list_files

    async def shorter(self: pvc.PvcSource) -> list[base.ObjectInfo]:
        return [
            dataclasses.replace(item, size=1000) if item.name.endswith(".safetensors") else item
            for item in await listed(self)
        ]

    monkeypatch.setattr(pvc.PvcSource, "list_files", shorter)
    assert fetchverify.run(options(tmp_path, root), termination_log=tmp_path / "log") == 1
    reason = capsys.readouterr().err.strip()
    assert reason == (
        "DigestMismatch: file 'weights/model.safetensors' is longer than the 1000 bytes the "
        "source listed or the signature holds"
    )
    assert list((tmp_path / "dest").iterdir()) == []


# --- bounds on what lands in the volume ----------------------------------------------------------


def _written_bytes(dest: Path) -> int:
    return sum(path.stat().st_size for path in dest.rglob("*") if path.is_file())


def test_a_listing_larger_than_the_bound_is_refused_before_a_byte_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = publish(tmp_path / "claims", FILES)
    log = tmp_path / "log"
    assert fetchverify.run(options(tmp_path, root, max_bytes=100_000), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("ModelTooLarge: the model's 3 files take 3000029 bytes, more than")
    assert "spec.model.maxBytes" in line
    assert list((tmp_path / "dest").iterdir()) == []


def test_a_source_that_cannot_list_is_stopped_at_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The files serialization signs no sizes and an https:// source lists none: the total bound
    # alone stops the stream, and nothing stays behind. The model is larger than a write batch,
    # so bytes do reach the disk before the bound is met.
    big = fetchverify.BATCH_BYTES * 3
    root = publish(tmp_path / "claims", FILES | {"weights/model.safetensors": b"\x00" * big})
    monkeypatch.setattr(pvc.PvcSource, "can_list", False)
    written: list[int] = []
    clear = fetchverify.destination.Destination.clear

    def measured(self: fetchverify.destination.Destination) -> None:
        written.append(_written_bytes(self.root))
        clear(self)

    monkeypatch.setattr(fetchverify.destination.Destination, "clear", measured)
    bound = fetchverify.BATCH_BYTES + (1 << 20)
    log = tmp_path / "log"
    assert fetchverify.run(options(tmp_path, root, max_bytes=bound), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"ModelTooLarge: the model's files exceed the {bound} bytes")
    assert "'weights/model.safetensors'" in line
    # What the refusal found on disk (before clearing it) had reached the disk, within the bound.
    assert fetchverify.BATCH_BYTES <= written[-1] <= bound
    assert list((tmp_path / "dest").iterdir()) == []


def _sharded_bundle(signed: statement.Statement, *, shard_size: int) -> bytes:
    bundle = json.loads(helpers.bundle_bytes(signed))
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["serialization"] = {
        "method": "shards",
        "hash_type": "sha256",
        "shard_size": shard_size,
        "allow_symlinks": False,
    }
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(bundle).encode()


def test_the_signed_shard_sizes_bound_each_file_whatever_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "claims" / "store" / "m"
    signed_files = {"config.json": b'{"a": 1}', "weights.safetensors": b"\x00" * 5000}
    for name, content in signed_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    sharded = helpers.sharded(signed_files, shard_size=4096)
    (folder / "model.sig").write_bytes(_sharded_bundle(sharded, shard_size=4096))
    # The source grows the file after it was listed: more bytes than the shards sign.
    (folder / "weights.safetensors").write_bytes(b"\x00" * 5000 + b"\x01" * 500_000)
    monkeypatch.setattr(pvc.PvcSource, "can_list", False)
    root = f"sha256:{sharded.root_digest.hex()}"
    log = tmp_path / "log"
    assert fetchverify.run(options(tmp_path, root, chunk_size=4096), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("DigestMismatch: file 'weights.safetensors' is longer than the 5000")
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        pytest.param("pvc://store/m/missing.sig", "MissingFile", id="bundle-missing"),
        pytest.param("pvc://store/m/config.json", "MalformedBundle", id="bundle-garbled"),
    ],
)
def test_a_refusal_before_the_download_leaves_nothing_an_earlier_run_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signature: str, reason: str
) -> None:
    # An init container restarted on the same emptyDir finds the last run's files: a refused run
    # must not leave them there for the model server.
    root = publish(tmp_path / "claims", FILES)
    assert fetchverify.run(options(tmp_path, root), termination_log=tmp_path / "log") == 0
    assert (tmp_path / "dest" / "config.json").exists()
    capsys.readouterr()
    log = tmp_path / "log"
    assert fetchverify.run(options(tmp_path, root, signature=signature), termination_log=log) == 1
    assert capsys.readouterr().err.startswith(f"{reason}: ")
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_agent_bound_defaults_to_the_api_default() -> None:
    from modelguard.api import quantity, v1alpha1  # noqa: PLC0415

    assert quantity.parse(v1alpha1.DEFAULT_MAX_MODEL_BYTES) == fetchverify.DEFAULT_MAX_BYTES


def test_the_cli_passes_max_bytes_to_the_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelguard import cli  # noqa: PLC0415

    root = publish(tmp_path / "claims", FILES)
    argv = [
        "agent",
        "fetch-verify",
        "--source",
        "pvc://store/m",
        "--signature",
        "pvc://store/m/model.sig",
        "--root-digest",
        root,
        "--dest",
        str(tmp_path / "dest"),
        "--termination-log",
        str(tmp_path / "log"),
    ]
    assert cli.main([*argv, "--max-bytes", "0"]) == 1
    assert capsys.readouterr().err.startswith("InvalidArgument: --max-bytes must be at least 1")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    ("flags", "allowed", "audit"),
    [
        pytest.param([], frozenset(), False, id="none"),
        pytest.param(["--allow-format", "Keras"], frozenset({"Keras"}), False, id="keras"),
        pytest.param(
            ["--allow-format", "HDF5", "--allow-format", "Pickle", "--audit-formats"],
            frozenset({"HDF5", "Pickle"}),
            True,
            id="two-and-audit",
        ),
        # What pods built by earlier versions pass.
        pytest.param(["--allow-pickle", "--audit-pickle"], frozenset({"Pickle"}), True, id="old"),
    ],
)
def test_format_flags_reach_the_agent(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], allowed: frozenset[str], audit: bool
) -> None:
    seen: list[fetchverify.Options] = []
    monkeypatch.setattr(fetchverify, "run", lambda options, **_: seen.append(options) or 0)
    argv = ["agent", "fetch-verify", "--source", "pvc://s/m", "--signature", "pvc://s/m/model.sig"]
    argv += ["--root-digest", "sha256:" + "ab" * 32, "--dest", "/nowhere", *flags]
    assert cli.main(argv) == 0
    assert (seen[0].allow_formats, seen[0].audit_formats) == (allowed, audit)


def test_an_unknown_format_family_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agent", "fetch-verify", "--source", "pvc://s/m", "--signature", "pvc://s/m/model.sig"]
    argv += ["--root-digest", "sha256:" + "ab" * 32, "--dest", "/nowhere", "--allow-format", "ONNX"]
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "--allow-format: invalid choice: 'ONNX'" in capsys.readouterr().err


KERAS_LAMBDA_CONFIG = json.dumps(
    {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"layers": [{"module": "keras.layers", "class_name": "Lambda", "config": {}}]},
    }
).encode()
# Judged with the model's other files: the folder Keras loads, the module a pickle imports.
MODEL_LEVEL = {
    "unzipped-keras-folder": (
        {"keras/config.json": KERAS_LAMBDA_CONFIG, "keras/metadata.json": b"{}"},
        "keras/config.json",
        "Keras",
    ),
    "text-pickle-importing-a-shipped-module": (
        {"labels.txt": b"cmg_evil\nanything\n", "mg_evil.py": b"print('hi')\n"},
        "labels.txt",
        "Pickle",
    ),
}


@pytest.mark.parametrize(("files", "name", "family"), MODEL_LEVEL.values(), ids=MODEL_LEVEL.keys())
def test_what_only_the_whole_model_tells_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, bytes],
    name: str,
    family: str,
) -> None:
    root = publish(tmp_path / "claims", FILES | files)
    log = tmp_path / "termination-log"
    assert fetchverify.run(options(tmp_path, root), termination_log=log) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"UnsafeFormat: file {name!r} is "), line
    assert line.endswith(f"admitting it needs {family} in spec.formats.allow"), line
    assert list((tmp_path / "dest").iterdir()) == []
