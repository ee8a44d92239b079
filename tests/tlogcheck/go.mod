// An independent verifier of the audit log's signed checkpoints, record signatures and Merkle
// proofs, built on the Go module mirror's own note and tlog packages (tests/unit/test_audit_interop.py
// builds it once per source hash into the binary cache).
module modelguard.dev/tests/tlogcheck

go 1.26.0

require golang.org/x/mod v0.43.0
