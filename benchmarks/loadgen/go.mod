// The open-loop load generator of benchmarks/webhook_latency.py. Standard library only, so that it
// builds offline; the benchmark builds it once per source hash into the binary cache.
module modelguard.dev/benchmarks/loadgen

go 1.26.0
