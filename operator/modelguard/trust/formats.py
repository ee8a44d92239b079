"""Could a model file's usual loader run code chosen by whoever wrote it? Judged by content alone.

Extensions lie (a `weights.bin` can be a pickle), and so do first bytes, so the rule is what a
loader would do with the bytes:
- a pickle stream of any protocol, with or without a PROTO header, is code-capable as soon as the
  unpickler would reach an import (GLOBAL, STACK_GLOBAL, INST) with its stack and memo in order:
  every call opcode needs a callable, and only an import makes one (in printable text, once the
  import is called or returned, so that a labels file `cat\ndog\n` stays text). The opcodes are
  parsed as leniently as CPython's unpickler reads them (pickletools.genops is stricter: `I0x10`
  stops it but not the unpickler), length-prefixed data is skipped, and what follows a STOP is read
  (torch's legacy files are several pickles in a row). A protocol 2+ stream that parses to STOP
  is a pickle too, imports or not;
- compressed streams (gzip, zlib, bz2, xz/lzma) are inflated and judged by what they hold; lz4
  and zstd frames cannot be inflated here, so they count as the pickles joblib writes that way;
- zip archives (PyTorch checkpoints, .npz, .keras) and tar archives (legacy PyTorch) are judged
  by every member, recursively; a member named like a PyTorch pickle (`data.pkl`, `.pkl`) is one;
- NumPy .npy arrays whose dtype can hold objects, by numpy's own header rules (numpy pickles
  those);
- Keras archives whose config names a Lambda layer or code outside Keras, and every HDF5 file
  (a Keras .h5 model can hold marshalled bytecode).
Magic numbers only route: pickle.load looks at none, so bytes told by one (a tar, an HDF5 user
block) are read as a pickle from their start too. A limit (members, inflated bytes, nesting
depth, opcodes) that stops the inspection fails closed: the file needs every family allowed, and
the finding names the limit.

Pure: callers hand over a seekable binary file object; nothing is opened here.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import io
import re
import struct
import typing

HEAD_BYTES: typing.Final = 64 * 1024


class Family(enum.StrEnum):
    """A family of code-capable formats. The values are the TrustPolicy's spec.formats.allow
    entries (the API's CodeFormat, which a unit test holds equal)."""

    PICKLE = "Pickle"
    KERAS = "Keras"
    HDF5 = "HDF5"


EVERY_FAMILY: typing.Final = frozenset(Family)


class Format(enum.StrEnum):
    PICKLE = "a pickle"
    PYTORCH_ZIP = "a PyTorch zip checkpoint"
    PYTORCH_TAR = "a legacy PyTorch tar checkpoint"
    ZIP = "a zip archive"
    TAR = "a tar archive"
    COMPRESSED = "compressed data"
    NUMPY = "a NumPy array"
    NUMPY_OBJECT = "a NumPy array of Python objects (pickled)"
    KERAS = "a Keras archive"
    HDF5 = "an HDF5 file"
    SAFETENSORS = "safetensors"
    GGUF = "GGUF"
    TEXT = "text"
    UNINSPECTED = "a file that cannot be inspected fully"
    EMPTY = "empty"
    BINARY = "binary"


@dataclasses.dataclass(frozen=True)
class Limits:
    """How far one file is inspected; past any of these it is refused, not guessed."""

    members: int = 10_000
    """Archive members, at every level of nesting together."""
    central_directory_bytes: int = 8 << 20
    """A zip's central directory, read into memory whole."""
    inflated_bytes: int = 1 << 30
    """Bytes decompressed, over every compressed stream and member of the file."""
    depth: int = 4
    """Archives and compressed streams inside one another."""
    nested_archive_bytes: int = 32 << 20
    """A zip inside an archive or compressed stream, read into memory to list its members."""
    pickle_opcodes: int = 100_000
    """Opcodes of a pickle stream followed before it must have ended."""
    file_opcodes: int = 1_000_000
    """Opcodes followed over every stream and member of the file: its time is bounded."""
    keras_config_bytes: int = 16 << 20


LIMITS: typing.Final = Limits()


@dataclasses.dataclass(frozen=True)
class Finding:
    format: Format
    needs: frozenset[Family] = frozenset()
    """The families spec.formats.allow must list to admit the file; empty: nothing runs code."""
    why: str = ""
    """What in the file can run code (or which limit stopped the inspection)."""

    @property
    def code_capable(self) -> bool:
        return bool(self.needs)

    def __str__(self) -> str:
        return f"{self.format} ({self.why})" if self.why else str(self.format)


def classify(data: typing.BinaryIO, *, limits: Limits = LIMITS) -> Finding:
    """What a seekable binary file holds and what must be allowed to load it."""
    budget = _Budget(limits)
    data.seek(0)
    try:
        return _classify(_Stream(data, seekable=True), name="", depth=0, budget=budget)
    except _LimitReached as limit:
        return Finding(Format.UNINSPECTED, EVERY_FAMILY, f"{limit}; refused rather than guessed")


def sniff(content: bytes, *, limits: Limits = LIMITS) -> Finding:
    """classify() of bytes in memory."""
    return classify(io.BytesIO(content), limits=limits)


class _LimitReached(Exception):
    pass


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.members = 0
        self.inflated = 0
        self.opcodes = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise _LimitReached(f"it has more than {self.limits.members} archive members")

    def opcode(self) -> None:
        self.opcodes += 1
        if self.opcodes > self.limits.file_opcodes:
            raise _LimitReached(
                f"its pickle opcodes number more than {self.limits.file_opcodes} in all"
            )

    def inflate(self, count: int) -> None:
        self.inflated += count
        if self.inflated > self.limits.inflated_bytes:
            raise _LimitReached(f"it inflates to more than {self.limits.inflated_bytes} bytes")


class _Stream:
    """A forward-only reader with look-ahead over a file object or a decompressor. Reads of a
    byte at a time (the pickle scan's) move an offset; the buffer is cut only when refilled."""

    def __init__(self, raw: typing.Any, *, seekable: bool = False) -> None:
        self.raw = raw
        self.seekable = seekable
        self._buffer = b""
        self._at = 0

    def _fill(self, count: int) -> None:
        if len(self._buffer) - self._at >= count:
            return
        chunks = [self._buffer[self._at :]]
        have = len(chunks[0])
        while have < count:
            chunk = self.raw.read(max(count - have, 8192))
            if not chunk:
                break
            chunks.append(chunk)
            have += len(chunk)
        self._buffer, self._at = b"".join(chunks), 0

    def peek(self, count: int) -> bytes:
        self._fill(count)
        return self._buffer[self._at : self._at + count]

    def read(self, count: int) -> bytes:
        data = self.peek(count)
        self._at += len(data)
        return data

    def skip(self, count: int) -> bool:
        """Skip `count` bytes; False if the stream ends first."""
        taken = min(count, len(self._buffer) - self._at)
        self._at += taken
        count -= taken
        if count and self.seekable:
            here = self.raw.tell()
            end = self.raw.seek(0, io.SEEK_END)
            if end - here < count:
                return False
            self.raw.seek(here + count)
            return True
        while count:
            chunk = self.raw.read(min(count, 1 << 20))
            if not chunk:
                return False
            count -= len(chunk)
        return True

    def readline(self, *, keep: int) -> bytes | None:
        """One line with its newline (only its first `keep` bytes kept); None at end of stream."""
        kept = b""
        while True:
            if not self.peek(1):
                return None
            end = self._buffer.find(b"\n", self._at)
            stop = len(self._buffer) if end < 0 else end + 1
            if len(kept) < keep:
                kept += self._buffer[self._at : min(stop, self._at + keep - len(kept))]
            self._at = stop
            if end >= 0:
                return kept


# --- what the first bytes say --------------------------------------------------------------

_ZIP_MAGIC: typing.Final = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_HDF5_MAGIC: typing.Final = b"\x89HDF\r\n\x1a\n"
_ZIP_FORMATS: typing.Final = frozenset({Format.ZIP, Format.PYTORCH_ZIP, Format.KERAS})
_LZ4_FRAME: typing.Final = b"\x04\x22\x4d\x18"
_ZSTD_FRAME: typing.Final = b"\x28\xb5\x2f\xfd"


def _classify(
    stream: _Stream,
    *,
    name: str,
    depth: int,
    budget: _Budget,
    reopen: typing.Callable[[], typing.Any] | None = None,
) -> Finding:
    """What the stream holds. `reopen` gives a member's bytes afresh, where they can be."""
    head = stream.peek(HEAD_BYTES)
    if not head:
        return Finding(Format.EMPTY)
    found = _routed(stream, head, name=name, depth=depth, budget=budget)
    if found is None:
        found = _unrouted(stream, head, budget=budget)
    elif found.format not in _ZIP_FORMATS and Family.PICKLE not in found.needs:
        # pickle.load looks at no magic number: the same bytes, read as a pickle from the start.
        # (A zip cannot be one: its first opcode is PERSID, which a plain unpickler refuses.)
        pickled = _rescan(stream, head, reopen=reopen, budget=budget)
        if pickled is not None:
            return Finding(
                found.format, found.needs | {Family.PICKLE}, f"read as a pickle, {pickled}"
            )
    if found.code_capable or not stream.seekable or found.format in _ZIP_FORMATS:
        return found
    # zipfile (and Keras, through it) finds an archive by its end, whatever comes first.
    if _end_of_central_directory(stream.raw) is None:
        return found
    archive = _zip(stream.raw, depth, budget)
    return archive if archive.code_capable else found


def _rescan(
    stream: _Stream,
    head: bytes,
    *,
    reopen: typing.Callable[[], typing.Any] | None,
    budget: _Budget,
) -> str | None:
    if stream.seekable:
        stream.raw.seek(0)
        return _scan_pickle(_Stream(stream.raw, seekable=True), budget=budget)
    if reopen is not None:
        with reopen() as again:
            return _scan_pickle(_Stream(_Counted(again, budget)), budget=budget)
    # A stream read once (inside a compressed stream or a streamed tar): its head, at least.
    return _scan_pickle(_Stream(io.BytesIO(head)), budget=budget)


def _routed(
    stream: _Stream, head: bytes, *, name: str, depth: int, budget: _Budget
) -> Finding | None:
    """The formats told by their magic numbers: archives, compressed streams, HDF5, NumPy."""
    if head.startswith(_ZIP_MAGIC):
        return _zip(_seekable(stream, name=name, depth=depth, budget=budget), depth, budget)
    compressed = _compression(head)
    if compressed is not None:
        return _compressed(stream, compressed, depth=depth, budget=budget)
    if head.startswith((_LZ4_FRAME, _ZSTD_FRAME)):
        kind = "lz4" if head.startswith(_LZ4_FRAME) else "zstd"
        return Finding(
            Format.COMPRESSED,
            frozenset({Family.PICKLE}),
            f"{kind}-compressed, which cannot be inspected here; joblib writes pickles this way",
        )
    if _is_tar(head):
        return _tar(stream, depth=depth, budget=budget)
    if _has_hdf5_superblock(stream, head):
        return Finding(
            Format.HDF5,
            frozenset({Family.HDF5}),
            "Keras loads models from HDF5, and their Lambda layers hold marshalled bytecode",
        )
    if head.startswith(b"\x93NUMPY"):
        return _numpy(head)
    return None


def _unrouted(stream: _Stream, head: bytes, *, budget: _Budget) -> Finding:
    """Everything else: a pickle if it reads as one, else labelled by its head."""
    pickled = _scan_pickle(stream, budget=budget)
    if pickled is not None:
        return Finding(Format.PICKLE, frozenset({Family.PICKLE}), pickled)
    if head.startswith(b"GGUF"):
        return Finding(Format.GGUF)
    if _is_safetensors(head):
        return Finding(Format.SAFETENSORS)
    if _is_text(head):
        return Finding(Format.TEXT)
    return Finding(Format.BINARY)


def _seekable(stream: _Stream, *, name: str, depth: int, budget: _Budget) -> typing.BinaryIO:
    """A file object to list an archive with: the file itself, or a nested one in memory."""
    if stream.seekable:
        raw: typing.BinaryIO = stream.raw
        raw.seek(0)
        return raw
    limit = budget.limits.nested_archive_bytes
    content = stream.read(limit + 1)
    if len(content) > limit:
        raise _LimitReached(f"{name or 'a member'} is an archive over {limit} bytes inside another")
    return io.BytesIO(content)


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (length,) = struct.unpack_from("<Q", head, 0)
    return 2 <= length <= 100 * 1024 * 1024 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The head may end inside a multi-byte character.
        if error.start < len(head) - 4:
            return False
        text = head[: error.start].decode("utf-8")
    return all(char.isprintable() or char in "\t\n\r\f\v" for char in text)


def _has_hdf5_superblock(stream: _Stream, head: bytes) -> bool:
    # The superblock is at 0, or after a user block at 512, 1024, 2048, ... (HDF5 spec, II.A).
    if head.startswith(_HDF5_MAGIC):
        return True
    if not stream.seekable:
        return any(head.startswith(_HDF5_MAGIC, offset) for offset in _powers(len(head)))
    raw: typing.BinaryIO = stream.raw
    here = raw.tell()
    try:
        size = raw.seek(0, io.SEEK_END)
        for offset in _powers(size):
            raw.seek(offset)
            if raw.read(len(_HDF5_MAGIC)) == _HDF5_MAGIC:
                return True
        return False
    finally:
        raw.seek(here)


def _powers(size: int) -> typing.Iterator[int]:
    offset = 512
    while offset + len(_HDF5_MAGIC) <= size:
        yield offset
        offset *= 2


# --- compressed streams ---------------------------------------------------------------------


def _compression(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:1] == b"\x78" and len(head) > 1 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[:3] == b"\x5d\x00\x00":
        return "lzma"
    if head.startswith(b"ZF") and head.find(b"\x78", 2, 32) > 0:
        return "joblib-zlib"  # joblib < 0.10: "ZF", a hex length, then zlib data
    return None


def _decompressor(kind: str) -> typing.Any:
    import bz2  # noqa: PLC0415 - only for compressed files
    import lzma  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind in ("zlib", "joblib-zlib"):
        return zlib.decompressobj()
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)


