"""SQLAlchemy adapters of the CSMS's storage Protocols (csms.services). Only the
composition root (`csms.app`) imports this package.

One database, one migration history (`pki/store/migrations`): the CSMS's tables are
defined here on the shared MetaData of `pki.store.schema`.
"""
