"""The store: an engine, its sessions, and one session per unit of work.

``BEGIN`` on SQLite is ``BEGIN IMMEDIATE`` for a unit of work (it will write: the intake
reads the journal, then writes) and a plain deferred ``BEGIN`` for :meth:`Store.read_session`
(readers never wait for the writer in WAL mode). See :mod:`broker.store.engine`.
"""

from __future__ import annotations

import logging
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from broker.store.engine import READ_ONLY, DatabaseSettingsLike, engine_for
from broker.store.errors import store_errors, translated
from broker.store.finder import SqlWorklistFinder
from broker.store.items import step_to_item, worklist_items_query
from broker.store.journal import SqlJournal
from broker.store.mpps import SqlMppsStore, duplicate_instances
from broker.store.outbox_queue import SqlOutbox
from broker.store.worklist import SqlWorklistStore
from mpps.ports import MppsStore, MppsUnitOfWork, Outbox
from mwl.model import WorklistItem
from mwl.ports import Journal, StoreFailure, UnitOfWork, WorklistStore

log = logging.getLogger(__name__)


class SqlUnitOfWork:
    """One session, one transaction: :class:`mwl.ports.UnitOfWork` and
    :class:`mpps.ports.MppsUnitOfWork`.

    Nothing is visible to others before :meth:`commit`; leaving the ``with`` block without a
    commit, or with an exception, rolls back.
    """

    worklist: WorklistStore
    journal: Journal
    mpps: MppsStore
    outbox: Outbox

    def __init__(self, session: Session) -> None:
        self._session = session
        self.worklist = SqlWorklistStore(session)
        self.journal = SqlJournal(session)
        self.mpps = SqlMppsStore(session)
        self.outbox = SqlOutbox(session)

    def __enter__(self) -> SqlUnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @translated
    def commit(self) -> None:
        """Make the unit's changes durable; :class:`DuplicateMessage` for a second AA,
        :class:`DuplicateInstance` for a second MPPS with one SOP Instance UID."""
        with duplicate_instances():
            self._session.commit()

    def close(self) -> None:
        """Roll back whatever was not committed and give the connection back to the pool."""
        try:
            with store_errors():
                self._session.rollback()
                self._session.close()
        except StoreFailure as failure:
            # Nothing uncommitted survives a lost connection; do not mask the caller's error.
            log.warning("rollback failed: %s", failure)


class Store:
    """The broker's database: open once at start, :meth:`close` at stop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(
            engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    @classmethod
    def open(cls, database: DatabaseSettingsLike) -> Store:
        """A store on the configured database (no connection is made yet)."""
        return cls(engine_for(database))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work (:data:`mwl.ports.UnitOfWorkFactory`)."""
        return SqlUnitOfWork(self._writers())

    def mpps_unit_of_work(self) -> MppsUnitOfWork:
        """A new unit of work over MPPS instances and the outbox too
        (:data:`mpps.ports.MppsUnitOfWorkFactory`)."""
        return SqlUnitOfWork(self._writers())

    def read_session(self) -> Session:
        """A session for reading (use it as a context manager); for ``broker.store`` readers."""
        return self._readers()

    def finder(self) -> SqlWorklistFinder:
        """The C-FIND matcher (:class:`mwl.matching.WorklistFinder`), reading in its own
        :meth:`read_session` per query."""
        return SqlWorklistFinder(self.read_session)

    @translated
    def worklist_items(
        self,
        *,
        patient_id: str | None = None,
        accession: str | None = None,
        study_uid: str | None = None,
        include_final: bool = True,
    ) -> list[WorklistItem]:
        """The merged worklist items of the steps matching every given key, by step id."""
        query = worklist_items_query(
            patient_id=patient_id,
            accession=accession,
            study_uid=study_uid,
            include_final=include_final,
        )
        with self.read_session() as session:
            return [step_to_item(*row) for row in session.execute(query)]
