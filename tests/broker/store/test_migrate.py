"""migrate(): Alembic builds exactly schema.metadata, and is safe to run at every start."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from broker.config import DatabaseConfig
from broker.store import Store, create_engine_for, migrate
from broker.store.migrate import alembic_config, upgrade
from broker.store.schema import ACCEPTED_MESSAGE_INDEX, metadata
from tests.broker.store.samples import patient

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_the_migrations_build_the_models_schema(database: DatabaseConfig) -> None:
    migrate(database)
    engine = create_engine_for(database.url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        # compare_metadata overlooks collations and partial-index predicates: check them too.
        assert reflected_collations(engine) == model_collations(engine)
        predicate = accepted_index_predicate(engine)
        assert "".join(c for c in predicate.replace("::text", "") if c not in "()") == (
            "ack_code = 'AA'"
        )
    finally:
        engine.dispose()


def reflected_collations(engine: Engine) -> dict[tuple[str, str], str | None]:
    """Collations of the columns the database has (tables of later revisions are absent)."""
    inspector = inspect(engine)
    present = set(inspector.get_table_names())
    return {
        (table.name, column["name"]): getattr(column["type"], "collation", None)
        for table in metadata.sorted_tables
        if table.name in present
        for column in inspector.get_columns(table.name)
    }


def model_collations(engine: Engine) -> dict[tuple[str, str], str | None]:
    """Collations the models give the columns of the tables the database has."""
    inspector = inspect(engine)
    present = {
        (name, column["name"])
        for name in inspector.get_table_names()
        for column in inspector.get_columns(name)
    }
    return {
        (table.name, column.name): getattr(
            column.type.dialect_impl(engine.dialect), "collation", None
        )
        for table in metadata.sorted_tables
        for column in table.columns
        if (table.name, column.name) in present
    }


def accepted_index_predicate(engine: Engine) -> str:
    (index,) = (
        index
        for index in inspect(engine).get_indexes("message_journal")
        if index["name"] == ACCEPTED_MESSAGE_INDEX
    )
    assert index["unique"]
    options = index.get("dialect_options", {})
    where = options.get(f"{engine.dialect.name}_where")
    return str(where)


def test_migrate_is_idempotent_and_keeps_data(database: DatabaseConfig) -> None:
    migrate(database)
    with Store.open(database) as store:
        assert current_revision(store.engine) == HEAD
        with store.unit_of_work() as uow:
            row = uow.worklist.upsert_patient(patient())
            uow.commit()
        migrate(database)
        migrate(database)
        assert current_revision(store.engine) == HEAD
        with store.unit_of_work() as uow:
            assert uow.worklist.find_patient(patient().key) == row


def test_brokers_starting_together_migrate_once(database: DatabaseConfig) -> None:
    failures: list[BaseException] = []

    def start() -> None:
        try:
            migrate(database)
        except BaseException as exc:
            failures.append(exc)

    starters = [threading.Thread(target=start) for _ in range(3)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(timeout=60)
    assert failures == []
    engine = create_engine_for(database.url)
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(database: DatabaseConfig) -> None:
    migrate(database)
    engine = create_engine_for(database.url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    migrate(database)
    engine = create_engine_for(database.url)
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


MATCHING_KEY_INDEXES = {
    ("scheduled_steps", "ix_scheduled_steps_station_name"),
    ("scheduled_steps", "ix_scheduled_steps_location"),
    ("requested_procedures", "ix_requested_procedures_description"),
    ("patients", "ix_patients_issuer"),
}


def index_names(engine: Engine) -> set[tuple[str, str]]:
    inspector = inspect(engine)
    return {
        (table, str(index["name"]))
        for table in ("scheduled_steps", "requested_procedures", "patients")
        for index in inspector.get_indexes(table)
    }


def test_0002_indexes_a_0001_database_and_goes_back(database: DatabaseConfig) -> None:
    engine = create_engine_for(database.url)
    try:
        upgrade(engine, "0001")
        with Store(engine).unit_of_work() as uow:
            uow.worklist.upsert_patient(patient())
            uow.commit()
        assert not index_names(engine) & MATCHING_KEY_INDEXES
        upgrade(engine, "0002")
        assert index_names(engine) >= MATCHING_KEY_INDEXES
        assert reflected_collations(engine) == model_collations(engine)
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert not index_names(engine) & MATCHING_KEY_INDEXES
        assert reflected_collations(engine)["scheduled_steps", "location"] is None
        with Store(engine).unit_of_work() as uow:
            assert uow.worklist.find_patient(patient().key) is not None
    finally:
        engine.dispose()
