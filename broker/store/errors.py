"""The one place where database errors become the domain's :class:`mwl.ports.StoreFailure`.

::

    StoreFailure                  (mwl.ports) database down, locked too long, disk full, …
    └── DuplicateMessage          (mwl.ports) a second AA for one sender and MSH-10

Every SQLAlchemy error and every DBAPI error (sqlite3, psycopg) raised under
:func:`translated` or :func:`store_errors` leaves as one of these, with the original chained
as ``__cause__``; nothing of SQLAlchemy reaches the domain.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import psycopg
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker.store.schema import ACCEPTED_MESSAGE_INDEX
from mwl.ports import DuplicateMessage, StoreFailure

P = ParamSpec("P")
R = TypeVar("R")

DATABASE_ERRORS = (SQLAlchemyError, sqlite3.Error, psycopg.Error)

# SQLite names the columns, not the index, of a failed unique constraint.
_SQLITE_ACCEPTED_MESSAGE = (
    "UNIQUE constraint failed: message_journal.sending_application, "
    "message_journal.sending_facility, message_journal.control_id"
)


def to_store_failure(exc: BaseException) -> StoreFailure:
    """The domain error for a database error (see the module doc)."""
    if isinstance(exc, IntegrityError) and _is_accepted_message_conflict(exc):
        return DuplicateMessage("a message with this sender and control ID was accepted already")
    return StoreFailure(f"{type(exc).__name__}: {_first_line(exc)}")


@contextmanager
def store_errors() -> Iterator[None]:
    """Run a block, translating database errors with :func:`to_store_failure`."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise to_store_failure(exc) from exc


def translated(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store method so it raises only :class:`StoreFailure` for database errors."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with store_errors():
            return function(*args, **kwargs)

    return wrapper


def _is_accepted_message_conflict(exc: IntegrityError) -> bool:
    diag = getattr(exc.orig, "diag", None)
    if diag is not None:
        return getattr(diag, "constraint_name", None) == ACCEPTED_MESSAGE_INDEX
    return _SQLITE_ACCEPTED_MESSAGE in str(exc.orig)


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and parameters (patient data) after the first line.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
