"""In-pod entrypoints of the one ModelGuard image: `modelguard agent fetch-verify` (the init
container that fills a model pod's volume with verified files)."""
