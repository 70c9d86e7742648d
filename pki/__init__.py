"""The PKI core of pkictl: pure certificate logic with storage and keys behind Protocols.

Nothing in this package touches files, sockets, the environment or the clock except
the store adapter (`pki.store.sql`), the key backend (`pki.keys.file`) and the policy
loader (`pki.policy.load_policy`). Time is always passed in.
"""
