"""The RFC 6962 Merkle tree over the audit records (pure): hashes, the writer's frontier, and
inclusion and consistency proofs with their verification (RFC 9162, sections 2.1.3 and 2.1.4).

Nothing here holds the tree: the writer keeps only the roots of the perfect subtrees left of the
next leaf (the frontier: one hash per set bit of the size, so at most 64), and a proof is made by
streaming the leaves once, folding each into the subtree of the proof it belongs to.
"""

from __future__ import annotations

import hashlib
import typing

HASH_BYTES: typing.Final = 32
EMPTY_ROOT: typing.Final = hashlib.sha256(b"").digest()
"""The root of the tree with no leaves."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The tree's right frontier: enough to append a leaf and to compute the root, in O(log n)."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        # Roots of the perfect subtrees covering [0, size), largest (leftmost) first.
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        """Adds a leaf hash (`leaf_hash` of the record)."""
        node = leaf
        size = self.size
        while size & 1:
            node = node_hash(self._stack.pop(), node)
            size >>= 1
        self._stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node

    @property
    def hashes(self) -> int:
        """How many hashes it holds: the number of set bits of the size."""
        return len(self._stack)


def root(leaves: typing.Iterable[bytes]) -> bytes:
    """The root over leaf hashes."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


Range = tuple[int, int]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose roots make the audit path of leaf `index` in the tree of `size`
    leaves, in proof order (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    out: list[Range] = []
    lo, hi = 0, size
    path: list[Range] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo = lo + k
    # Built from the root down; the proof lists the sibling nearest the leaf first.
    out.extend(reversed(path))
    return out


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The leaf ranges whose roots make the consistency proof from the tree of `old` leaves to
    that of `new` leaves, in proof order (RFC 9162 2.1.4.1)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new} leaves")
    if old in {0, new}:
        return []
    path: list[Range] = []
    lo, hi, m, complete = 0, new, old, True
    while True:
        if m == hi - lo:
            if not complete:
                path.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    return list(reversed(path))


def prove(ranges: typing.Sequence[Range], leaves: typing.Iterable[bytes]) -> list[bytes]:
    """The roots of `ranges` (disjoint), computed from one pass over the leaf hashes in order,
    holding one frontier per range."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    frontiers = [Frontier() for _ in ranges]
    end = max((hi for _, hi in ranges), default=0)
    cursor = 0
    for index, leaf in enumerate(leaves):
        if index >= end:
            break
        while cursor < len(order) and ranges[order[cursor]][1] <= index:
            cursor += 1
        if cursor < len(order) and ranges[order[cursor]][0] <= index:
            frontiers[order[cursor]].append(leaf)
    for (lo, hi), frontier in zip(ranges, frontiers, strict=True):
        if frontier.size != hi - lo:
            raise ValueError(f"the leaves end before leaf {hi - 1}")
    return [frontier.root() for frontier in frontiers]


def verify_inclusion(
    *, index: int, size: int, leaf: bytes, proof: typing.Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows the leaf hash `leaf` at `index` in the tree of `size` leaves with
    `root` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root


def verify_consistency(
    *, old: int, new: int, old_root: bytes, new_root: bytes, proof: typing.Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree of `old` leaves with `old_root` to be a prefix of the tree
    of `new` leaves with `new_root` (RFC 9162 2.1.4.2)."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first_root = second_root = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_root = node_hash(node, first_root)
            second_root = node_hash(node, second_root)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second_root = node_hash(second_root, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and first_root == old_root and second_root == new_root
