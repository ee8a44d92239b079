"""`modelguard audit verify`: the operator's audit log checked against its signed checkpoints
under the log's public keys; `N records in K segments, chain intact; ...`, or the first problem.
`modelguard audit public-key`: the verifier key of an audit key, to publish for verifiers."""

from __future__ import annotations

import datetime
import json
import pathlib
import sys
import typing

import yaml

from modelguard.audit import chain, keys

# A record line is a few KiB at most; a longer line is no record and is not held whole.
MAX_LINE_BYTES: typing.Final = 1024 * 1024
# Checkpoint notes are a few hundred bytes; a kubectl list of 100,000 of them is some 100 MiB.
MAX_SOURCE_BYTES: typing.Final = 256 * 1024 * 1024
MAX_KEY_FILE_BYTES: typing.Final = 1024 * 1024


class _Refused(Exception):
    """Input the command cannot use; the message names it and what is accepted."""


def verify(
    *,
    file: str,
    public_keys: typing.Sequence[str],
    sources: typing.Sequence[str],
    no_checkpoints: bool,
    since: str | None,
) -> int:
    """Exit code 0 and the summary on standard output, 1 and what is wrong on standard error.
    `file` is a path, or - for standard input."""
    try:
        keyring = _keyring(public_keys)
        when = _since(since)
        anchors = None if no_checkpoints else _anchors(sources, keyring=keyring, log=file)
    except (_Refused, keys.InvalidKey, chain.LoadProblem) as error:
        print(error, file=sys.stderr)
        return 1
    try:
        if file == "-":
            result = chain.verify(
                _decoded(sys.stdin.buffer), keyring=keyring, anchors=anchors, since=when
            )
        else:
            with pathlib.Path(file).open("rb") as lines:
                result = chain.verify(_decoded(lines), keyring=keyring, anchors=anchors, since=when)
    except OSError as error:
        print(f"{file}: {error.strerror or error}", file=sys.stderr)
        return 1
    if not result.intact:
        print(result.summary(), file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def public_key(*, key_file: pathlib.Path, log_name: str) -> int:
    """Prints the verifier key of the audit key in `key_file` under `log_name`."""
    try:
        signer = keys.load_signer(key_file, name=log_name)
    except keys.InvalidKey as error:
        print(error, file=sys.stderr)
        return 1
    print(signer.verifier.vkey)
    return 0


def _keyring(given: typing.Sequence[str]) -> keys.Keyring:
    """The keys of `--public-key`: each a verifier key, or a file of them (one per line)."""
    if not given:
        raise _Refused(
            "--public-key is required: the log's verifier key (<name>+<key ID>+<key>, as "
            "`modelguard audit public-key` prints it), or a file of them, one per line"
        )
    found: list[keys.Verifier] = []
    for value in given:
        path = pathlib.Path(value)
        if path.is_file():
            found.extend(keys.parse_verifiers(_read(path, MAX_KEY_FILE_BYTES), where=value))
            continue
        try:
            found.append(keys.parse_verifier(value))
        except keys.InvalidKey as error:
            raise _Refused(
                f"--public-key {value!r}: no such file, and {error}"
                if "+" in value
                else f"--public-key {value}: no such file, and not a verifier key "
                "(<name>+<key ID>+<key>)"
            ) from None
    return keys.Keyring.of(found)


def _since(value: str | None) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _Refused(
            f"--since {value!r}: expected a date or an RFC 3339 time, e.g. 2030-01-02 or "
            "2030-01-02T03:04:05Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _anchors(sources: typing.Sequence[str], *, keyring: keys.Keyring, log: str) -> chain.Anchors:
    if not sources:
        raise _Refused(
            "--checkpoints is required: where the operator published the log's checkpoints (a "
            "directory or file of signed notes, or `kubectl get configmaps -l "
            "audit.modelguard.dev/log -o json` output); --no-checkpoints checks the chain only"
        )
    return chain.load_anchors(_notes(sources, log=log), keyring=keyring)


def _notes(sources: typing.Sequence[str], *, log: str) -> typing.Iterator[tuple[str, str]]:
    """(where, signed note) for every checkpoint in the sources, read up to MAX_SOURCE_BYTES."""
    budget = [MAX_SOURCE_BYTES]
    for source in sources:
        if source == "-":
            if log == "-":
                raise _Refused("--checkpoints -: standard input already carries the log")
            yield from _parsed(_take(sys.stdin.buffer.read(budget[0] + 1), budget), where="-")
            continue
        path = pathlib.Path(source)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in found.relative_to(path).parts):
                    continue
                yield from _parsed(_take_file(found, budget), where=str(found))
        elif path.exists():
            yield from _parsed(_take_file(path, budget), where=source)
        else:
            raise _Refused(f"--checkpoints {source}: no such file or directory")


def _take_file(path: pathlib.Path, budget: list[int]) -> bytes:
    try:
        with path.open("rb") as file:
            return _take(file.read(budget[0] + 1), budget)
    except OSError as error:
        raise _Refused(f"--checkpoints {path}: {error.strerror or error}") from None


def _take(data: bytes, budget: list[int]) -> bytes:
    if len(data) > budget[0]:
        raise _Refused(
            f"--checkpoints: more than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB of checkpoints; "
            "verify the segments in parts (--since) or from fewer sources"
        )
    budget[0] -= len(data)
    return data


def _parsed(data: bytes, *, where: str) -> typing.Iterator[tuple[str, str]]:
    """The notes in one source: a signed note itself, or ConfigMaps as kubectl prints them (JSON
    or YAML, one object or a List) whose `data.checkpoint` is a note."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(f"--checkpoints {where}: not UTF-8 text") from None
    if _CHECKPOINT_LINE in text:
        # The audit proxy's log: checkpoint lines among records and other output (`kubectl logs`
        # gives its standard error too). A signed note never holds that text.
        found = _checkpoint_lines(text, where=where)
        if found is not None:
            yield from found
            return
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            lines = _checkpoint_lines(text, where=where)
            if lines is None:
                raise _Refused(f"--checkpoints {where}: not valid JSON") from None
            yield from lines
            return
    elif stripped.startswith(("apiVersion:", "items:", "kind:", "metadata:", "---")):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError:
            raise _Refused(f"--checkpoints {where}: not valid YAML") from None
    else:
        yield where, text
        return
    yield from _config_maps(document, where=where)


# A line of the audit proxy's output that carries a checkpoint (records are the other lines).
_CHECKPOINT_LINE: typing.Final = '"kind":"AuditCheckpoint"'


def _checkpoint_lines(text: str, *, where: str) -> list[tuple[str, str]] | None:
    """The checkpoints of JSON lines as the audit proxy writes them (its log, where checkpoint
    lines are among the records), or None when no line is one."""
    found: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        at = line.find("{")
        if at < 0 or _CHECKPOINT_LINE not in line:
            continue
        try:
            document = json.loads(line[at:])
        except (ValueError, RecursionError):
            continue
        for name, note in _config_maps(document, where=f"{where}, line {number}"):
            found.append((name, note))
    return found or None


def _config_maps(document: object, *, where: str) -> typing.Iterator[tuple[str, str]]:
    if not isinstance(document, dict):
        raise _Refused(f"--checkpoints {where}: neither a ConfigMap nor a List of them")
    items = document.get("items") if "items" in document else [document]
    if not isinstance(items, list):
        raise _Refused(f"--checkpoints {where}: items is not a list")
    for item in items:
        if not isinstance(item, dict):
            continue
        if "items" in item:
            yield from _config_maps(item, where=where)
            continue
        data, metadata = item.get("data"), item.get("metadata")
        note = data.get("checkpoint") if isinstance(data, dict) else None
        if not isinstance(note, str):
            continue
        name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
        namespace = metadata.get("namespace", "") if isinstance(metadata, dict) else ""
        yield f"{where}: ConfigMap {namespace}/{name}" if namespace else f"{where}: {name}", note


def _read(path: pathlib.Path, limit: int) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise _Refused(f"{path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise _Refused(f"{path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(f"{path}: not UTF-8 text") from None


def _decoded(lines: typing.IO[bytes]) -> typing.Iterator[str]:
    """The log's lines, each at most MAX_LINE_BYTES (a longer one is no record: an empty line
    stands for it, and the rest of it is read past, never held)."""
    while True:
        raw = lines.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := lines.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield ""
            continue
        # Invalid UTF-8 must not stop the check: a record holding it then fails its hash, and
        # any other line is skipped anyway.
        yield raw.decode("utf-8", errors="replace")