class _Inflating:
    """read() of what a compressed stream holds; concatenated streams (gzip members, bz2 and xz
    streams) read on, as their file readers do."""

    def __init__(self, source: _Stream, kind: str, budget: _Budget) -> None:
        self._source = source
        self._kind = kind
        self._budget = budget
        self._decompressor = _decompressor(kind)
        self._pending = b""
        self._done = False

    def _input(self) -> bytes:
        data, self._pending = self._pending or self._source.read(64 << 10), b""
        return data

    def read(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count and not self._done:
            decompressor = self._decompressor
            tail = getattr(decompressor, "unconsumed_tail", None)  # zlib's; bz2 and lzma buffer
            if tail is not None:
                data = tail or self._input()
            else:
                data = self._input() if decompressor.needs_input else b""
            if not data and (tail is not None or decompressor.needs_input):
                self._done = True  # the stream is cut short: a loader's reader stops too
                break
            try:
                piece = decompressor.decompress(data, count - len(out))
            except Exception:  # zlib.error, LZMAError, OSError...: a loader's reader stops too
                self._done = True
                break
            self._budget.inflate(len(piece))
            out += piece
            if decompressor.eof:
                rest = decompressor.unused_data
                if self._kind in ("gzip", "bz2", "xz") and (rest or self._source.peek(1)):
                    self._decompressor = _decompressor(self._kind)
                    self._pending = rest
                else:
                    self._done = True
        return bytes(out)


def _compressed(stream: _Stream, kind: str, *, depth: int, budget: _Budget) -> Finding:
    if depth >= budget.limits.depth:
        raise _LimitReached(f"it nests more than {budget.limits.depth} archives or streams")
    if kind == "joblib-zlib":
        stream.skip(stream.peek(32).find(b"\x78", 2))
    inner = _classify(
        _Stream(_Inflating(stream, kind, budget)), name="", depth=depth + 1, budget=budget
    )
    why = f"{kind}-compressed {inner}"
    return Finding(Format.COMPRESSED, inner.needs, why if inner.code_capable else "")


# --- archives -------------------------------------------------------------------------------

_PICKLE_MEMBER: typing.Final = re.compile(r"(^|/)data\.pkl$|\.(pkl|pickle)$")
# Keras 3 serializes its own classes with a module of the keras package, and functions of
# Python's or anybody else's with theirs: a module outside keras names code to import.
_KERAS_MODULE: typing.Final = re.compile(r"keras(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KERAS_CODE_CLASSES: typing.Final = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda"})
# The weights of a .keras archive: Keras reads only arrays from it, never a config.
_KERAS_WEIGHTS: typing.Final = "model.weights.h5"


