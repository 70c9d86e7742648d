"""Alembic environment: always run on a connection handed in by the store."""

from __future__ import annotations

from alembic import context

from pki.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("pkictl migrations run through the store (pkictl db upgrade), not alembic")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
