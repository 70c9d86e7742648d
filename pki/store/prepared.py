"""Statements that every station message writes, run on the inline SQLite connection
through the driver.

Around a SQLite insert of about 10 us, SQLAlchemy's `Connection.execute` spends about
60 us more on this machine (execution context, parameter processing, result object,
events): for a TransactionEvent's three statements, a third of what the message cost in
all (bench/RESULTS.md). A `Prepared` statement is still SQLAlchemy's: compiled by it,
once per dialect and set of columns, to the SQL it would send, and its parameters pass
through the same bind processors of the column types (a UTCDateTime is stored as the
same text). Only the execution is the DBAPI cursor's, and a driver error comes back as
the SQLAlchemy exception `Connection.execute` raises (an IntegrityError stays one).

Only plain INSERTs (upserts included) whose columns have no Python-side defaults are
accepted: anything SQLAlchemy would compute at execution time is refused when the
statement is first compiled. On any connection other than the inline sqlite3 one
(PostgreSQL, the async SQLite path) it is `connection.execute` as usual.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

Row = Mapping[str, Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: Mapping[str, Any]  # values bound in the statement itself (`events + 1`)


class Prepared:
    """An INSERT compiled once per dialect and set of columns (see the module)."""

    def __init__(self, statement: Insert) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def execute(self, connection: Connection, rows: Row | Sequence[Row]) -> None:
        """Insert ``rows`` (one mapping, or several with the same keys)."""
        many = [rows] if isinstance(rows, Mapping) else list(rows)
        if not many:
            return  # nothing to insert, on every connection alike
        driver = connection.connection.driver_connection
        if not isinstance(driver, sqlite3.Connection):
            connection.execute(self.statement, many)
            return
        compiled = self._for(connection.dialect, tuple(many[0]))
        parameters = [
            tuple(
                value if process is None else process(value)
                for process, value in zip(
                    compiled.processors,
                    (row[name] if name in row else compiled.fixed[name] for name in compiled.names),
                    strict=True,
                )
            )
            for row in many
        ]
        try:
            if len(parameters) == 1:
                driver.execute(compiled.sql, parameters[0])
            else:
                driver.executemany(compiled.sql, parameters)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                compiled.sql, parameters, exc, sqlite3.Error, dialect=connection.dialect
            ) from exc

    def _for(self, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
        found = self._compiled.get((dialect.name, keys))
        if found is None:
            found = self._compiled[(dialect.name, keys)] = _compile(self.statement, dialect, keys)
        return found


def _compile(statement: Insert, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    computed = [*compiled.insert_prefetch, *compiled.postfetch, *compiled.returning]
    if computed or compiled.literal_execute_params or compiled.post_compile_params:
        left = computed or "expanding parameters"
        raise ValueError(f"a prepared statement leaves values to compute at execution: {left}")
    names = tuple(compiled.positiontup)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    processors = tuple(binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                       for name in names)  # fmt: skip
    bound = compiled.construct_params(dict.fromkeys(keys))
    fixed = {name: value for name, value in bound.items() if name not in keys}
    return _Compiled(compiled.string, names, processors, fixed)
