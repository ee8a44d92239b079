"""Offline backups of verified models: written once to a BackupStore, read back and verified,
restored and drilled.

`cron`, `layout` and `manifest` are pure (schedules, where each object goes, the signed backup
manifest); `stores` writes and reads objects (S3 with object lock, or a volume); `copy` takes a
backup, `restore` brings one back (and drills it); `worker` runs them off the operator's event
loop. Nothing here talks to the Kubernetes API: the reconcile layer hands in what it read.
"""
