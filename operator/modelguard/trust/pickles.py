"""Would unpickling these bytes reach an import? Asked of CPython's own unpicklers, not a model
of them.

Both unpicklers read the bytes: the C one (pickle.load, torch.load, numpy.load) and the Python
one (joblib's NumpyUnpickler subclasses it). Each is a subclass whose find_class records the
(module, name) and raises instead of importing, so whatever the unpickler would reach an import
with, however it got there (GLOBAL, STACK_GLOBAL, INST; EXT1/2/4 too, for codes copyreg has
registered, none unless the loading program registers some), is seen, and no parser of ours can
read the bytes differently from the loader.

Why running them is safe: only find_class makes a callable (classes, functions); without it the
stack holds only the data objects the opcodes build themselves (numbers, strings, bytes, lists,
tuples, dicts, sets, None, booleans), none of them callable, so REDUCE, BUILD, OBJ, NEWOBJ and
INST have nothing to call and raise. persistent_load returns what a loader's might (the id, data
the stream built; None; an object that takes state and items but is not callable), each in turn,
so that a stream a loader's persistent_load would carry on with is read on too.

Bounded: the unpicklers read through a reader that holds at most `cap` bytes and refuses any read
past it (a declared length of gigabytes is read no further than the cap or the stream's end);
reaching the cap without a verdict fails closed, except where the declared length runs past the
end of the file (its size known): there the loader's read comes up short and it raises having run
nothing more, so the read is short here too, without reading to the end (a FRAME so declared is
the rest of the file to the Python unpickler, and is read on as such). The C unpickler reserves
a BINBYTES buffer of the declared length before it reads into it: address space it never
touches, since the read is short or refused (where even reserving fails, the MemoryError fails
closed, unless the length runs past the file's end: the loader fails as it does). It also grows its
memo array to twice a PUT's index, and fills it: so the Python unpickler reads first, and a memo
index beyond the opcodes one pickle may have fails closed before the C one sees it. The Python
one counts opcodes, per pickle and over the file.

The C unpickler is bounded on its own, not by what the Python one did: it may read no byte past
where the Python one stopped (reading on fails closed: the two disagree), and before it runs, the
bytes it may read are walked as it parses them, counting opcodes and memo indices (a FRAME is
read whole and parsed from its buffer; an argument running past its end, which the Python one
refuses and the C one reads differently, fails closed).
"""

from __future__ import annotations

import pickle
import pickletools
import struct
import sys
import typing

_PyUnpickler: typing.Any = getattr(pickle, "_Unpickler")  # noqa: B009 - joblib's base class


class Source(typing.Protocol):
    def read(self, count: int) -> bytes: ...

    def readline_upto(self, limit: int) -> bytes: ...

    def remaining(self) -> int | None:
        """The bytes left to read, None when not known (a stream being inflated)."""
        ...


class Limit(Exception):
    """The bytes or opcodes the unpicklers may spend ran out before a verdict."""


class Verdict(typing.NamedTuple):
    imports: str | None
    """What the stream imports (or why it counts as a pickle); None: nothing runs code."""
    consumed: bytes
    """The bytes the unpicklers read, for the caller to read again."""
    opcodes: int
    """Opcodes the Python unpickler ran."""


def judge(
    source: Source,
    *,
    cap: int,
    opcodes: int,
    total_opcodes: int,
    spent: int = 0,
    text: bool,
    model_modules: typing.Collection[str] = (),
) -> Verdict:
    """Run both unpicklers over the stream (pickles in a row, until the end or an error), at most
    `opcodes` in one pickle (then it is one) and `total_opcodes` in all, `spent` of them on other
    streams of the file (then Limit).

    `text`: the stream is printable text, where one import first in the file that nothing then
    uses is a labels file (`cat\\ndog\\n` is GLOBAL at.dog, then BUILD with one object), unless
    the module is Python's own or one the model ships (`model_modules`: importing those runs code).
    """
    modules = frozenset(model_modules)
    replay, counted, persisted = bytearray(), spent, False
    try:
        for returns in _PERSISTENT:
            # The Python unpickler first: its memo check guards the C one's memory.
            reach = cap
            for oracle in _PythonOracle, _COracle:
                bound = cap
                if oracle is _COracle:
                    # What the C unpickler may read and run: no more than the Python one read,
                    # and, within that, opcodes and memo indices as bounded as the Python one's.
                    bound = min(cap, reach)
                    _c_bounds(bytes(replay[:bound]), opcodes=opcodes, total=total_opcodes)
                fed = _Fed(source, cap=bound, replay=replay, python=oracle is _PythonOracle)
                state = _State(text=text, modules=modules, opcodes=opcodes, fed=fed)
                state.counted, state.returns = counted, returns
                state.total = total_opcodes
                verdict = _run(oracle, state)
                replay, counted, reach = fed.data, state.counted, fed.reach
                persisted = persisted or state.persisted
                if verdict is not None:
                    return Verdict(verdict, bytes(replay), counted - spent)
            if not persisted:
                break  # no persistent id: what persistent_load returns changes nothing
    except MemoryError:
        raise Limit("unpickling it needs more memory than inspecting it is given") from None
    return Verdict(None, bytes(replay), counted - spent)


