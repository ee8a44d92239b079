"""What kind of file a model file is, from its content: is it pickle-based (code runs on load)?

Extensions lie (a `weights.bin` can be a pickle), so only content counts: pickle streams (any
protocol), PyTorch zip archives (a `data.pkl` inside), joblib and other compressed pickles, and
NumPy arrays of dtype object are pickle-based. safetensors, GGUF, ONNX, NumPy arrays of plain
dtypes and text (JSON configs, tokenizers) are not. Pure: callers pass the first bytes of the
file (HEAD_BYTES are enough) and, for a zip archive, the first bytes of each member.
"""

from __future__ import annotations

import ast
import bz2
import enum
import lzma
import pickletools
import struct
import typing
import zlib

HEAD_BYTES: typing.Final = 64 * 1024
# The first bytes of each zip member worth reading, and how many members at most.
ZIP_MEMBER_HEAD_BYTES: typing.Final = 4096
MAX_ZIP_MEMBERS: typing.Final = 10_000


class Format(enum.StrEnum):
    PICKLE = "pickle"
    COMPRESSED_PICKLE = "compressed pickle (joblib)"
    PYTORCH_ZIP = "PyTorch zip archive with a pickle"
    ZIP_WITH_PICKLE = "zip archive with a pickle"
    NUMPY_OBJECT = "NumPy array of Python objects (pickled)"
    SAFETENSORS = "safetensors"
    GGUF = "GGUF"
    NUMPY = "NumPy array"
    ZIP = "zip archive"
    TEXT = "text"
    EMPTY = "empty"
    BINARY = "binary"


PICKLE_BASED: typing.Final = frozenset(
    {
        Format.PICKLE,
        Format.COMPRESSED_PICKLE,
        Format.PYTORCH_ZIP,
        Format.ZIP_WITH_PICKLE,
        Format.NUMPY_OBJECT,
    }
)


def is_pickle_based(kind: Format) -> bool:
    return kind in PICKLE_BASED


def sniff(head: bytes, *, zip_members: typing.Mapping[str, bytes] | None = None) -> Format:
    """The format of a file whose first bytes are `head` (and zip members' heads, if a zip)."""
    if not head:
        return Format.EMPTY
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip(head, zip_members)
    if head.startswith(b"GGUF"):
        return Format.GGUF
    if head.startswith(b"\x93NUMPY"):
        return Format.NUMPY_OBJECT if _numpy_has_objects(head) else Format.NUMPY
    if _is_safetensors(head):
        return Format.SAFETENSORS
    if _is_pickle(head):
        return Format.PICKLE
    inner = _decompressed_head(head)
    if inner is not None and _is_pickle(inner):
        return Format.COMPRESSED_PICKLE
    if _is_text(head):
        return Format.TEXT
    return Format.BINARY


def _zip(head: bytes, members: typing.Mapping[str, bytes] | None) -> Format:
    names = list(members) if members is not None else _local_header_names(head)
    if any(name.endswith("data.pkl") for name in names):
        return Format.PYTORCH_ZIP
    if any(name.endswith((".pkl", ".pickle")) for name in names):
        return Format.ZIP_WITH_PICKLE
    for member_head in (members or {}).values():
        # One level deep: a zip inside a zip is sniffed as a zip by its head alone.
        if is_pickle_based(sniff(member_head, zip_members={})):
            return Format.ZIP_WITH_PICKLE
    return Format.ZIP


def _local_header_names(head: bytes) -> list[str]:
    """Names of the zip members whose local headers lie within `head` (when no listing given)."""
    names = []
    offset = 0
    while head.startswith(b"PK\x03\x04", offset) and offset + 30 <= len(head):
        compressed, _, name_length, extra_length = struct.unpack_from("<IIHH", head, offset + 18)
        name = head[offset + 30 : offset + 30 + name_length].decode("utf-8", "replace")
        names.append(name)
        offset += 30 + name_length + extra_length + compressed
    return names


def _numpy_has_objects(head: bytes) -> bool:
    # .npy: magic, major, minor, header length (2 bytes in v1, 4 in v2/v3), then a dict literal.
    if len(head) < 10:
        return True  # too short to tell: refuse rather than guess
    major = head[6]
    if major == 1:
        (length,) = struct.unpack_from("<H", head, 8)
        start = 10
    else:
        if len(head) < 12:
            return True
        (length,) = struct.unpack_from("<I", head, 8)
        start = 12
    try:
        header = ast.literal_eval(head[start : start + length].decode("latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return True
    if not isinstance(header, dict):
        return True
    return "O" in repr(header.get("descr", "O"))


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (length,) = struct.unpack_from("<Q", head, 0)
    return 2 <= length <= 100 * 1024 * 1024 and head[8:9] == b"{"


def _is_pickle(data: bytes) -> bool:
    """A pickle stream: protocol 2+ header, or protocol 0/1 opcodes that parse up to STOP."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:1] not in (b"(", b"]", b"}", b"c", b"I", b"N", b"V", b"S", b"K", b"}", b")"):
        return False
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                return True
    except (ValueError, UnicodeDecodeError, struct.error, IndexError, TypeError):
        return False
    # Ran out of head before STOP: opcodes all the way is a pickle for a text-looking file.
    return len(data) >= HEAD_BYTES


def _decompressed_head(head: bytes) -> bytes | None:
    """The first decompressed bytes of a zlib, gzip, bz2 or xz/lzma stream (joblib's formats)."""
    decompressor: typing.Any
    if head.startswith(b"\x1f\x8b"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif head[:1] == b"\x78" and len(head) > 1 and (head[0] * 256 + head[1]) % 31 == 0:
        decompressor = zlib.decompressobj()
    elif head.startswith(b"BZh"):
        decompressor = bz2.BZ2Decompressor()
    elif head.startswith(b"\xfd7zXZ") or head[:3] == b"\x5d\x00\x00":
        decompressor = lzma.LZMADecompressor()
    elif head.startswith(b"ZF"):
        # joblib < 0.10: "ZF" then a hex length, then zlib data.
        start = head.find(b"\x78", 2, 32)
        if start < 0:
            return None
        head = head[start:]
        decompressor = zlib.decompressobj()
    else:
        return None
    try:
        return bytes(decompressor.decompress(head, 4096))
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError):
        return None


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The head may end inside a multi-byte character.
        if error.start < len(head) - 4:
            return False
        text = head[: error.start].decode("utf-8")
    return all(char.isprintable() or char in "\t\n\r\f\v" for char in text)
