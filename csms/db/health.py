"""StorageProbe on SQLAlchemy: a committed write that changes nothing (the node's own
heartbeat, set to what it is) and a read, and the free space where pkictl writes."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, func, select, update

from csms.db.schema import leases, nodes
from pki.store.faults import FULL_BELOW_BYTES
from pki.store.inline import Database


class SqlStorageProbe:
    def __init__(self, database: Database, node_id: str, directories: Sequence[Path]) -> None:
        self._database = database
        self._node_id = node_id
        self._directories = tuple(directories)

    async def probe(self) -> None:
        for directory in self._directories:
            status = os.statvfs(directory)
            free = status.f_bavail * status.f_frsize
            if free < FULL_BELOW_BYTES:
                raise OSError(errno.ENOSPC, f"{free} bytes free", str(directory))

        def work(connection: Connection) -> None:
            connection.execute(
                update(nodes)
                .where(nodes.c.id == self._node_id)
                .values(heartbeat_at=nodes.c.heartbeat_at)
            )
            connection.execute(select(func.count()).select_from(leases)).scalar_one()

        await self._database.write(work)
