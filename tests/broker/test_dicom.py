"""The DICOM listener over real associations on 127.0.0.1 port 0, with a pynetdicom SCU.

Association acceptance and the A-ASSOCIATE-RJ reasons (PS3.8 9.3.4), C-ECHO, C-FIND in each of
the three transfer syntaxes, a failure status carried to the SCU with its Error Comment, C-CANCEL,
TCP_NODELAY read from the server's own socket, and the stop with its grace period.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import P_DATA_TF

from broker.config import DicomConfig
from broker.dicom import MODALITY_WORKLIST_FIND, VERIFICATION, DicomServer
from broker.dicom.dimse import C_FIND_RQ, response_command
from broker.dicom.negotiation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from mwl.policy import OverLimit, WorklistPolicy
from tests.mwl.test_scp import FakeFinder, answer, broad_query, items, worklist_item

TIMEOUT = 20.0
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 Table 9-21
CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


@contextmanager
def serving(
    finder: FakeFinder | None = None, policy: WorklistPolicy | None = None, **dicom: Any
) -> Iterator[DicomServer]:
    server = DicomServer(
        DicomConfig(port=0, **dicom), finder or FakeFinder(items(2)), policy or WorklistPolicy()
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=TIMEOUT)


@contextmanager
def associated(
    port: int,
    *,
    called: str = "MWLBROKER",
    calling: str = "CT1",
    syntaxes: list[UID] | None = None,
    handlers: list[EventHandlerType] | None = None,
    maximum_pdu_size: int = 16382,
) -> Iterator[Association]:
    """An association from a pynetdicom SCU; released (or aborted) on the way out."""
    scu = AE(ae_title=calling)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = TIMEOUT
    for sop_class in (VERIFICATION, MODALITY_WORKLIST_FIND):
        scu.add_requested_context(sop_class, syntaxes or SYNTAXES)
    assoc = scu.associate(
        "127.0.0.1", port, ae_title=called, max_pdu=maximum_pdu_size, evt_handlers=handlers or []
    )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def rejection(assoc: Association) -> tuple[int | None, int | None, int | None]:
    """A-ASSOCIATE-RJ (result, source, diagnostic) as the SCU received it."""
    primitive = assoc.acceptor.primitive
    assert primitive is not None
    return primitive.result, primitive.result_source, primitive.diagnostic


def find(assoc: Association, identifier: Dataset) -> list[tuple[int, Dataset | None]]:
    """Every response of one C-FIND: (status, identifier) pairs, the final one included."""
    return [
        (status.Status, found)
        for status, found in assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND)
    ]


def accepted_socket(server: DicomServer) -> socket.socket:
    """The server's end of its one open association (its private socket, read only)."""
    (association,) = server._snapshot()
    return association._sock


# --- AE configuration --------------------------------------------------------------------------


def test_the_a_associate_ac_carries_our_maximum_length_and_implementation() -> None:
    with (
        serving(ae_title="WORKLIST", maximum_pdu_size=32768) as server,
        associated(server.port, called="WORKLIST") as assoc,
    ):
        assert assoc.is_established
        assert assoc.acceptor.maximum_length == 32768
        assert assoc.acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID
        assert assoc.acceptor.implementation_version_name == IMPLEMENTATION_VERSION_NAME
        contexts = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        assert contexts == {MODALITY_WORKLIST_FIND, VERIFICATION}
        assert server.associations == 1


# --- association negotiation -------------------------------------------------------------------


def test_association_accepted_and_c_echo_succeeds() -> None:
    with serving() as server, associated(server.port) as assoc:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000


def test_wrong_called_ae_title_is_rejected_called_ae_not_recognized() -> None:
    with serving() as server, associated(server.port, called="SOMEONE") as assoc:
        assert assoc.is_rejected
        assert rejection(assoc) == CALLED_AE_NOT_RECOGNIZED


def test_any_called_ae_title_when_not_required() -> None:
    with (
        serving(require_called_ae=False) as server,
        associated(server.port, called="SOMEONE") as assoc,
    ):
        assert assoc.is_established


def test_caller_not_allowed_is_rejected_calling_ae_not_recognized() -> None:
    with serving(allowed_callers=("CT1",)) as server:
        with associated(server.port, calling="INTRUDER") as assoc:
            assert assoc.is_rejected
            assert rejection(assoc) == CALLING_AE_NOT_RECOGNIZED
        with associated(server.port, calling="CT1") as assoc:
            assert assoc.is_established


