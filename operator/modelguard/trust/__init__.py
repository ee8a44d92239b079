"""Model signature verification: OpenSSF Model Signing bundles, digests, paths, formats, policy.

Pure code (no network, no Kubernetes); only `folder` and `verify` read a local model folder.
"""
