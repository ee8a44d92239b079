// Command tlogcheck checks what ModelGuard's audit log writes with code that is not ModelGuard's:
// golang.org/x/mod/sumdb/note opens the signed checkpoints (C2SP signed notes), and
// golang.org/x/mod/sumdb/tlog computes the RFC 6962 tree over the record lines, checks the
// inclusion and consistency proofs given, and makes its own for comparison. crypto/ed25519 checks
// each record's signature of its hash.
//
// It reads one JSON task on standard input and writes one JSON answer on standard output; the
// answer says, item by item, what verified and why not.
package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type task struct {
	VerifierKeys []string `json:"vkeys"`
	Notes        []string `json:"notes"`
	// The record lines of one segment, in order, exactly as the log holds them.
	Leaves      []string     `json:"leaves"`
	Inclusion   []inclusion  `json:"inclusion"`
	Consistency []consistent `json:"consistency"`
	// Record lines whose signature is checked under the first verifier key.
	Records []string `json:"records"`
}

type inclusion struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Proof []string `json:"proof"`
	// The root to prove against (a checkpoint's); empty: the tree hash of the leaves given.
	Root string `json:"root"`
}

type consistent struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof []string `json:"proof"`
	// The roots to prove between (two checkpoints'); empty: the tree hashes of the leaves given.
	OldRoot string `json:"oldRoot"`
	NewRoot string `json:"newRoot"`
}