def test_association_beyond_the_maximum_is_rejected_local_limit_exceeded() -> None:
    with serving(max_associations=1) as server, associated(server.port) as first:
        assert first.is_established
        with associated(server.port, calling="CT2") as second:
            assert second.is_rejected
            assert rejection(second) == LOCAL_LIMIT_EXCEEDED


def test_tcp_nodelay_is_set_on_the_accepted_socket() -> None:
    with serving() as server, associated(server.port) as assoc:
        assert assoc.is_established
        assert accepted_socket(server).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# --- transfer syntaxes ------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_each_transfer_syntax_carries_echo_and_worklist_find(syntax: UID) -> None:
    with serving() as server, associated(server.port, syntaxes=[syntax]) as assoc:
        assert {cx.transfer_syntax[0] for cx in assoc.accepted_contexts} == {syntax}
        assert assoc.send_c_echo().Status == 0x0000

        responses = find(assoc, broad_query())

    assert [status for status, _ in responses] == [0xFF00, 0xFF00, 0x0000]
    found = [identifier for _, identifier in responses if identifier is not None]
    assert [ds.PatientName for ds in found] == ["SECRET^PATIENT1", "SECRET^PATIENT2"]
    assert found[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "SPS1"


def test_a_compressed_syntax_only_is_not_accepted() -> None:
    with serving() as server, associated(server.port, syntaxes=[JPEGBaseline8Bit]) as assoc:
        assert not assoc.is_established


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
def test_pending_identifiers_on_the_wire_are_what_pydicom_would_send(syntax: UID) -> None:
    """Byte for byte: the directly encoded identifiers (mwl.answer.IdentifierEncoder) and the
    command sets, as the SCU's DIMSE layer received them."""
    stored = [*items(2), worklist_item(3, stations=("MR1", "MR2"))]
    expected = [
        encode(found, syntax.is_implicit_VR, syntax.is_little_endian)
        for _, found in answer(broad_query(), FakeFinder(stored))
        if isinstance(found, Dataset)
    ]
    received: list[tuple[int, bytes]] = []

    def keep(event: Event) -> None:
        message = event.message
        if isinstance(message, C_FIND_RSP):
            received.append((message.command_set.Status, message.data_set.getvalue()))

    with (
        serving(FakeFinder(stored)) as server,
        associated(server.port, syntaxes=[syntax], handlers=[(evt.EVT_DIMSE_RECV, keep)]) as assoc,
    ):
        responses = find(assoc, broad_query())

    assert [status for status, _ in responses] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert received == [(0xFF00, data) for data in expected] + [(0x0000, b"")]
    decoded = [found for _, found in responses if found is not None]
    assert [str(found.PatientName) for found in decoded] == [
        "SECRET^PATIENT1", "SECRET^PATIENT2", "SECRET^PATIENT3"
    ]  # fmt: skip


def test_the_pending_command_set_is_the_one_pynetdicom_encodes() -> None:
    primitive = C_FIND()
    primitive.MessageID = primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = MODALITY_WORKLIST_FIND
    primitive.Status = 0xFF01
    primitive.Identifier = BytesIO(b"\x08\x00\x50\x00")
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)

    expected = encode(message.command_set, True, True)
    encoded = response_command(
        C_FIND_RQ, 7, 0xFF01, sop_class=MODALITY_WORKLIST_FIND, data_set=True
    )
    assert encoded == expected


def test_an_identifier_longer_than_the_scus_maximum_pdu_arrives_in_fragments() -> None:
    comment = "x" * 10_000  # within LT (10,240), over 4 KiB
    item = worklist_item(1)
    item.dataset["00104000"] = {"vr": "LT", "Value": [comment]}
    sizes: list[int] = []

    def measure(event: Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sizes.append(len(event.pdu.encode()) - 6)  # the PDU's variable field

    with (
        serving(FakeFinder([item])) as server,
        associated(
            server.port, handlers=[(evt.EVT_PDU_RECV, measure)], maximum_pdu_size=4096
        ) as assoc,
    ):
        responses = find(assoc, broad_query(PatientComments=""))

    ((status, found), _) = responses
    assert status == 0xFF00 and found is not None
    assert found.PatientComments == comment
    assert len(sizes) >= 3 and max(sizes) <= 4096


def test_each_c_find_is_timed_at_debug_without_patient_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="broker.dicom")
    with serving(FakeFinder(items(2))) as server, associated(server.port) as assoc:
        find(assoc, broad_query())

    (line,) = [r.getMessage() for r in caplog.records if "pending in" in r.getMessage()]
    assert line.startswith("C-FIND from CT1: 2 pending in ")
    assert "SECRET" not in caplog.text


