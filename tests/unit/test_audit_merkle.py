"""The RFC 6962 tree of the audit log: the writer's frontier gives the same roots as the RFC's
recursive definition while holding O(log n) hashes, and proofs made by streaming the leaves verify
(and fail when anything in them changes), against our own trees and against a real Certificate
Transparency log's proofs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies

from modelguard.audit import merkle

VECTORS = Path(__file__).with_name("vectors")


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, as written: the reference the frontier must agree with."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _leaves(count: int) -> list[bytes]:
    return [merkle.leaf_hash(f"record {n}".encode()) for n in range(count)]


def test_hashes_are_rfc6962_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        merkle.node_hash(b"a" * 32, b"b" * 32)
        == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(strategies.integers(min_value=0, max_value=300))
def test_the_frontier_gives_the_rfc_root_at_every_size(count: int) -> None:
    leaves = _leaves(count)
    frontier = merkle.Frontier()
    assert frontier.root() == _mth([])
    for size, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.root() == _mth(leaves[:size])
        # One hash per set bit of the size: O(log n), never the leaves.
        assert frontier.hashes == bin(size).count("1")


def test_the_frontier_of_a_huge_tree_stays_small() -> None:
    frontier = merkle.Frontier()
    for _ in range(2**16 - 1):
        frontier.append(b"\x00" * 32)
    assert frontier.size == 2**16 - 1
    assert frontier.hashes == 16


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33])
def test_inclusion_proofs_verify_for_every_leaf(size: int) -> None:
    leaves = _leaves(size)
    root = _mth(leaves)
    for index in range(size):
        proof = merkle.prove(merkle.inclusion_ranges(index, size), leaves)
        assert merkle.verify_inclusion(
            index=index, size=size, leaf=leaves[index], proof=proof, root=root
        )
        # Any other leaf, position, size or root fails.
        other = merkle.leaf_hash(b"not a record")
        assert not merkle.verify_inclusion(
            index=index, size=size, leaf=other, proof=proof, root=root
        )
        assert not merkle.verify_inclusion(
            index=index,
            size=size,
            leaf=leaves[index],
            proof=proof,
            root=_mth([*leaves[:-1], other]),
        )
        if size > 1:
            assert not merkle.verify_inclusion(
                index=(index + 1) % size, size=size, leaf=leaves[index], proof=proof, root=root
            )
        for at in range(len(proof)):
            changed = [*proof[:at], bytes(32), *proof[at + 1 :]]
            assert not merkle.verify_inclusion(
                index=index, size=size, leaf=leaves[index], proof=changed, root=root
            )


@pytest.mark.parametrize("new", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 32, 33])
def test_consistency_proofs_verify_between_every_pair_of_sizes(new: int) -> None:
    leaves = _leaves(new)
    new_root = _mth(leaves)
    for old in range(new + 1):
        old_root = _mth(leaves[:old])
        proof = merkle.prove(merkle.consistency_ranges(old, new), leaves)
        assert merkle.verify_consistency(
            old=old, new=new, old_root=old_root, new_root=new_root, proof=proof
        ), (old, new)
        if 0 < old < new:
            # A forked history (the old tree with one leaf changed) is not consistent.
            forked = _mth([merkle.leaf_hash(b"forged"), *leaves[1:old]])
            assert not merkle.verify_consistency(
                old=old, new=new, old_root=forked, new_root=new_root, proof=proof
            )
            for at in range(len(proof)):
                changed = [*proof[:at], bytes(32), *proof[at + 1 :]]
                assert not merkle.verify_consistency(
                    old=old, new=new, old_root=old_root, new_root=new_root, proof=changed
                )


def test_proofs_need_every_leaf_of_their_ranges() -> None:
    with pytest.raises(ValueError, match="the leaves end before leaf 6"):
        merkle.prove(merkle.inclusion_ranges(0, 7), _leaves(6))
    with pytest.raises(ValueError, match="leaf 7 is not in a tree of 7 leaves"):
        merkle.inclusion_ranges(7, 7)


def test_a_real_certificate_transparency_log_proves_with_our_verifier() -> None:
    # Proofs that Google's Argon 2020 log served, not made by us: the hashing and the proof
    # algorithms agree with RFC 6962 as deployed.
    vector = json.loads((VECTORS / "ct-argon2020.json").read_text())
    root = base64.b64decode(vector["root"])
    leaf = merkle.leaf_hash(base64.b64decode(vector["leaf_input"]))
    path = [base64.b64decode(h) for h in vector["audit_path"]]
    size, index = vector["tree_size"], vector["leaf_index"]
    assert merkle.verify_inclusion(index=index, size=size, leaf=leaf, proof=path, root=root)
    assert not merkle.verify_inclusion(index=index + 1, size=size, leaf=leaf, proof=path, root=root)
    consistency = [base64.b64decode(h) for h in vector["consistency"]]
    old_root = base64.b64decode(vector["old_root"])
    assert merkle.verify_consistency(
        old=vector["old_size"], new=size, old_root=old_root, new_root=root, proof=consistency
    )
    assert not merkle.verify_consistency(
        old=vector["old_size"] + 1, new=size, old_root=old_root, new_root=root, proof=consistency
    )
    # Our range computation asks for exactly as many hashes as the log's proofs hold.
    assert len(merkle.inclusion_ranges(index, size)) == len(path)
    assert len(merkle.consistency_ranges(vector["old_size"], size)) == len(consistency)
