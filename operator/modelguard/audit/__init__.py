"""The audit chain: every decision of the operator is one JSON record, hash-chained to the one
before it, so that `modelguard audit verify` detects an edited, deleted, inserted or reordered
record.

`records` (the format and its hash) and `chain` (verification) are pure; `sink` appends records
to the operator's audit log. Nothing here talks to Kubernetes.
"""
