"""Indexes for the C-FIND matching keys 0001 left without one.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Scheduled Station Name, Scheduled Procedure Step Location, Requested Procedure Description
and Issuer of Patient ID are matching keys too (:class:`mwl.matching.MatchKey`): each gets an
index, and on PostgreSQL the ``"C"`` collation of the other matching columns, so that a prefix
wildcard (``LIKE 'ABC%'``) is an index range whatever the database's default collation.
SQLite compares bytes already; its columns keep their type (no table rebuild).

Self-contained on purpose (no import of ``broker.store.schema``), like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BYTE_ORDERED = (
    ("scheduled_steps", "station_name"),
    ("scheduled_steps", "location"),
    ("requested_procedures", "description"),
)
"""Unbounded ``VARCHAR`` columns that become matching keys: ``"C"`` collation on PostgreSQL."""

INDEXED = (*BYTE_ORDERED, ("patients", "issuer"))


def upgrade() -> None:
    if _is_postgresql():
        for table, column in BYTE_ORDERED:
            _set_collation(table, column, "C")
    for table, column in INDEXED:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in INDEXED:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    if _is_postgresql():
        for table, column in BYTE_ORDERED:
            _set_collation(table, column, None)


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _set_collation(table: str, column: str, collation: str | None) -> None:
    """``ALTER COLUMN … TYPE VARCHAR [COLLATE …]``: PostgreSQL rebuilds no table for it."""
    op.alter_column(
        table,
        column,
        type_=sa.String(collation=collation),
        existing_type=sa.String(),
        existing_nullable=False,
    )
