"""Could a model file's usual loader run code chosen by whoever wrote it? Judged by content alone.

Extensions lie (a `weights.bin` can be a pickle), and so do first bytes, so the rule is what a
loader would do with the bytes:
- a stream is code-capable as a pickle when CPython's own unpicklers (the C one, and the Python
  one joblib uses), run with a find_class that records instead of importing, reach an import
  (trust.pickles): no parser of ours stands between the bytes and the verdict. Pickles in a row
  are read on (torch's legacy files), a protocol 2+ stream unpickled to its end is a pickle too,
  and in printable text one import first in the file that nothing uses is a labels file
  (`cat\ndog\n`), unless it names a module Python or the model ships;
- compressed streams, told by joblib's own prefix table (gzip, zlib, bz2, lzma, xz, its "ZF"
  files), are inflated whole and judged by what they hold; lz4 and zstd frames cannot be inflated
  here, so they count as the pickles joblib writes that way;
- zip archives (PyTorch checkpoints, .npz, .keras) and tar archives (what tarfile reads, as
  torch's legacy loader asks it) are judged by every member with data, recursively; a member
  named like a PyTorch pickle (`data.pkl`, `.pkl`) is one;
- NumPy .npy arrays whose dtype can hold objects, by numpy's own header rules (numpy pickles
  those);
- Keras archives (and configs of unzipped ones, keras_folder) naming anything outside an
  allowlist of Keras's own objects (trust.kerasconfig), and every HDF5 file (a Keras .h5 model
  can hold marshalled bytecode).
Magic numbers only route: pickle.load looks at none, so bytes told by one (a tar, an HDF5 user
block) are read as a pickle from their start too. A limit (members, inflated bytes, nesting
depth, opcodes, bytes given to the unpicklers) that stops the inspection fails closed: the file
needs every family allowed, and the finding names the limit.

Pure: callers hand over a seekable binary file object; nothing is opened here.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import io
import re
import struct
import typing

from modelguard.trust import kerasconfig, pickles

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
    KERAS_FOLDER = "the config of a Keras model folder"
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
    pickle_bytes: int = 32 << 20
    """Bytes of a stream the unpicklers are given: past them without a verdict, it is refused."""
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


def classify(
    data: typing.BinaryIO, *, limits: Limits = LIMITS, model_files: typing.Iterable[str] = ()
) -> Finding:
    """What a seekable binary file holds and what must be allowed to load it. `model_files`: the
    paths of the model's files, whose names an unpickler could import (a module it ships)."""
    budget = _Budget(limits, _module_names(model_files))
    data.seek(0)
    try:
        return _classify(_Stream(data, seekable=True), name="", depth=0, budget=budget)
    except _LimitReached as limit:
        return Finding(Format.UNINSPECTED, EVERY_FAMILY, f"{limit}; refused rather than guessed")


def sniff(
    content: bytes, *, limits: Limits = LIMITS, model_files: typing.Iterable[str] = ()
) -> Finding:
    """classify() of bytes in memory."""
    return classify(io.BytesIO(content), limits=limits, model_files=model_files)


def _module_names(paths: typing.Iterable[str]) -> frozenset[str]:
    # Any folder or file of the model can be imported by its name once the model's folder is on
    # sys.path: `mg_evil.py`, `mg_evil/`, `mg_evil.cpython-311-x86_64-linux-gnu.so`.
    return frozenset(part.split(".")[0] for path in paths for part in path.split("/") if part)


class _LimitReached(Exception):
    pass


