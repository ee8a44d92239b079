"""Pure builders: a ModelDeployment in, the manifests of its desired children out (no I/O)."""
