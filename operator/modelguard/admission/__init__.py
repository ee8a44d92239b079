"""Admission: what the API server asks the operator before it stores an object.

`decisions` holds the pure rules (no I/O, no kube client); `certs` makes the serving certificates
with `cryptography`; `serving` is the small glue that hands kopf a TLS webhook server.
"""