type verdict struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type opened struct {
	verdict
	Origin  string `json:"origin,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Root    string `json:"root,omitempty"`
	KeyHash string `json:"keyHash,omitempty"`
	// Whether the root is tlog's tree hash of the first Size leaves.
	RootMatches bool `json:"rootMatches"`
}

type answer struct {
	Notes       []opened   `json:"notes"`
	Roots       []string   `json:"roots"`
	Inclusion   []verdict  `json:"inclusion"`
	Consistency []verdict  `json:"consistency"`
	ProveRecord [][]string `json:"proveRecord"`
	ProveTree   [][]string `json:"proveTree"`
	Records     []verdict  `json:"records"`
}

func main() {
	var t task
	if err := json.NewDecoder(os.Stdin).Decode(&t); err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck: reading the task:", err)
		os.Exit(2)
	}
	a, err := run(t)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(a); err != nil {
		fmt.Fprintln(os.Stderr, "tlogcheck: writing the answer:", err)
		os.Exit(2)
	}
}

func run(t task) (*answer, error) {
	var verifiers []note.Verifier
	for _, vkey := range t.VerifierKeys {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("verifier key %q: %w", vkey, err)
		}
		verifiers = append(verifiers, v)
	}
	tree := newTree(t.Leaves)
	a := &answer{
		Notes: []opened{}, Roots: []string{}, Inclusion: []verdict{}, Consistency: []verdict{},
		ProveRecord: [][]string{}, ProveTree: [][]string{}, Records: []verdict{},
	}
	for size := int64(1); size <= int64(len(t.Leaves)); size++ {
		root, err := tlog.TreeHash(size, tree)
		if err != nil {
			return nil, err
		}
		a.Roots = append(a.Roots, encode(root))
	}
	for _, msg := range t.Notes {
		a.Notes = append(a.Notes, openCheckpoint(msg, verifiers, tree, int64(len(t.Leaves))))
	}
	for _, p := range t.Inclusion {
		a.Inclusion = append(a.Inclusion, checkInclusion(p, tree, t.Leaves))
		proof, err := tlog.ProveRecord(p.Size, p.Index, tree)
		a.ProveRecord = append(a.ProveRecord, encodeAll(proof, err))
	}
	for _, p := range t.Consistency {
		a.Consistency = append(a.Consistency, checkConsistency(p, tree))
		proof, err := tlog.ProveTree(p.New, p.Old, tree)
		a.ProveTree = append(a.ProveTree, encodeAll(proof, err))
	}
	for _, line := range t.Records {
		if len(verifiers) == 0 {
			return nil, errors.New("records to check but no verifier key")
		}
		a.Records = append(a.Records, checkRecord(line, t.VerifierKeys[0]))
	}
	return a, nil
}

// hashes is the tree's stored hashes in tlog's layout, computed from the leaves.
type hashes []tlog.Hash

func newTree(leaves []string) hashes {
	var stored hashes
	for i, leaf := range leaves {
		more, err := tlog.StoredHashes(int64(i), []byte(leaf), stored)
		if err != nil {
			panic(err)
		}
		stored = append(stored, more...)
	}
	return stored
}

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, index := range indexes {
		if index < 0 || index >= int64(len(h)) {
			return nil, fmt.Errorf("no stored hash %d", index)
		}
		out[i] = h[index]
	}
	return out, nil
}

func openCheckpoint(msg string, verifiers []note.Verifier, tree hashes, leaves int64) opened {
	n, err := note.Open([]byte(msg), note.VerifierList(verifiers...))
	if err != nil {
		return opened{verdict: verdict{Error: err.Error()}}
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return opened{verdict: verdict{Error: "not a checkpoint: fewer than three lines"}}
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return opened{verdict: verdict{Error: "not a checkpoint: bad tree size " + lines[1]}}
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return opened{verdict: verdict{Error: "not a checkpoint: bad root hash"}}
	}
	o := opened{
		verdict: verdict{OK: true}, Origin: lines[0], Size: size, Root: lines[2],
		KeyHash: fmt.Sprintf("%08x", n.Sigs[0].Hash),
	}
	if size >= 1 && size <= leaves {
		th, err := tlog.TreeHash(size, tree)
		o.RootMatches = err == nil && bytes.Equal(th[:], root)
	}
	return o
}

func checkInclusion(p inclusion, tree hashes, leaves []string) verdict {
	proof, err := decodeAll(p.Proof)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	if p.Index < 0 || p.Index >= int64(len(leaves)) {
		return verdict{Error: "no such leaf"}
	}
	th, err := tlog.TreeHash(p.Size, tree)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	if p.Root != "" {
		if th, err = tlog.ParseHash(p.Root); err != nil {
			return verdict{Error: err.Error()}
		}
	}
	err = tlog.CheckRecord(proof, p.Size, th, p.Index, tlog.RecordHash([]byte(leaves[p.Index])))
	return result(err)
}

func checkConsistency(p consistent, tree hashes) verdict {
	proof, err := decodeAll(p.Proof)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	newRoot, err := tlog.TreeHash(p.New, tree)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	oldRoot, err := tlog.TreeHash(p.Old, tree)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	if p.OldRoot != "" || p.NewRoot != "" {
		if oldRoot, err = tlog.ParseHash(p.OldRoot); err != nil {
			return verdict{Error: err.Error()}
		}
		if newRoot, err = tlog.ParseHash(p.NewRoot); err != nil {
			return verdict{Error: err.Error()}
		}
	}
	return result(tlog.CheckTree(proof, p.New, newRoot, p.Old, oldRoot))
}

// checkRecord checks a record's `sig`: Ed25519 under the verifier key, over
// "modelguard audit record\n" || log name || "\n" || the record's hash (hex).
func checkRecord(line, vkey string) verdict {
	var record struct {
		Hash  string `json:"hash"`
		KeyID string `json:"keyId"`
		Sig   string `json:"sig"`
	}
	if err := json.Unmarshal([]byte(line), &record); err != nil {
		return verdict{Error: err.Error()}
	}
	name, rest, _ := strings.Cut(vkey, "+")
	keyHash, key64, _ := strings.Cut(rest, "+")
	if record.KeyID != keyHash {
		return verdict{Error: "keyId " + record.KeyID + " is not the verifier key's " + keyHash}
	}
	key, err := base64.StdEncoding.DecodeString(key64)
	if err != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != 1 {
		return verdict{Error: "not an Ed25519 verifier key"}
	}
	sig, err := base64.StdEncoding.DecodeString(record.Sig)
	if err != nil {
		return verdict{Error: "sig is not base64"}
	}
	message := []byte("modelguard audit record\n" + name + "\n" + record.Hash)
	if !ed25519.Verify(ed25519.PublicKey(key[1:]), message, sig) {
		return verdict{Error: "the signature does not verify"}
	}
	return verdict{OK: true}
}

func result(err error) verdict {
	if err != nil {
		return verdict{Error: err.Error()}
	}
	return verdict{OK: true}
}

func decodeAll(in []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(in))
	for i, s := range in {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d is not base64 of %d bytes", i, tlog.HashSize)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

func encode(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

func encodeAll(proof []tlog.Hash, err error) []string {
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	out := make([]string, len(proof))
	for i, h := range proof {
		out[i] = encode(h)
	}
	return out
}