def _zip(file: typing.BinaryIO, depth: int, budget: _Budget) -> Finding:
    import zipfile  # noqa: PLC0415 - most models hold no zip archive

    if depth >= budget.limits.depth:
        raise _LimitReached(f"it nests more than {budget.limits.depth} archives or streams")
    _check_central_directory(file, budget)
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        return _unreadable("zip archive", error)
    with archive:
        infos = archive.infolist()
        names = {info.filename for info in infos}
        keras = _keras_archive(archive, names, budget)
        if keras is not None and keras.code_capable:
            return keras
        pytorch = any(name.endswith("data.pkl") for name in names)
        outer = keras.format if keras else Format.PYTORCH_ZIP if pytorch else Format.ZIP
        for info in infos:
            budget.member()
            if info.is_dir():
                continue
            if _PICKLE_MEMBER.search(info.filename):
                return Finding(
                    outer, frozenset({Family.PICKLE}), f"member {info.filename!r} is a pickle"
                )
            if keras is not None and info.filename == _KERAS_WEIGHTS:
                continue
            try:
                with archive.open(info) as member:
                    inner = _classify(
                        _Stream(_Counted(member, budget)),
                        name=f"member {info.filename!r}",
                        depth=depth + 1,
                        budget=budget,
                        reopen=functools.partial(archive.open, info),
                    )
            except _LimitReached:
                raise
            except Exception as error:
                # Encrypted, corrupt (a CRC, a deflate stream), or a method zipfile lacks: what
                # cannot be read here is not known to be safe.
                return _unreadable(f"member {info.filename!r}", error, outer=outer)
            if inner.code_capable:
                return Finding(outer, inner.needs, f"member {info.filename!r} is {inner}")
        return keras or Finding(outer)


