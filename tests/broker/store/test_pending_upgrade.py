"""serve's schema check: a database not at head is named, one at head passes."""

from __future__ import annotations

from broker.config import DatabaseConfig
from broker.store import migrate
from broker.store.migrate import pending_upgrade


def test_empty_database_needs_an_upgrade_until_migrated(database: DatabaseConfig) -> None:
    reason = pending_upgrade(database)
    assert reason is not None
    assert "no schema" in reason
    migrate(database)
    assert pending_upgrade(database) is None