def test_an_abort_during_the_answer_stops_it_and_closes_the_finder() -> None:
    many = 20_000
    finder = FakeFinder([worklist_item(1)] * many)
    policy = WorklistPolicy(max_matches=many, over_limit=OverLimit.TRUNCATE)
    with serving(finder, policy) as server, associated(server.port) as assoc:
        for count, _ in enumerate(assoc.send_c_find(broad_query(), MODALITY_WORKLIST_FIND)):
            if count == 0:
                assoc.abort()
                break
    # serving() has joined the association's thread: its handler has returned

    assert finder.closed


# --- C-FIND statuses on the wire --------------------------------------------------------------


def test_no_match_sends_only_success() -> None:
    with serving(FakeFinder([])) as server, associated(server.port) as assoc:
        assert find(assoc, broad_query()) == [(0x0000, None)]


def test_multi_valued_station_ae_reaches_the_scu() -> None:
    finder = FakeFinder([worklist_item(1, stations=("MR1", "MR2"))])
    with serving(finder) as server, associated(server.port) as assoc:
        ((_, found), _) = find(assoc, broad_query())

    assert found is not None
    assert list(found.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == ["MR1", "MR2"]


def test_failure_reaches_the_scu_with_error_comment_and_offending_element() -> None:
    identifier = broad_query()
    identifier.ScheduledProcedureStepSequence.append(Dataset())
    with serving() as server, associated(server.port) as assoc:
        ((status, found),) = assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND)
        assert assoc.is_established  # a failed C-FIND leaves the association usable

    assert found is None
    assert status.Status == 0xA900
    assert status.ErrorComment == "SPS Sequence has 2 items; 1 allowed"
    assert status.OffendingElement == 0x00400100


def test_over_the_limit_refused_a700_on_the_wire() -> None:
    policy = WorklistPolicy(max_matches=1, over_limit=OverLimit.REFUSE)
    with serving(FakeFinder(items(2)), policy) as server, associated(server.port) as assoc:
        ((status, found),) = assoc.send_c_find(broad_query(), MODALITY_WORKLIST_FIND)

    assert found is None
    assert (status.Status, status.ErrorComment) == (0xA700, "more than 1 matches; narrow the query")


def test_c_cancel_ends_the_answer_with_fe00() -> None:
    many = 20_000  # far more than fit in flight; the SCP checks for the cancel before each
    finder = FakeFinder([worklist_item(1)] * many)
    policy = WorklistPolicy(max_matches=many, over_limit=OverLimit.TRUNCATE)
    with serving(finder, policy) as server, associated(server.port) as assoc:
        context_id = next(
            cx.context_id
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == MODALITY_WORKLIST_FIND
        )
        received = []
        for status, _ in assoc.send_c_find(broad_query(), MODALITY_WORKLIST_FIND, msg_id=7):
            received.append(status.Status)
            if len(received) == 1:
                assoc.send_c_cancel(7, context_id)

    assert received[-1] == 0xFE00
    assert set(received[:-1]) == {0xFF00}
    assert len(received) < many
    assert finder.closed


# --- stop -------------------------------------------------------------------------------------


def test_stop_waits_for_a_released_association_and_frees_the_port() -> None:
    server = DicomServer(DicomConfig(port=0), FakeFinder([]), WorklistPolicy())
    server.start()
    port = server.port
    with associated(port) as assoc:
        assert assoc.is_established
    server.stop(grace=TIMEOUT)

    assert server.associations == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port


def test_stop_aborts_an_idle_association_after_the_grace_period() -> None:
    server = DicomServer(DicomConfig(port=0), FakeFinder([]), WorklistPolicy())
    server.start()
    with associated(server.port) as assoc:
        assert assoc.is_established
        server.stop(grace=0.2)
        assoc.join(TIMEOUT)  # the SCU's reactor ends when the A-ABORT arrives
        assert assoc.is_aborted
    assert server.associations == 0