class _Counted:
    """A member's reader whose bytes count as inflated ones."""

    def __init__(self, raw: typing.Any, budget: _Budget) -> None:
        self._raw = raw
        self._budget = budget

    def read(self, count: int) -> bytes:
        data: bytes = self._raw.read(count)
        self._budget.inflate(len(data))
        return data


def _unreadable(what: str, error: BaseException, *, outer: Format = Format.ZIP) -> Finding:
    return Finding(outer, EVERY_FAMILY, f"{what} cannot be read ({error}), so it is not inspected")


def _end_of_central_directory(file: typing.BinaryIO) -> tuple[int, int] | None:
    """(entries, central directory bytes) of a zip, from its end records; None if not a zip."""
    size = file.seek(0, io.SEEK_END)
    tail_start = max(0, size - (22 + 0xFFFF))
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + 22 <= len(tail):
            entries, directory, _, comment = struct.unpack_from("<HIIH", tail, at + 10)
            if at + 22 + comment == len(tail):
                break
        at = tail.rfind(b"PK\x05\x06", 0, at)
    else:
        return None
    if entries == 0xFFFF or directory == 0xFFFFFFFF:
        locator = at - 20
        if locator >= 0 and tail.startswith(b"PK\x06\x07", locator):
            (offset,) = struct.unpack_from("<Q", tail, locator + 8)
            file.seek(offset)
            record = file.read(56)
            if record.startswith(b"PK\x06\x06") and len(record) == 56:
                entries, directory = struct.unpack_from("<QQ", record, 32)
    return entries, directory