class _Absorbing:
    """A persistent object a loader might return (torch returns storages): it takes the state,
    items and appends a stream gives it, and is hashable, but it is not callable."""

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, value: object) -> None:
        pass

    def extend(self, values: object) -> None:
        pass

    def add(self, value: object) -> None:
        pass


def _same(pid: object) -> object:
    return pid


def _none(pid: object) -> object:
    return None


def _absorbing(pid: object) -> object:
    return _Absorbing()


# What persistent_load returns: the id itself (torch's legacy "module" ids), None, an object
# that takes whatever comes (a storage). A loader's own persistent_load may return any of these
# and the unpickler carries on; each is tried, once the stream has a persistent id at all.
_PERSISTENT: typing.Final = (_same, _none, _absorbing)


# Pickles in a row a stream may hold (torch's legacy files hold five): each costs an unpickler.
PICKLES_IN_A_ROW: typing.Final = 1000


def _run(oracle: typing.Any, state: _State) -> str | None:
    fed = state.fed
    for _ in range(PICKLES_IN_A_ROW):
        if not fed.more():
            return None
        start = fed.at
        try:
            oracle(fed, state).load()
        except _Verdict:
            return state.verdict
        except MemoryError:
            if fed.allocated_past_end():
                return None  # the loader fails the same allocation (or reads short): nothing ran
            raise
        except Limit:
            raise
        except Exception:
            if fed.failure is not None:
                raise fed.failure from None
            return None  # whatever the loader raises here, it raises having run nothing
        if state.imported is not None:
            return f"it imports {state.imported} and the unpickler returns it"
        header = bytes(fed.data[start : start + 2])
        if header[:1] == b"\x80" and header[1:2] not in (b"", b"\x00", b"\x01"):
            return "a protocol 2+ pickle stream, unpickled to its end"
    if not fed.more():
        return None
    raise Limit(f"it holds more than {PICKLES_IN_A_ROW} pickles in a row")


class _Verdict(Exception):
    pass


class _State:
    def __init__(self, *, text: bool, modules: frozenset[str], opcodes: int, fed: _Fed) -> None:
        self.text = text
        self.modules = modules
        self.opcodes = opcodes
        self.fed = fed
        self.imported: str | None = None
        self.verdict: str | None = None
        self.counted = 0
        self.total = opcodes
        self.returns: typing.Callable[[object], object] = _same
        self.persisted = False

    def persistent_load(self, pid: object) -> object:
        self.persisted = True
        return self.returns(pid)

    def decide(self, verdict: str) -> typing.NoReturn:
        self.verdict = verdict
        raise _Verdict

    def find_class(self, module: str, name: str) -> object:
        top = module.split(".", maxsplit=1)[0]
        shipped = top in self.modules
        if not shipped and not all(part.isidentifier() for part in module.split(".")):
            # __import__ finds no module so named (and none of the model's files is): the
            # loader's find_class raises before anything runs.
            raise ValueError(f"no module named {module!r}")
        found = _short(f"{module}.{name}")
        if self.text and not all(part.isidentifier() for part in name.split(".")):
            # An import that nothing can follow (getattr of such a name fails): it runs only the
            # module's own code, which a module Python or the model ships may make harmful.
            if shipped or top in sys.stdlib_module_names:
                self.decide(f"it imports {found} when unpickled")
            raise ValueError(f"no attribute {name!r}")
        if self.imported is not None:
            self.decide(f"it imports {self.imported}, then {found}, when unpickled")
        if shipped:
            self.decide(f"it imports {found} (a module the model ships) when unpickled")
        # A labels file's first line is one word: a dotted module (numpy.f2py.__main__ runs a
        # program when imported) or a dunder one (__main__, __phello__) is an import.
        word = "." not in module and not module.startswith("__")
        labels = (
            self.text and word and self.fed.first_global() and top not in sys.stdlib_module_names
        )
        if not labels:
            self.decide(f"it imports {found} when unpickled")
        self.imported = found
        return _Unused(self)


