"""MPPS instances, their links to scheduled steps, the outbox; the order's HL7 charset.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03

Self-contained on purpose (no import of ``broker.store.schema``), like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import TypeEngine

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(length: int | None = None) -> TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _id() -> TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("hl7_charset", sa.String(32), nullable=False, server_default=""))
    _create_mpps_instances()
    _create_mpps_step_links()
    _create_outbox()


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("mpps_step_links")
    op.drop_table("mpps_instances")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("hl7_charset")


def _create_mpps_instances() -> None:
    op.create_table(
        "mpps_instances",
        sa.Column("id", _id(), nullable=False),
        sa.Column("sop_instance_uid", _key(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("performed_station_ae", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("pps_id", sa.String(64), nullable=False),
        sa.Column("start_datetime", sa.String(14), nullable=False),
        sa.Column("end_datetime", sa.String(14), nullable=False),
        sa.Column("unscheduled", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mpps_instances"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_mpps_instances_sop_instance_uid"),
    )
    op.create_index("ix_mpps_instances_status", "mpps_instances", ["status"])
    op.create_index("ix_mpps_instances_start_datetime", "mpps_instances", ["start_datetime"])


def _create_mpps_step_links() -> None:
    op.create_table(
        "mpps_step_links",
        sa.Column("mpps_id", _id(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mpps_id"], ["mpps_instances.id"], ondelete="CASCADE",
            name="fk_mpps_step_links_mpps_id_mpps_instances",
        ),
        sa.ForeignKeyConstraint(
            ["step_id"], ["scheduled_steps.id"], ondelete="CASCADE",
            name="fk_mpps_step_links_step_id_scheduled_steps",
        ),
        sa.PrimaryKeyConstraint("mpps_id", "step_id", name="pk_mpps_step_links"),
    )  # fmt: skip
    op.create_index("ix_mpps_step_links_step_id", "mpps_step_links", ["step_id"])


def _create_outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _id(), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("order_key", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("control_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _timestamp(), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", _timestamp(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("sent_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_sequence", "outbox", ["destination", "order_key", "id"])
    op.create_index("ix_outbox_control_id", "outbox", ["control_id"])