def _check_central_directory(file: typing.BinaryIO, budget: _Budget) -> None:
    # zipfile reads the whole central directory into ZipInfo objects before anything else.
    found = _end_of_central_directory(file)
    file.seek(0)
    if found is None:
        return  # zipfile will say what is wrong
    entries, directory = found
    if entries + budget.members > budget.limits.members:
        raise _LimitReached(f"it has more than {budget.limits.members} archive members")
    if directory > budget.limits.central_directory_bytes:
        raise _LimitReached(
            f"its zip central directory is over {budget.limits.central_directory_bytes} bytes"
        )


def _keras_archive(archive: typing.Any, names: set[str], budget: _Budget) -> Finding | None:
    """A .keras archive (a config.json describing a model at its root) judged by its config."""
    if "config.json" not in names:
        return None
    info = archive.getinfo("config.json")
    limit = budget.limits.keras_config_bytes
    if info.file_size > limit:
        raise _LimitReached(f"its config.json is over {limit} bytes")
    import json  # noqa: PLC0415

    try:
        with archive.open(info) as member:
            content = member.read(limit + 1)
    except Exception as error:  # a CRC, a deflate stream, a header: unknown is not safe
        return _unreadable("member 'config.json'", error)
    budget.inflate(len(content))
    if len(content) > limit:
        raise _LimitReached(f"its config.json is over {limit} bytes")
    try:
        config = json.loads(content)
    except (ValueError, RecursionError):
        if "metadata.json" in names or _KERAS_WEIGHTS in names:
            return Finding(
                Format.KERAS,
                frozenset({Family.KERAS}),
                "its config.json cannot be read, so it is not inspected",
            )
        return None  # not a Keras archive, just a config among other files
    if not (isinstance(config, dict) and "class_name" in config):
        return None
    code = _keras_code(config)
    if code is None:
        return Finding(Format.KERAS)
    return Finding(Format.KERAS, frozenset({Family.KERAS}), f"its config.json {code}")


def _keras_code(config: typing.Any) -> str | None:
    """What in a Keras config names code, if anything."""
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        class_name = item.get("class_name")
        if class_name in _KERAS_CODE_CLASSES:
            return f"has a {class_name} layer (Python code)"
        module = item.get("module")
        if module is not None and not (isinstance(module, str) and _KERAS_MODULE.fullmatch(module)):
            return f"names module {module!r}"
        registered = item.get("registered_name")
        if registered is not None and registered != class_name:
            return f"names registered object {registered!r}"
        if "function" in item and item.get("function_type") in ("lambda", "raw"):
            return "holds a serialized function"
        pending.extend(item.values())
    return None