class _Unused:
    """What the first import of a text file stands for: any use of it (call, attribute, item,
    hash, state) is a verdict, because the real object would be used there."""

    def __new__(cls, *args: object) -> typing.Any:
        # NEWOBJ looks __new__ up on what it is given: on the stand-in, that is a use of it.
        if isinstance(cls, _Unused):
            cls._used("instantiates")
        return super().__new__(cls)

    def __init__(self, state: _State) -> None:
        object.__setattr__(self, "_state", state)

    def _used(self, how: str) -> typing.NoReturn:
        state: _State = object.__getattribute__(self, "_state")
        state.decide(f"it imports {state.imported} and {how} it when unpickled")

    def __call__(self, *args: object, **kwargs: object) -> typing.NoReturn:
        self._used("calls")

    def __getattr__(self, name: str) -> typing.NoReturn:
        self._used(f"uses {name} of")

    def __setattr__(self, name: str, value: object) -> typing.NoReturn:
        self._used(f"sets {name} of")

    def __getitem__(self, key: object) -> typing.NoReturn:
        self._used("indexes")

    def __setitem__(self, key: object, value: object) -> typing.NoReturn:
        self._used("sets an item of")

    def __hash__(self) -> typing.NoReturn:  # noqa: PLE0309 - it never returns
        self._used("hashes")

    def __eq__(self, other: object) -> typing.NoReturn:
        self._used("compares")


class _COracle(pickle.Unpickler):
    def __init__(self, fed: _Fed, state: _State) -> None:
        super().__init__(typing.cast("typing.IO[bytes]", fed))
        self._state = state

    def find_class(self, module: str, name: str, /) -> typing.Any:
        return self._state.find_class(module, name)

    def persistent_load(self, pid: typing.Any, /) -> typing.Any:
        return self._state.persistent_load(pid)


