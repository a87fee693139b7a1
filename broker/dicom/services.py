"""The services of the broker's AE: thin adapters from a DIMSE :class:`Request` to the domain.

==============================  ========  =================================================
SOP class                       request   handler
==============================  ========  =================================================
Verification 1.2.840.10008.1.1  C-ECHO    :func:`handle_echo`: Success (PS3.7 9.3.5)
Modality Worklist FIND          C-FIND    :class:`WorklistFind`: :func:`mwl.scp.find_worklist`
1.2.840.10008.5.1.4.31                    (PS3.4 K.4), one response per match, then the
                                          final status; C-CANCEL seen between matches
MPPS 1.2.840.10008.3.1.2.3.3    N-CREATE  :func:`handle_n_create` → ``MppsService.n_create``
                                N-SET     :func:`handle_n_set` → ``MppsService.n_set``
==============================  ========  =================================================

A failure's status dataset becomes the response's status fields
(:meth:`broker.dicom.dimse.StatusFields.from_dataset`): Error Comment, Offending Element, Error
ID and — for N-CREATE and N-SET — the Attribute Identifier List (PS3.7 C.4). A data set that
cannot be decoded answers A900 "identifier cannot be decoded" (C-FIND) or 0110 Processing
failure (MPPS); an unexpected error in an MPPS handler also answers 0110, logged.

Per C-FIND, a DEBUG line of ``broker.dicom`` gives the number of Pending responses and the
time from the request to the last of them sent (``bench/cfind.py`` reads it as the
server-side time). :class:`FindObserver` s (the console's C-FIND log) see each request's
identifier as received and its final status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from functools import partial
from typing import Final, Protocol

from pydicom import Dataset
from pydicom.uid import UID, generate_uid

from broker.dicom.association import Handler, Request
from broker.dicom.dimse import (
    AFFECTED_SOP_INSTANCE,
    N_CREATE_RQ,
    N_SET_RQ,
    REQUESTED_SOP_INSTANCE,
    StatusFields,
    decode_data_set,
)
from mpps.scp import MppsService, error_dataset
from mpps.scp import Response as MppsResponse
from mpps.state import MppsError, MppsStatus, undecodable
from mwl.matching import WorklistFinder
from mwl.policy import WorklistPolicy
from mwl.scp import PENDING_STATUSES, FindStatus, find_worklist, status_dataset

log = logging.getLogger("broker.dicom")

SUCCESS: Final = 0x0000


class FindObserver(Protocol):
    """Sees each Modality Worklist C-FIND: the request as received, then its final status."""

    def find_received(
        self, key: tuple[int, int], calling_ae: str, identifier: bytes, transfer_syntax: str
    ) -> None: ...

    def find_answered(self, key: tuple[int, int], status: int) -> None: ...


def handle_echo(request: Request) -> None:
    """C-ECHO: Success (PS3.7 9.3.5)."""
    request.respond(SUCCESS)


class WorklistFind:
    """C-FIND on the Modality Worklist Information Model (PS3.4 K.4)."""

    def __init__(
        self,
        finder: WorklistFinder,
        policy: WorklistPolicy,
        observers: Sequence[FindObserver] = (),
    ) -> None:
        self._finder = finder
        self._policy = policy
        self._observers = observers

    def __call__(self, request: Request) -> None:
        key = (id(request.association), request.message_id)
        identifier = request.message.data or b""
        syntax = request.context.transfer_syntax
        for observer in self._observers:
            observer.find_received(key, request.calling_ae, identifier, syntax)
        status = self._answer(request)
        if status is not None:
            for observer in self._observers:
                observer.find_answered(key, status)

    def _answer(self, request: Request) -> int | None:
        """Send every response; the final status, or None when the association ended first."""
        started = time.perf_counter()
        if request.message.data is None:
            return self._refuse(request, "C-FIND-RQ without an identifier")
        try:
            identifier = decode_data_set(request.message.data, request.context.transfer_syntax)
        except Exception:  # a broken identifier is the SCU's; the answer says so
            return self._refuse(request, "identifier cannot be decoded")
        responses = find_worklist(
            identifier,
            calling_ae=request.calling_ae,
            finder=self._finder,
            policy=self._policy,
            now=datetime.now(),
            is_cancelled=request.cancelled,
            transfer_syntax=UID(request.context.transfer_syntax),
        )
        final: StatusFields = StatusFields(SUCCESS)
        sent = 0
        with closing(responses):  # the finder's cursor goes back however this ends
            for status, answer in responses:
                if status in PENDING_STATUSES:
                    if not request.respond(status, data=_bytes(answer)):
                        return None  # aborted or closed meanwhile: nothing more to send
                    sent += 1
                    continue
                final = _fields(status, answer)
                break
        log.debug("C-FIND from %s: %d pending in %.3f ms", request.calling_ae, sent,
                  (time.perf_counter() - started) * 1000)  # fmt: skip
        return final.status if request.respond(final) else None

    @staticmethod
    def _refuse(request: Request, comment: str) -> int | None:
        """A900 Identifier does not match SOP Class, with ``comment``."""
        log.info("C-FIND from %s: %s", request.calling_ae, comment)
        fields = StatusFields.from_dataset(status_dataset(FindStatus.IDENTIFIER_MISMATCH, comment))
        return fields.status if request.respond(fields) else None


def _bytes(answer: object) -> bytes:
    """A Pending identifier as :func:`find_worklist` gives it with a transfer syntax: bytes."""
    if isinstance(answer, bytes):
        return answer
    raise TypeError(f"a Pending identifier of type {type(answer).__name__}, bytes expected")


def _fields(status: int, answer: object) -> StatusFields:
    if isinstance(answer, Dataset) and "Status" in answer:
        return StatusFields.from_dataset(answer)
    return StatusFields(status)


# --- MPPS --------------------------------------------------------------------------------------


def mpps_handlers(service: MppsService) -> dict[int, Handler]:
    """The MPPS SOP Class's requests → handlers bound to ``service``."""
    return {
        N_CREATE_RQ: partial(handle_n_create, service=service),
        N_SET_RQ: partial(handle_n_set, service=service),
    }


