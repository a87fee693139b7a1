"""Initial schema: patients, orders, requested procedures, scheduled steps, message journal.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose (no import of ``broker.store.schema``): a migration describes the
schema as it was at this revision, whatever the models become later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import TypeEngine

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PN_LENGTH = 324


def _key(length: int | None = None) -> TypeEngine[str]:
    """A C-FIND matching column: byte-ordered ("C" collation) on PostgreSQL."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    _create_patients()
    _create_orders()
    _create_requested_procedures()
    _create_scheduled_steps()
    _create_step_station_aes()
    _create_message_journal()


def downgrade() -> None:
    for table in (
        "message_journal",
        "step_station_aes",
        "scheduled_steps",
        "requested_procedures",
        "orders",
        "patients",
    ):
        op.drop_table(table)


def _create_patients() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", _key(64), nullable=False),
        sa.Column("issuer", _key(64), nullable=False),
        sa.Column("name", sa.String(PN_LENGTH), nullable=False),
        sa.Column("name_folded", _key(), nullable=False),
        sa.Column("birth_date", sa.String(8), nullable=False),
        sa.Column("sex", sa.String(16), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("merged_into_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into_id"], ["patients.id"], name="fk_patients_merged_into_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.UniqueConstraint("patient_id", "issuer", name="uq_patients_patient_id_issuer"),
    )
    op.create_index("ix_patients_name_folded", "patients", ["name_folded"])


def _create_orders() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("placer_number", sa.String(199), nullable=True),
        sa.Column("placer_namespace", sa.String(199), nullable=True),
        sa.Column("filler_number", sa.String(199), nullable=True),
        sa.Column("filler_namespace", sa.String(199), nullable=True),
        sa.Column("accession", _key(64), nullable=False),
        sa.Column("referring_physician", sa.String(PN_LENGTH), nullable=False),
        sa.Column("referring_physician_folded", _key(), nullable=False),
        sa.Column("admission_id", _key(64), nullable=False),
        sa.Column("sending_application", sa.String(227), nullable=False),
        sa.Column("sending_facility", sa.String(227), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_orders_patient_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
    )
    op.create_index("ix_orders_patient_id", "orders", ["patient_id"])
    op.create_index("ix_orders_placer", "orders", ["placer_number", "placer_namespace"])
    op.create_index("ix_orders_filler", "orders", ["filler_number", "filler_namespace"])
    op.create_index("ix_orders_accession", "orders", ["accession"])
    op.create_index(
        "ix_orders_referring_physician_folded", "orders", ["referring_physician_folded"]
    )
    op.create_index("ix_orders_admission_id", "orders", ["admission_id"])


def _create_requested_procedures() -> None:
    op.create_table(
        "requested_procedures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", _key(64), nullable=False),
        sa.Column("requested_procedure_id", _key(64), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_requested_procedures_order_id_orders"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_requested_procedures"),
        sa.UniqueConstraint("study_uid", name="uq_requested_procedures_study_uid"),
    )
    op.create_index("ix_requested_procedures_order_id", "requested_procedures", ["order_id"])
    op.create_index(
        "ix_requested_procedures_requested_procedure_id",
        "requested_procedures",
        ["requested_procedure_id"],
    )


def _create_scheduled_steps() -> None:
    op.create_table(
        "scheduled_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=False),
        sa.Column("sps_id", _key(64), nullable=False),
        sa.Column("status", _key(16), nullable=False),
        sa.Column("start_date", sa.String(8), nullable=False),
        sa.Column("start_time", sa.String(16), nullable=False),
        sa.Column("start_datetime", _key(14), nullable=False),
        sa.Column("modality", _key(16), nullable=False),
        sa.Column("performing_physician", sa.String(PN_LENGTH), nullable=False),
        sa.Column("performing_physician_folded", _key(), nullable=False),
        sa.Column("station_name", sa.String(), nullable=False),
        sa.Column("location", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["requested_procedures.id"],
            name="fk_scheduled_steps_procedure_id_requested_procedures",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_scheduled_steps"),
        sa.UniqueConstraint(
            "procedure_id", "sps_id", name="uq_scheduled_steps_procedure_id_sps_id"
        ),
    )
    op.create_index("ix_scheduled_steps_sps_id", "scheduled_steps", ["sps_id"])
    op.create_index("ix_scheduled_steps_start_datetime", "scheduled_steps", ["start_datetime"])
    op.create_index(
        "ix_scheduled_steps_status_start", "scheduled_steps", ["status", "start_datetime"]
    )
    op.create_index(
        "ix_scheduled_steps_modality_start", "scheduled_steps", ["modality", "start_datetime"]
    )
    op.create_index(
        "ix_scheduled_steps_performing_physician_folded",
        "scheduled_steps",
        ["performing_physician_folded"],
    )


def _create_step_station_aes() -> None:
    op.create_table(
        "step_station_aes",
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("ae_title", _key(16), nullable=False),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["scheduled_steps.id"],
            name="fk_step_station_aes_step_id_scheduled_steps",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("step_id", "ae_title", name="pk_step_station_aes"),
    )
    op.create_index(
        "ix_step_station_aes_ae_title_step", "step_station_aes", ["ae_title", "step_id"]
    )


def _create_message_journal() -> None:
    accepted = sa.text("ack_code = 'AA'")
    op.create_table(
        "message_journal",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("peer", sa.String(), nullable=False),
        sa.Column("sending_application", sa.String(), nullable=False),
        sa.Column("sending_facility", sa.String(), nullable=False),
        sa.Column("control_id", sa.String(), nullable=False),
        sa.Column("message_type", sa.String(), nullable=False),
        sa.Column("trigger_event", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("accession", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_journal"),
    )
    op.create_index("ix_message_journal_control_id", "message_journal", ["control_id"])
    op.create_index("ix_message_journal_patient_id", "message_journal", ["patient_id"])
    op.create_index("ix_message_journal_accession", "message_journal", ["accession"])
    op.create_index(
        "uq_message_journal_accepted",
        "message_journal",
        ["sending_application", "sending_facility", "control_id"],
        unique=True,
        sqlite_where=accepted,
        postgresql_where=accepted,
    )