class _Budget:
    def __init__(self, limits: Limits, model_modules: frozenset[str]) -> None:
        self.limits = limits
        self.model_modules = model_modules
        self.members = 0
        self.inflated = 0
        self.opcodes = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise _LimitReached(f"it has more than {self.limits.members} archive members")

    def opcode(self, count: int) -> None:
        self.opcodes += count
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

    def readline_upto(self, limit: int) -> bytes:
        """One line with its newline, or the first `limit` bytes of a longer one."""
        out = b""
        while len(out) < limit:
            chunk = self.peek(min(limit - len(out), 1 << 16))
            if not chunk:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                chunk = chunk[: end + 1]
            self._at += len(chunk)
            out += chunk
            if end >= 0:
                break
        return out

    def remaining(self) -> int | None:
        """The bytes left to read, None when not known (a stream being inflated)."""
        if not self.seekable:
            return None
        here: int = self.raw.tell()
        end: int = self.raw.seek(0, io.SEEK_END)
        self.raw.seek(here)
        return len(self._buffer) - self._at + end - here

    def unread(self, data: bytes) -> None:
        """Give back bytes read from the start: the next read begins with them."""
        self._buffer, self._at = data + self._buffer[self._at :], 0


# --- what the first bytes say --------------------------------------------------------------

_ZIP_MAGIC: typing.Final = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_HDF5_MAGIC: typing.Final = b"\x89HDF\r\n\x1a\n"
_ZIP_FORMATS: typing.Final = frozenset({Format.ZIP, Format.PYTORCH_ZIP, Format.KERAS})
_LZ4_FRAME: typing.Final = b"\x04\x22\x4d\x18"
_ZSTD_FRAME: typing.Final = b"\x28\xb5\x2f\xfd"


def _classify(stream: _Stream, *, name: str, depth: int, budget: _Budget) -> Finding:
    """What the stream holds: read as a pickle from its start, then routed by its magic."""
    head = stream.peek(HEAD_BYTES)
    if not head:
        return Finding(Format.EMPTY)
    pickled = _unpickled(stream, head, budget=budget)
    found = _routed(stream, head, name=name, depth=depth, budget=budget)
    if found is None:
        found = _labelled(head) if pickled is None else Finding(Format.PICKLE)
    if pickled is not None:
        why = pickled if found.format is Format.PICKLE else f"read as a pickle, {pickled}"
        return Finding(found.format, found.needs | {Family.PICKLE}, why)
    if found.code_capable or not stream.seekable or found.format in _ZIP_FORMATS:
        return found
    # zipfile (and Keras, through it) finds an archive by its end, whatever comes first.
    if _end_of_central_directory(stream.raw) is None:
        return found
    archive = _zip(stream.raw, depth, budget)
    return archive if archive.code_capable else found


def _unpickled(stream: _Stream, head: bytes, *, budget: _Budget) -> str | None:
    """What the stream imports when unpickled (pickle.load looks at no magic number), asked of
    the unpicklers themselves; the bytes they read are given back to the stream."""
    if head.startswith(b"PK\x03\x04"):
        # The loaders of zips (torch, numpy, Keras) open them as zips; pickle.load, and joblib's
        # unpickler, stop at a zip's first opcode, PERSID, having no persistent_load.
        return None
    try:
        verdict = pickles.judge(
            stream,
            cap=budget.limits.pickle_bytes,
            opcodes=budget.limits.pickle_opcodes,
            total_opcodes=budget.limits.file_opcodes,
            spent=budget.opcodes,
            text=_is_text(head),
            model_modules=budget.model_modules,
        )
    except pickles.Limit as limit:
        raise _LimitReached(str(limit)) from None
    stream.unread(verdict.consumed)
    budget.opcode(verdict.opcodes)
    return verdict.imports


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


def _labelled(head: bytes) -> Finding:
    """Formats that run no code, told by their head."""
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


# joblib's own table (compressor.py, _detect_compressor): the first prefix that matches picks the
# decompressor, whatever follows. Its "ZF" files (joblib < 0.10) are "ZF", a hex length padded to
# len(hex(2**64)) characters, maybe a space, then one zlib stream.
_COMPRESSIONS: typing.Final = (
    (b"ZF", "joblib-zlib"),
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd\x37\x7a\x58\x5a", "xz"),
)
_JOBLIB_ZF_HEADER: typing.Final = 2 + len(hex(2**64))