def handle_n_create(request: Request, service: MppsService) -> None:
    """N-CREATE (PS3.4 F.7.2.1). The SCU supplies the Affected SOP Instance UID (standards.md
    §4.2); a request without one is still served rather than lose the procedure's record: the
    SCP chooses the UID, as PS3.7 10.1.5 lets an N-CREATE's SCP do, and answers it in the
    response's Affected SOP Instance UID."""
    uid = request.command.uid(AFFECTED_SOP_INSTANCE) or generate_uid()
    _answer(request, "N-CREATE", uid,
            lambda attributes: service.n_create(uid, attributes, request.calling_ae))  # fmt: skip


def handle_n_set(request: Request, service: MppsService) -> None:
    """N-SET (PS3.4 F.7.2.2)."""
    uid = request.command.uid(REQUESTED_SOP_INSTANCE)
    _answer(request, "N-SET", uid,
            lambda modification: service.n_set(uid, modification, request.calling_ae))  # fmt: skip


def _answer(
    request: Request, operation: str, uid: str, serve: Callable[[Dataset], MppsResponse]
) -> None:
    """Decode the attribute or modification list, have the service answer, respond.

    A data set that cannot be decoded is the SCU's: 0110 with the comment the service gives
    a value it cannot read (:func:`mpps.state.undecodable`). Anything else that escapes the
    service is a defect: 0110 "internal error", logged with its traceback.
    """
    data = request.message.data
    dataset: Dataset | None
    try:
        attributes = (
            Dataset() if data is None else decode_data_set(data, request.context.transfer_syntax)
        )
    except Exception as exc:  # pydicom raises many types on bytes that are not a data set
        log.info("%s %s from %s: attribute list cannot be decoded: %s", operation, uid,
                 request.calling_ae, type(exc).__name__)  # fmt: skip
        status, dataset = int(MppsStatus.PROCESSING_FAILURE), error_dataset(undecodable(exc))
    else:
        try:
            status, dataset = serve(attributes)
        except Exception:  # the service raises nothing by design
            log.exception("%s %s from %s failed", operation, uid, request.calling_ae)
            status, dataset = _processing_failure()
    request.respond(_mpps_fields(status, dataset), sop_instance=uid)


def _mpps_fields(status: int, dataset: Dataset | None) -> StatusFields:
    if status and dataset is not None:
        return StatusFields.from_dataset(dataset)
    return StatusFields(status)


def _processing_failure() -> tuple[int, Dataset | None]:
    error = MppsError(MppsStatus.PROCESSING_FAILURE, "internal error; see the SCP log")
    return int(MppsStatus.PROCESSING_FAILURE), error_dataset(error)
