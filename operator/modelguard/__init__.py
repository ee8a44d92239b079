"""ModelGuard: a Kubernetes operator that makes ML model deployments secure by default."""