def _is_tar(head: bytes) -> bool:
    if len(head) < 512:
        return False
    block = head[:512]
    if block[257:262] == b"ustar":
        return True
    # Old (v7) archives have no magic, only a header checksum: computed with the field as spaces.
    field = block[148:156].split(b"\x00", 1)[0].strip()
    if not field or not all(48 <= byte <= 55 for byte in field):
        return False
    expected = int(field, 8)
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return expected == actual and block[:1] != b"\x00"


def _tar(stream: _Stream, *, depth: int, budget: _Budget) -> Finding:
    import tarfile  # noqa: PLC0415

    if depth >= budget.limits.depth:
        raise _LimitReached(f"it nests more than {budget.limits.depth} archives or streams")
    outer = Format.TAR
    # A tar file is read in place, its members' data skipped; one inside a stream is read on.
    try:
        with _open_tar(stream) as archive:
            for member in archive:
                budget.member()
                if not member.isfile():
                    continue
                if member.name in ("pickle", "sys_info"):
                    outer = Format.PYTORCH_TAR
                extracted = archive.extractfile(member)
                if extracted is None:
                    continue
                inner = _classify(
                    _Stream(extracted),
                    name=f"member {member.name!r}",
                    depth=depth + 1,
                    budget=budget,
                    # In a file, a member can be read again; in a stream, only once.
                    reopen=functools.partial(archive.extractfile, member)
                    if stream.seekable
                    else None,
                )
                if member.name == "pickle" and not inner.code_capable:
                    inner = Finding(Format.PICKLE, frozenset({Family.PICKLE}), "torch unpickles it")
                if inner.code_capable:
                    return Finding(outer, inner.needs, f"member {member.name!r} is {inner}")
    except _LimitReached:
        raise
    except (tarfile.TarError, OSError, ValueError, EOFError) as error:
        return _unreadable("tar archive", error, outer=outer)
    return Finding(outer)


def _open_tar(stream: _Stream) -> typing.Any:
    import tarfile  # noqa: PLC0415

    if stream.seekable:
        # Read in place: the members' data is skipped, not read.
        stream.raw.seek(0)
        return tarfile.open(fileobj=stream.raw, mode="r:")
    return tarfile.open(fileobj=typing.cast("typing.Any", stream), mode="r|")


# --- NumPy ----------------------------------------------------------------------------------

# The plain dtypes numpy writes (dtype.str): booleans, numbers, bytes, str, void, datetimes.
_PLAIN_DTYPE: typing.Final = re.compile(r"[<>|=]?(?:[?biufcSUVa]\d*|[mM]8(?:\[\d*[A-Za-z]+\])?)")


def _numpy(head: bytes) -> Finding:
    """An .npy array: its data is a pickle when its dtype can hold objects (numpy/lib/format.py
    read_array: `if dtype.hasobject: pickle.load(...)`)."""
    problem = _numpy_objects(head)
    if problem is None:
        return Finding(Format.NUMPY)
    return Finding(Format.NUMPY_OBJECT, frozenset({Family.PICKLE}), problem)


