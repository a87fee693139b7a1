"""Fixtures of the web tests: an application on the ``store`` fixture (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.store import Store
from tests.web.support import AUTH, Client, app_for, sqlite_store


@pytest.fixture
def api(store: Store) -> Client:
    """A client with the token, on an application with ``[http] token`` set."""
    return Client(app_for(store), headers=AUTH)


@pytest.fixture
def anonymous(store: Store) -> Client:
    """A client without the token, on an application with ``[http] token`` set."""
    return Client(app_for(store))


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    """SQLite only: for behaviour that does not depend on the database."""
    with sqlite_store(tmp_path) as opened:
        yield opened