def _compression(head: bytes) -> str | None:
    """The decompressor joblib would pick, if it takes the first bytes: one that refuses them
    raises in the loader as here (the same zlib, bz2 and lzma modules), before anything reaches
    the unpickler, so the file is judged by what else it is (a text starting with "x")."""
    kind = next((kind for prefix, kind in _COMPRESSIONS if head.startswith(prefix)), None)
    if kind is None:
        return None
    data = head[_zf_header(head) :] if kind == "joblib-zlib" else head
    probe = _Inflating(_Stream(io.BytesIO(data)), kind, _Budget(LIMITS, frozenset()))
    if probe.read(1):
        return kind
    # A whole stream (shorter than a head) that inflates to nothing holds nothing either.
    return kind if not probe.failed and len(head) >= HEAD_BYTES else None


def _zf_header(head: bytes) -> int:
    # "ZF", the hex length, and a space that joblib <= 0.8.4 wrote under Python 2.
    return _JOBLIB_ZF_HEADER + (head[_JOBLIB_ZF_HEADER : _JOBLIB_ZF_HEADER + 1] == b" ")


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
    return lzma.LZMADecompressor(lzma.FORMAT_AUTO)  # lzma.LZMAFile(..., "rb"), as joblib opens it


class _Inflating:
    """read() of what a compressed stream holds; concatenated streams read on, as the loaders'
    file readers do (GzipFile, BZ2File, LZMAFile, joblib's BinaryZlibFile)."""

    def __init__(self, source: _Stream, kind: str, budget: _Budget) -> None:
        self._source = source
        self._kind = kind
        self._budget = budget
        self._decompressor = _decompressor(kind)
        self._pending = b""
        self._done = False
        self.failed = False
        """The decompressor refused the data."""

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
                self._done = self.failed = True
                break
            self._budget.inflate(len(piece))
            out += piece
            if decompressor.eof:
                rest = decompressor.unused_data
                if self._kind != "joblib-zlib" and (rest or self._source.peek(1)):
                    self._decompressor = _decompressor(self._kind)
                    self._pending = rest
                else:
                    self._done = True
        return bytes(out)


def _compressed(stream: _Stream, kind: str, *, depth: int, budget: _Budget) -> Finding:
    """What a compressed stream holds, inflated whole (within the budget) and judged as a file."""
    if depth >= budget.limits.depth:
        raise _LimitReached(f"it nests more than {budget.limits.depth} archives or streams")
    if kind == "joblib-zlib":
        stream.skip(_zf_header(stream.peek(_JOBLIB_ZF_HEADER + 1)))
    inner = _classify(
        _Stream(_Inflating(stream, kind, budget)), name="", depth=depth + 1, budget=budget
    )
    why = f"{kind}-compressed {inner}"
    return Finding(Format.COMPRESSED, inner.needs, why if inner.code_capable else "")


# --- archives -------------------------------------------------------------------------------

_PICKLE_MEMBER: typing.Final = re.compile(r"(^|/)data\.pkl$|\.(pkl|pickle)$")
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
        disagreement = _readers_disagree(file, archive)
        if disagreement is not None:
            return Finding(
                Format.ZIP,
                EVERY_FAMILY,
                f"{disagreement}: zip readers may read different members from it, so it is not "
                "inspected",
            )
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