def _numpy_objects(head: bytes) -> str | None:
    # Magic, major, minor, header length (2 bytes in v1, 4 in v2/v3), then a dict literal.
    if len(head) < 10:
        return "its header is cut short"
    major = head[6]
    if major == 1:
        (length,) = struct.unpack_from("<H", head, 8)
        start = 10
    elif major in (2, 3):
        (length,) = struct.unpack_from("<I", head, 8)
        start = 12
    else:
        return f"its format version {major} is unknown"
    if start + length > len(head):
        return f"its header is over {len(head) - start} bytes"
    try:
        text = head[start : start + length].decode("utf-8" if major == 3 else "latin-1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        return "its header cannot be read"
    if not isinstance(header, dict) or "descr" not in header:
        return "its header has no descr"
    try:
        return _descr_objects(header["descr"])
    except RecursionError:
        return "its dtype nests too deep"


def _descr_objects(descr: object) -> str | None:
    """numpy's descr_to_dtype, judged: a string is a dtype, a tuple (dtype, shape) a subarray, a
    list of (name, dtype[, shape]) fields a structured dtype. Only plain dtypes pass: anything
    else numpy would accept ('O', 'object', 'O8', ...) can hold objects, or is not known here."""
    if isinstance(descr, str):
        if _PLAIN_DTYPE.fullmatch(descr):
            return None
        return f"its dtype {descr!r} can hold Python objects"
    if isinstance(descr, tuple) and len(descr) == 2:
        return _descr_objects(descr[0])
    if isinstance(descr, list):
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                return f"its dtype field {field!r} is not one numpy writes"
            found = _descr_objects(field[1])
            if found is not None:
                return f"field {field[0]!r}: {found}"
        return None
    return f"its dtype {descr!r} is not one numpy writes"


# --- pickle ---------------------------------------------------------------------------------


class _Op(typing.NamedTuple):
    name: str
    arg: int
    """Bytes of argument, or a pickletools width code (UP_TO_NEWLINE, TAKEN_FROM_ARGUMENT...)."""
    below_mark: int
    """Objects below the mark it pops to (-1: it pops no mark)."""
    pops: int
    """Objects it pops (above the mark, for one that pops to a mark)."""
    pushes: tuple[bool, ...]
    """What it pushes: True for a mark, False for an object."""


def _opcode_table() -> dict[int, _Op]:
    import pickletools  # noqa: PLC0415

    table = {}
    for info in pickletools.opcodes:
        before = [item for item in info.stack_before if item is not pickletools.stackslice]
        if pickletools.markobject in before:
            at = before.index(pickletools.markobject)
            below, pops = at, len(before) - at - 1
        else:
            below, pops = -1, len(before)
        if info.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            pops = 1  # the unpickler needs an object to memoize; it stays
        pushes = tuple(item is pickletools.markobject for item in info.stack_after)
        if info.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            pushes = (False,)
        arg = info.arg.n if info.arg is not None else 0
        table[ord(info.code.encode("latin-1"))] = _Op(info.name, arg, below, pops, pushes)
    return table


_OPCODES: dict[int, _Op] | None = None
_UP_TO_NEWLINE: typing.Final = -1
_LENGTH_PREFIX: typing.Final = {-2: "<B", -3: "<i", -4: "<I", -5: "<Q"}
_IMPORTS: typing.Final = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})
_CALLS: typing.Final = frozenset({"REDUCE", "BUILD", "OBJ", "NEWOBJ", "NEWOBJ_EX", "STOP"})
_MEMO_PUT: typing.Final = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_GET: typing.Final = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NAME_BYTES: typing.Final = 4096
_NAMES: typing.Final = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
# Opcodes that leave the top of the stack as it is.
_KEEP_TOP: typing.Final = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "FRAME", "PROTO"})


def _scan_pickle(stream: _Stream, *, budget: _Budget) -> str | None:
    """Why the stream is a code-capable pickle, or None: the opcodes the unpickler would run,
    read until an import, an opcode it would refuse, or the end."""
    global _OPCODES  # noqa: PLW0603 - built once, on the first file that needs it
    if _OPCODES is None:
        _OPCODES = _opcode_table()
    machine = _Unpickler(_OPCODES, text=_is_text(stream.peek(HEAD_BYTES)))
    for _ in range(budget.limits.pickle_opcodes):
        budget.opcode()
        code = stream.read(1)
        op = machine.table.get(code[0]) if code else None
        if op is None:
            return None  # the end, or not an opcode: the unpickler stops here, having run nothing
        argument = _argument(stream, op)
        if argument is None or not machine.run(op, argument):
            return None
        if machine.verdict is not None:
            return machine.verdict
    return f"its pickle opcodes run on past {budget.limits.pickle_opcodes} without an end"