class _PythonOracle(_PyUnpickler):  # type: ignore[misc]
    def __init__(self, fed: _Fed, state: _State) -> None:
        super().__init__(fed)
        self._state = state
        self._opcodes = 0

    def count(self) -> None:
        self._opcodes += 1
        self._state.counted += 1
        if self._state.counted > self._state.total:
            # Over every stream of the file (pickles in a row, members): its time is bounded.
            raise Limit(f"its pickle opcodes number more than {self._state.total} in all")
        if self._opcodes > self._state.opcodes:
            self._state.decide(
                f"its pickle opcodes run on past {self._state.opcodes} without an end"
            )

    def memoized(self) -> None:
        # The C unpickler allocates an array of twice the largest memo index (and fills it): one
        # beyond the opcodes this stream may have is refused before the C unpickler reads it.
        if self.memo and next(reversed(self.memo)) > self._state.opcodes:
            raise Limit(f"it stores a memo index over {self._state.opcodes}")

    def find_class(self, module: str, name: str) -> typing.Any:
        return self._state.find_class(module, name)

    def persistent_load(self, pid: typing.Any) -> typing.Any:
        return self._state.persistent_load(pid)

    def load_frame(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        fed = self._state.fed
        if size > sys.maxsize or size <= fed.room() or not fed.short(size):
            self._unframer.load_frame(size)  # a frame within the cap, or one over it (Limit)
            return
        # A frame past the end of the file: pickle._Unpickler takes the rest of the file as the
        # frame (it reads it short, unchecked) and runs it; read here as it is parsed.
        fed.ended = False
        frame = self._unframer.current_frame
        if frame and frame.read() != b"":
            raise pickle.UnpicklingError("beginning of a new frame before end of current frame")
        self._unframer.current_frame = _Rest(fed)

    def load_bytearray8(self) -> None:
        # pickle._Unpickler allocates the declared length (zeroed) before reading into it.
        (length,) = struct.unpack("<Q", self.read(8))
        fed = self._state.fed
        if length > fed.room():
            if fed.short(length):
                self.append(bytearray())  # what the loader holds is not used: the file ended
                return
            raise Limit(f"it declares {length} bytes, more than the {fed.cap} read")
        buffer = bytearray(length)
        self.readinto(buffer)
        self.append(buffer)


def _python_dispatch() -> dict[int, typing.Callable[[typing.Any], None]]:
    table: dict[int, typing.Callable[[typing.Any], None]] = dict(_PyUnpickler.dispatch)
    table[pickle.BYTEARRAY8[0]] = _PythonOracle.load_bytearray8
    table[pickle.FRAME[0]] = _PythonOracle.load_frame
    memo = {code[0] for code in (pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE)}

    def counted(code: int, load: typing.Callable[[typing.Any], None]) -> typing.Any:
        def run(self: _PythonOracle) -> None:
            self.count()
            load(self)
            if code in memo:
                self.memoized()

        return run

    return {code: counted(code, load) for code, load in table.items()}


_PythonOracle.dispatch = _python_dispatch()


class _Fed:
    """The unpicklers' file: `replay` (what an earlier pass read) first, then the source; at most
    `cap` bytes in all, refused before they are read. Everything read stays in `data`. It has no
    peek(), so the C unpickler reads exactly what it parses, as from a pipe."""

    def __init__(self, source: Source, *, cap: int, replay: bytearray, python: bool = True) -> None:
        self._source = source
        self.cap = cap
        self.data = replay  # the earlier pass's, taken over: not copied
        self.at = 0
        self.reach = 0
        """How far into the stream a read has asked for."""
        self.failure: Exception | None = None
        self._python = python
        self.ended = False
        """A read ran past the end of the file: the loader's came up short, the file is read."""

    def room(self) -> int:
        return self.cap - self.at

    def end(self) -> int | None:
        """Where the file ends, when known."""
        left = self._source.remaining()
        return None if left is None else len(self.data) + left

    def allocated_past_end(self) -> bool:
        """Whether the last read was the 8-byte length of BINBYTES8 or BYTEARRAY8, one past the
        file's end: the C unpickler allocates the declared length before it reads."""
        opcode = bytes(self.data[self.at - 9 : self.at - 8])
        if opcode not in (pickle.BINBYTES8, pickle.BYTEARRAY8):
            return False
        return self.short(int.from_bytes(self.data[self.at - 8 : self.at], "little"))

    def short(self, count: int) -> bool:
        """Whether reading `count` bytes runs past the file's end: then the loader reads to the
        end, comes up short, and a read of those bytes (kept in no memory here) ends the file."""
        end = self.end()
        if end is None or self.at + count <= end:
            return False
        self.ended = True
        return True

    def _refused(self) -> Limit:
        if not self._python:
            # The C unpickler reads on where the Python one stopped: what it would read there
            # was never bounded by the Python one's counts, so it fails closed.
            return Limit(
                f"the C unpickler reads it on past byte {self.cap}, where the Python one stops"
            )
        return Limit(f"it is read as a pickle past {self.cap} bytes without a verdict")

    def _fetch(self, read: typing.Callable[[int], bytes], count: int) -> None:
        # What the source raises (a limit of the file's, a broken stream) is the caller's.
        try:
            self.data += read(count)
        except Exception as error:
            self.failure = error
            raise

    def read(self, count: int = -1) -> bytes:
        if count < 0:
            raise self._refused()
        self.reach = max(self.reach, self.at + count)
        if self.ended or (self.at + count > self.cap and self.short(count)):
            # A declared length past the end: the unpickler gets less than it asked for and
            # raises (the C one; the Python one at the next opcode), having run nothing more.
            return b""
        # Never more than the cap (and one byte to tell that the stream goes on) is read: a
        # declared length past the end of the stream is a short read, as in the loader.
        want = min(self.at + count, self.cap + 1)
        if want > len(self.data):
            self._fetch(self._source.read, want - len(self.data))
        if self.at + count > self.cap and len(self.data) > self.cap:
            raise self._refused()
        out = bytes(self.data[self.at : self.at + count])
        self.at += len(out)
        return out

    def readinto(self, buffer: typing.Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        end = self.data.find(b"\n", self.at)
        if end < 0 and len(self.data) <= self.cap:
            self._fetch(self._source.readline_upto, self.cap + 1 - len(self.data))
            end = self.data.find(b"\n", self.at)
        stop = len(self.data) if end < 0 else end + 1
        self.reach = max(self.reach, stop if end >= 0 else stop + 1)
        if stop > self.cap:
            raise self._refused()
        out = bytes(self.data[self.at : stop])
        self.at = stop
        return out

    def more(self) -> bool:
        if self.ended:
            return False
        self.reach = max(self.reach, self.at + 1)
        if self.at >= len(self.data):
            self._fetch(self._source.read, 1)
        return self.at < len(self.data)

    def first_global(self) -> bool:
        """Whether the import being made is the file's first opcode, a GLOBAL: its opcode and
        two lines are all that was read."""
        first = self.data.find(b"\n")
        second = self.data.find(b"\n", first + 1) if first >= 0 else -1
        return self.data[:1] == b"c" and second >= 0 and self.at == second + 1


class _Rest:
    """The rest of the file as a frame, read as the unpickler parses it."""

    def __init__(self, fed: _Fed) -> None:
        self._fed = fed

    def read(self, count: int = -1) -> bytes:
        return self._fed.read(count)

    def readinto(self, buffer: typing.Any) -> int:
        return self._fed.readinto(buffer)

    def readline(self) -> bytes:
        return self._fed.readline()


def _short(name: str) -> str:
    return name if len(name) <= 120 else f"{name[:100]}... ({len(name)} characters)"


# How the C unpickler reads each opcode's argument: pickletools' descriptors (n > 0: that many
# bytes; -1: a line, two for GLOBAL and INST; -2 to -5: a length of 1, 4 (signed), 4 or 8 bytes,
# then that many bytes).
_LENGTHS: typing.Final = {-2: (1, False), -3: (4, True), -4: (4, False), -5: (8, False)}
_OPCODES: typing.Final = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}


_PUTS: typing.Final = frozenset({"p", "q", "r"})
# Opcodes that leave the stack as empty as it was (a MARK is a fence the C unpickler's PUT sees).
_PUSH_NOTHING: typing.Final = frozenset({"\x80", "\x95", "("})


class _Stop(Exception):
    """Where the C unpickler stops with an error: an unknown opcode, the bytes run out."""


def _c_bounds(data: bytes, *, opcodes: int, total: int) -> None:
    """Walk the opcodes the C unpickler would run over `data` (all it is let read), as it reads
    them, and raise Limit where it would run more than `opcodes` in one pickle or `total` in all,
    or grow its memo past `opcodes` entries (it sizes its memo array by the largest index).

    The C unpickler reads a FRAME whole and then parses from that buffer, without the Python
    one's check that no argument runs past the frame's end; one that does is read differently
    (the rest of the buffer dropped), so it fails closed here rather than being modelled. Where
    the C unpickler stops with an error the walk stops."""
    walk = _CWalk(data)
    count = in_pickle = 0
    pushed = False  # whether the stack may hold an object: a PUT on an empty one raises
    try:
        while walk.at < len(data):
            op = _OPCODES.get(data[walk.at])
            if op is None:
                return
            count, in_pickle = count + 1, in_pickle + 1
            if in_pickle > opcodes or count > total:
                raise Limit(f"its pickle opcodes, as the C unpickler reads them, exceed {opcodes}")
            walk.at += 1
            index = walk.argument(op)
            if op.code in _PUTS and not pushed:
                return  # the C unpickler raises on the empty stack (`ref: refs/heads/main`)
            if index > opcodes:
                raise Limit(f"it stores a memo index over {opcodes}")
            pushed = pushed or op.code not in _PUSH_NOTHING
            if op.code == ".":
                in_pickle, pushed = 0, False
                walk.at = max(walk.at, walk.frame_end)  # where the next unpickler starts
    except _Stop:
        return


class _CWalk:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.frame_end = 0

    def _crossed(self) -> Limit:
        return Limit("an opcode of it runs past the end of its frame")

    def take(self, size: int) -> bytes:
        start = self.at
        if start < self.frame_end < start + size:
            raise self._crossed()
        if start + size > len(self.data):
            raise _Stop
        self.at = start + size
        return self.data[start : self.at]

    def line(self) -> bytes:
        start = self.at
        stop = self.data.find(b"\n", start)
        if start < self.frame_end and (stop < 0 or stop >= self.frame_end):
            raise self._crossed()
        if stop < 0:
            raise _Stop
        self.at = stop + 1
        return self.data[start:stop]

    def argument(self, op: pickletools.OpcodeInfo) -> int:
        """Read the argument of `op`; the memo index it stores, -1 for none."""
        argument = op.arg
        if argument is None:
            return -1
        if argument.n > 0:
            value = int.from_bytes(self.take(argument.n), "little")
            if op.code == "\x95":
                self.frame(value)
            return value if op.code in ("q", "r") else -1
        if argument.n == -1:
            raw = self.line()
            if argument.name == "stringnl_noescape_pair":
                self.line()
            if op.code != "p":
                return -1
            # The index the C unpickler parses is at most the number these digits make.
            digits = bytes(c for c in raw if 0x30 <= c <= 0x39)
            if not digits:
                raise _Stop
            return int(digits) if len(digits) <= len(str(sys.maxsize)) else sys.maxsize
        width, signed = _LENGTHS[argument.n]
        size = int.from_bytes(self.take(width), "little", signed=signed)
        if size < 0:
            raise _Stop
        self.take(size)
        return -1

    def frame(self, size: int) -> None:
        if self.at + size > len(self.data):
            raise _Stop
        if self.at >= self.frame_end:
            self.frame_end = self.at + size
        elif self.at + size > self.frame_end:
            raise self._crossed()
