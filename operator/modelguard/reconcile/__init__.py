"""The reconcile flow: read the state, decide, apply the children, write the status."""