class _Unpickler:
    """The unpickler's stack, marks and memo, as far as they decide whether it goes on."""

    def __init__(self, table: dict[int, _Op], *, text: bool) -> None:
        self.table = table
        self.verdict: str | None = None
        # In text, an import counts once something calls or returns it: `cat\ndog\n` (a labels
        # file) is a GLOBAL of at.dog, then BUILD with one object, where the unpickler stops.
        # Importing alone runs only the module's own code, never the file's choice of call.
        self._text = text
        self._imported: str | None = None
        self._reset()

    def _reset(self) -> None:
        # Each pickle in a row starts afresh, as a new Unpickler does.
        self._marks: list[int] = []
        self._height = 0
        self._memo: set[object] = set()
        self._protocol_header = False
        # The strings on top of the stack, when the last pushes were short strings.
        self._strings: list[str] = []

    def run(self, op: _Op, argument: bytes) -> bool:
        """Apply one opcode; False where the unpickler would raise."""
        if op.name == "PROTO":
            if argument[0] > 5:  # pickle.HIGHEST_PROTOCOL of every CPython so far
                return False
            self._protocol_header = True
        if not self._pop(op):
            return False
        if op.name in _IMPORTS or (self._imported is not None and op.name in _CALLS):
            decided = self._code(op, argument)
            if decided is not None:
                return decided
        self._track_strings(op, argument)
        if not self._remember(op, argument):
            return False
        if op.name == "STOP":
            if self._protocol_header:
                self.verdict = "a protocol 2+ pickle stream, parsed to its end"
            self._reset()
            return True
        for is_mark in op.pushes:
            if is_mark:
                self._marks.append(self._height)
                self._height = 0
            else:
                self._height += 1
        return True

    def _code(self, op: _Op, argument: bytes) -> bool | None:
        """An import, or a call of one in text: True once judged code-capable, False where the
        unpickler would raise, None to go on."""
        if op.name not in _IMPORTS:
            self.verdict = self._imported
            return True
        if op.name != "STACK_GLOBAL" and not _importable(argument):
            return False  # __import__ of such a name fails before anything runs
        found = f"it imports {_import_name(op.name, argument, self._strings)} when unpickled"
        if not self._text or op.name == "INST":  # INST imports and calls
            self.verdict = found
            return True
        self._imported = self._imported or found
        return None

    def _track_strings(self, op: _Op, argument: bytes) -> None:
        if op.name in _NAMES:
            size = struct.calcsize(_LENGTH_PREFIX[op.arg])
            self._strings = [*self._strings[-1:], argument[size:].decode("utf-8", "replace")]
        elif op.name not in _KEEP_TOP:
            self._strings = []

    def _remember(self, op: _Op, argument: bytes) -> bool:
        if op.name in _MEMO_PUT:
            key = len(self._memo) if op.name == "MEMOIZE" else _memo_key(op, argument)
            self._memo.add(key)
        elif op.name in _MEMO_GET:
            key = _memo_key(op, argument)
            return key is None or key in self._memo  # a memo key never stored stops it
        return True

    def _pop(self, op: _Op) -> bool:
        if op.below_mark >= 0:
            if not self._marks or self._height < op.pops:
                return False
            self._height = self._marks.pop()
            if self._height < op.below_mark:
                return False
            self._height -= op.below_mark
        elif op.name == "POP" and self._height == 0 and self._marks:
            self._height = self._marks.pop()  # POP of a mark, as the unpickler allows
        elif self._height < op.pops:
            return False
        else:
            self._height -= op.pops
        return True


def _argument(stream: _Stream, op: _Op) -> bytes | None:
    """The argument's bytes (a line or two, or a fixed width); length-prefixed data is skipped.
    None when the stream ends inside it."""
    if op.arg == 0:
        return b""
    if op.arg > 0:
        data = stream.read(op.arg)
        return data if len(data) == op.arg else None
    if op.arg == _UP_TO_NEWLINE:
        lines = 2 if op.name in ("GLOBAL", "INST") else 1
        keep = _NAME_BYTES if lines == 2 else 64
        result = b""
        for _ in range(lines):
            line = stream.readline(keep=keep)
            if line is None:
                return None
            result += line
        return result
    width = _LENGTH_PREFIX[op.arg]
    size = struct.calcsize(width)
    prefix = stream.read(size)
    if len(prefix) != size:
        return None
    (length,) = struct.unpack(width, prefix)
    if op.name in _NAMES and 0 <= length <= _NAME_BYTES:
        # A short string may be half of a STACK_GLOBAL's name: kept, for the message.
        data = stream.read(length)
        return prefix + data if len(data) == length else None
    if length < 0 or not stream.skip(length):
        return None
    return prefix


def _importable(argument: bytes) -> bool:
    parts = argument.split(b"\n")
    if len(parts) != 3 or parts[2]:
        return False
    try:
        module, name = parts[0].decode("utf-8"), parts[1].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _dotted(module) and _dotted(name)


def _dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _import_name(opcode: str, argument: bytes, strings: list[str]) -> str:
    if opcode == "STACK_GLOBAL":
        return ".".join(strings) if len(strings) == 2 else "a name built on its stack"
    module, name, _ = argument.decode("utf-8", "replace").split("\n")
    return f"{module}.{name}"


def _memo_key(op: _Op, argument: bytes) -> object:
    if op.arg == _UP_TO_NEWLINE:
        try:
            return int(argument.strip())
        except ValueError:
            return None  # read as the unpickler would not: not judged
    return int.from_bytes(argument, "little")
