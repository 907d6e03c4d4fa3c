"""The database out of reach (stopped, restarting, a dropped connection, an exhausted pool) is an outage to wait
out, not an internal error: every route then answers 503 problem+json `database_unavailable` with `Retry-After`.
Any other error keeps its 500."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from types import TracebackType

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from api.errors import Problem

RETRY_AFTER_SECONDS = 2
log = logging.getLogger("payloop.api")

# Errors that by their type mean "cannot talk to the database now".
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    sa_exc.TimeoutError,  # no pooled connection came free in time
    sa_exc.DisconnectionError,
    asyncpg.PostgresConnectionError,  # connection lost / failed
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")
_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite")


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or an error it wraps, says the database cannot be reached right now."""
    for err in _chain(exc):
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, _UNAVAILABLE_TYPES):
            return True
        if isinstance(err, asyncpg.InterfaceError) and "connection" in str(err).lower():  # "connection is closed"
            return True
        if isinstance(err, sqlite3.OperationalError) and str(err).lower().startswith(_SQLITE_UNAVAILABLE):
            return True
        # A refused / reset connection or a connect timeout, when it came out of the database driver.
        if isinstance(err, OSError) and _raised_in_driver(err.__traceback__):
            return True
    return False


def unavailable_problem() -> Problem:
    return Problem(503, "database_unavailable", "Service unavailable",
                   "the database cannot be reached right now; retry after Retry-After seconds", retryable=True,
                   headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def install(app: FastAPI) -> None:
    """Registers the handler for the error types a database outage surfaces as; an error of those types that is
    not an outage is raised on, to the 500 handler."""

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc
        log.warning("database unavailable during %s %s: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc)
        return unavailable_problem().response()

    for exc_type in (sa_exc.SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error, OSError):
        app.add_exception_handler(exc_type, _database_error)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what it wraps (`orig` of SQLAlchemy's DBAPI errors), its causes and contexts; each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        err = pending.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        orig = getattr(err, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, err.__cause__, err.__context__]


def _raised_in_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False