def _readers_disagree(file: typing.BinaryIO, archive: typing.Any) -> str | None:
    """Why readers of zips (zipfile, and miniz in torch, which takes offsets as absolute) may
    find different members in it; None when they read one directory and one set of names.

    zipfile takes the central directory to end where the end record is, and shifts every offset
    by the difference from the recorded one (data prepended); other readers do not. So an archive
    is admitted only with no shift, nothing before its first local header, one end record after
    its central directory, and each local header naming the member its directory entry names."""
    import zipfile  # noqa: PLC0415 - most models hold no zip archive

    file.seek(0)
    # zipfile's own reading of the end record (private names of CPython's zipfile): a Python
    # without them cannot tell, and then the archive is refused, not admitted.
    end_record = getattr(zipfile, "_EndRecData", None)
    offset_field = getattr(zipfile, "_ECD_OFFSET", None)
    if end_record is None or offset_field is None:
        return "this Python's zipfile does not say where it read the central directory"
    record = end_record(file)
    if not record:
        return "it has no end record zipfile reads"
    shift = archive.start_dir - record[offset_field]
    first = min((info.header_offset for info in archive.infolist()), default=archive.start_dir)
    if shift or first:
        return f"its central directory or members are {shift or first} bytes off, data before it"
    file.seek(archive.start_dir)
    tail = file.read()
    if tail.count(b"PK\x05\x06") != 1:
        return "it holds more than one zip end record"
    for info in archive.infolist():
        file.seek(info.header_offset)
        header = file.read(30)
        if len(header) < 30 or not header.startswith(b"PK\x03\x04"):
            return f"the local header of {info.filename!r} is missing"
        (length,) = struct.unpack_from("<H", header, 26)
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if file.read(length) != info.orig_filename.encode(encoding):
            return f"the local header of {info.filename!r} names it differently"
    return None


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
    try:
        with archive.open(info) as member:
            content = member.read(limit + 1)
    except Exception as error:  # a CRC, a deflate stream, a header: unknown is not safe
        return _unreadable("member 'config.json'", error)
    budget.inflate(len(content))
    if len(content) > limit:
        raise _LimitReached(f"its config.json is over {limit} bytes")
    return _keras_config(content, keras="metadata.json" in names or _KERAS_WEIGHTS in names)


def keras_folder(content: bytes, *, limits: Limits = LIMITS) -> Finding | None:
    """The config.json of a folder Keras loads as a model (an unzipped .keras archive: beside it
    a metadata.json or model.weights.*), judged as the archive's would be; None when it is no
    Keras model config (Keras's json.loads, or its deserialization, then fails: nothing runs)."""
    if len(content) > limits.keras_config_bytes:
        return Finding(
            Format.UNINSPECTED,
            EVERY_FAMILY,
            f"its config.json is over {limits.keras_config_bytes} bytes; refused, not guessed",
        )
    found = _keras_config(content, keras=False)
    return None if found is None else dataclasses.replace(found, format=Format.KERAS_FOLDER)


def _keras_config(content: bytes, *, keras: bool) -> Finding | None:
    """A config.json judged as Keras would load it; None when it is no Keras config and nothing
    else says the folder or archive is a Keras model."""
    import json  # noqa: PLC0415

    try:
        config = json.loads(content)
    except (ValueError, RecursionError):
        if keras:
            return Finding(
                Format.KERAS,
                frozenset({Family.KERAS}),
                "its config.json cannot be read, so it is not inspected",
            )
        return None  # not a Keras archive, just a config among other files
    if not (isinstance(config, dict) and "class_name" in config):
        return None
    try:
        code = kerasconfig.code(config)
    except RecursionError:
        code = "nests too deep to be inspected"
    if code is None:
        return Finding(Format.KERAS)
    return Finding(Format.KERAS, frozenset({Family.KERAS}), f"its config.json {code}")


def _is_tar(head: bytes) -> bool:
    """Whether tarfile reads a first member header here: asked of tarfile itself (signed or
    unsigned checksums, base-256 and 0o numbers, no magic), as torch's legacy loader asks it."""
    import tarfile  # noqa: PLC0415

    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


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
                if member.name in ("pickle", "sys_info"):
                    outer = Format.PYTORCH_TAR
                if member.name == "pickle" and (member.issym() or member.islnk()):
                    return Finding(outer, frozenset({Family.PICKLE}), "torch unpickles it")
                if member.issym() or member.islnk():
                    # A link's data is its target's, a member read in its turn.
                    continue
                # Every other type has data that tarfile extracts: regular files, and types it
                # does not know (written out as regular files); directories and devices none.
                extracted = archive.extractfile(member)
                if extracted is None:
                    continue
                named = f"member {member.name!r}"
                inner = _classify(_Stream(extracted), name=named, depth=depth + 1, budget=budget)
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
